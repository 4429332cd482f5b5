//go:build linux

package nlsock

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/internal/netnstest"
)

// groupTCP4Destroy is SKNLGRP_INET_TCP_DESTROY, which any process may
// join (sock_diag's destroy groups need no privilege to subscribe).
const groupTCP4Destroy = 1

// isolated returns a subscription to TCP/IPv4 destroys opened in a
// network namespace of the test's own, with a receive buffer of bufSize,
// and the namespace (its CloseTCP4 makes the notifications). No other
// process's socket is destroyed there, so nothing comes that the test
// did not make.
func isolated(t *testing.T, bufSize int) (*Subscription, *netnstest.NS) {
	t.Helper()
	ns := netnstest.New(t)
	var s *Subscription
	if err := ns.Do(func() (err error) {
		s, err = Subscribe(unix.NETLINK_SOCK_DIAG, 1<<(groupTCP4Destroy-1), bufSize, "test-sub")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, ns
}

// inWait returns once a goroutine is inside s.WaitReadable.
func inWait(s *Subscription) {
	for s.wait.TryLock() {
		s.wait.Unlock()
		runtime.Gosched()
	}
}

// TestSubscribeBufferAndClose: the buffer asked for is granted (doubled
// by the kernel's accounting) or capped by rmem_max without privilege;
// the socket refuses unicasts from other sockets; Close wakes a waiter.
func TestSubscribeBufferAndClose(t *testing.T) {
	const ask = 1 << 20
	ns := netnstest.New(t)
	var s *Subscription
	var other int
	if err := ns.Do(func() (err error) {
		if s, err = Subscribe(unix.NETLINK_SOCK_DIAG, 1<<(groupTCP4Destroy-1), ask, "test-sub"); err != nil {
			return err
		}
		// In the same namespace: netlink addresses are a namespace's.
		other, err = Dial(unix.NETLINK_SOCK_DIAG)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(other)
	if s.Forced && s.Buffer < ask {
		t.Errorf("forced buffer of %d bytes, asked %d", s.Buffer, ask)
	}
	if s.Buffer <= 0 {
		t.Errorf("buffer %d", s.Buffer)
	}
	// A unicast from another netlink socket to the subscription is
	// refused: it is connected to the kernel.
	sa, err := unix.Getsockname(s.FD)
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, unix.SizeofNlMsghdr)
	msg[0] = unix.SizeofNlMsghdr
	if err := unix.Sendto(other, msg, 0, sa); err == nil {
		t.Error("a unicast from another socket was accepted")
	}
	waited := make(chan error, 1)
	go func() { waited <- s.WaitReadable() }()
	inWait(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("WaitReadable after Close = %v, want os.ErrClosed", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("WaitReadable did not return within a minute of Close")
	}
	if err := s.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close = %v, want os.ErrClosed", err)
	}
}

// TestWaitReadableWakesAWaiter: a waiter that found nothing queued
// sleeps in the runtime's poller, and a notification wakes it.
func TestWaitReadableWakesAWaiter(t *testing.T) {
	s, ns := isolated(t, 1<<20)
	waited := make(chan error, 1)
	go func() { waited <- s.WaitReadable() }()
	inWait(s)
	// Not needed for the test to hold, only for it to take the usual
	// path: the waiter asleep, not still arming, when the close comes.
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-waited:
		t.Fatalf("WaitReadable returned %v with nothing queued", err)
	default:
	}
	ns.CloseTCP4(t, 1)
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("WaitReadable = %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("WaitReadable did not return within a minute of a destroy")
	}
}

// TestConcurrentOpens: sockets are opened from many goroutines at once
// (the daemon opens namespaces in parallel); run with -race.
func TestConcurrentOpens(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			fd, err := Dial(unix.NETLINK_SOCK_DIAG)
			if err == nil {
				unix.Close(fd)
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			s, err := Subscribe(unix.NETLINK_SOCK_DIAG, 1<<(groupTCP4Destroy-1), 1<<16, "test-sub")
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestSubscribeBadProto: a protocol the kernel does not have is refused.
func TestSubscribeBadProto(t *testing.T) {
	if _, err := Subscribe(-1, 1, 1<<16, "bad"); err == nil {
		t.Fatal("a socket of protocol -1 opened")
	}
}

// queued waits, with poll(2) on the socket itself rather than through
// the subscription, until it reports any of events.
func queued(t *testing.T, s *Subscription, events int16) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(s.FD), Events: events}}
	for {
		n, err := unix.Poll(fds, int((time.Minute).Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			t.Fatalf("nothing queued within a minute: %v", err)
		}
		return
	}
}

// epollReadable says whether the subscription's epoll instance is
// readable now, as the runtime's poller would see it.
func epollReadable(t *testing.T, s *Subscription) bool {
	t.Helper()
	var revents int16
	var perr error
	err := s.rc.Control(func(ep uintptr) {
		fds := []unix.PollFd{{Fd: int32(ep), Events: unix.POLLIN}}
		_, perr = unix.Poll(fds, 0)
		revents = fds[0].Revents
	})
	if err != nil || perr != nil {
		t.Fatalf("poll of the epoll instance: %v %v", err, perr)
	}
	return revents&unix.POLLIN != 0
}

// drain reads the socket until EAGAIN and returns the error that ended
// it, nil for EAGAIN.
func drain(s *Subscription) error {
	buf := make([]byte, 1<<16)
	for {
		_, _, err := unix.Recvfrom(s.FD, buf, unix.MSG_DONTWAIT)
		switch err {
		case nil, unix.EINTR:
		case unix.EAGAIN:
			return nil
		default:
			return err
		}
	}
}

// waitReturns calls WaitReadable and fails the test unless it returns
// nil within a minute.
func waitReturns(t *testing.T, s *Subscription, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.WaitReadable() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: WaitReadable = %v", what, err)
		}
	case <-time.After(time.Minute):
		s.Close()
		t.Fatalf("%s: WaitReadable did not return within a minute", what)
	}
}

// TestWaitReadableReportsWhatIsQueued: the socket is armed for one
// report at a time, so what came while nobody waited (the destroy
// waiter gathers before it reads) must be reported by the next wait at
// once, and a wait after a report that was not read reports again.
func TestWaitReadableReportsWhatIsQueued(t *testing.T) {
	s, ns := isolated(t, 1<<20)
	ns.CloseTCP4(t, 1)
	waitReturns(t, s, "first destroy")
	if err := drain(s); err != nil {
		t.Fatal(err)
	}
	// Disarmed now; queued while nobody waits. The epoll instance, which
	// is what the runtime's poller watches, must stay silent: that is
	// the point of arming one-shot.
	ns.CloseTCP4(t, 1)
	queued(t, s, unix.POLLIN)
	if epollReadable(t, s) {
		t.Error("the epoll instance reports a datagram that came while the socket was disarmed")
	}
	waitReturns(t, s, "destroy queued before the wait")
	waitReturns(t, s, "the same destroy, not read")
	if err := drain(s); err != nil {
		t.Fatal(err)
	}
}

// TestOverrunReachesTheReader: a wait does not take the socket's error:
// the reader's first read after it sees the overrun (ENOBUFS), so that
// lost notifications are reported as a gap.
func TestOverrunReachesTheReader(t *testing.T) {
	// The smallest buffer the kernel allows holds a few messages.
	s, ns := isolated(t, 1)
	// The kernel announces from a work queue: close more until the
	// socket shows the error (poll(2) does not clear it), for at most a
	// minute.
	fds := []unix.PollFd{{Fd: int32(s.FD), Events: unix.POLLIN}}
	for deadline := time.Now().Add(time.Minute); ; {
		ns.CloseTCP4(t, 50)
		if n, err := unix.Poll(fds, 100); err != nil && err != unix.EINTR {
			t.Fatal(err)
		} else if n > 0 && fds[0].Revents&unix.POLLERR != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no overrun within a minute of destroys into a buffer of a few messages")
		}
	}
	waitReturns(t, s, "an overrun")
	buf := make([]byte, 1<<16)
	if _, _, err := unix.Recvfrom(s.FD, buf, unix.MSG_DONTWAIT); err != unix.ENOBUFS {
		t.Fatalf("first read after the wait: %v, want ENOBUFS", err)
	}
}
