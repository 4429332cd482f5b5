//go:build linux

package audit

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/internal/audittest"
)

// BenchmarkRuleOverhead measures what connlogd's audit rules cost the
// processes of the host, each workload without and then with the rules
// (and auditing enabled, as connlogd leaves it while it runs), in one run
// so that the ratio holds on a busy machine. Needs root; the rules are
// removed and the flag restored at the end of each sub-benchmark.
//
//	go test -run '^$' -bench RuleOverhead -count 5 ./audit
func BenchmarkRuleOverhead(b *testing.B) {
	c, err := openControl()
	if err != nil {
		b.Skipf("needs root and audit: %v", err)
	}
	c.close()
	audittest.Lock(b)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := ln.Addr().(*net.TCPAddr)
	sa := &unix.SockaddrInet4{Port: addr.Port, Addr: [4]byte{127, 0, 0, 1}}
	workloads := []struct {
		name string
		op   func(b *testing.B)
	}{
		// A system call the rules do not name: every process pays the
		// audit hooks on every call once any syscall rule exists.
		{"getppid", func(b *testing.B) {
			for range b.N {
				unix.Getppid()
			}
		}},
		// A call of a syscall-heavy program: stat of a file.
		{"stat", func(b *testing.B) {
			var st unix.Stat_t
			for range b.N {
				unix.Stat("/proc/self", &st)
			}
		}},
		// The calls the rules name: a TCP connect to a loopback listener
		// and the close, as a client does (records written each time).
		{"connect_close", func(b *testing.B) {
			for range b.N {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
				if err := unix.Connect(fd, sa); err != nil {
					b.Fatal(err)
				}
				unix.Close(fd)
			}
		}},
	}
	for _, w := range workloads {
		b.Run(w.name+"/rules=off", w.op)
		b.Run(w.name+"/rules=on", func(b *testing.B) {
			r, err := InstallRules("")
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := r.Close(); err != nil {
					b.Error(err)
				}
			}()
			// A reader, as connlogd has: without one (and without auditd)
			// the kernel still formats and queues every record.
			rd, err := OpenReader(0)
			if err != nil {
				b.Fatal(err)
			}
			defer rd.Close()
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					pfd := []unix.PollFd{{Fd: int32(rd.fd), Events: unix.POLLIN}}
					unix.Poll(pfd, 50)
					rd.Drain(4096, func(uint16, []byte) {})
				}
			}()
			b.ResetTimer()
			w.op(b)
			b.StopTimer()
			close(stop)
			<-done
		})
	}
}
