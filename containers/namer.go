// Package containers names the containers that sockets belong to: given
// the container id that package attribution reads from a socket's cgroup,
// it asks the container runtime, over the runtime's own API, for the
// container's name, image and Kubernetes pod.
//
// # Never blocking
//
// A socket event must not wait for a runtime: a daemon that hangs (docker
// under load takes seconds to answer) would stall every poll. Lookup
// answers from a cache at once, and when the cache does not know an id it
// returns nil and queues the id for a worker; the socket's later events
// carry the names. Each id is asked once: an answer is kept, a runtime
// that does not know the id is not asked again for NotFoundRetry, and a
// failure (timeout, daemon down) is retried with a growing delay.
//
// # Sources
//
// Each runtime is a Source, asked in turn until one knows the id. Docker
// is asked through its Engine API on its unix socket (GET
// /containers/ID/json), with net/http: the API is plain JSON over HTTP,
// and its official Go client would bring docker's module tree for one
// request. containerd and CRI-O are asked through the Kubernetes CRI
// (ContainerStatus, and PodSandboxStatus for a pod's sandbox), which is
// gRPC only: its generated client (k8s.io/cri-api) and grpc-go, nothing of
// the Kubernetes client libraries. Kubernetes pod fields come from the
// labels the kubelet sets on its containers (io.kubernetes.pod.*), as with
// cri-dockerd, or through the CRI from the container's sandbox.
//
// The package never logs: problems are Warnings, each kind once per
// source.
package containers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/connlogd/connlogd/event"
)

// ErrNotFound is what a Source returns for a container it does not know.
var ErrNotFound = errors.New("no such container")

// ErrUnreachable wraps what a Source returns when its runtime is not
// there (no socket, nothing listening): on a host without that runtime
// this is the normal case, not a problem.
var ErrUnreachable = errors.New("runtime not reachable")

// A Source is one container runtime's API.
type Source interface {
	// Inspect describes container id (64 hex digits), or returns
	// ErrNotFound, or an error wrapping ErrUnreachable. It must return
	// by ctx's deadline.
	Inspect(ctx context.Context, id string) (event.Container, error)
	// String names the source in warnings: "docker at /run/docker.sock".
	String() string
	// Explicit says that the configuration named this source: that it is
	// unreachable is then worth a warning.
	Explicit() bool
}

// A Source that holds a connection also implements io.Closer; the Namer
// closes it when it is closed.

// Options tune a Namer; zero values take the defaults.
type Options struct {
	Timeout       time.Duration // per question to a runtime; default 2 s
	Workers       int           // questions asked at once; default 2
	MaxEntries    int           // containers remembered; default 8192
	RetryMin      time.Duration // first delay after a failure; default 1 s
	RetryMax      time.Duration // longest delay after failures; default 1 min
	NotFoundRetry time.Duration // how long an id no runtime knows is not asked again; default 1 min
	Queue         int           // ids waiting for a worker; default 1024
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Timeout, 2*time.Second)
	def(&o.RetryMin, time.Second)
	def(&o.RetryMax, time.Minute)
	def(&o.NotFoundRetry, time.Minute)
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 8192
	}
	if o.Queue <= 0 {
		o.Queue = 1024
	}
}

// Stats are cumulative counters of a Namer.
type Stats struct {
	Asked    uint64 // questions to runtimes
	Named    uint64 // containers a runtime described
	NotFound uint64 // ids no runtime knew
	Failed   uint64 // questions that failed (timeout, error)
	Pending  int    // ids queued or being asked now
}

type entry struct {
	info   *event.Container
	queued bool
	fails  int
	next   time.Time // not asked again before
}

// Namer caches what runtimes say of containers. It is safe for
// concurrent use.
type Namer struct {
	opts    Options
	sources []Source
	now     func() time.Time

	mu       sync.Mutex
	cache    map[string]*entry
	warned   map[string]bool // source + kind
	warnings []error
	stats    Stats

	queue  chan string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New starts a Namer asking sources in order. With no source it answers
// nil to everything.
func New(sources []Source, opts Options) *Namer {
	opts.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	n := &Namer{
		opts:    opts,
		sources: sources,
		now:     time.Now,
		cache:   map[string]*entry{},
		warned:  map[string]bool{},
		queue:   make(chan string, opts.Queue),
		ctx:     ctx,
		cancel:  cancel,
	}
	if len(sources) > 0 {
		for range opts.Workers {
			n.wg.Add(1)
			go n.worker()
		}
	}
	return n
}

// Close stops the workers, and closes the sources that hold a
// connection (io.Closer); questions under way are abandoned.
func (n *Namer) Close() {
	n.cancel()
	n.wg.Wait()
	for _, s := range n.sources {
		if c, ok := s.(io.Closer); ok {
			c.Close()
		}
	}
}

// Lookup returns what is known of container id, or nil. It never waits:
// an id not known yet is queued for the runtimes, and a later Lookup has
// the answer.
func (n *Namer) Lookup(id string) *event.Container {
	if id == "" || len(n.sources) == 0 {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.cache[id]
	if e == nil {
		if len(n.cache) >= n.opts.MaxEntries {
			n.trim()
		}
		e = &entry{}
		n.cache[id] = e
	}
	if e.info != nil || e.queued || (!e.next.IsZero() && n.now().Before(e.next)) {
		return e.info
	}
	select {
	case n.queue <- id:
		e.queued = true
		n.stats.Pending++
	default:
		// Full: the next Lookup of the id queues it again.
	}
	return nil
}

// trim forgets a quarter of the cache, ids without an answer first:
// containers come and go, and the memory must stay bounded.
func (n *Namer) trim() {
	drop := len(n.cache) / 4
	for _, named := range [...]bool{false, true} {
		for id, e := range n.cache {
			if drop <= 0 {
				return
			}
			if (e.info != nil) == named && !e.queued {
				delete(n.cache, id)
				drop--
			}
		}
	}
}

// Warnings returns what went wrong since the last call, each kind of
// problem once per source for the Namer's life: the caller logs them.
func (n *Namer) Warnings() []error {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.warnings
	n.warnings = nil
	return w
}

// Stats returns the cumulative counters.
func (n *Namer) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

func (n *Namer) worker() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case id := <-n.queue:
			info, err := n.ask(id)
			n.answer(id, info, err)
		}
	}
}

// ask puts the question to each source in turn until one knows the id.
// It returns ErrNotFound when every reachable source said so.
func (n *Namer) ask(id string) (event.Container, error) {
	var firstErr error
	for _, s := range n.sources {
		ctx, cancel := context.WithTimeout(n.ctx, n.opts.Timeout)
		info, err := s.Inspect(ctx, id)
		cancel()
		n.mu.Lock()
		n.stats.Asked++
		n.mu.Unlock()
		switch {
		case err == nil:
			return info, nil
		case errors.Is(err, ErrNotFound):
		case errors.Is(err, ErrUnreachable) && !s.Explicit():
			// A default socket with no runtime behind it: nothing to say.
		default:
			n.warn(s.String(), err)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if firstErr != nil {
		return event.Container{}, firstErr
	}
	return event.Container{}, ErrNotFound
}

func (n *Namer) answer(id string, info event.Container, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stats.Pending--
	e := n.cache[id]
	if e == nil {
		e = &entry{} // trimmed meanwhile: keep the answer anyway
		n.cache[id] = e
	}
	e.queued = false
	now := n.now()
	switch {
	case err == nil:
		n.stats.Named++
		info.ID = id
		e.info, e.fails = &info, 0
	case errors.Is(err, ErrNotFound):
		n.stats.NotFound++
		e.fails = 0
		e.next = now.Add(n.opts.NotFoundRetry)
	default:
		n.stats.Failed++
		d := n.opts.RetryMin << min(e.fails, 16)
		if d > n.opts.RetryMax || d <= 0 {
			d = n.opts.RetryMax
		}
		e.fails++
		e.next = now.Add(d)
	}
}

// warn records err once per source and kind (unreachable, or anything
// else): a runtime that keeps failing is said once, not per container.
func (n *Namer) warn(source string, err error) {
	kind := "error"
	if errors.Is(err, ErrUnreachable) {
		kind = "unreachable"
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.warned[source+"\x00"+kind] {
		return
	}
	n.warned[source+"\x00"+kind] = true
	n.warnings = append(n.warnings, fmt.Errorf("containers: %s: %w; its containers' sockets get no container names until it answers", source, err))
}
