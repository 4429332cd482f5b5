package audit

import (
	"net/netip"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

var t0 = time.Unix(1796595971, 0)

func owner(pid int) *event.Process {
	return &event.Process{PID: pid, Comm: "c", Exe: "/bin/c"}
}

func sighting(op Op, pid int32, peer string, at time.Duration, inode uint32) Sighting {
	return Sighting{Op: op, Time: t0.Add(at), Peer: netip.MustParseAddrPort(peer), FSUID: 1000, PID: pid, FD: 3, Netns: 7, Inode: inode, Owner: owner(int(pid))}
}

// sockEv is an event of a socket from src to dst.
func sockEv(kind event.Kind, cookie uint64, src, dst string, at time.Duration, inode uint32) event.Event {
	return event.Event{Kind: kind, Time: t0.Add(at), Socket: snapshot.Socket{
		Key:   snapshot.Key{Proto: snapshot.ProtoTCP, Family: snapshot.FamilyIPv4, Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst), Cookie: cookie},
		UID:   1000,
		Inode: inode,
	}}
}

func pidOf(ev *event.Event) int {
	if ev.Process == nil {
		return 0
	}
	return ev.Process.PID
}

// Short-lived processes one after another: when the first one's socket
// is reported destroyed, the next one has already connected to the same
// server, but still holds its socket.
func TestJoinSequentialShortLived(t *testing.T) {
	held := map[int32]bool{}
	j := NewJoiner(10*time.Second, func(pid, fd int32, inode uint32) bool { return held[pid] })
	const srv = "10.0.0.1:80"
	for k := range int32(30) {
		pid := 100 + k
		j.Add(sighting(OpConnect, pid, srv, time.Duration(k)*100*time.Millisecond, uint32(5000+k)))
		held[pid] = true
		if k == 0 {
			continue
		}
		// The previous process closed and exited; this one connected.
		held[pid-1] = false
		ap := sockEv(event.Appeared, uint64(k), "10.0.0.2:4000", srv, time.Duration(k)*100*time.Millisecond+50*time.Millisecond, 0)
		ap.ShortLived = true
		cl := ap
		cl.Kind = event.Closed
		j.Annotate(&ap, 7)
		j.Annotate(&cl, 7)
		if pidOf(&ap) != int(pid-1) || pidOf(&cl) != int(pid-1) {
			t.Fatalf("socket %d: owners %d, %d, want %d", k, pidOf(&ap), pidOf(&cl), pid-1)
		}
	}
	if st := j.Stats(); st.Matched != 29 || st.Ambiguous != 0 {
		t.Errorf("stats %+v", st)
	}
	if len(j.byCookie) != 0 {
		t.Errorf("%d cookies remembered after their closed events", len(j.byCookie))
	}
}

// Two processes connected to the same server and neither socket is known
// to be held: no owner, never a guess.
func TestJoinAmbiguous(t *testing.T) {
	j := NewJoiner(10*time.Second, nil)
	j.Add(sighting(OpConnect, 1, "10.0.0.1:80", 0, 0))
	j.Add(sighting(OpConnect, 2, "10.0.0.1:80", 10*time.Millisecond, 0))
	ev := sockEv(event.Closed, 1, "10.0.0.2:4000", "10.0.0.1:80", time.Second, 0)
	j.Annotate(&ev, 7)
	if ev.Process != nil {
		t.Errorf("owner %d from two processes' calls", ev.Process.PID)
	}
	if st := j.Stats(); st.Ambiguous != 1 || st.Matched != 0 {
		t.Errorf("stats %+v", st)
	}
	// Two calls of one process: the owner is that process either way.
	j = NewJoiner(10*time.Second, nil)
	a, b := sighting(OpConnect, 1, "10.0.0.1:80", 0, 0), sighting(OpConnect, 1, "10.0.0.1:80", time.Millisecond, 0)
	b.Owner = owner(1) // equal, not the same pointer
	j.Add(a)
	j.Add(b)
	ev = sockEv(event.Closed, 1, "10.0.0.2:4000", "10.0.0.1:80", time.Second, 0)
	j.Annotate(&ev, 7)
	if pidOf(&ev) != 1 || j.Pending() != 1 {
		t.Errorf("owner %d, %d pending", pidOf(&ev), j.Pending())
	}
}

func TestJoinCriteria(t *testing.T) {
	base := sighting(OpConnect, 1, "10.0.0.1:80", 0, 0)
	ev := func() event.Event {
		e := sockEv(event.Closed, 1, "10.0.0.2:4000", "10.0.0.1:80", time.Second, 0)
		e.Direction = event.DirectionOutbound
		return e
	}
	for _, tc := range []struct {
		name  string
		mod   func(*Sighting, *event.Event, *uint64)
		match bool
	}{
		{"all fit", func(*Sighting, *event.Event, *uint64) {}, true},
		{"other port", func(s *Sighting, _ *event.Event, _ *uint64) { s.Peer = netip.MustParseAddrPort("10.0.0.1:81") }, false},
		{"other address", func(s *Sighting, _ *event.Event, _ *uint64) { s.Peer = netip.MustParseAddrPort("10.0.0.3:80") }, false},
		{"mapped address", func(s *Sighting, e *event.Event, _ *uint64) {
			e.Socket.Dst = netip.MustParseAddrPort("[::ffff:10.0.0.1]:80")
		}, true},
		{"other uid", func(s *Sighting, _ *event.Event, _ *uint64) { s.FSUID = 0 }, false},
		{"other netns", func(_ *Sighting, _ *event.Event, ns *uint64) { *ns = 8 }, false},
		{"netns unknown", func(s *Sighting, _ *event.Event, ns *uint64) { s.Netns = 0; *ns = 8 }, true},
		{"call after the event", func(s *Sighting, _ *event.Event, _ *uint64) { s.Time = t0.Add(3 * time.Second) }, false},
		{"call older than keep", func(s *Sighting, _ *event.Event, _ *uint64) { s.Time = t0.Add(-20 * time.Second) }, false},
		{"call after the socket was first seen", func(s *Sighting, e *event.Event, _ *uint64) {
			e.FirstSeen = t0.Add(-5 * time.Second)
			e.Time = t0.Add(5 * time.Second)
		}, false},
		{"accept for an outbound socket", func(s *Sighting, _ *event.Event, _ *uint64) { s.Op = OpAccept }, false},
		{"accept, short-lived socket guessed outbound", func(s *Sighting, e *event.Event, _ *uint64) { s.Op = OpAccept; e.ShortLived = true }, true},
		{"accept, direction unknown", func(s *Sighting, e *event.Event, _ *uint64) { s.Op = OpAccept; e.Direction = 0 }, true},
		{"listener", func(s *Sighting, e *event.Event, _ *uint64) { e.Direction = event.DirectionListen }, false},
		{"other inode", func(s *Sighting, e *event.Event, _ *uint64) { s.Inode = 5; e.Socket.Inode = 6 }, false},
		{"same inode", func(s *Sighting, e *event.Event, _ *uint64) { s.Inode = 5; e.Socket.Inode = 5 }, true},
		{"still held", func(s *Sighting, e *event.Event, _ *uint64) { s.Inode = 9; s.PID = 42 }, false},
		{"gap", func(s *Sighting, e *event.Event, _ *uint64) { e.Kind = event.Gap }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, e, ns := base, ev(), uint64(7)
			tc.mod(&s, &e, &ns)
			j := NewJoiner(10*time.Second, func(pid, fd int32, inode uint32) bool { return pid == 42 })
			j.Add(s)
			j.Annotate(&e, ns)
			if got := e.Process != nil; got != tc.match {
				t.Errorf("matched %v, want %v", got, tc.match)
			}
		})
	}
}

// The accepting side: the accepted socket's peer is the address accept
// returned, so even a server accepting many clients at once is exact.
func TestJoinAccept(t *testing.T) {
	j := NewJoiner(10*time.Second, nil)
	for k := range 10 {
		j.Add(sighting(OpAccept, int32(200+k), netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), uint16(4000+k)).String(), 0, 0))
	}
	for k := range 10 {
		ev := sockEv(event.Closed, uint64(k+1), "10.0.0.1:80", netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), uint16(4000+k)).String(), time.Second, 0)
		if k%2 == 0 {
			ev.Direction = event.DirectionInbound
		}
		j.Annotate(&ev, 7)
		if ev.Direction != event.DirectionInbound {
			t.Errorf("accepted socket %d: direction %v", k, ev.Direction)
		}
		if pidOf(&ev) != 200+k {
			t.Errorf("accepted socket %d: owner %d", k, pidOf(&ev))
		}
	}
}

func TestJoinExpire(t *testing.T) {
	j := NewJoiner(10*time.Second, nil)
	j.Add(sighting(OpConnect, 1, "10.0.0.1:80", 0, 0))
	j.Add(sighting(OpConnect, 2, "10.0.0.1:80", 5*time.Second, 0))
	j.Expire(t0.Add(12 * time.Second))
	if j.Pending() != 1 || j.Stats().Expired != 1 {
		t.Errorf("pending %d, stats %+v", j.Pending(), j.Stats())
	}
}

func TestSight(t *testing.T) {
	ok := Call{Op: OpConnect, Peer: netip.MustParseAddrPort("[::ffff:10.0.0.1]:80"), Success: true}
	if s, good := Sight(&ok); !good || s.Peer != netip.MustParseAddrPort("10.0.0.1:80") {
		t.Errorf("Sight = %+v, %v", s, good)
	}
	for _, c := range []Call{
		{Op: OpConnect, Success: true},             // no inet peer
		{Op: OpConnect, Peer: ok.Peer, Exit: -114}, // EALREADY: the same socket again
		{Op: OpConnect, Peer: ok.Peer, Exit: -106}, // EISCONN
		{Op: OpAccept, Peer: ok.Peer, Exit: -11},   // EAGAIN
		{Op: OpNone, Peer: ok.Peer, Success: true},
	} {
		if _, good := Sight(&c); good {
			t.Errorf("Sight(%+v) kept", c)
		}
	}
	for _, e := range []int64{-115, -111, -110} {
		c := Call{Op: OpConnect, Peer: ok.Peer, Exit: e}
		if _, good := Sight(&c); !good {
			t.Errorf("connect failing with %d dropped", e)
		}
	}
}

// A socket reported destroyed before the record of its connect is read:
// held, and released with its owner once every record up to its time is
// read (a call of another process read earlier must not take it);
// released without one when the records have passed its time, or its
// grace ran out.
func TestJoinHoldRelease(t *testing.T) {
	j := NewJoiner(10*time.Second, nil)
	ap := sockEv(event.Appeared, 1, "10.0.0.2:4000", "10.0.0.1:80", time.Second, 0)
	ap.ShortLived = true
	cl := ap
	cl.Kind = event.Closed
	var out []event.Event
	emit := func(ev *event.Event) { out = append(out, *ev) }
	for _, ev := range []*event.Event{&ap, &cl} {
		if !j.Attribute(ev, 7, ev.Time, 500*time.Millisecond) {
			t.Fatal("not held")
		}
	}
	j.Release(t0.Add(1100*time.Millisecond), false, emit)
	if len(out) != 0 {
		t.Fatalf("released before its record: %+v", out)
	}
	j.Add(sighting(OpConnect, 9, "10.0.0.1:80", 900*time.Millisecond, 0))
	j.Release(t0.Add(1150*time.Millisecond), false, emit)
	if len(out) != 0 {
		t.Fatalf("released before every call up to the socket's was read: %+v", out)
	}
	j.Seen(t0.Add(1010 * time.Millisecond)) // a record made after the event
	j.Release(t0.Add(1200*time.Millisecond), false, emit)
	if len(out) != 2 || pidOf(&out[0]) != 9 || pidOf(&out[1]) != 9 || out[0].Kind != event.Appeared {
		t.Fatalf("released %+v", out)
	}

	// No record ever comes: released at the grace's end without owner...
	out = nil
	ev := sockEv(event.Closed, 2, "10.0.0.2:4001", "10.0.0.1:80", 1500*time.Millisecond, 0)
	ev.ShortLived = true
	j.Attribute(&ev, 7, ev.Time, 500*time.Millisecond)
	j.Release(t0.Add(1900*time.Millisecond), false, emit)
	if len(out) != 0 {
		t.Fatal("released before its grace ran out")
	}
	j.Release(t0.Add(2100*time.Millisecond), false, emit)
	if len(out) != 1 || out[0].Process != nil {
		t.Fatalf("released %+v", out)
	}
	// ...or as soon as a record stamped after it was read.
	out = nil
	ev = sockEv(event.Closed, 3, "10.0.0.2:4002", "10.0.0.1:80", 3*time.Second, 0)
	ev.ShortLived = true
	if !j.Attribute(&ev, 7, ev.Time, 500*time.Millisecond) {
		t.Fatal("not held")
	}
	j.Seen(t0.Add(3001 * time.Millisecond))
	j.Release(t0.Add(3002*time.Millisecond), false, emit)
	if len(out) != 1 {
		t.Fatalf("records past its time read, still held: %d", j.Held())
	}
	if _, ok := j.NextRelease(); ok {
		t.Error("NextRelease with nothing held")
	}

	// An event its caller got late (a loop held up) keeps its own time,
	// and waits the whole grace from when it was got.
	out = nil
	ev = sockEv(event.Closed, 4, "10.0.0.2:4003", "10.0.0.1:80", 4*time.Second, 0)
	ev.ShortLived = true
	if !j.Attribute(&ev, 7, t0.Add(10*time.Second), 500*time.Millisecond) {
		t.Fatal("not held")
	}
	j.Release(t0.Add(10400*time.Millisecond), false, emit)
	if len(out) != 0 {
		t.Fatal("a late event released before its grace from when it was got ran out")
	}
	j.Release(t0.Add(10600*time.Millisecond), false, emit)
	if len(out) != 1 || !out[0].Time.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("released %+v", out)
	}
}

// A call of another process that fits is not taken while the records up
// to the socket's time are not all read: the socket's own call may be
// among those still coming.
func TestJoinWaitsForEveryRecord(t *testing.T) {
	j := NewJoiner(10*time.Second, nil)
	j.Add(sighting(OpConnect, 1, "10.0.0.1:80", 0, 0)) // an earlier client, its socket not yet reported
	j.Seen(t0)
	ev := sockEv(event.Closed, 2, "10.0.0.2:4001", "10.0.0.1:80", time.Second, 0)
	ev.ShortLived = true
	if !j.Attribute(&ev, 7, ev.Time, 5*time.Second) {
		t.Fatal("not held")
	}
	var out []event.Event
	emit := func(ev *event.Event) { out = append(out, *ev) }
	j.Add(sighting(OpConnect, 2, "10.0.0.1:80", 500*time.Millisecond, 0)) // its own, late
	j.Seen(t0.Add(1100 * time.Millisecond))
	j.Release(t0.Add(1200*time.Millisecond), false, emit)
	// Both calls fit and neither socket is known held: a tie, no owner.
	if len(out) != 1 || out[0].Process != nil || j.Stats().Ambiguous != 1 {
		t.Fatalf("released %+v, stats %+v", out, j.Stats())
	}
}

// An owner /proc found as its process exited names no executable: the
// call of that process completes it (keeping the command line /proc
// read), a call of another process does not replace it, and an owner
// with its executable is left as it is.
func TestJoinCompletesOwnerWithoutExe(t *testing.T) {
	j := NewJoiner(10*time.Second, nil)
	j.Add(sighting(OpConnect, 8, "10.0.0.1:80", 0, 0))
	j.Add(sighting(OpConnect, 9, "10.0.0.1:80", 100*time.Millisecond, 0))
	j.Seen(t0.Add(2 * time.Second))

	ev := sockEv(event.Closed, 1, "10.0.0.2:4000", "10.0.0.1:80", time.Second, 0)
	ev.ShortLived = true
	ev.Process = &event.Process{PID: 9, Comm: "bash", Cmdline: "bash -c x"}
	if j.Attribute(&ev, 7, ev.Time, 5*time.Second) {
		t.Fatal("held with every record read")
	}
	want := owner(9)
	if p := ev.Process; p == nil || p.PID != 9 || p.Exe != want.Exe || p.Exe == "" || p.Cmdline != "bash -c x" {
		t.Fatalf("owner %+v, want pid 9's call's, exe %q, with the command line /proc read", p, want.Exe)
	}

	ev = sockEv(event.Closed, 2, "10.0.0.2:4001", "10.0.0.1:80", time.Second, 0)
	ev.ShortLived = true
	ev.Process = &event.Process{PID: 10, Comm: "curl"}
	if !j.Attribute(&ev, 7, ev.Time, 5*time.Second) {
		t.Fatal("an owner without executable not held for its call")
	}
	var out []event.Event
	j.Release(t0.Add(1100*time.Millisecond), false, func(ev *event.Event) { out = append(out, *ev) })
	if len(out) != 1 || out[0].Process.PID != 10 || out[0].Process.Exe != "" {
		t.Fatalf("released %+v: the owner replaced by another process's call", out)
	}
	if j.Pending() != 1 {
		t.Fatalf("%d calls pending, want pid 8's left", j.Pending())
	}

	full := &event.Process{PID: 8, Comm: "wget", Exe: "/usr/bin/wget"}
	ev = sockEv(event.Closed, 3, "10.0.0.2:4002", "10.0.0.1:80", time.Second, 0)
	ev.Process = full
	j.Attribute(&ev, 7, ev.Time, 5*time.Second)
	if ev.Process != full || j.Pending() != 1 {
		t.Fatalf("a complete owner was changed: %+v", ev.Process)
	}
}

// A connection waits in its listener's queue, where a poll sees it, until
// a busy server accepts it: the accept, made after the socket was first
// seen, names the owner of its later events.
func TestJoinAcceptAfterFirstSeen(t *testing.T) {
	j := NewJoiner(10*time.Second, nil)
	ap := sockEv(event.Appeared, 1, "10.0.0.1:80", "10.0.0.2:4000", 1200*time.Millisecond, 0)
	ap.FirstSeen = t0.Add(time.Second)
	ap.Direction = event.DirectionInbound
	j.Seen(t0.Add(1300 * time.Millisecond))
	j.Annotate(&ap, 7)
	if ap.Process != nil {
		t.Fatalf("appeared before its accept, yet owned: %+v", ap.Process)
	}
	j.Add(sighting(OpAccept, 9, "10.0.0.2:4000", 2500*time.Millisecond, 0))
	cl := ap
	cl.Kind = event.Closed
	cl.Time = t0.Add(3 * time.Second)
	j.Seen(t0.Add(3100 * time.Millisecond))
	if j.Attribute(&cl, 7, cl.Time, 5*time.Second) {
		t.Fatal("held with every record read")
	}
	if pidOf(&cl) != 9 {
		t.Fatalf("closed event owned by %+v, want the accepting pid 9", cl.Process)
	}
	// A connect of the same peer after the socket was first seen is not
	// its call.
	j.Add(sighting(OpConnect, 10, "10.0.0.2:4000", 2500*time.Millisecond, 0))
	out := sockEv(event.Closed, 2, "10.0.0.3:5000", "10.0.0.2:4000", 3*time.Second, 0)
	out.FirstSeen = t0.Add(time.Second)
	out.Direction = event.DirectionOutbound
	j.Annotate(&out, 7)
	if out.Process != nil {
		t.Fatalf("a connect made 1.5 s after its socket was seen taken: %+v", out.Process)
	}
}
