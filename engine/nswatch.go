package engine

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connlogd/connlogd/attribution"
	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/netns"
)

// A namespace watcher (package netns) reports namespaces as they appear,
// which the periodic rescan would find seconds later or, for a short one,
// never. The loop stays the only owner of its tables: the watcher's
// reports are opened on helper goroutines (openNamespaces), and the loop
// adopts what they opened (adopt). The destroy subscription is open from
// then on, so the closes of a namespace's first connections queue in the
// kernel while the loop is busy elsewhere, and none is lost.

// goneDelay is how long the loop waits, after the watcher says a
// namespace may have vanished, before it lists them again: the hints of a
// burst of deletions come together, and a rescan walks /proc. A vanished
// namespace is released that much later, instead of at the next periodic
// rescan: until then its handles pin it, and it is polled.
const goneDelay = 200 * time.Millisecond

// maxParallelOpens bounds the namespaces being opened at once: an open
// probes with dumps, and a dump of an empty namespace still walks the
// host-wide hash.
const maxParallelOpens = 4

// watchNamespaces runs the namespace watcher the running configuration
// calls for, and the goroutine that opens what it reports (the loop
// reads d.nsChanges and d.nsOpened): with namespaces: all, bind
// directories and process starts; with a list, bind directories only (a
// listed name appears there); none with only the host watched. At a
// reload it starts the watcher a wider configuration needs (from the
// host to all: the namespaces of containers started from then on are
// watched as they appear, not only at the next rescan), replaces one
// that watches the wrong things, and stops one no longer needed. What it
// cannot watch is said once each.
func (d *loop) watchNamespaces() {
	nsc := d.plan.Config.Namespaces
	want := !(nsc.Mode == config.NamespacesHost || (nsc.Mode == "" && len(nsc.List) == 0))
	procs := nsc.Mode == config.NamespacesAll
	if d.nsw != nil && want && d.nsProcs == procs {
		return
	}
	d.stopNamespaceWatch()
	if !want {
		return
	}
	if d.nsw = d.startNamespaceWatch(d.watchStart, procs); d.nsw == nil {
		return
	}
	changes, openedC := make(chan netns.Change), make(chan opened)
	quit, done := make(chan struct{}), make(chan struct{})
	nsw := d.nsw
	go func() {
		defer close(done)
		openNamespaces(nsw, d.open, &d.cfgNow, d.log, changes, openedC, quit)
	}()
	d.nsChanges, d.nsOpened, d.nsProcs = changes, openedC, procs
	d.nsStop = func() {
		close(quit)
		nsw.Close()
		<-done
	}
}

// stopNamespaceWatch stops the namespace watcher, if one runs.
func (d *loop) stopNamespaceWatch() {
	if d.nsStop != nil {
		d.nsStop()
	}
	d.nsw, d.nsChanges, d.nsOpened, d.nsStop = nil, nil, nil, nil
}

// startNamespaceWatch starts a namespace watcher (procs: process starts
// too), or returns nil with a warning when it cannot.
func (d *loop) startNamespaceWatch(start func(netns.WatchOptions) (netns.Watcher, []error, error), procs bool) netns.Watcher {
	w, warns, err := start(netns.WatchOptions{Procs: procs})
	if err != nil {
		d.log.Warn("cannot watch for new namespaces; they are found by the rescan only", "every", d.plan.Config.NamespaceRescan, "err", err)
		return nil
	}
	for _, e := range warns {
		d.log.Warn("namespace watch degraded", "err", e)
	}
	return w
}

func startLiveWatcher(opts netns.WatchOptions) (netns.Watcher, []error, error) {
	w, warns, err := netns.NewWatcher(opts)
	if err != nil {
		return nil, warns, err
	}
	return w, warns, nil
}

// openNamespaces opens each namespace nsw reports, as soon as it is
// reported, on up to maxParallelOpens goroutines, through the descriptor
// the watcher took (which keeps a namespace enterable after the process
// it was seen in exits), and hands the result to the loop on opened.
// Other changes, and every change while namespaces are listed rather
// than all watched, go to the loop on toLoop. cfg is the running
// configuration, which the loop replaces on reload. It returns when nsw
// is closed.
func openNamespaces(nsw netns.Watcher, open opener, cfg *atomic.Pointer[config.Config], log *slog.Logger,
	toLoop chan<- netns.Change, opened chan<- opened, quit <-chan struct{}) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxParallelOpens)
	var denied atomic.Bool
	for c := range nsw.Changes() {
		conf := cfg.Load()
		if c.Rescan || c.Gone || conf.Namespaces.Mode != config.NamespacesAll || denied.Load() {
			if c.File != nil {
				c.File.Close()
			}
			if !c.Rescan && !c.Gone {
				// Not opened here: whether it is wanted is the rescan's
				// business, and a namespace taking its inode later must
				// be reported again.
				nsw.Forget(c.NS.ID)
			}
			select {
			case toLoop <- c:
			case <-quit:
			}
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-quit:
			if c.File != nil {
				c.File.Close()
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			ctr := nsContainer(c.NS)
			o := openHandles(open, c.NS, c.FilePath(), conf, log)
			o.container = ctr
			if c.File != nil {
				c.File.Close()
			}
			if o.err != nil && netns.IsPermission(o.err) {
				denied.Store(true)
			}
			select {
			case opened <- o:
			case <-quit:
				o.closeHandles()
			}
		}()
	}
}

// adopt starts polling a namespace opened away from the loop, ahead of
// the round, so that its first sockets are not left to the next rescan.
func (d *loop) adopt(o opened) {
	now := d.clock.Now()
	if w, ok := d.watches[o.ns.ID]; ok || d.plan.Config.Namespaces.Mode != config.NamespacesAll {
		o.closeHandles() // the rescan was first, or the configuration changed
		if ok {
			w.named(o.ns)
		}
		return
	}
	w, err := d.build(o)
	if err != nil {
		if netns.IsPermission(err) && !d.nsDenied {
			d.nsDenied = true
			d.deniedNamespaces([]string{o.ns.String()}, err)
			d.write(&event.Event{Kind: event.Gap, Time: now, Reason: event.GapNetnsUnwatchable})
		}
		// Gone already, or not enterable: the rescan decides, and says.
		if d.nsw != nil {
			d.nsw.Forget(o.ns.ID)
		}
		return
	}
	d.watches[o.ns.ID] = w
	d.log.Info("watching namespace", "netns", o.ns.String(), "inode", o.ns.ID.Ino)
	// Its sockets are new to us, not initial: the first poll reports them
	// as appeared.
	w.differ.NotInitial()
	d.reorder()
	d.resync(w) // its events are flushed when the dump is done
}

// nsContainer returns the id of the container of the process whose
// namespace file ns.Path is (/proc/PID/ns/net), when it is one's and the
// pid still refers to a process of that namespace; "" otherwise.
func nsContainer(ns netns.NS) string {
	rest, ok := strings.CutPrefix(ns.Path, "/proc/")
	if !ok || ns.Host {
		return ""
	}
	pid, ok := strings.CutSuffix(rest, "/ns/net")
	if !ok {
		return ""
	}
	if _, err := strconv.Atoi(pid); err != nil {
		return ""
	}
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		return ""
	}
	// The pid may have been reused meanwhile: the answer stands only if
	// the process read is in the namespace.
	if cur, err := netns.Resolve("/proc/" + pid + "/ns/net"); err != nil || cur.ID != ns.ID {
		return ""
	}
	return attribution.ContainerOfProcCgroup(b)
}

// setContainer gives w the container id it knows at open, and the means
// to name the container of sockets whose cgroup is unknown.
func (d *loop) setContainer(w *namespace, id string) {
	if w.ns.Host {
		return
	}
	if w.container == "" {
		w.container = id
	}
	w.containerOf = func(id string) *event.Container {
		if d.names != nil {
			if c := d.names.Lookup(id); c != nil {
				return c
			}
		}
		return &event.Container{ID: id}
	}
}

// nameContainer learns the namespace's container from a socket whose
// cgroup is a container's, and gives it to sockets whose cgroup is
// unknown.
func (w *namespace) nameContainer(ev *event.Event) {
	if w.ns.Host {
		return
	}
	if id := ev.ContainerID(); id != "" {
		if w.container == "" {
			w.container = id
		}
	} else if w.container != "" && w.containerOf != nil {
		ev.Container = w.containerOf(w.container)
	}
}

// named takes the name a namespace was found under when it was watched
// before it had one: found through the process that made it (`ip netns
// add` unshares, then mounts the bind file), then through its bind file.
func (w *namespace) named(ns netns.NS) {
	if w.ns.Name == "" && ns.Name != "" {
		w.ns.Name = ns.Name
	}
}
