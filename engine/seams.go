package engine

import (
	"os"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/differ"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/netns"
	"github.com/connlogd/connlogd/sink"
	"github.com/connlogd/connlogd/snapshot"
)

// The loop reaches the kernel, the sinks and the time only through the
// seams of this file, so that tests drive it with fakes and no privilege.

// Clock tells the time. Every event the loop stamps, and every interval
// it measures, reads it here, and the loop's ticks (polls, rescans, the
// watchdog) and delays come from it, so that a test moves time itself.
// The dump worker reads it too (when a dump ends), so it must be safe
// for concurrent use.
type Clock interface {
	Now() time.Time
	// NewTicker is time.NewTicker on this clock: it drops the ticks a
	// slow receiver misses instead of queueing them.
	NewTicker(d time.Duration) Ticker
	// After is time.After on this clock.
	After(d time.Duration) <-chan time.Time
}

// Ticker is what the loop needs of a *time.Ticker.
type Ticker interface {
	C() <-chan time.Time
	Reset(d time.Duration)
	Stop()
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) NewTicker(d time.Duration) Ticker       { return systemTicker{time.NewTicker(d)} }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

type systemTicker struct{ *time.Ticker }

func (t systemTicker) C() <-chan time.Time { return t.Ticker.C }

// Dumper reads one namespace's socket table: *diag.Conn is one, bound to
// its namespace when opened. Lookup makes it the differ's Prober.
type Dumper interface {
	Dump(t *snapshot.Table, reqs []diag.Request) error
	// DumpEach is Dump handing the table over in chunks as it is read
	// (diag.Conn.DumpEach): flush gets t each time it holds n sockets or
	// more and returns the table to fill next; the rest is returned.
	DumpEach(t *snapshot.Table, reqs []diag.Request, n int, flush func(*snapshot.Table) *snapshot.Table) (*snapshot.Table, error)
	differ.Prober
	Close() error
}

// netlinkCounter is what a Dumper or a Subscription may also count: the
// netlink messages it refused, reported by the loop after each poll.
type netlinkCounter interface {
	Stats() snapshot.Stats
	LastMalformed() error
}

// Subscription delivers a namespace's socket closes as the kernel reports
// them: *diag.Destroy is one. A waiter goroutine reads what WaitReadable
// says is queued, and the loop what is left, one at a time (see
// waitDestroy); Close is not called during a read.
type Subscription interface {
	// Drain reads what is queued, one batch, into t; full says more may
	// be waiting. diag.ErrOverrun says notifications were lost.
	Drain(t *snapshot.Table) (full bool, err error)
	// WaitReadable blocks until something is queued, or fails once closed.
	WaitReadable() error
	Close() error
	netlinkCounter
}

// Output is where events go: *sink.Tee is one.
type Output interface {
	Write(ev *event.Event) error
	Sync() error
	Reopen() error
	Close() error
	// Dropped is how many events the outputs lost, cumulative.
	Dropped() uint64
	Stats() []sink.Stats
}

// handles are a namespace's open kernel interfaces.
type handles struct {
	Dumper  Dumper
	Destroy Subscription // nil: no notifications (disabled, or see destroyErr)
	// What the destroy subscription's receive buffer got.
	DestroyBuffer int
	DestroyForced bool
	// The namespace's /proc/net/sockstat files; nil when unreadable.
	Sockstat, Sockstat6 *os.File
}

// opener opens a namespace's handles. destroyErr says why notifications
// are unavailable while the rest opened; err that the namespace cannot be
// watched. On error the handles opened so far are returned, to be closed.
type opener func(ns netns.NS, cfg *config.Config) (h handles, destroyErr, err error)

// openKernel is the opener of the daemon. Sockets are created inside the
// namespace and stay bound to it; nothing else needs to enter it.
func openKernel(ns netns.NS, cfg *config.Config) (h handles, destroyErr, err error) {
	err = netns.Do(ns, func() error {
		c, err := diag.Open()
		if err != nil {
			return err
		}
		h.Dumper = c
		if cfg.Destroy.Enabled {
			var sub *diag.Destroy
			sub, destroyErr = diag.OpenDestroy(cfg.Protocols, cfg.Families, cfg.Destroy.Buffer)
			if destroyErr == nil {
				h.Destroy, h.DestroyBuffer, h.DestroyForced = sub, sub.Buffer, sub.Forced
			}
		}
		// Bound to this namespace at open; optional, so errors only cost
		// the optimisation.
		h.Sockstat, _ = os.Open("/proc/thread-self/net/sockstat")
		h.Sockstat6, _ = os.Open("/proc/thread-self/net/sockstat6")
		return nil
	})
	return h, destroyErr, err
}

// discoverer lists the namespaces a configuration asks for.
type discoverer func(config.Namespaces) ([]netns.NS, error)

// discoverKernel is the discoverer of the daemon.
func discoverKernel(nsc config.Namespaces) ([]netns.NS, error) {
	switch nsc.Mode {
	case config.NamespacesHost, "":
		if len(nsc.List) == 0 {
			h, err := netns.Host()
			if err != nil {
				return nil, err
			}
			return []netns.NS{h}, nil
		}
	case config.NamespacesAll:
		return netns.Discover()
	}
	var out []netns.NS
	for _, e := range nsc.List {
		if e == config.NamespacesHost {
			h, err := netns.Host()
			if err != nil {
				return nil, err
			}
			out = append(out, h)
			continue
		}
		ns, err := netns.Resolve(e)
		if err != nil {
			continue // not there (yet): the next rescan looks again
		}
		out = append(out, ns)
	}
	return out, nil
}

// sinkOpener opens a configuration's sinks.
type sinkOpener func(cfg *config.Config) (Output, error)
