package differ

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func sock(cookie uint64, st snapshot.State) snapshot.Socket {
	return snapshot.Socket{
		Key: snapshot.Key{
			Proto:  snapshot.ProtoTCP,
			Family: snapshot.FamilyIPv4,
			Cookie: cookie,
			Src:    netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1000+cookie)),
			Dst:    netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), 80),
		},
		State: st,
	}
}

func listener(cookie uint64) snapshot.Socket {
	s := sock(cookie, snapshot.StateListen)
	s.Dst = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	return s
}

func table(ss ...snapshot.Socket) *snapshot.Table { return &snapshot.Table{Sockets: ss} }

// fakeProber answers lookups from a map; cookies not in it are unknown.
type fakeProber struct {
	answers map[uint64]snapshot.LookupResult
	err     error
	asked   int
}

func (f *fakeProber) Lookup(keys []snapshot.Key, out []snapshot.LookupResult) error {
	f.asked += len(keys)
	if f.err != nil {
		return f.err
	}
	for i, k := range keys {
		out[i] = f.answers[k.Cookie]
	}
	return nil
}

// summary renders events compactly: "appeared:1:established".
func summary(evs []event.Event) string {
	var b []string
	for _, e := range evs {
		s := fmt.Sprintf("%s:%d:%s", e.Kind, e.Socket.Cookie, e.Socket.State)
		if e.Kind == event.StateChanged {
			s += "<" + e.PrevState.String()
		}
		if e.Initial {
			s += ":initial"
		}
		if e.Reason != "" {
			s += ":" + e.Reason
		}
		b = append(b, s)
	}
	return strings.Join(b, " ")
}

func TestDiff(t *testing.T) {
	est := snapshot.StateEstablished
	type step struct {
		tab    *snapshot.Table
		prober Prober
		want   string
	}
	gone := &fakeProber{answers: map[uint64]snapshot.LookupResult{1: snapshot.LookupGone, 2: snapshot.LookupGone}}
	alive := &fakeProber{answers: map[uint64]snapshot.LookupResult{1: snapshot.LookupAlive, 2: snapshot.LookupAlive}}
	stale := &fakeProber{answers: map[uint64]snapshot.LookupResult{1: snapshot.LookupStale, 2: snapshot.LookupStale}}
	unknown := &fakeProber{}
	tests := []struct {
		name  string
		opts  Options
		steps []step
	}{
		{"start-up sockets are initial, new ones are not", Options{}, []step{
			{table(sock(1, est)), nil, "appeared:1:established:initial"},
			{table(sock(1, est), sock(2, est)), nil, "appeared:2:established"},
		}},
		{"an unchanged table yields nothing", Options{}, []step{
			{table(sock(1, est), sock(2, est)), nil, "appeared:1:established:initial appeared:2:established:initial"},
			{table(sock(1, est), sock(2, est)), nil, ""},
			{table(sock(2, est), sock(1, est)), nil, ""},
		}},
		{"state change", Options{}, []step{
			{table(sock(1, snapshot.StateSynSent)), nil, "appeared:1:syn_sent:initial"},
			{table(sock(1, est)), nil, "state_changed:1:established<syn_sent"},
			{table(sock(1, snapshot.StateFinWait2)), nil, "state_changed:1:fin_wait2<established"},
		}},
		{"missing and confirmed gone closes at once", Options{}, []step{
			{table(sock(1, est), sock(2, est)), gone, "appeared:1:established:initial appeared:2:established:initial"},
			{table(sock(2, est)), gone, "closed:1:established:gone"},
			{table(), gone, "closed:2:established:gone"},
			{table(), gone, ""},
		}},
		{"missing but alive is a skipped socket: no close, no re-appear", Options{}, []step{
			{table(sock(1, est), sock(2, est)), alive, "appeared:1:established:initial appeared:2:established:initial"},
			{table(sock(2, est)), alive, ""},
			{table(sock(2, est)), alive, ""},
			{table(sock(1, est), sock(2, est)), alive, ""},
		}},
		{"skipped socket that changed state meanwhile", Options{}, []step{
			{table(sock(1, est)), alive, "appeared:1:established:initial"},
			{table(), alive, ""},
			{table(sock(1, snapshot.StateCloseWait)), alive, "state_changed:1:close_wait<established"},
		}},
		{"lookups undecided: closed after MissLimit dumps", Options{MissLimit: 3}, []step{
			{table(sock(1, est)), unknown, "appeared:1:established:initial"},
			{table(), unknown, ""},
			{table(), unknown, ""},
			{table(), unknown, "closed:1:established:gone"},
		}},
		{"no prober: closed after MissLimit dumps", Options{MissLimit: 2}, []step{
			{table(sock(1, est)), nil, "appeared:1:established:initial"},
			{table(), nil, ""},
			{table(), nil, "closed:1:established:gone"},
		}},
		{"a miss streak resets when the socket returns", Options{MissLimit: 2}, []step{
			{table(sock(1, est)), nil, "appeared:1:established:initial"},
			{table(), nil, ""},
			{table(sock(1, est)), nil, ""},
			{table(), nil, ""},
			{table(sock(1, est)), nil, ""},
		}},
		{"a duplicate in one dump is one socket", Options{}, []step{
			{table(sock(1, est), sock(2, est), sock(1, est)), nil, "appeared:1:established:initial appeared:2:established:initial"},
			{table(sock(3, est), sock(3, est), sock(1, est), sock(2, est)), nil, "appeared:3:established"},
		}},
		{"ESTALE closes a connected TCP socket", Options{}, []step{
			{table(sock(1, est)), stale, "appeared:1:established:initial"},
			{table(), stale, "closed:1:established:gone"},
		}},
		{"ENOENT does not close a bound-only TCP socket (no hash the lookup searches)", Options{MissLimit: 2}, []step{
			{table(sock(1, snapshot.StateClose), sock(2, est)), gone, "appeared:1:close:initial appeared:2:established:initial"},
			{table(), gone, "closed:2:established:gone"},
			{table(sock(1, snapshot.StateClose)), gone, ""},
			{table(), gone, ""},
			{table(), gone, "closed:1:close:gone"},
		}},
		{"ENOENT closes an unconnected UDP socket (state close, hashed)", Options{MissLimit: 5}, []step{
			{table(func() snapshot.Socket { s := sock(1, snapshot.StateClose); s.Proto = snapshot.ProtoUDP; return s }()), gone, "appeared:1:close:initial"},
			{table(), gone, "closed:1:close:gone"},
		}},
		{"ESTALE does not close a listener (SO_REUSEPORT siblings)", Options{MissLimit: 2}, []step{
			{table(listener(1)), stale, "appeared:1:listen:initial"},
			{table(), stale, ""},
			{table(), stale, "closed:1:listen:gone"},
		}},
		{"same cookie, new tuple: old identity closes, new appears", Options{}, []step{
			{table(sock(1, snapshot.StateClose)), nil, "appeared:1:close:initial"},
			{table(func() snapshot.Socket { s := sock(1, est); s.Dst = netip.MustParseAddrPort("10.9.9.9:53"); return s }()), nil,
				"closed:1:close:gone appeared:1:established"},
		}},
		{"state filter keeps events touching wanted states", Options{States: 1 << snapshot.StateEstablished}, []step{
			{table(sock(1, snapshot.StateSynSent), listener(2)), gone, ""},
			{table(sock(1, est), listener(2)), gone, "state_changed:1:established<syn_sent"},
			{table(sock(1, snapshot.StateFinWait1)), gone, "state_changed:1:fin_wait1<established"},
			{table(), gone, ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New(tt.opts)
			for i, st := range tt.steps {
				evs, err := d.Diff(st.tab, t0.Add(time.Duration(i)*time.Second), st.prober)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got := summary(evs); got != st.want {
					t.Errorf("step %d:\n got %q\nwant %q", i, got, st.want)
				}
			}
		})
	}
}

func TestDiffClosedCarriesLastRecordAndDuration(t *testing.T) {
	d := New(Options{})
	s := sock(7, snapshot.StateEstablished)
	d.Diff(table(s), t0, nil)
	s.HasInfo = true
	s.Info = snapshot.TCPInfo{Len: 232, BytesSent: 4096, BytesReceived: 100}
	d.Diff(table(s), t0.Add(time.Second), nil)
	p := &fakeProber{answers: map[uint64]snapshot.LookupResult{7: snapshot.LookupGone}}
	evs, err := d.Diff(table(), t0.Add(3*time.Second), p)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Kind != event.Closed {
		t.Fatalf("events = %s", summary(evs))
	}
	if evs[0].Socket.Info.BytesSent != 4096 || evs[0].Socket.Info.BytesReceived != 100 {
		t.Errorf("closed counters = %+v, want the last seen", evs[0].Socket.Info)
	}
	if got := evs[0].Duration(); got != 3*time.Second {
		t.Errorf("duration = %v, want 3s", got)
	}
	if d.Len() != 0 {
		t.Errorf("tracked %d sockets after the close, want 0", d.Len())
	}
}

func TestDiffProberErrorIsReturnedAndNothingCloses(t *testing.T) {
	d := New(Options{MissLimit: 5})
	d.Diff(table(sock(1, snapshot.StateEstablished)), t0, nil)
	p := &fakeProber{err: errors.New("netlink down")}
	evs, err := d.Diff(table(), t0.Add(time.Second), p)
	if err == nil || len(evs) != 0 {
		t.Fatalf("err %v events %s; want the error and no events", err, summary(evs))
	}
	if st := d.Stats(); st.LookupErrors != 1 || st.Unconfirmed != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestDiffOnlySuspectsAreLookedUp(t *testing.T) {
	d := New(Options{})
	var ss []snapshot.Socket
	for i := uint64(1); i <= 100; i++ {
		ss = append(ss, sock(i, snapshot.StateEstablished))
	}
	p := &fakeProber{answers: map[uint64]snapshot.LookupResult{50: snapshot.LookupGone}}
	d.Diff(table(ss...), t0, p)
	d.Diff(table(ss...), t0, p)
	if p.asked != 0 {
		t.Fatalf("steady table asked %d lookups, want 0", p.asked)
	}
	rest := append(append([]snapshot.Socket{}, ss[:49]...), ss[50:]...)
	evs, _ := d.Diff(table(rest...), t0, p)
	if p.asked != 1 || summary(evs) != "closed:50:established:gone" {
		t.Fatalf("asked %d, events %s", p.asked, summary(evs))
	}
}

func TestDiffSteadyStateDoesNotAllocate(t *testing.T) {
	d := New(Options{})
	tab := bigTable(10000)
	d.Diff(tab, t0, nil)
	allocs := testing.AllocsPerRun(20, func() { d.Diff(tab, t0, nil) })
	if allocs != 0 {
		t.Errorf("steady-state Diff allocates %.1f times per call, want 0", allocs)
	}
}

func bigTable(n int) *snapshot.Table {
	tab := &snapshot.Table{}
	for i := 0; i < n; i++ {
		s := sock(uint64(i+1), snapshot.StateEstablished)
		s.Src = netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(i))
		tab.Sockets = append(tab.Sockets, s)
	}
	return tab
}

func BenchmarkDiffSteady(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			d := New(Options{})
			tab := bigTable(n)
			d.Diff(tab, t0, nil)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				d.Diff(tab, t0, nil)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/socket")
		})
	}
}

// BenchmarkDiffSteadyUpdates is BenchmarkDiffSteady with flow updates on:
// none due (the check alone), and due for every connection at every poll
// (the events, discarded by Output).
func BenchmarkDiffSteadyUpdates(b *testing.B) {
	const n = 100000
	for _, c := range []struct {
		name string
		iv   time.Duration
	}{{"none-due", time.Hour}, {"all-due", time.Nanosecond}} {
		b.Run(c.name, func(b *testing.B) {
			events := 0
			d := New(Options{UpdateInterval: c.iv, Output: func(*event.Event) { events++ }})
			tab := bigTable(n)
			now := t0
			d.Diff(tab, now, nil)
			events = 0 // the table's appeared events
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				now = now.Add(time.Second)
				d.Diff(tab, now, nil)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/socket")
			b.ReportMetric(float64(events)/float64(b.N), "events/poll")
		})
	}
}

// BenchmarkDiffChurn replaces 1% of the sockets each poll.
func BenchmarkDiffChurn(b *testing.B) {
	const n = 100000
	d := New(Options{})
	tab := bigTable(n)
	p := &fakeProber{answers: map[uint64]snapshot.LookupResult{}}
	d.Diff(tab, t0, p)
	next := uint64(n + 1)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for j := 0; j < n/100; j++ {
			k := (int(next) * 7919) % n
			p.answers[tab.Sockets[k].Cookie] = snapshot.LookupGone
			tab.Sockets[k].Cookie = next
			next++
		}
		d.Diff(tab, t0, p)
	}
}

func summaryShort(evs []event.Event) string {
	s := summary(evs)
	for _, e := range evs {
		if e.ShortLived {
			return s + " [short]"
		}
	}
	return s
}

func TestDestroyed(t *testing.T) {
	est, tw := snapshot.StateEstablished, snapshot.StateTimeWait
	withCookie := func(s snapshot.Socket, c uint64) snapshot.Socket { s.Cookie = c; return s }
	withInfo := func(s snapshot.Socket) snapshot.Socket { s.HasInfo, s.Info.Len = true, 232; return s }
	gone := &fakeProber{answers: map[uint64]snapshot.LookupResult{1: snapshot.LookupGone, 2: snapshot.LookupGone, 5: snapshot.LookupGone, 7: snapshot.LookupGone, 99: snapshot.LookupGone}}
	type step struct {
		destroy bool
		tab     *snapshot.Table
		want    string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a tracked socket closes at the destroy; its remnant stays quiet", []step{
			{false, table(sock(1, est)), "appeared:1:established:initial"},
			{true, table(sock(1, snapshot.StateClose)), "closed:1:established:destroyed"},
			{false, table(sock(1, tw)), ""},
			{false, table(sock(1, tw)), ""},
			{false, table(), ""},
			{false, table(), ""},
		}},
		{"a socket no poll saw is appeared and closed, short-lived", []step{
			{false, table(), ""},
			{true, table(sock(2, snapshot.StateClose)), "appeared:2:close closed:2:close:destroyed [short]"},
			{false, table(), ""},
		}},
		{"the remnant of a never-dumped socket has a new cookie: matched by tuple", []step{
			{false, table(), ""},
			{true, table(sock(2, snapshot.StateClose)), "appeared:2:close closed:2:close:destroyed [short]"},
			{false, table(withCookie(sock(2, tw), 99)), ""},
			{false, table(withCookie(sock(2, tw), 99)), ""},
			{false, table(withCookie(sock(2, tw), 99)), ""},
			{false, table(), ""},
			{false, table(), ""},
		}},
		{"a remnant dumped before its late notification is held, then silenced", []step{
			{false, table(), ""},
			{false, table(withCookie(sock(2, tw), 99)), ""},
			{true, table(sock(2, snapshot.StateClose)), "appeared:2:close closed:2:close:destroyed [short]"},
			{false, table(withCookie(sock(2, tw), 99)), ""},
			{false, table(), ""},
		}},
		{"a TIME_WAIT socket no notification claims is announced one poll late", []step{
			{false, table(), ""},
			{false, table(sock(5, tw)), ""},
			{false, table(sock(5, tw)), "appeared:5:time_wait"},
			{false, table(), "closed:5:time_wait:gone"},
		}},
		{"a held socket gone by the next poll: appeared, then closed", []step{
			{false, table(), ""},
			{false, table(sock(5, tw)), ""},
			{false, table(), "appeared:5:time_wait closed:5:time_wait:gone"},
		}},
		{"TIME_WAIT sockets at start-up are announced at once", []step{
			{false, table(sock(5, tw)), "appeared:5:time_wait:initial"},
			{false, table(), "closed:5:time_wait:gone"},
		}},
		{"a remnant in the fin_wait2 substate is recognised too", []step{
			{false, table(), ""},
			{true, table(sock(2, snapshot.StateClose)), "appeared:2:close closed:2:close:destroyed [short]"},
			{false, table(withCookie(sock(2, snapshot.StateFinWait2), 99)), ""},
			{false, table(), ""},
		}},
		// Loopback connect reuses a port whose TIME_WAIT is a second old:
		// the new connection has the tuple of one reported closed, and a
		// dump may catch it in fin_wait2. It carries tcp_info, so it is
		// a full socket, not the old one's remnant.
		{"a full socket on a reused tuple is announced, not taken for a remnant", []step{
			{false, table(), ""},
			{true, table(sock(2, snapshot.StateClose)), "appeared:2:close closed:2:close:destroyed [short]"},
			{false, table(withInfo(withCookie(sock(2, snapshot.StateFinWait2), 7))), "appeared:7:fin_wait2"},
			{true, table(withCookie(sock(2, snapshot.StateClose), 7)), "closed:7:fin_wait2:destroyed"},
			{false, table(), ""},
		}},
		{"a full fin_wait2 socket no poll saw is not held", []step{
			{false, table(), ""},
			{false, table(withInfo(sock(7, snapshot.StateFinWait2))), "appeared:7:fin_wait2"},
			{true, table(sock(7, snapshot.StateClose)), "closed:7:fin_wait2:destroyed"},
			{false, table(), ""},
		}},
		{"a held socket whose own destroy comes was real: appeared, then closed", []step{
			{false, table(), ""},
			{false, table(sock(7, snapshot.StateFinWait2)), ""},
			{true, table(sock(7, snapshot.StateClose)), "appeared:7:fin_wait2 closed:7:fin_wait2:destroyed"},
			{false, table(), ""},
		}},
		{"a dump that raced with the destroy does not resurrect it", []step{
			{false, table(), ""},
			{true, table(sock(2, snapshot.StateClose)), "appeared:2:close closed:2:close:destroyed [short]"},
			{false, table(sock(2, est)), ""},
			{false, table(), ""},
		}},
		{"a repeated notification is reported once", []step{
			{false, table(sock(1, est)), "appeared:1:established:initial"},
			{true, table(sock(1, snapshot.StateClose), sock(1, snapshot.StateClose)), "closed:1:established:destroyed"},
			{true, table(sock(3, snapshot.StateClose), sock(3, snapshot.StateClose)), "appeared:3:close closed:3:close:destroyed [short]"},
			{false, table(), ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New(Options{})
			for i, st := range tt.steps {
				now := t0.Add(time.Duration(i) * time.Second)
				var evs []event.Event
				if st.destroy {
					evs = d.Destroyed(st.tab, now)
				} else {
					var err error
					if evs, err = d.Diff(st.tab, now, gone); err != nil {
						t.Fatal(err)
					}
				}
				if got := summaryShort(evs); got != st.want {
					t.Errorf("step %d:\n got %q\nwant %q", i, got, st.want)
				}
			}
			if d.Len() != 0 {
				t.Errorf("%d sockets still tracked at the end", d.Len())
			}
		})
	}
}

func TestDestroyedCarriesFinalCounters(t *testing.T) {
	d := New(Options{})
	s := sock(1, snapshot.StateEstablished)
	s.UID, s.Inode = 1000, 4242
	d.Diff(table(s), t0, nil)
	fin := sock(1, snapshot.StateClose)
	fin.HasInfo, fin.Info = true, snapshot.TCPInfo{Len: 280, BytesSent: 100, BytesReceived: 7}
	evs := d.Destroyed(table(fin), t0.Add(2*time.Second))
	if len(evs) != 1 {
		t.Fatalf("events %s", summary(evs))
	}
	e := evs[0]
	if e.Socket.UID != 1000 || e.Socket.Inode != 4242 || e.Socket.Info.BytesSent != 100 || e.Duration() != 2*time.Second {
		t.Errorf("closed event %+v: want the poll's uid and inode, the destroy's counters, 2s", e)
	}
}

func TestDestroyedAfterAbortiveCloseKeepsPolledCounters(t *testing.T) {
	d := New(Options{})
	s := sock(1, snapshot.StateEstablished)
	s.HasInfo, s.Info = true, snapshot.TCPInfo{Len: 280, BytesSent: 300, BytesAcked: 301, RTT: 50}
	d.Diff(table(s), t0, nil)
	// tcp_disconnect zeroed the counters before the destroy message.
	fin := sock(1, snapshot.StateClose)
	fin.HasInfo, fin.Info = true, snapshot.TCPInfo{Len: 280}
	evs := d.Destroyed(table(fin), t0)
	if len(evs) != 1 || evs[0].Socket.Info.BytesSent != 300 || evs[0].Socket.Info.RTT != 50 {
		t.Fatalf("events %+v: want the polled counters kept", evs)
	}
}

func TestRestoreReportsOnlyWhatChangedWhileDown(t *testing.T) {
	est := snapshot.StateEstablished
	first := New(Options{})
	first.Diff(table(sock(1, est), sock(2, est), sock(3, est)), t0, nil)
	saved := first.Export()
	if len(saved) != 3 {
		t.Fatalf("exported %d sockets", len(saved))
	}

	d := New(Options{})
	d.Restore(saved)
	p := &fakeProber{answers: map[uint64]snapshot.LookupResult{2: snapshot.LookupGone}}
	// While down: 2 closed, 4 opened, 1 and 3 lived on (3 changed state).
	evs, err := d.Diff(table(sock(1, est), sock(3, snapshot.StateCloseWait), sock(4, est)), t0.Add(time.Minute), p)
	if err != nil {
		t.Fatal(err)
	}
	got := summary(evs)
	want := "state_changed:3:close_wait<established appeared:4:established closed:2:established:gone"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	for _, e := range evs {
		if late := e.Kind != event.StateChanged; e.Late != late {
			t.Errorf("%s: late %v, want %v", e.Kind, e.Late, late)
		}
		if e.Kind == event.Closed && e.Duration() != time.Minute {
			t.Errorf("closed duration %v, want the minute since first seen by the previous run", e.Duration())
		}
	}
	evs, _ = d.Diff(table(sock(1, est), sock(3, snapshot.StateCloseWait), sock(4, est), sock(5, est)), t0.Add(2*time.Minute), p)
	if summary(evs) != "appeared:5:established" || evs[0].Late || evs[0].Initial {
		t.Errorf("after the first poll: %s late %v", summary(evs), evs[0].Late)
	}
}

// TestRestoredCloseIsLateWhenConfirmedLater: a restored socket the first
// poll misses, whose lookup cannot answer, is confirmed closed by the
// next poll: still a close from while connlogd was not running (late),
// as no dump listed it since the start.
func TestRestoredCloseIsLateWhenConfirmedLater(t *testing.T) {
	est := snapshot.StateEstablished
	first := New(Options{})
	first.Diff(table(sock(1, est), listener(2)), t0, nil)
	d := New(Options{})
	d.Restore(first.Export())
	p := &fakeProber{} // every lookup undecided
	at := t0.Add(time.Minute)
	var evs []event.Event
	for i := 1; i <= 3; i++ { // MissLimit's default
		evs, _ = d.Diff(table(sock(1, est)), at, p)
		at = at.Add(time.Second)
		if i < 3 && len(evs) != 0 {
			t.Fatalf("poll %d: %s; want nothing until the close is confirmed", i, summary(evs))
		}
	}
	if summary(evs) != "closed:2:listen:gone" || !evs[0].Late {
		t.Fatalf("third poll: %s late %v; want the listener closed, late", summary(evs), len(evs) > 0 && evs[0].Late)
	}
	// Seen alive after the start, a socket's close is not late.
	for range 3 {
		evs, _ = d.Diff(table(), at, p)
		at = at.Add(time.Second)
	}
	if summary(evs) != "closed:1:established:gone" || evs[0].Late {
		t.Errorf("a socket polls saw since the start: %s late %v; want closed, not late", summary(evs), len(evs) > 0 && evs[0].Late)
	}
}

func TestForgetDropsWithoutEvents(t *testing.T) {
	est := snapshot.StateEstablished
	d := New(Options{})
	u := sock(2, est)
	u.Proto = snapshot.ProtoUDP
	d.Diff(table(sock(1, est), u), t0, nil)
	if n := d.Forget(func(s *snapshot.Socket) bool { return s.Proto == snapshot.ProtoUDP }); n != 1 {
		t.Fatalf("forgot %d", n)
	}
	gone := &fakeProber{answers: map[uint64]snapshot.LookupResult{2: snapshot.LookupGone}}
	evs, _ := d.Diff(table(sock(1, est)), t0, gone)
	if len(evs) != 0 || d.Len() != 1 {
		t.Errorf("events %s, tracked %d; want none and 1", summary(evs), d.Len())
	}
	d.SetStates(1 << snapshot.StateListen)
	evs, _ = d.Diff(table(sock(1, est), sock(3, est), listener(4)), t0, gone)
	if summary(evs) != "appeared:4:listen" {
		t.Errorf("after SetStates: %s", summary(evs))
	}
}

func TestCloseAll(t *testing.T) {
	d := New(Options{})
	d.Diff(table(sock(1, snapshot.StateEstablished), listener(2)), t0, nil)
	evs := d.CloseAll(t0, event.ReasonNetnsGone)
	if summary(evs) != "closed:1:established:netns_gone closed:2:listen:netns_gone" || d.Len() != 0 {
		t.Errorf("events %s, tracked %d", summary(evs), d.Len())
	}
	evs, _ = d.Diff(table(), t0, nil)
	if len(evs) != 0 {
		t.Errorf("after CloseAll: %s", summary(evs))
	}
}
