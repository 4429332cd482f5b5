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
	if s.TakeOverrun() {
		t.Error("an overrun reported where none happened")
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
