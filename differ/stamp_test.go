package differ

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/internal/heaptest"
	"github.com/connlogd/connlogd/snapshot"
)

// clockProber moves a clock while it answers, as a lookup takes time.
type clockProber struct {
	fakeProber
	now  *time.Time
	cost time.Duration
}

func (c *clockProber) Lookup(keys []snapshot.Key, out []snapshot.LookupResult) error {
	*c.now = c.now.Add(c.cost)
	return c.fakeProber.Lookup(keys, out)
}

// TestClosesStampedAfterLookups: appeared and state_changed take the
// diff's time (the dump's end); closes confirmed by a lookup take the
// Clock's time once the lookups answered, since the socket may have been
// alive, skipped by the dump, until then.
func TestClosesStampedAfterLookups(t *testing.T) {
	now := t0
	d := New(Options{Clock: func() time.Time { return now }})
	d.Diff(table(sock(1, snapshot.StateEstablished), sock(2, snapshot.StateEstablished)), t0, nil)
	now = t0.Add(time.Second)
	p := &clockProber{fakeProber: fakeProber{answers: map[uint64]snapshot.LookupResult{1: snapshot.LookupGone}}, now: &now, cost: 30 * time.Millisecond}
	evs, err := d.Diff(table(sock(2, snapshot.StateCloseWait), sock(3, snapshot.StateEstablished)), now, p)
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(evs); got != "state_changed:2:close_wait<established appeared:3:established closed:1:established:gone" {
		t.Fatalf("events %s", got)
	}
	dumpEnd := t0.Add(time.Second)
	for _, ev := range evs {
		want := dumpEnd
		if ev.Kind == event.Closed {
			want = dumpEnd.Add(30 * time.Millisecond)
		}
		if !ev.Time.Equal(want) {
			t.Errorf("%s:%d stamped %v; want %v", ev.Kind, ev.Socket.Cookie, ev.Time, want)
		}
	}
}

// TestReportedCloseForgottenWithoutLookup: a socket whose close a
// notification reported, missing from a later dump (its TIME_WAIT
// remnant not asked for, or gone), is forgotten without a lookup, and
// the remnant, should a dump return it after all, stays silent.
func TestReportedCloseForgottenWithoutLookup(t *testing.T) {
	d := New(Options{})
	a := sock(1, snapshot.StateEstablished)
	d.Diff(table(a, listener(9)), t0, nil)
	if evs := d.Destroyed(table(sock(1, snapshot.StateClose)), t0); summary(evs) != "closed:1:established:destroyed" {
		t.Fatalf("destroyed: %s", summary(evs))
	}
	p := &fakeProber{answers: map[uint64]snapshot.LookupResult{1: snapshot.LookupAlive}}
	evs, _ := d.Diff(table(listener(9)), t0.Add(time.Second), p)
	if len(evs) != 0 || p.asked != 0 {
		t.Fatalf("events %s, %d lookups; want none", summary(evs), p.asked)
	}
	if d.Len() != 1 {
		t.Errorf("%d tracked; want the listener only", d.Len())
	}
	evs, _ = d.Diff(table(listener(9), sock(1, snapshot.StateTimeWait)), t0.Add(2*time.Second), p)
	evs2, _ := d.Diff(table(listener(9), sock(1, snapshot.StateTimeWait)), t0.Add(3*time.Second), p)
	if len(evs)+len(evs2) != 0 {
		t.Errorf("the remnant came back as %s %s; want silence", summary(evs), summary(evs2))
	}
}

// TestDestroyedBetweenSteps: notifications handed over between the steps
// of a diff are reported at once, and the diff's end neither repeats nor
// loses them.
func TestDestroyedBetweenSteps(t *testing.T) {
	var out []event.Event
	d := New(Options{Output: func(ev *event.Event) { out = append(out, *ev) }})
	est := snapshot.StateEstablished
	d.Diff(table(sock(1, est), sock(2, est), sock(3, est)), t0, nil)
	out = nil
	// 2 closes while the next table (which still lists it) is compared;
	// 4 opened and closed between two polls, and the table lists it too.
	d.Begin()
	d.Step(table(sock(1, est)), t0.Add(time.Second))
	d.Destroyed(table(sock(2, snapshot.StateClose), sock(4, snapshot.StateClose)), t0.Add(time.Second+time.Millisecond))
	d.Step(table(sock(2, est), sock(3, snapshot.StateCloseWait), sock(4, est)), t0.Add(time.Second+2*time.Millisecond))
	p := &fakeProber{answers: map[uint64]snapshot.LookupResult{}}
	if _, err := d.Finish(t0.Add(time.Second+2*time.Millisecond), p); err != nil {
		t.Fatal(err)
	}
	want := "closed:2:established:destroyed appeared:4:close closed:4:close:destroyed state_changed:3:close_wait<established"
	if got := summary(out); got != want {
		t.Errorf("events\n got %s\nwant %s", got, want)
	}
	out = nil
	d.Diff(table(sock(1, est), sock(3, snapshot.StateCloseWait)), t0.Add(2*time.Second), p)
	if len(out) != 0 || p.asked != 0 {
		t.Errorf("next poll: %s, %d lookups; want nothing", summary(out), p.asked)
	}
}

// BenchmarkDestroyedShortLived: connections that opened and closed
// between polls, 1,024 notifications a batch, a poll every 8 batches
// (the dead-socket maps' expiry included), per socket.
func BenchmarkDestroyedShortLived(b *testing.B) {
	d := New(Options{Output: func(*event.Event) {}})
	tab := table(listener(1))
	d.Diff(tab, t0, nil)
	batch := &snapshot.Table{}
	next := uint64(10)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		batch.Reset()
		for range 1024 {
			s := batch.Append()
			*s = sock(next, snapshot.StateClose)
			s.Src = netip.AddrPortFrom(s.Src.Addr(), uint16(next))
			next++
		}
		d.Destroyed(batch, t0)
		if i%8 == 7 {
			d.Diff(tab, t0, nil)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1024, "ns/socket")
}

// BenchmarkMemory reports where the differ's bytes go: per tracked socket
// (its record, the cookie index, the dump-order slices) and per dead-socket
// entry (a short-lived socket's cookie and flow hash, kept three generations).
func BenchmarkMemory(b *testing.B) {
	const n = 100000
	for b.Loop() {
		var d *Differ
		tab := bigTable(n)
		batch := &snapshot.Table{}
		for i := range n {
			s := batch.Append()
			*s = sock(uint64(10*n+i), snapshot.StateClose)
			s.Src = netip.AddrPortFrom(s.Src.Addr(), uint16(i))
		}
		base := heaptest.After(func() {})
		tracked := heaptest.After(func() {
			d = New(Options{Output: func(*event.Event) {}})
			d.Diff(tab, t0, nil)
		})
		dead := heaptest.After(func() { d.Destroyed(batch, t0) })
		runtime.KeepAlive(tab)
		runtime.KeepAlive(batch)
		b.ReportMetric(float64(tracked-base)/n, "B/tracked")
		b.ReportMetric(float64(dead-tracked)/n, "B/dead")
		runtime.KeepAlive(d)
	}
}

// TestCompactAfterBurst: once a burst of sockets is gone, the tracker
// shrinks to the survivors, which keep being diffed as before.
func TestCompactAfterBurst(t *testing.T) {
	d := New(Options{})
	est := snapshot.StateEstablished
	keep := []snapshot.Socket{listener(1), sock(2, est), sock(3, est)}
	burst := append([]snapshot.Socket{}, keep...)
	for i := range 3 * compactMin {
		burst = append(burst, sock(uint64(100+i), snapshot.StateTimeWait))
	}
	d.Diff(table(burst...), t0, nil)
	gone := &fakeProber{answers: map[uint64]snapshot.LookupResult{}}
	for i := range 3 * compactMin {
		gone.answers[uint64(100+i)] = snapshot.LookupGone
	}
	evs, _ := d.Diff(table(keep...), t0.Add(time.Second), gone)
	if len(evs) != 3*compactMin {
		t.Fatalf("%d events; want the burst's %d closes", len(evs), 3*compactMin)
	}
	if d.Len() != 3 || cap(d.conns) > 16 || len(d.free) != 0 {
		t.Fatalf("after the burst: %d tracked, %d slots, %d free; want 3 in a small tracker", d.Len(), cap(d.conns), len(d.free))
	}
	gone.answers[2] = snapshot.LookupGone
	evs, _ = d.Diff(table(listener(1), sock(3, snapshot.StateCloseWait), sock(4, est)), t0.Add(2*time.Second), gone)
	if got := summary(evs); got != "state_changed:3:close_wait<established appeared:4:established closed:2:established:gone" {
		t.Errorf("after compaction: %s", got)
	}
	evs, _ = d.Diff(table(listener(1), sock(3, snapshot.StateCloseWait), sock(4, est)), t0.Add(3*time.Second), gone)
	if len(evs) != 0 || gone.asked != 3*compactMin+1 {
		t.Errorf("steady after compaction: %s, %d lookups in all", summary(evs), gone.asked)
	}
}

// TestLookupTimeWait: a tracked connection that a lookup finds only as
// its TIME_WAIT remnant is closed at the second such poll when the dumps
// leave TIME_WAIT out, and kept (the next dump will list it) when they
// do not.
func TestLookupTimeWait(t *testing.T) {
	est := snapshot.StateEstablished
	p := &fakeProber{answers: map[uint64]snapshot.LookupResult{1: snapshot.LookupTimeWait}}
	for _, dumped := range []bool{false, true} {
		d := New(Options{})
		d.SetTimeWaitDumped(dumped)
		d.Diff(table(sock(1, est), listener(2)), t0, p)
		var got []string
		for i := 1; i <= 3; i++ {
			evs, _ := d.Diff(table(listener(2)), t0.Add(time.Duration(i)*time.Second), p)
			got = append(got, summary(evs))
		}
		want := []string{"", "closed:1:established:gone", ""}
		if dumped {
			want = []string{"", "", ""}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("TIME_WAIT dumped %v: polls wrote %q; want %q", dumped, got, want)
		}
	}
}

// TestOneCookieTwoTuplesInOneDump: a dump that lists one socket twice
// under two tuples (it moved while the kernel walked its hashes) tracks
// it once: one appeared, and one close when it goes.
func TestOneCookieTwoTuplesInOneDump(t *testing.T) {
	d := New(Options{})
	a := sock(1, snapshot.StateFinWait1)
	b := a
	b.Src = netip.AddrPortFrom(netip.IPv4Unspecified(), a.Src.Port())
	evs, _ := d.Diff(table(listener(9), a, b), t0, nil)
	if got := summary(evs); got != "appeared:9:listen:initial appeared:1:fin_wait1:initial" {
		t.Errorf("first dump: %s", got)
	}
	if d.Len() != 2 {
		t.Errorf("%d tracked; want 2", d.Len())
	}
	p := &fakeProber{answers: map[uint64]snapshot.LookupResult{1: snapshot.LookupGone}}
	evs, _ = d.Diff(table(listener(9)), t0.Add(time.Second), p)
	if got := summary(evs); got != "closed:1:fin_wait1:gone" {
		t.Errorf("after it went: %s", got)
	}
}

// TestRemnantsWhenTimeWaitLeftOut: with TIME_WAIT left out of dumps, a
// remnant a dump still lists (fin_wait2 substate, no tcp_info) that no
// poll saw the connection of is never announced; its connection's
// notification reports it, under its own cookie or the remnant's. A full
// socket in fin_wait2 (with tcp_info) is announced at once.
func TestRemnantsWhenTimeWaitLeftOut(t *testing.T) {
	d := New(Options{})
	d.SetTimeWaitDumped(false)
	d.Diff(table(listener(9)), t0, nil)
	r1 := sock(1, snapshot.StateFinWait2) // remnant, own cookie
	r2 := sock(2, snapshot.StateFinWait2) // remnant sharing its connection's cookie
	full := sock(3, snapshot.StateFinWait2)
	full.HasInfo = true
	p := &fakeProber{answers: map[uint64]snapshot.LookupResult{}}
	var got []string
	evs, _ := d.Diff(table(listener(9), r1, r2, full), t0.Add(time.Second), p)
	got = append(got, summary(evs))
	evs, _ = d.Diff(table(listener(9), r1, r2, full), t0.Add(2*time.Second), p)
	got = append(got, summary(evs))
	conn1 := sock(11, snapshot.StateClose)
	conn1.Src = r1.Src
	evs = d.Destroyed(table(conn1, sock(2, snapshot.StateClose)), t0.Add(3*time.Second))
	short := 0
	for _, ev := range evs {
		if ev.ShortLived {
			short++
		}
	}
	got = append(got, fmt.Sprintf("%s (%d short_lived)", summary(evs), short))
	evs, _ = d.Diff(table(listener(9), full), t0.Add(4*time.Second), p)
	got = append(got, summary(evs))
	want := []string{"appeared:3:fin_wait2", "", "appeared:11:close closed:11:close:destroyed appeared:2:close closed:2:close:destroyed (4 short_lived)", ""}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events\n got %q\nwant %q", got, want)
	}
}

// TestHeldRemnantDestroyedUnderItsCookie: a held socket whose own
// notification comes is announced, then closed; never closed alone.
func TestHeldRemnantDestroyedUnderItsCookie(t *testing.T) {
	d := New(Options{})
	d.Diff(table(listener(9)), t0, nil)
	d.Diff(table(listener(9), sock(1, snapshot.StateFinWait2)), t0.Add(time.Second), nil)
	evs := d.Destroyed(table(sock(1, snapshot.StateClose)), t0.Add(2*time.Second))
	if got := summary(evs); got != "appeared:1:fin_wait2 closed:1:fin_wait2:destroyed" {
		t.Errorf("events %s", got)
	}
}
