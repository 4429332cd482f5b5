//go:build linux

package nlsock

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// groupTCP4Destroy is SKNLGRP_INET_TCP_DESTROY, which any process may
// join (sock_diag's destroy groups need no privilege to subscribe).
const groupTCP4Destroy = 1

// TestSubscribeBufferAndClose: the buffer asked for is granted (doubled
// by the kernel's accounting) or capped by rmem_max without privilege;
// the socket refuses unicasts from other sockets; Close wakes a waiter.
func TestSubscribeBufferAndClose(t *testing.T) {
	const ask = 1 << 20
	s, err := Subscribe(unix.NETLINK_SOCK_DIAG, 1<<(groupTCP4Destroy-1), ask, "test-sub")
	if err != nil {
		t.Fatal(err)
	}
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
	other, err := Dial(unix.NETLINK_SOCK_DIAG)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(other)
	msg := make([]byte, unix.SizeofNlMsghdr)
	msg[0] = unix.SizeofNlMsghdr
	if err := unix.Sendto(other, msg, 0, sa); err == nil {
		t.Error("a unicast from another socket was accepted")
	}
	waited := make(chan error, 1)
	go func() { waited <- s.WaitReadable() }()
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

// destroyTCP4 makes the kernel announce n TCP/IPv4 socket destroys:
// every socket's, connected or not, goes to the destroy group's
// subscribers.
func destroyTCP4(t *testing.T, n int) {
	t.Helper()
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
}

// queued waits, with poll(2) on the socket itself rather than through
// the subscription, until something is queued on it.
func queued(t *testing.T, s *Subscription) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(s.FD), Events: unix.POLLIN}}
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
	s, err := Subscribe(unix.NETLINK_SOCK_DIAG, 1<<(groupTCP4Destroy-1), 1<<20, "test-sub")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	destroyTCP4(t, 1)
	waitReturns(t, s, "first destroy")
	if err := drain(s); err != nil {
		t.Fatal(err)
	}
	// Disarmed now; queued while nobody waits. The epoll instance, which
	// is what the runtime's poller watches, must stay silent: that is
	// the point of arming one-shot.
	destroyTCP4(t, 1)
	queued(t, s)
	if ready := epollReadable(t, s); ready {
		t.Error("the epoll instance reports a datagram that came while the socket was disarmed")
	}
	waitReturns(t, s, "destroy queued before the wait")
	waitReturns(t, s, "the same destroy, not read")
	if err := drain(s); err != nil {
		t.Fatal(err)
	}
}

// TestOverrunReachesTheReader: a wait does not take the socket's error:
// the reader's own read sees the overrun (ENOBUFS), so that lost
// notifications are reported as a gap.
func TestOverrunReachesTheReader(t *testing.T) {
	// The smallest buffer the kernel allows holds one or two messages.
	s, err := Subscribe(unix.NETLINK_SOCK_DIAG, 1<<(groupTCP4Destroy-1), 1, "test-sub")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	destroyTCP4(t, 200)
	waitReturns(t, s, "an overrun")
	// The kernel announces from a work queue: read until the overrun
	// shows, for at most a minute.
	deadline := time.Now().Add(time.Minute)
	for {
		err := drain(s)
		if err == unix.ENOBUFS {
			return
		}
		if err != nil {
			t.Fatalf("read: %v, want ENOBUFS", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no overrun within a minute of 200 destroys into a buffer of a few messages")
		}
		waitReturns(t, s, "more destroys")
	}
}
