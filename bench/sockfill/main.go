//go:build linux

// Command sockfill fills the socket table of the network namespace it runs
// in: it listens on 127.0.0.1:PORT, opens PAIRS connections to itself and
// keeps both ends open, so that the table holds 2*PAIRS established TCP
// sockets plus the listener. It prints "ready PAIRS" when they are all up
// and then sleeps until SIGTERM or SIGINT.
//
// It is meant to run inside a scratch namespace (bench/mkns.sh):
//
//	ip netns exec connlogd-bench sockfill -port 5000 -pairs 9000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// spareFDs covers stdio, the listeners, the runtime's epoll and pipe fds.
const spareFDs = 16

func main() {
	port := flag.Int("port", 5000, "TCP port to listen on, on 127.0.0.1")
	pairs := flag.Int("pairs", 1000, "connections to open to ourselves; each holds two sockets")
	ipv6 := flag.Bool("ipv6", false, "also listen on [::1]:PORT, so that the tcp/ipv6 table is not empty")
	flag.Parse()
	if err := run(*port, *pairs, *ipv6); err != nil {
		fmt.Fprintln(os.Stderr, "sockfill:", err)
		os.Exit(1)
	}
}

func run(port, pairs int, ipv6 bool) error {
	if port <= 0 || port > 65535 || pairs < 0 {
		return errors.New("-port must be 1..65535 and -pairs ≥ 0")
	}
	if err := raiseNoFile(uint64(2*pairs + spareFDs)); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// No TCP keepalive, which Go enables by default: the probes of
	// thousands of sockets created together fire together, overflow the
	// loopback backlog, and the sockets whose probes are all dropped are
	// aborted (TCPAbortOnTimeout) minutes later, in mid-benchmark.
	lc := net.ListenConfig{KeepAlive: -1}
	dialer := net.Dialer{KeepAlive: -1}

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	ln, err := lc.Listen(ctx, "tcp4", addr)
	if err != nil {
		return err
	}
	var ln6 net.Listener
	if ipv6 {
		if ln6, err = lc.Listen(ctx, "tcp6", net.JoinHostPort("::1", strconv.Itoa(port))); err != nil {
			return err
		}
	}

	// Accept concurrently with dialling: the accept queue (somaxconn) is
	// shorter than the number of connections.
	type acceptResult struct {
		conns []net.Conn
		err   error
	}
	accepted := make(chan acceptResult, 1)
	go func() {
		conns := make([]net.Conn, 0, pairs)
		for len(conns) < pairs {
			c, err := ln.Accept()
			if err != nil {
				accepted <- acceptResult{conns, err}
				return
			}
			conns = append(conns, c)
		}
		accepted <- acceptResult{conns, nil}
	}()

	// The slices keep the conns reachable: a collected net.Conn would be
	// closed by its finalizer.
	clients := make([]net.Conn, 0, pairs)
	for range pairs {
		c, err := dialer.DialContext(ctx, "tcp4", addr)
		if err != nil {
			return fmt.Errorf("dial %s after %d connections: %w", addr, len(clients), err)
		}
		clients = append(clients, c)
	}
	res := <-accepted
	if res.err != nil {
		return fmt.Errorf("accept after %d connections: %w", len(res.conns), res.err)
	}
	fmt.Printf("ready %d\n", len(clients))

	<-ctx.Done()
	// Exiting closes every socket; until then the conns must stay
	// reachable.
	runtime.KeepAlive(clients)
	runtime.KeepAlive(res.conns)
	runtime.KeepAlive(ln)
	runtime.KeepAlive(ln6)
	return nil
}

// raiseNoFile sets the soft RLIMIT_NOFILE to the hard limit and checks
// that need descriptors fit.
func raiseNoFile(need uint64) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("setrlimit: %w", err)
	}
	if need > lim.Cur {
		return fmt.Errorf("need %d file descriptors, the hard limit is %d: use fewer pairs per process", need, lim.Cur)
	}
	return nil
}
