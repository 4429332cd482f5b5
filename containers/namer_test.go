package containers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
)

// fakeSource answers from a map; ids in slow wait for release or the
// deadline; fail makes every question fail.
type fakeSource struct {
	mu       sync.Mutex
	known    map[string]event.Container
	asked    map[string]int
	fail     error
	slow     chan struct{} // when set, every question waits on it or its deadline
	explicit bool
}

func newFake() *fakeSource {
	return &fakeSource{known: map[string]event.Container{}, asked: map[string]int{}}
}

func (f *fakeSource) Inspect(ctx context.Context, id string) (event.Container, error) {
	f.mu.Lock()
	f.asked[id]++
	slow, fail := f.slow, f.fail
	info, ok := f.known[id]
	f.mu.Unlock()
	if slow != nil {
		select {
		case <-slow:
		case <-ctx.Done():
			return event.Container{}, fmt.Errorf("fake: %w", ctx.Err())
		}
	}
	if fail != nil {
		return event.Container{}, fail
	}
	if !ok {
		return event.Container{}, ErrNotFound
	}
	return info, nil
}

func (f *fakeSource) String() string { return "fake" }
func (f *fakeSource) Explicit() bool { return f.explicit }
func (f *fakeSource) timesAsked(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.asked[id]
}

func id(n int) string { return fmt.Sprintf("%064x", n) }

// eventually polls Lookup until it answers.
func eventually(t *testing.T, n *Namer, cid string) *event.Container {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if c := n.Lookup(cid); c != nil {
			return c
		}
	}
	t.Fatalf("%s never named", cid)
	return nil
}

// waitIdle waits until no question is pending.
func waitIdle(t *testing.T, n *Namer) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); n.Stats().Pending != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("questions still pending: %+v", n.Stats())
		}
	}
}

func TestLookupFillsAsynchronouslyAndAsksOnce(t *testing.T) {
	src := newFake()
	want := event.Container{Name: "web", Image: "nginx:1", PodName: "p", PodNamespace: "ns", PodUID: "u"}
	src.known[id(1)] = want
	n := New([]Source{src}, Options{})
	defer n.Close()
	got := eventually(t, n, id(1))
	want.ID = id(1)
	if *got != want {
		t.Errorf("got %+v, want %+v", *got, want)
	}
	for range 100 {
		if c := n.Lookup(id(1)); c != got {
			t.Fatal("a known container's answer changed")
		}
	}
	if a := src.timesAsked(id(1)); a != 1 {
		t.Errorf("asked %d times, want once", a)
	}
}

// A runtime that hangs delays names, never the caller.
func TestLookupNeverWaitsForASlowRuntime(t *testing.T) {
	src := newFake()
	src.known[id(1)] = event.Container{Name: "web"}
	src.slow = make(chan struct{})
	n := New([]Source{src}, Options{Timeout: time.Hour})
	defer n.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 10000 {
			if c := n.Lookup(id(1 + i%3)); c != nil {
				t.Errorf("answered %+v while the runtime hangs", c)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Lookup blocked on a hanging runtime")
	}
	close(src.slow)
	if c := eventually(t, n, id(1)); c.Name != "web" {
		t.Errorf("got %+v", c)
	}
}

func TestNotFoundIsNotAskedAgainUntilItsDelay(t *testing.T) {
	src := newFake()
	n := New([]Source{src}, Options{NotFoundRetry: time.Hour})
	defer n.Close()
	now := time.Now()
	var mu sync.Mutex
	n.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	n.Lookup(id(7))
	waitIdle(t, n)
	for range 50 {
		if n.Lookup(id(7)) != nil {
			t.Fatal("an unknown container was named")
		}
	}
	waitIdle(t, n)
	if a := src.timesAsked(id(7)); a != 1 {
		t.Fatalf("asked %d times within the delay, want 1", a)
	}
	// The container is created later (or the id belongs to a runtime
	// that came up): after the delay it is asked again.
	src.mu.Lock()
	src.known[id(7)] = event.Container{Name: "late"}
	src.mu.Unlock()
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	if c := eventually(t, n, id(7)); c.Name != "late" {
		t.Errorf("got %+v", c)
	}
	if st := n.Stats(); st.NotFound != 1 || st.Named != 1 {
		t.Errorf("stats %+v", st)
	}
}

// Failures are retried with a growing delay, and warned about once.
func TestFailuresBackOffAndWarnOnce(t *testing.T) {
	src := newFake()
	src.fail = errors.New("500 Internal Server Error")
	n := New([]Source{src}, Options{RetryMin: time.Second, RetryMax: 4 * time.Second})
	defer n.Close()
	now := time.Now()
	var mu sync.Mutex
	n.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	asks := func() int { n.Lookup(id(1)); waitIdle(t, n); return src.timesAsked(id(1)) }
	if a := asks(); a != 1 {
		t.Fatalf("asked %d", a)
	}
	advance(900 * time.Millisecond)
	if a := asks(); a != 1 {
		t.Fatalf("asked again after 0.9 s: %d", a)
	}
	advance(200 * time.Millisecond) // 1.1 s: past the first delay
	if a := asks(); a != 2 {
		t.Fatalf("not asked again after the first delay: %d", a)
	}
	advance(1500 * time.Millisecond) // the second delay is 2 s
	if a := asks(); a != 2 {
		t.Fatalf("delay did not grow: %d", a)
	}
	advance(time.Second)
	if a := asks(); a != 3 {
		t.Fatalf("not asked after the second delay: %d", a)
	}
	for range 10 { // the delay stops at RetryMax
		advance(4*time.Second + time.Millisecond)
		asks()
	}
	if a := src.timesAsked(id(1)); a != 13 {
		t.Errorf("asked %d times, want 13 with the delay capped", a)
	}
	ws := n.Warnings()
	if len(ws) != 1 || !strings.Contains(ws[0].Error(), "500 Internal") {
		t.Errorf("warnings %v, want one", ws)
	}
	if ws := n.Warnings(); len(ws) != 0 {
		t.Errorf("warned again: %v", ws)
	}
}

// A default socket with nothing behind it is no problem; one the
// configuration named is.
func TestUnreachableWarnsOnlyWhenConfigured(t *testing.T) {
	for _, explicit := range []bool{false, true} {
		src := newFake()
		src.explicit = explicit
		src.fail = fmt.Errorf("dial: %w", ErrUnreachable)
		n := New([]Source{src}, Options{})
		n.Lookup(id(1))
		waitIdle(t, n)
		if ws := n.Warnings(); (len(ws) == 1) != explicit || len(ws) > 1 {
			t.Errorf("explicit %v: warnings %v", explicit, ws)
		}
		n.Close()
	}
}

// The second source answers what the first does not know.
func TestSourcesAskedInOrder(t *testing.T) {
	a, b := newFake(), newFake()
	b.known[id(2)] = event.Container{Name: "from-b"}
	a.known[id(3)] = event.Container{Name: "from-a"}
	b.known[id(3)] = event.Container{Name: "shadowed"}
	n := New([]Source{a, b}, Options{})
	defer n.Close()
	if c := eventually(t, n, id(2)); c.Name != "from-b" {
		t.Errorf("got %+v", c)
	}
	if c := eventually(t, n, id(3)); c.Name != "from-a" {
		t.Errorf("got %+v", c)
	}
	if b.timesAsked(id(3)) != 0 {
		t.Error("second source asked for what the first knew")
	}
}

func TestCacheIsBounded(t *testing.T) {
	src := newFake()
	for i := range 100 {
		src.known[id(i)] = event.Container{Name: fmt.Sprint(i)}
	}
	n := New([]Source{src}, Options{MaxEntries: 40})
	defer n.Close()
	for i := range 100 {
		eventually(t, n, id(i))
	}
	n.mu.Lock()
	size := len(n.cache)
	n.mu.Unlock()
	if size > 40+1 {
		t.Errorf("cache holds %d, bound 40", size)
	}
}

func TestNoSourcesAnswersNil(t *testing.T) {
	n := New(nil, Options{})
	defer n.Close()
	if n.Lookup(id(1)) != nil || n.Lookup("") != nil {
		t.Error("answered without a source")
	}
}
