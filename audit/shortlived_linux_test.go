//go:build linux

package audit

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/differ"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/internal/audittest"
	"github.com/connlogd/connlogd/internal/netnstest"
	"github.com/connlogd/connlogd/snapshot"
)

// TestMain runs this test binary as the short-lived server of
// TestShortLivedAccept (see audittest.Servers) when asked to.
func TestMain(m *testing.M) {
	if os.Getenv("CONNLOGD_AUDIT_ACCEPT") == "1" {
		os.Exit(acceptOnce())
	}
	os.Exit(m.Run())
}

// acceptOnce accepts one connection on the listener at descriptor 3,
// reads a line, answers with its pid, and exits.
func acceptOnce() int {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := ln.Accept()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bufio.NewReader(c).ReadString('\n')
	fmt.Fprintf(c, "%d\n", os.Getpid())
	c.Close()
	return 0
}

// watcher plays the daemon's part: destroy notifications of one
// namespace, turned into events by a differ, annotated from audit records
// drained just before, as the daemon does.
type watcher struct {
	src   *Source
	dst   *diag.Destroy
	d     *differ.Differ
	netns uint64
	mu    sync.Mutex
	evs   []event.Event
	stop  chan struct{}
	done  chan struct{}
}

func startWatcher(t *testing.T, ns *netnstest.NS, src *Source) *watcher {
	t.Helper()
	w := &watcher{src: src, d: differ.New(differ.Options{}), stop: make(chan struct{}), done: make(chan struct{})}
	err := ns.Do(func() error {
		var err error
		w.dst, err = diag.OpenDestroy([]snapshot.Proto{snapshot.ProtoTCP}, []snapshot.Family{snapshot.FamilyIPv4}, 0)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		w.netns = st.Ino
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for src.Read() == nil {
		}
	}()
	go w.run()
	t.Cleanup(func() {
		close(w.stop)
		<-w.done
		w.dst.Close()
	})
	return w
}

func (w *watcher) run() {
	defer close(w.done)
	var tab snapshot.Table
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		// Every 2 ms, take the calls read first: a close is annotated with
		// every call read before it.
		time.Sleep(2 * time.Millisecond)
		now := time.Now()
		w.mu.Lock()
		w.src.Take(now)
		tab.Reset()
		w.dst.Drain(&tab)
		emit := func(ev *event.Event) { w.evs = append(w.evs, *ev) }
		w.src.Release(now, false, emit)
		if tab.Len() > 0 {
			evs := w.d.Destroyed(&tab, now)
			for i := range evs {
				if !w.src.Attribute(&evs[i], w.netns, now) {
					emit(&evs[i])
				}
			}
		}
		if w.src.Held() > 0 {
			w.src.Probe(now) // as the daemon does while it holds events
		}
		w.mu.Unlock()
	}
}

// closed returns the closed events of sockets whose local port (local)
// or peer port (!local) is in ports, waiting until all are there.
func (w *watcher) closed(t *testing.T, ports map[uint16]int, local bool) map[uint16]*event.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := map[uint16]*event.Event{}
		w.mu.Lock()
		for i := range w.evs {
			e := &w.evs[i]
			p := e.Socket.Dst.Port()
			if local {
				p = e.Socket.Src.Port()
			}
			if _, ok := ports[p]; ok && e.Kind == event.Closed {
				got[p] = e
			}
		}
		w.mu.Unlock()
		if len(got) == len(ports) || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func openSource(t *testing.T) *Source {
	t.Helper()
	src, err := Open(Options{Keep: 10 * time.Second, Grace: 5 * time.Second, Owner: func(c *Call) *event.Process {
		return &event.Process{PID: int(c.PID), UID: c.EUID, Comm: c.Comm, Exe: c.Exe}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if src.RulesErr != nil {
		t.Fatal(src.RulesErr)
	}
	t.Cleanup(func() {
		if err := src.Close(); err != nil {
			t.Error(err)
		}
	})
	return src
}

// checkOwners applies audittest's bar to the watcher's closed events.
func checkOwners(t *testing.T, got map[uint16]*event.Event, want map[uint16]int, exe string, w *watcher) {
	t.Helper()
	owners := map[uint16]*audittest.Owner{}
	for port, e := range got {
		o := &audittest.Owner{Desc: fmt.Sprintf("%s %v", e.Kind, e.Socket.Key)}
		if e.Process != nil {
			o.PID, o.Exe = e.Process.PID, e.Process.Exe
			o.Desc += fmt.Sprintf(" pid %d exe %q", o.PID, o.Exe)
		}
		owners[port] = o
	}
	audittest.CheckOwners(t, owners, want, exe)
	w.mu.Lock()
	st := w.src.Stats()
	w.mu.Unlock()
	t.Logf("joiner %+v", st)
}

// TestShortLivedConnect: 30 processes, one after another, each connects
// to the same server in a namespace, sends its pid, waits 50 ms, and
// exits; every closed event must name its process.
func TestShortLivedConnect(t *testing.T) {
	requireAudit(t)
	keepState(t)
	ns := netnstest.New(t)
	src := openSource(t)
	w := startWatcher(t, ns, src)
	want, bash := audittest.Clients(t, ns)
	checkOwners(t, w.closed(t, want, true), want, bash, w)
}

// TestShortLivedAccept: 30 server processes, one after another, each
// accepts one connection on a shared listener, answers, and exits; the
// accepted sockets' closed events must name them.
func TestShortLivedAccept(t *testing.T) {
	requireAudit(t)
	keepState(t)
	ns := netnstest.New(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src := openSource(t)
	w := startWatcher(t, ns, src)
	want := audittest.Servers(t, ns, func() *exec.Cmd {
		cmd := ns.Command(exe)
		cmd.Env = append(os.Environ(), "CONNLOGD_AUDIT_ACCEPT=1")
		return cmd
	})
	checkOwners(t, w.closed(t, want, false), want, exe, w)
}
