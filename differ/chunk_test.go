package differ

import (
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// TestChunkedDiff: a dump diffed chunk by chunk makes the events of the
// same dump diffed whole, each stamped with its chunk's time; a socket
// two chunks list is compared once; only the sockets no chunk listed are
// looked up.
func TestChunkedDiff(t *testing.T) {
	est := snapshot.StateEstablished
	var out []event.Event
	d := New(Options{Output: func(ev *event.Event) { out = append(out, *ev) }})
	d.Diff(table(listener(1), sock(2, est), sock(3, est), sock(4, est)), t0, nil)
	out = nil
	t1, t2, t3 := t0.Add(time.Second), t0.Add(time.Second+time.Millisecond), t0.Add(time.Second+2*time.Millisecond)
	d.Begin()
	d.Step(table(listener(1), sock(3, snapshot.StateCloseWait)), t1)
	// The table changed while the kernel walked it: 3 is listed again.
	d.Step(table(sock(5, est), sock(3, snapshot.StateCloseWait)), t2)
	p := &fakeProber{answers: map[uint64]snapshot.LookupResult{2: snapshot.LookupGone, 4: snapshot.LookupAlive}}
	if _, err := d.Finish(t3, p); err != nil {
		t.Fatal(err)
	}
	want := "state_changed:3:close_wait<established appeared:5:established closed:2:established:gone"
	if got := summary(out); got != want {
		t.Fatalf("events\n got %s\nwant %s", got, want)
	}
	if out[0].Time != t1 || out[1].Time != t2 || out[2].Time.Before(t3) {
		t.Errorf("times %v %v %v; want %v, %v, not before %v", out[0].Time, out[1].Time, out[2].Time, t1, t2, t3)
	}
	if p.asked != 2 {
		t.Errorf("%d lookups; want 2 (the sockets no chunk listed)", p.asked)
	}
	if st := d.Stats(); st.Duplicates != 1 || st.Skipped != 1 {
		t.Errorf("stats %+v; want 1 duplicate, 1 skipped", st)
	}
	// The next dump, whole: 4 (skipped last time) is back, nothing else.
	out = nil
	p.asked = 0
	d.Diff(table(listener(1), sock(3, snapshot.StateCloseWait), sock(4, est), sock(5, est)), t0.Add(2*time.Second), p)
	if len(out) != 0 || p.asked != 0 {
		t.Errorf("next poll: %s, %d lookups; want nothing", summary(out), p.asked)
	}
}

// TestAbortedDiff: a dump that failed after some chunks reported what
// they showed, but the sockets it did not reach are no suspects; the
// next complete dump diffs as usual.
func TestAbortedDiff(t *testing.T) {
	est := snapshot.StateEstablished
	var out []event.Event
	d := New(Options{Output: func(ev *event.Event) { out = append(out, *ev) }})
	d.Diff(table(sock(1, est), sock(2, est), sock(3, est)), t0, nil)
	out = nil
	p := &fakeProber{answers: map[uint64]snapshot.LookupResult{}}
	d.Begin()
	d.Step(table(sock(1, snapshot.StateFinWait1), sock(4, est)), t0.Add(time.Second))
	if !d.InDiff() {
		t.Fatal("InDiff false between steps")
	}
	d.Abort()
	if d.InDiff() {
		t.Fatal("InDiff true after Abort")
	}
	if got, want := summary(out), "state_changed:1:fin_wait1<established appeared:4:established"; got != want {
		t.Fatalf("events\n got %s\nwant %s", got, want)
	}
	out = nil
	d.Diff(table(sock(1, snapshot.StateFinWait1), sock(2, est), sock(3, est), sock(4, est)), t0.Add(2*time.Second), p)
	if len(out) != 0 || p.asked != 0 {
		t.Errorf("next poll: %s, %d lookups; want nothing", summary(out), p.asked)
	}
	d.Diff(table(sock(1, snapshot.StateFinWait1), sock(2, est), sock(4, est)), t0.Add(3*time.Second),
		&fakeProber{answers: map[uint64]snapshot.LookupResult{3: snapshot.LookupGone}})
	if got, want := summary(out), "closed:3:established:gone"; got != want {
		t.Errorf("after: %s; want %s", got, want)
	}
}

// TestForgetBetweenSteps: a reload that forgets sockets while a dump is
// diffed leaves the forgotten ones silent and the others tracked: those
// a chunk listed already as those still to come.
func TestForgetBetweenSteps(t *testing.T) {
	est := snapshot.StateEstablished
	var out []event.Event
	d := New(Options{Output: func(ev *event.Event) { out = append(out, *ev) }})
	d.Diff(table(sock(1, est), sock(2, est), sock(3, est), sock(4, est)), t0, nil)
	out = nil
	p := &fakeProber{answers: map[uint64]snapshot.LookupResult{}}
	d.Begin()
	d.Step(table(sock(1, est), sock(2, est)), t0.Add(time.Second))
	if n := d.Forget(func(s *snapshot.Socket) bool { return s.Cookie == 2 || s.Cookie == 3 }); n != 2 {
		t.Fatalf("forgot %d; want 2", n)
	}
	d.Step(table(sock(4, est)), t0.Add(time.Second))
	if _, err := d.Finish(t0.Add(time.Second), p); err != nil {
		t.Fatal(err)
	}
	if len(out) != 0 || p.asked != 0 || d.Len() != 2 {
		t.Fatalf("events %s, %d lookups, %d tracked; want none, none, 2", summary(out), p.asked, d.Len())
	}
	d.Diff(table(sock(1, est), sock(4, est)), t0.Add(2*time.Second), p)
	d.Diff(table(sock(4, est)), t0.Add(3*time.Second), &fakeProber{answers: map[uint64]snapshot.LookupResult{1: snapshot.LookupGone}})
	if got, want := summary(out), "closed:1:established:gone"; got != want {
		t.Errorf("events %s; want %s", got, want)
	}
}
