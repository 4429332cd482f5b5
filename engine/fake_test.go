package engine

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/netns"
	"github.com/connlogd/connlogd/sink"
	"github.com/connlogd/connlogd/snapshot"
)

// The fakes of this file stand for the kernel, the sinks and the time, so
// that the tests drive the loop step by step, as its goroutine would,
// without privilege.

// fakeClock is a clock that moves only when told. The dump worker reads
// and moves it too, hence the lock. Its tickers and timers fire as
// Advance reaches their times, as the runtime's would: a tick the
// receiver has not taken yet is not doubled.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	timers []*fakeTicker
}

// fakeTicker is a ticker (period > 0) or a one-shot timer (period 0).
type fakeTicker struct {
	clock  *fakeClock
	c      chan time.Time
	next   time.Time
	period time.Duration
}

func (c *fakeClock) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("non-positive interval for NewTicker")
	}
	return c.add(d, d)
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time { return c.add(d, 0).c }

func (c *fakeClock) add(d, period time.Duration) *fakeTicker {
	c.mu.Lock()
	defer c.mu.Unlock()
	tk := &fakeTicker{clock: c, c: make(chan time.Time, 1), next: c.t.Add(d), period: period}
	c.timers = append(c.timers, tk)
	return tk
}

func (t *fakeTicker) C() <-chan time.Time { return t.c }

func (t *fakeTicker) Reset(d time.Duration) {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	t.next, t.period = t.clock.t.Add(d), d
	if !slices.Contains(t.clock.timers, t) {
		t.clock.timers = append(t.clock.timers, t)
	}
}

func (t *fakeTicker) Stop() {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	t.clock.timers = slices.DeleteFunc(t.clock.timers, func(o *fakeTicker) bool { return o == t })
}

// fire sends the ticks due by now; the lock is held.
func (c *fakeClock) fire() {
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTicker) bool {
		if t.next.After(c.t) {
			return false
		}
		select {
		case t.c <- t.next:
		default: // not taken yet: dropped, as time.Ticker does
		}
		if t.period == 0 {
			return true
		}
		for !t.next.After(c.t) {
			t.next = t.next.Add(t.period)
		}
		return false
	})
}

// timerCount is how many tickers and timers are running.
func (c *fakeClock) timerCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.fire()
	c.mu.Unlock()
}

// fakeDumper is one namespace's kernel: the sockets it holds, what a dump
// costs (on the fake clock), and whether dumps fail.
type fakeDumper struct {
	clock *fakeClock

	mu      sync.Mutex
	sockets []snapshot.Socket
	cost    time.Duration
	fail    error
	dumps   int
	closed  bool
	lastReq []diag.Request
	// kernel, when set, is the in-kernel filter: it says whether a request
	// carrying program bc returns s. Unset, programs are ignored.
	kernel func(bc []byte, s *snapshot.Socket) bool
	// gate, when set, holds every dump until it is closed; entered hears
	// of each dump as it starts waiting there.
	gate    chan struct{}
	entered chan struct{}
	// skip: cookies dumps leave out although the sockets live (a dump
	// racing with the table's changes does).
	skip map[uint64]bool
	// onLookup, when set, runs (unlocked) as a lookup starts: the table
	// may change while the kernel answers.
	onLookup func()
	lookups  int
	// onDump, when set, runs (unlocked) as dump number n (from 1) starts.
	onDump  func(n int)
	started int
	// onChunk, when set, runs (unlocked) before chunk number n (from 1)
	// of a DumpEach is read: the table may change meanwhile. Reading a
	// chunk takes chunkCost of the fake clock.
	onChunk   func(n int)
	chunkCost time.Duration
}

// DumpEach dumps as Dump does, then reads the table out chunk by chunk,
// running onChunk before each and taking the table as it is then: like
// the kernel's, a dump under churn may list a socket twice, or miss it.
func (f *fakeDumper) DumpEach(t *snapshot.Table, reqs []diag.Request, n int, flush func(*snapshot.Table) *snapshot.Table) (*snapshot.Table, error) {
	f.mu.Lock()
	hook := f.onChunk
	f.mu.Unlock()
	if hook == nil {
		var all snapshot.Table
		err := f.Dump(&all, reqs)
		t.Reset()
		for i := range all.Sockets {
			*t.Append() = all.Sockets[i]
			if t.Len() >= n && i < len(all.Sockets)-1 {
				t = flush(t)
				t.Reset()
			}
		}
		return t, err
	}
	// With the hook: chunk k is the sockets from index (k-1)*n of the
	// table dumped after the hook ran.
	t.Reset()
	for k := 1; ; k++ {
		hook(k)
		var all snapshot.Table
		if err := f.Dump(&all, reqs); err != nil {
			return t, err
		}
		f.clock.Advance(f.chunkCost)
		lo := min((k-1)*n, len(all.Sockets))
		hi := min(lo+n, len(all.Sockets))
		t.Sockets = append(t.Sockets, all.Sockets[lo:hi]...)
		if hi == len(all.Sockets) {
			return t, nil
		}
		t = flush(t)
		t.Reset()
	}
}

func (f *fakeDumper) Dump(t *snapshot.Table, reqs []diag.Request) error {
	f.mu.Lock()
	gate, entered, hook := f.gate, f.entered, f.onDump
	f.started++
	n := f.started
	f.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	if gate != nil {
		entered <- struct{}{}
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dumps++
	f.lastReq = slices.Clone(reqs)
	f.clock.Advance(f.cost)
	t.Reset()
	if f.fail != nil {
		return f.fail
	}
	for _, r := range reqs {
		for i := range f.sockets {
			s := &f.sockets[i]
			if s.Proto != r.Proto || (r.Family != snapshot.FamilyAny && r.Family != s.Family) {
				continue
			}
			if f.kernel != nil && len(r.Bytecode) > 0 && !f.kernel(r.Bytecode, s) {
				continue
			}
			if r.States&(1<<s.State) == 0 || f.skip[s.Cookie] {
				continue
			}
			*t.Append() = *s
		}
	}
	return nil
}

// Lookup answers as the kernel does: alive when it holds the socket,
// gone otherwise.
func (f *fakeDumper) Lookup(keys []snapshot.Key, out []snapshot.LookupResult) error {
	f.mu.Lock()
	hook := f.onLookup
	f.lookups += len(keys)
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, k := range keys {
		out[i] = snapshot.LookupGone
		if j := slices.IndexFunc(f.sockets, func(s snapshot.Socket) bool { return s.Key == k }); j >= 0 {
			out[i] = snapshot.LookupAlive
			if f.sockets[j].State == snapshot.StateTimeWait {
				out[i] = snapshot.LookupTimeWait
			}
		}
	}
	return nil
}

func (f *fakeDumper) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return nil
}

func (f *fakeDumper) set(socks ...snapshot.Socket) {
	f.mu.Lock()
	f.sockets = socks
	f.mu.Unlock()
}

func (f *fakeDumper) dumpCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dumps
}

// fakeSub is a destroy subscription: it delivers the closes pushed to
// it at once, and those queued by close each once the fake clock has
// reached the time it was queued, reading each takes readCost; it reports
// an overrun when told.
type fakeSub struct {
	clock    *fakeClock
	mu       sync.Mutex
	overrun  bool
	queued   []snapshot.Socket
	queue    []queuedClose
	readCost time.Duration
	// flood: every drain fills its batch, as under closes that never let
	// up, and takes floodCost of the fake clock.
	flood     bool
	floodCost time.Duration
	closed    chan struct{}
	once      sync.Once
	// emptyDrains counts the drains that found nothing queued.
	emptyDrains int
}

// queuedClose is a notification the kernel queues at a given time.
type queuedClose struct {
	s  snapshot.Socket
	at time.Time
}

func newFakeSub() *fakeSub { return &fakeSub{closed: make(chan struct{})} }

// close queues s's destroy notification at time at.
func (s *fakeSub) close(sock snapshot.Socket, at time.Time) {
	s.mu.Lock()
	s.queue = append(s.queue, queuedClose{sock, at})
	s.mu.Unlock()
}

func (s *fakeSub) Drain(t *snapshot.Table) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overrun {
		s.overrun = false
		return false, diag.ErrOverrun
	}
	for _, q := range s.queued {
		*t.Append() = q
	}
	s.queued = nil
	// As recvfrom does: take what is queued by now, one message at a
	// time, while the time goes on.
	for len(s.queue) > 0 && s.clock != nil && !s.queue[0].at.After(s.clock.Now()) {
		*t.Append() = s.queue[0].s
		s.queue = s.queue[1:]
		s.clock.Advance(s.readCost)
	}
	if s.flood {
		s.clock.Advance(s.floodCost)
		return true, nil
	}
	if t.Len() == 0 {
		s.emptyDrains++
	}
	return false, nil
}

// drainedEmpty is how many drains found nothing queued.
func (s *fakeSub) drainedEmpty() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.emptyDrains
}

// push queues the destroy notification of s, delivered at the next drain.
func (s *fakeSub) push(sock snapshot.Socket) {
	s.mu.Lock()
	s.queued = append(s.queued, sock)
	s.mu.Unlock()
}

func (s *fakeSub) WaitReadable() error { <-s.closed; return errors.New("closed") }

func (s *fakeSub) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

func (s *fakeSub) Stats() snapshot.Stats { return snapshot.Stats{} }
func (s *fakeSub) LastMalformed() error  { return nil }

// fakeOutput records the events written; a reload's "new" sinks are the
// same recorder.
type fakeOutput struct {
	events []event.Event
	closed int // Close calls: the shutdown flushed the sinks
}

func (o *fakeOutput) Write(ev *event.Event) error { o.events = append(o.events, *ev); return nil }
func (o *fakeOutput) Sync() error                 { return nil }
func (o *fakeOutput) Reopen() error               { return nil }
func (o *fakeOutput) Close() error                { o.closed++; return nil }
func (o *fakeOutput) Dropped() uint64             { return 0 }
func (o *fakeOutput) Stats() []sink.Stats         { return nil }

// take returns the events written since the last take.
func (o *fakeOutput) take() []event.Event {
	evs := o.events
	o.events = nil
	return evs
}

// kinds counts evs by kind and reason ("closed/gone", "gap/dump_failed",
// "appeared").
func kinds(evs []event.Event) map[string]int {
	m := map[string]int{}
	for _, ev := range evs {
		k := ev.Kind.String()
		if ev.Reason != "" {
			k += "/" + ev.Reason
		}
		m[k]++
	}
	return m
}

// harness is a loop on fakes, with its dump worker running.
type harness struct {
	t      *testing.T
	d      *loop
	clock  *fakeClock
	out    *fakeOutput
	kernel map[netns.ID]*fakeDumper
	subs   map[netns.ID]*fakeSub
	nss    []netns.NS // what discovery finds
}

// testConfig parses yaml over a base without attribution, so that tests
// read nothing of /proc.
func testConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte("attribution:\n  process: false\n  cgroup: false\n"+yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newHarness(t *testing.T, cfg *config.Config, nss ...netns.NS) *harness {
	t.Helper()
	h := newFakeLoop(t, cfg, Options{}, nss...)
	go h.d.dumper()
	t.Cleanup(func() {
		close(h.d.dumpReq)
		h.d.close()
	})
	return h
}

// newFakeLoop is a loop on fakes, its dump worker not started: run
// starts it, and closes the loop when it returns.
func newFakeLoop(t *testing.T, cfg *config.Config, opts Options, nss ...netns.NS) *harness {
	t.Helper()
	h := &harness{t: t, clock: newFakeClock(), out: &fakeOutput{}, kernel: map[netns.ID]*fakeDumper{}, subs: map[netns.ID]*fakeSub{}, nss: nss}
	for _, ns := range nss {
		h.kernel[ns.ID] = &fakeDumper{clock: h.clock}
	}
	open := func(ns netns.NS, cfg *config.Config) (handles, error, error) {
		k := h.kernel[ns.ID]
		if k == nil {
			return handles{}, nil, os.ErrNotExist
		}
		var hd handles
		hd.Dumper = k
		if sub := h.subs[ns.ID]; sub != nil && cfg.Destroy.Enabled {
			hd.Destroy, hd.DestroyBuffer = sub, cfg.Destroy.Buffer
		}
		return hd, nil, nil
	}
	discover := func(config.Namespaces) ([]netns.NS, error) { return slices.Clone(h.nss), nil }
	openSinks := func(*config.Config) (Output, error) { return h.out, nil }
	d, err := newLoop(cfg, opts, h.clock, open, discover, openSinks)
	if err != nil {
		t.Fatal(err)
	}
	h.d = d
	return h
}

// start opens the namespaces and makes the first poll, as Run does.
func (h *harness) start() {
	h.t.Helper()
	if err := h.d.rescan(); err != nil {
		h.t.Fatal(err)
	}
	// Opening a namespace probes each request with a dump; count polls.
	for _, k := range h.kernel {
		k.mu.Lock()
		k.dumps = 0
		k.mu.Unlock()
	}
	h.round()
}

// round makes one tick's polls and waits for them.
func (h *harness) round() {
	h.d.startRound()
	h.d.finishRounds()
}

func hostNS() netns.NS { return netns.NS{ID: netns.ID{Dev: 4, Ino: 1000}, Host: true} }

func otherNS(i int) netns.NS {
	return netns.NS{ID: netns.ID{Dev: 4, Ino: 2000 + uint64(i)}, Name: "ns" + itoa(i)}
}

func itoa(i int) string { return string(rune('a'+i%26)) + string(rune('a'+i/26%26)) }

// listener returns a TCP IPv4 socket listening on port.
func listener(cookie uint64, port uint16) snapshot.Socket {
	var s snapshot.Socket
	s.Proto, s.Family, s.Cookie, s.State = snapshot.ProtoTCP, snapshot.FamilyIPv4, cookie, snapshot.StateListen
	s.Src = netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port)
	s.Dst = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	return s
}

// writeConfig writes yaml (over testConfig's base) to a file for reload.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "connlogd.yaml")
	if err := os.WriteFile(p, []byte("attribution:\n  process: false\n  cgroup: false\n"+yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
