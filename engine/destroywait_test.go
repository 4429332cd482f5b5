package engine

import (
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/connlogd/connlogd/snapshot"
)

// readableSub is a destroy subscription whose WaitReadable returns when
// a notification is queued and said to be readable, as the kernel's
// socket does.
type readableSub struct {
	mu       sync.Mutex
	queued   []snapshot.Socket
	readable chan struct{}
	closed   chan struct{}
	once     sync.Once
}

func newReadableSub() *readableSub {
	return &readableSub{readable: make(chan struct{}, 1), closed: make(chan struct{})}
}

// queue queues a notification; wake says whether WaitReadable sees it.
func (s *readableSub) queue(sock snapshot.Socket, wake bool) {
	s.mu.Lock()
	s.queued = append(s.queued, sock)
	s.mu.Unlock()
	if wake {
		select {
		case s.readable <- struct{}{}:
		default:
		}
	}
}

func (s *readableSub) Drain(t *snapshot.Table) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range s.queued {
		*t.Append() = q
	}
	s.queued = nil
	return false, nil
}

func (s *readableSub) WaitReadable() error {
	select {
	case <-s.readable:
		return nil
	case <-s.closed:
		return errors.New("closed")
	}
}

func (s *readableSub) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

func (s *readableSub) Stats() snapshot.Stats { return snapshot.Stats{} }
func (s *readableSub) LastMalformed() error  { return nil }

// A close is stamped when the waiter read it, not when the loop, held up
// meanwhile, takes it; what the waiter did not read the loop reads, after
// what it kept and stamped then.
func TestDestroyWaiterStampsWhenRead(t *testing.T) {
	clock := newFakeClock()
	sub := newReadableSub()
	w := &namespace{destroy: sub}
	ready := make(chan *namespace)
	stop := w.waitDestroy(ready, clock.Now)
	defer stop()

	read := clock.Now()
	sub.queue(snapshot.Socket{Inode: 1}, true)
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("the waiter did not tell the loop of a close")
	}
	if at, ok := w.oldestKept(); !ok || !at.Equal(read) {
		t.Fatalf("oldest kept %v %v, want %v", at, ok, read)
	}
	// The loop comes 10 s later; a close queued just now is not seen by
	// the waiter yet.
	clock.Advance(10 * time.Second)
	sub.queue(snapshot.Socket{Inode: 2}, false)
	batches := w.destroyBatches(maxDrainBatches, clock.Now)
	var got []uint64
	var at []time.Time
	for _, b := range batches {
		for i := range b.tab.Sockets {
			got = append(got, uint64(b.tab.Sockets[i].Inode))
			at = append(at, b.at)
		}
	}
	if len(got) != 2 || got[0] != 1 || got[1] != 2 || !at[0].Equal(read) || !at[1].Equal(read.Add(10*time.Second)) {
		t.Fatalf("closes %v stamped %v; want [1 2] stamped %v and 10 s later", got, at, read)
	}
	if _, ok := w.oldestKept(); ok {
		t.Error("batches still kept after the loop took them")
	}
}

// Once notifications come faster than gatherBusyRate a second, the
// waiter lets the next ones gather for destroyGatherBusy before it reads
// them; slower, for destroyGather.
func TestDestroyWaiterGathersLongerWhenBusy(t *testing.T) {
	for _, c := range []struct {
		n       uint64
		elapsed time.Duration
		want    time.Duration
	}{
		{0, 0, destroyGather},
		{0, time.Second, destroyGather},
		{1, time.Second, destroyGather},
		{gatherBusyRate - 1, time.Second, destroyGather},
		{gatherBusyRate, time.Second, destroyGatherBusy},
		{gatherBusyRate / 100, 10 * time.Millisecond, destroyGatherBusy},
		{gatherBusyRate/100 - 1, 10 * time.Millisecond, destroyGather},
		{1, 0, destroyGatherBusy},
		{1, time.Duration(math.MaxInt64), destroyGather},
		{1, 40 * 24 * time.Hour, destroyGather},
		{math.MaxUint32, time.Duration(math.MaxInt64), destroyGather},
		{math.MaxUint64, time.Hour, destroyGatherBusy},
		{math.MaxUint64, time.Duration(math.MaxInt64), destroyGather},
	} {
		if got := gatherFor(c.n, c.elapsed); got != c.want {
			t.Errorf("gatherFor(%d, %v) = %v; want %v", c.n, c.elapsed, got, c.want)
		}
	}
	sub := newReadableSub()
	w := &namespace{destroy: sub}
	ready := make(chan *namespace)
	stop := w.waitDestroy(ready, time.Now)
	defer stop()
	// round queues n notifications at once and returns the gathering the
	// waiter chose after reading them, and how long they took to be read.
	round := func(n int) (time.Duration, time.Duration) {
		t.Helper()
		start := time.Now()
		for i := range n {
			sub.queue(snapshot.Socket{Inode: uint32(i + 1)}, i == n-1)
		}
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			t.Fatal("the waiter did not tell the loop of a close")
		}
		took := time.Since(start)
		w.destroyBatches(maxDrainBatches, time.Now)
		w.dmu.Lock()
		wait := w.dwait
		w.dmu.Unlock()
		select { // as the loop does: a waiter that kept its most waits for it
		case w.drained <- struct{}{}:
		default:
		}
		return wait, took
	}
	// One close a round, a round at least destroyGather apart: at most
	// 500 a second, however fast or slow the machine.
	for i := range 3 {
		if wait, _ := round(1); wait != destroyGather {
			t.Fatalf("round %d of one close: next gathering %v; want %v", i, wait, destroyGather)
		}
	}
	// 30,000 at once: more than gatherBusyRate a second unless the
	// machine stalls the waiter for 10 s.
	if wait, _ := round(10 * gatherBusyRate); wait != destroyGatherBusy {
		t.Fatalf("after %d closes at once: next gathering %v; want %v", 10*gatherBusyRate, wait, destroyGatherBusy)
	}
	if _, took := round(1); took < destroyGatherBusy {
		t.Errorf("after a busy round, a close read within %v; want at least %v", took, destroyGatherBusy)
	}
}

// failingWaitSub is a subscription whose wait fails, not closed.
type failingWaitSub struct{ *readableSub }

var errWait = errors.New("epoll_wait: bad file descriptor")

func (s failingWaitSub) WaitReadable() error { return errWait }

// A wait that fails (not stopped) reaches the loop as a failed batch,
// which it reports as a gap and stops the subscription on, rather than
// the waiter ending unseen and leaving the closes to be read only at
// the loop's dumps.
func TestDestroyWaiterReportsAFailedWait(t *testing.T) {
	sub := failingWaitSub{newReadableSub()}
	w := &namespace{destroy: sub}
	ready := make(chan *namespace)
	stop := w.waitDestroy(ready, time.Now)
	defer stop()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("the waiter did not tell the loop of its failed wait")
	}
	batches := w.destroyBatches(0, time.Now)
	if len(batches) != 1 || !errors.Is(batches[0].err, errWait) || batches[0].tab == nil {
		t.Fatalf("batches %+v; want one carrying the wait's error", batches)
	}
}
