package differ

import (
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// info is a tcp_info as Linux 6.x sends it (280 bytes): a connection
// that acked bytes has an RTT.
func info(acked uint64, segsIn, retrans uint32) snapshot.TCPInfo {
	in := snapshot.TCPInfo{Len: 280, BytesAcked: acked, SegsIn: segsIn, SegsOut: 1 + retrans, TotalRetrans: retrans}
	if acked > 0 {
		in.RTT = 60
	}
	return in
}

// destroyed is a destroy notification of s: state close, with tcp_info.
func destroyed(s snapshot.Socket, in snapshot.TCPInfo) snapshot.Socket {
	s.State = snapshot.StateClose
	s.HasInfo, s.Info = true, in
	return s
}

func closedOf(t *testing.T, evs []event.Event, cookie uint64) *event.Event {
	t.Helper()
	var found *event.Event
	for i := range evs {
		if evs[i].Kind == event.Closed && evs[i].Socket.Cookie == cookie {
			if found != nil {
				t.Fatalf("two closed events for %d: %s", cookie, summary(evs))
			}
			found = &evs[i]
		}
	}
	if found == nil {
		t.Fatalf("no closed event for %d: %s", cookie, summary(evs))
	}
	return found
}

// The numbers are those Linux 6.18 sent on loopback: a refused connect
// (SYN answered by a reset), a timed-out one (tcp_syn_retries 1: the SYN
// sent three times), and a connection that completed.
func TestOutboundAttempts(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   snapshot.TCPInfo
		want event.Failure
	}{
		{"refused", info(0, 1, 0), event.FailedRefused},
		{"timeout", info(0, 0, 2), event.FailedTimeout},
		{"gave up before a retransmission", info(0, 0, 0), event.FailedUnknown},
		{"established then closed", info(2, 3, 0), event.NotFailed},
		{"SYN acknowledged, then reset", info(1, 2, 0), event.NotFailed},
		// An accepted connection that sent nothing and was reset: no
		// byte acknowledged (its SYN-ACK is not counted), but an RTT.
		{"accepted, then reset by the client", snapshot.TCPInfo{Len: 280, RTT: 9, RTTVar: 4, BytesReceived: 5, SegsOut: 1, SegsIn: 4}, event.NotFailed},
		// SO_LINGER 0: tcp_disconnect zeroes the counters.
		{"abortive close", snapshot.TCPInfo{Len: 280, RTTVar: 250000}, event.NotFailed},
		{"tcp_info too old to tell", snapshot.TCPInfo{Len: 104}, event.NotFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Seen by a poll in syn_sent, then destroyed.
			d := New(Options{})
			d.Diff(table(), t0, nil)
			s := sock(1, snapshot.StateSynSent)
			d.Diff(table(s), t0.Add(time.Second), nil)
			evs := d.Destroyed(table(destroyed(s, tt.in)), t0.Add(2*time.Second))
			if ev := closedOf(t, evs, 1); ev.Failure != tt.want || ev.Socket.State != snapshot.StateSynSent {
				t.Errorf("tracked: failure %v state %v, want %v from syn_sent", ev.Failure, ev.Socket.State, tt.want)
			}
			// Never seen by a poll: short-lived.
			d = New(Options{})
			d.Diff(table(), t0, nil)
			evs = d.Destroyed(table(destroyed(sock(2, snapshot.StateSynSent), tt.in)), t0.Add(time.Second))
			if ev := closedOf(t, evs, 2); ev.Failure != tt.want || !ev.ShortLived {
				t.Errorf("short-lived: failure %v, want %v", ev.Failure, tt.want)
			}
		})
	}
}

func TestOutboundFailureNeedsEvidence(t *testing.T) {
	// Seen established: a reset later is no failed attempt, whatever the
	// counters (an abortive close zeroes them).
	d := New(Options{})
	d.Diff(table(), t0, nil)
	s := sock(1, snapshot.StateEstablished)
	d.Diff(table(s), t0.Add(time.Second), nil)
	if ev := closedOf(t, d.Destroyed(table(destroyed(s, info(0, 1, 0))), t0.Add(2*time.Second)), 1); ev.Failure.Failed() {
		t.Errorf("established connection reported failed: %v", ev.Failure)
	}
	// In syn_sent, then gone from the polls: it may have been
	// established and closed in between; no failure without the
	// notification. With notifications on, the close waits for one
	// AttemptWait, then goes without.
	gone := &fakeProber{answers: map[uint64]snapshot.LookupResult{2: snapshot.LookupGone}}
	for _, destroy := range []bool{false, true} {
		d = New(Options{Destroy: destroy})
		d.Diff(table(), t0, nil)
		s = sock(2, snapshot.StateSynSent)
		d.Diff(table(s), t0.Add(time.Second), nil)
		now := t0.Add(2 * time.Second)
		evs, _ := d.Diff(table(), now, gone)
		if destroy {
			for ; len(evs) == 0 && now.Before(t0.Add(time.Minute)); now = now.Add(time.Second) {
				evs, _ = d.Diff(table(), now, gone)
			}
			if waited := now.Sub(t0.Add(2 * time.Second)); waited < AttemptWait {
				t.Errorf("closed after %v, want a wait of %v for the notification", waited, AttemptWait)
			}
		}
		if ev := closedOf(t, evs, 2); ev.Failure.Failed() {
			t.Errorf("destroy %v: poll-found close of syn_sent reported failed: %v", destroy, ev.Failure)
		}
	}
	// Listeners, bound sockets and UDP sockets are no attempts.
	d = New(Options{})
	d.Diff(table(), t0, nil)
	l := listener(3)
	u := sock(4, snapshot.StateEstablished)
	u.Proto = snapshot.ProtoUDP
	evs := d.Destroyed(table(destroyed(l, info(0, 0, 0)), destroyed(u, info(0, 0, 0))), t0.Add(time.Second))
	for _, ev := range evs {
		if ev.Failure.Failed() {
			t.Errorf("%d reported failed", ev.Socket.Cookie)
		}
	}
}

// An inbound handshake: the request socket (syn_recv) is replaced by the
// connection's socket under the same tuple, or vanishes when the client
// never completes it.
func TestInboundAttempts(t *testing.T) {
	req := sock(10, snapshot.StateSynRecv)
	child := req
	child.Cookie, child.State = 11, snapshot.StateEstablished
	gone := &fakeProber{answers: map[uint64]snapshot.LookupResult{10: snapshot.LookupGone}}
	stale := &fakeProber{answers: map[uint64]snapshot.LookupResult{10: snapshot.LookupStale}}
	for _, tt := range []struct {
		name    string
		destroy bool
		next    func(d *Differ) *snapshot.Table
		prober  Prober
		want    event.Failure
	}{
		{"never completed", true, func(*Differ) *snapshot.Table { return table() }, gone, event.FailedUnknown},
		{"completed: the connection holds the tuple", true, func(*Differ) *snapshot.Table { return table(child) }, gone, event.NotFailed},
		{"completed: the lookup says another socket holds it", true, func(*Differ) *snapshot.Table { return table() }, stale, event.NotFailed},
		{"completed and already closed", true, func(d *Differ) *snapshot.Table {
			d.Destroyed(table(destroyed(child, info(1, 3, 0))), t0.Add(1500*time.Millisecond))
			return table()
		}, gone, event.NotFailed},
		{"without destroy notifications nothing proves it", false, func(*Differ) *snapshot.Table { return table() }, gone, event.NotFailed},
		{"lookup could not answer", true, func(*Differ) *snapshot.Table { return table() }, nil, event.NotFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := New(Options{Destroy: tt.destroy, MissLimit: 1})
			d.Diff(table(), t0, nil)
			d.Diff(table(req), t0.Add(time.Second), nil)
			evs, _ := d.Diff(tt.next(d), t0.Add(2*time.Second), tt.prober)
			if ev := closedOf(t, evs, 10); ev.Failure != tt.want {
				t.Errorf("failure %v, want %v", ev.Failure, tt.want)
			}
		})
	}
}

func TestFlowUpdates(t *testing.T) {
	est := sock(1, snapshot.StateEstablished)
	lis := listener(2)
	udp := sock(3, snapshot.StateEstablished)
	udp.Proto = snapshot.ProtoUDP
	unconnected := listener(4)
	unconnected.Proto, unconnected.State = snapshot.ProtoUDP, snapshot.StateClose
	tw := sock(5, snapshot.StateTimeWait)
	syn := sock(6, snapshot.StateSynSent)
	withCounters := func(s snapshot.Socket, n uint64) snapshot.Socket {
		s.HasInfo, s.Info = true, snapshot.TCPInfo{Len: 280, BytesAcked: n, BytesReceived: n, SegsIn: uint32(n), SegsOut: uint32(n)}
		return s
	}

	// Off by default: no updated event ever.
	d := New(Options{})
	for i := range 10 {
		evs, _ := d.Diff(table(est, lis, udp), t0.Add(time.Duration(i)*time.Second), nil)
		for _, ev := range evs {
			if ev.Kind == event.Updated {
				t.Fatalf("update with the default options: %s", summary(evs))
			}
		}
	}

	d = New(Options{UpdateInterval: 2 * time.Second})
	counts := map[uint64]int{}
	var last uint64
	for i := range 11 { // polls every second for 10 s
		now := t0.Add(time.Duration(i) * time.Second)
		e := withCounters(est, uint64(100*i))
		evs, _ := d.Diff(table(e, lis, udp, unconnected, tw, syn), now, nil)
		for _, ev := range evs {
			if ev.Kind != event.Updated {
				continue
			}
			counts[ev.Socket.Cookie]++
			if ev.Duration() != now.Sub(t0) {
				t.Errorf("updated %d at %v: duration %v, want %v", ev.Socket.Cookie, now, ev.Duration(), now.Sub(t0))
			}
			if ev.Socket.Cookie == 1 {
				if !ev.Socket.HasInfo || ev.Socket.Info.BytesAcked < last {
					t.Errorf("counters %+v after %d", ev.Socket.Info, last)
				}
				last = ev.Socket.Info.BytesAcked
			}
		}
	}
	// First seen at 0: updates at 2, 4, 6, 8, 10.
	if counts[1] != 5 || counts[3] != 5 {
		t.Errorf("updates per connection %v, want 5 for the TCP and the connected UDP one", counts)
	}
	if counts[2]+counts[4]+counts[5]+counts[6] != 0 {
		t.Errorf("updates for listeners, remnants or attempts: %v", counts)
	}
	if last != 1000 {
		t.Errorf("last update carried %d, want the last poll's 1000", last)
	}

	// Another event restarts the count.
	d = New(Options{UpdateInterval: 2 * time.Second})
	d.Diff(table(est), t0, nil)
	cw := est
	cw.State = snapshot.StateCloseWait
	if evs, _ := d.Diff(table(cw), t0.Add(1500*time.Millisecond), nil); summary(evs) != "state_changed:1:close_wait<established" {
		t.Fatalf("got %s", summary(evs))
	}
	if evs, _ := d.Diff(table(cw), t0.Add(3*time.Second), nil); len(evs) != 0 {
		t.Errorf("update 1.5 s after a state change: %s", summary(evs))
	}
	if evs, _ := d.Diff(table(cw), t0.Add(3500*time.Millisecond), nil); summary(evs) != "updated:1:close_wait" {
		t.Errorf("got %s, want an update 2 s after the state change", summary(evs))
	}

	// A restored socket counts from the first poll after the restart.
	d = New(Options{UpdateInterval: 2 * time.Second})
	d.Restore([]Tracked{{Socket: est, FirstSeen: t0.Add(-time.Hour)}})
	d.Diff(table(est), t0, nil)
	if evs, _ := d.Diff(table(est), t0.Add(time.Second), nil); len(evs) != 0 {
		t.Errorf("restored: %s", summary(evs))
	}
	evs, _ := d.Diff(table(est), t0.Add(2*time.Second), nil)
	if summary(evs) != "updated:1:established" || evs[0].Duration() != time.Hour+2*time.Second {
		t.Errorf("restored: %s", summary(evs))
	}
}

// A failed connect leaves the kernel's tables before its notification
// comes (when the application closes the socket): the close waits for it,
// and carries its outcome.
func TestAttemptWaitsForItsNotification(t *testing.T) {
	d := New(Options{Destroy: true})
	d.Diff(table(), t0, nil)
	s := sock(1, snapshot.StateSynSent)
	d.Diff(table(s), t0.Add(time.Second), nil)
	gone := &fakeProber{answers: map[uint64]snapshot.LookupResult{1: snapshot.LookupGone}}
	for i := 2; i < 6; i++ {
		if evs, _ := d.Diff(table(), t0.Add(time.Duration(i)*time.Second), gone); len(evs) != 0 {
			t.Fatalf("closed before its notification: %s", summary(evs))
		}
	}
	evs := d.Destroyed(table(destroyed(s, info(0, 0, 2))), t0.Add(6500*time.Millisecond))
	if ev := closedOf(t, evs, 1); ev.Failure != event.FailedTimeout || ev.Reason != event.ReasonDestroyed {
		t.Errorf("failure %v reason %s", ev.Failure, ev.Reason)
	}
	if evs, _ := d.Diff(table(), t0.Add(7*time.Second), gone); len(evs) != 0 {
		t.Errorf("reported again: %s", summary(evs))
	}
}

// A socket a poll reported closed before its destroy notification came is
// not reported again, as short-lived, by the notification.
func TestLateNotificationOfAPollClose(t *testing.T) {
	d := New(Options{Destroy: true})
	d.Diff(table(), t0, nil)
	s := sock(1, snapshot.StateEstablished)
	d.Diff(table(s), t0.Add(time.Second), nil)
	gone := &fakeProber{answers: map[uint64]snapshot.LookupResult{1: snapshot.LookupGone}}
	evs, _ := d.Diff(table(), t0.Add(2*time.Second), gone)
	closedOf(t, evs, 1)
	if evs := d.Destroyed(table(destroyed(s, info(10, 5, 0))), t0.Add(9*time.Second)); len(evs) != 0 {
		t.Errorf("late notification reported again: %s", summary(evs))
	}
	// Remembered for a while only: the map does not grow for ever.
	d.Diff(table(), t0.Add(2*time.Second+lateDestroyWindow+time.Second), nil)
	s2 := sock(2, snapshot.StateEstablished)
	d.Diff(table(s2), t0.Add(3*lateDestroyWindow), nil)
	d.Diff(table(), t0.Add(3*lateDestroyWindow+time.Second), &fakeProber{answers: map[uint64]snapshot.LookupResult{2: snapshot.LookupGone}})
	d.Diff(table(), t0.Add(5*lateDestroyWindow), nil)
	if len(d.closedCookies) != 0 {
		t.Errorf("%d cookies remembered after the window", len(d.closedCookies))
	}
}
