//go:build linux

// Command nsfill puts a few sockets into each of the named network
// namespaces (`ip netns` names, or paths to nsfs files) and keeps them
// open: in each, a TCP listener on 127.0.0.1, one established loopback
// connection to it (both ends kept: two sockets) and one UDP socket bound
// to 127.0.0.1. It prints "ready NAMESPACES SOCKETS" once every namespace
// is filled, then sleeps until SIGTERM or SIGINT.
//
// The namespaces must exist with loopback up (bench/netns/run.sh does
// `ip netns add` and `ip -n NS link set lo up`):
//
//	nsfill connlogd-nsbench-1 connlogd-nsbench-2 …
//
// -pairs N opens N connections per namespace instead of one (run.sh's
// LOAD: TCP sockets elsewhere on the host, which every dump of a namespace
// sharing the host's hashes walks). Connections are closed with a reset,
// so that none is left in TIME_WAIT.
//
// One process serves every namespace: each is entered by a locked OS
// thread (setns), which creates the sockets and is then discarded. A
// socket stays in the namespace it was created in, whatever thread uses it
// later, so the process itself stays in its own namespace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// spareFDs covers stdio, the runtime's epoll and pipe fds and the
// namespace files.
const spareFDs = 64

func main() {
	pairs := flag.Int("pairs", 1, "loopback connections per namespace; each holds two sockets")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: nsfill [-pairs N] NAMESPACE…  (ip netns names or nsfs paths)")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 || *pairs < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Args(), *pairs); err != nil {
		fmt.Fprintln(os.Stderr, "nsfill:", err)
		os.Exit(1)
	}
}

func run(names []string, pairs int) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := raiseNoFile(uint64(len(names)*(2*pairs+2) + spareFDs)); err != nil {
		return err
	}
	var keep []io.Closer // every socket, so that none is collected and closed
	defer func() {
		for _, c := range keep {
			c.Close()
		}
	}()
	for _, name := range names {
		socks, err := fill(nsPath(name), pairs)
		keep = append(keep, socks...)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	fmt.Printf("ready %d %d\n", len(names), len(keep))
	<-ctx.Done()
	return nil
}

func nsPath(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join("/run/netns", name)
}

// raiseNoFile makes sure n descriptors can be open; root may raise the
// hard limit too.
func raiseNoFile(n uint64) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= n {
		return nil
	}
	lim.Cur = n
	lim.Max = max(lim.Max, n)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raising the open-file limit to %d: %w", n, err)
	}
	return nil
}

// fill opens the sockets of one namespace from a thread that has entered
// it. The thread never returns to our namespace: its goroutine ends
// locked, so the runtime discards it.
func fill(path string, pairs int) ([]io.Closer, error) {
	type result struct {
		socks []io.Closer
		err   error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		socks, err := fillLocked(path, pairs)
		done <- result{socks, err}
	}()
	r := <-done
	return r.socks, r.err
}

func fillLocked(path string, pairs int) ([]io.Closer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("setns: %w", err)
	}
	var socks []io.Closer
	// No keepalive: the table must stay as it is for the whole run.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return socks, fmt.Errorf("listen: %w", err)
	}
	socks = append(socks, ln)
	d := net.Dialer{KeepAlive: -1}
	for range pairs {
		c, err := d.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return socks, fmt.Errorf("dial: %w", err)
		}
		socks = append(socks, c)
		a, err := ln.Accept()
		if err != nil {
			return socks, fmt.Errorf("accept: %w", err)
		}
		socks = append(socks, a)
		for _, s := range []net.Conn{c, a} {
			tc, ok := s.(*net.TCPConn)
			if !ok {
				return socks, errors.New("not a TCP connection")
			}
			if err := tc.SetLinger(0); err != nil {
				return socks, err
			}
		}
	}
	u, err := lc.ListenPacket(context.Background(), "udp4", "127.0.0.1:0")
	if err != nil {
		return socks, fmt.Errorf("udp: %w", err)
	}
	return append(socks, u), nil
}
