//go:build linux

// Command churn is the load generator of the short-connection benchmark
// (see README.md). Run inside a network namespace, it serves TCP on
// 127.0.0.1..127.0.0.N (accept, read to EOF, close) and has workers
// dial, send a few bytes and close, the client closing first. For every
// client socket it records the 4-tuple and the wall-clock times around
// connect and close, as CSV, so that bench/churn/analyze can find each
// socket among connlogd's events.
//
//	churn -duration 60s -workers 4 -rate 0 -out records.csv
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// record is one client socket.
type record struct {
	src, dst     [4]byte
	sport, dport uint16
	// Unix ns: before socket(2), before close(2), after close(2) returned.
	connect, closeStart, closeEnd int64
}

type options struct {
	duration time.Duration
	workers  int
	rate     float64
	addrs    int
	port     int
	payload  int
	linger0  bool
	out      string
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long to open and close connections")
	flag.IntVar(&o.workers, "workers", 4, "concurrent clients")
	flag.Float64Var(&o.rate, "rate", 0, "connections per second over all workers; 0: as fast as possible")
	flag.IntVar(&o.addrs, "addrs", 4, "listen on 127.0.0.1 .. 127.0.0.N; clients spread over them")
	flag.IntVar(&o.port, "port", 65100, "server port; keep it outside ip_local_port_range")
	flag.IntVar(&o.payload, "payload", 100, "bytes each client sends before closing")
	flag.BoolVar(&o.linger0, "linger0", false, "close with SO_LINGER 0 (RST, no TIME_WAIT) instead of FIN")
	flag.StringVar(&o.out, "out", "churn.csv", "where to write one CSV line per client socket")
	flag.Parse()
	if o.workers < 1 || o.addrs < 1 || o.addrs > 254 || o.rate < 0 || o.port < 1 || o.port > 65535 {
		fmt.Fprintln(os.Stderr, "churn: bad flags")
		os.Exit(2)
	}
	if err := run(&o); err != nil {
		fmt.Fprintln(os.Stderr, "churn:", err)
		os.Exit(1)
	}
}

func run(o *options) error {
	srv, err := serve(o.addrs, o.port)
	if err != nil {
		return err
	}
	var ru0 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru0)

	recs := make([][]record, o.workers)
	errs := make([]map[string]int, o.workers)
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(o.duration)
	for w := range o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs[w], errs[w] = worker(o, w, start, stop)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var ru1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	// The server's last closes (and so their destroy notifications) are
	// not the benchmark's business, but it must not exit before them: a
	// killed server would reset its sockets.
	drained := srv.drain(5 * time.Second)
	srv.close()

	n, err := write(o.out, recs)
	if err != nil {
		return err
	}
	failed := 0
	all := map[string]int{}
	for _, m := range errs {
		for k, v := range m {
			all[k] += v
			failed += v
		}
	}
	cpu := func(r *unix.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	mode := "fin"
	if o.linger0 {
		mode = "linger0"
	}
	fmt.Printf("churn: made=%d failed=%d seconds=%.3f conns_per_s=%.0f workers=%d rate=%g addrs=%d port=%d close=%s cpu_pct=%.0f server_drained=%t out=%s\n",
		n, failed, elapsed.Seconds(), float64(n)/elapsed.Seconds(), o.workers, o.rate, o.addrs, o.port, mode,
		100*(cpu(&ru1)-cpu(&ru0)).Seconds()/elapsed.Seconds(), drained, o.out)
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("churn: failure %q x%d\n", k, all[k])
	}
	return nil
}

// worker opens connections until stop, paced when o.rate > 0: worker w
// makes connections w, w+W, w+2W, … of a schedule of o.rate per second,
// so the workers together keep the rate without coordinating.
func worker(o *options, w int, start, stop time.Time) ([]record, map[string]int) {
	var recs []record
	if o.rate > 0 {
		recs = make([]record, 0, int(o.rate*o.duration.Seconds())/o.workers+16)
	}
	errs := map[string]int{}
	payload := make([]byte, o.payload)
	for k := w; ; k += o.workers {
		now := time.Now()
		if o.rate > 0 {
			due := start.Add(time.Duration(float64(k) / o.rate * float64(time.Second)))
			if due.After(now) {
				time.Sleep(due.Sub(now))
			}
			now = time.Now()
		}
		if !now.Before(stop) {
			return recs, errs
		}
		dst := [4]byte{127, 0, 0, byte(1 + k%o.addrs)}
		r, err := conn(dst, o.port, payload, o.linger0)
		if err != nil {
			errs[err.Error()]++
			// Most likely ephemeral ports ran out: let TIME_WAIT age a
			// little rather than spin.
			time.Sleep(time.Millisecond)
			continue
		}
		recs = append(recs, r)
	}
}

// conn makes one client connection with raw blocking syscalls: cheaper
// than net.Dial (no poller registration), so more of the machine is left
// for connections, and the close time is taken right around close(2).
func conn(dst [4]byte, port int, payload []byte, linger0 bool) (record, error) {
	r := record{dst: dst, dport: uint16(port), connect: time.Now().UnixNano()}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return r, fmt.Errorf("socket: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	sa := &unix.SockaddrInet4{Port: port, Addr: dst}
	for {
		err = unix.Connect(fd, sa)
		// A signal (the Go runtime's preemption) can interrupt a blocking
		// connect; the handshake goes on, so wait for it by asking again.
		if err == unix.EINTR || err == unix.EALREADY {
			continue
		}
		if err == unix.EISCONN {
			err = nil
		}
		break
	}
	if err != nil {
		return r, fmt.Errorf("connect: %w", err)
	}
	local, err := unix.Getsockname(fd)
	if err != nil {
		return r, fmt.Errorf("getsockname: %w", err)
	}
	l4, isV4 := local.(*unix.SockaddrInet4)
	if !isV4 {
		return r, errors.New("getsockname: not IPv4")
	}
	r.src, r.sport = l4.Addr, uint16(l4.Port)
	for p := payload; len(p) > 0; {
		n, err := unix.Write(fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return r, fmt.Errorf("write: %w", err)
		}
		p = p[n:]
	}
	if linger0 {
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
			return r, fmt.Errorf("SO_LINGER: %w", err)
		}
	}
	ok = true
	r.closeStart = time.Now().UnixNano()
	// Not retried on error: the descriptor is released whatever close says.
	unix.Close(fd)
	r.closeEnd = time.Now().UnixNano()
	return r, nil
}

// server accepts on every listener, reads each connection to EOF and
// closes it.
type server struct {
	lns    []net.Listener
	active atomic.Int64
	wg     sync.WaitGroup
}

func serve(addrs, port int) (*server, error) {
	s := &server{}
	for i := 1; i <= addrs; i++ {
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.%d:%d", i, port))
		if err != nil {
			s.close()
			return nil, err
		}
		s.lns = append(s.lns, ln)
		s.wg.Add(1)
		go s.accept(ln)
	}
	return s, nil
}

func (s *server) accept(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) && (errno == syscall.EMFILE || errno == syscall.ENFILE || errno == syscall.ECONNABORTED) {
				time.Sleep(time.Millisecond)
				continue
			}
			return // closed
		}
		s.active.Add(1)
		go func() {
			defer s.active.Add(-1)
			var buf [512]byte
			for {
				if _, err := c.Read(buf[:]); err != nil {
					break
				}
			}
			c.Close()
		}()
	}
}

// drain waits until every accepted connection is closed, or timeout.
func (s *server) drain(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for s.active.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func (s *server) close() {
	for _, ln := range s.lns {
		ln.Close()
	}
	s.wg.Wait()
}

// write stores the records, in close order, as CSV.
func write(path string, recs [][]record) (int, error) {
	var all []record
	for _, r := range recs {
		all = append(all, r...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].closeStart < all[j].closeStart })
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(w, "src_ip,src_port,dst_ip,dst_port,connect_ns,close_start_ns,close_end_ns")
	for i := range all {
		r := &all[i]
		fmt.Fprintf(w, "%s,%d,%s,%d,%d,%d,%d\n", netip.AddrFrom4(r.src), r.sport, netip.AddrFrom4(r.dst), r.dport, r.connect, r.closeStart, r.closeEnd)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, err
	}
	return len(all), f.Close()
}
