package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/attribution"
	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/containers"
	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/netns"
	"github.com/connlogd/connlogd/sink"
	"github.com/connlogd/connlogd/snapshot"
)

// sinkReportEvery bounds how often sink drops are reported while a sink
// keeps failing.
const sinkReportEvery = 10 * time.Second

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}

// usableRequests dumps each request once and keeps those the kernel
// serves. A family or protocol the kernel lacks (IPv6 disabled, udp_diag
// not built) is reported once and left out, instead of failing every poll.
//
// It also counts the sockets the dumps listed, which sizes the tables of
// the first poll. The dumps are read in small chunks, counted and
// dropped: a whole table of a large host would be the start's peak of
// memory.
func usableRequests(conn Dumper, reqs []diag.Request, log *slog.Logger) ([]diag.Request, int, error) {
	var ok []diag.Request
	var tab snapshot.Table
	var firstErr error
	sockets := 0
	count := func(t *snapshot.Table) *snapshot.Table {
		sockets += t.Len()
		return t
	}
	for i := 0; i < len(reqs); i++ {
		r := reqs[i]
		last, err := conn.DumpEach(&tab, []diag.Request{r}, probeChunk, count)
		switch {
		case err == nil:
			sockets += last.Len()
			ok = append(ok, r)
		case r.Family == snapshot.FamilyAny:
			// No v1 request here: one request per family instead.
			reqs = append(reqs, r.Split()...)
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAFNOSUPPORT), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
			log.Warn("kernel cannot dump these sockets; they will not be logged", "sockets", r.String(), "err", err)
		default:
			if firstErr == nil {
				firstErr = err
			}
			ok = append(ok, r) // a passing failure: keep trying
		}
	}
	if len(ok) == 0 {
		if firstErr == nil {
			firstErr = errors.New("no protocol and family can be dumped")
		}
		return nil, 0, fmt.Errorf("sock_diag: %w", firstErr)
	}
	return ok, sockets, nil
}

// probeChunk is the chunk of usableRequests's dumps.
const probeChunk = 256

// Snapshot writes the host namespace's socket table as it is now
// (`connlogd -once`), through the loop's own path: the plan's filter,
// state mask, attribution and owner rules.
func Snapshot(cfg *config.Config, stdout io.Writer, log *slog.Logger) error {
	plan, err := NewPlan(cfg, 1)
	if err != nil {
		return err
	}
	conn, err := diag.Open()
	if err != nil {
		return err
	}
	defer conn.Close()
	reqs, _, err := usableRequests(conn, diag.Requests(cfg.Protocols, cfg.Families, true), log)
	if err != nil {
		return err
	}
	np := plan.forNamespace(reqs)
	var tab snapshot.Table
	if err := conn.Dump(&tab, np.reqs); err != nil {
		return err
	}
	out, err := sink.NewWriter(stdout, hostname())
	if err != nil {
		return err
	}
	owners := attribution.New(cfg.Attribution)
	defer owners.Close()
	tr := owners.NewTracker()
	defer tr.Close()
	if !np.kernelFiltered {
		plan.keep(&tab)
	}
	tr.Refresh(&tab)
	for _, w := range owners.Warnings() {
		log.Warn("owner attribution degraded", "err", w)
	}
	seen := make(map[snapshot.Key]bool, tab.Len())
	now := systemClock{}.Now()
	for i := range tab.Sockets {
		s := &tab.Sockets[i]
		if seen[s.Key] || !plan.wantsState(s.State) {
			continue
		}
		seen[s.Key] = true
		ev := event.Event{Kind: event.Snapshot, Time: now, Socket: *s}
		if !plan.admit(tr, &ev) {
			continue
		}
		if err := out.Write(&ev); err != nil {
			return err
		}
	}
	return out.Close()
}

// Notifier hears of the loop's life cycle; the daemon speaks systemd's
// sd_notify through it. Its calls come from the loop's goroutine.
type Notifier interface {
	Ready()
	Reloading()
	Stopping()
	// Watchdog is called every Options.WatchdogPeriod from the loop, so a
	// stuck loop stops the pings.
	Watchdog()
}

// Metrics receives the engine's counters. Its calls come from the loop's
// goroutine, except that the outputs handed to Sinks are read by a
// scraper.
type Metrics interface {
	Event(ev *event.Event)
	// Polled: one namespace's poll (dump and diff) took this long.
	Polled(took time.Duration)
	// Sockets: the sockets of the last poll's tables, summed over the
	// namespaces, by protocol (tcp, udp) and family (ipv4, ipv6).
	Sockets(counts [2][2]int)
	Netlink(malformed, foreign uint64)
	Overrun()
	DumpFailed()
	Reloaded(ok bool)
	Namespaces(n int)
	// Sinks: the outputs events now go to (at start and after a reload).
	Sinks(out Output)
}

// ReloadRequest asks the loop to apply the configuration file again.
type ReloadRequest struct {
	Path   string // "" when running on built-in defaults: nothing to read
	Reason string // for the log: "SIGHUP", "file changed"
}

// Options are what Run needs besides the configuration.
type Options struct {
	Log     *slog.Logger
	Version string // the daemon's version, for the sinks
	// Notify and Metrics may be nil.
	Notify         Notifier
	WatchdogPeriod time.Duration // 0: no watchdog pings
	Metrics        Metrics
	// Reload asks for a reload; Reopen for the sinks' files to be reopened
	// after a rotation (the daemon sends SIGUSR1 here); Rescan for the
	// namespaces to be listed again now, ahead of the periodic rescan (a
	// namespace watcher sends here). Each may be nil.
	Reload <-chan ReloadRequest
	Reopen <-chan os.Signal
	Rescan <-chan struct{}
}

// loop is the engine's state. Everything here is touched by the loop's
// goroutine only; the dump worker gets a job and gives it back, and the
// destroy waiters only tell the loop when to read.
type loop struct {
	log     *slog.Logger
	version string
	host    string
	out     Output
	plan    *Plan // the running plan; replaced whole by a reload
	watches map[netns.ID]*namespace
	order   []*namespace    // watched namespaces in a stable order, for polling
	ready   chan *namespace // a namespace has destroy notifications queued
	owners  *attribution.Resolver
	audit   *auditFeed // nil: audit attribution off
	met     Metrics
	notify  Notifier

	clock     Clock
	open      opener
	discover  discoverer
	openSinks sinkOpener

	dumpReq  chan dumpJob // to the dump worker
	dumpDone chan dumpJob // from it, chunk by chunk
	// chunks are the tables a dump is read into, back from the loop;
	// chunkSize the sockets of a chunk (DumpChunk, smaller in tests).
	chunks    chan *snapshot.Table
	chunkSize int
	sched     scheduler

	nsDenied bool // entering namespaces was refused; said once
	sinkErr  bool

	// nsw reports namespaces as they appear; nil when only the host is
	// watched. cfgNow is the running configuration for the goroutines
	// that open what it reports. names asks container runtimes for
	// names; nil when off.
	nsw    netns.Watcher
	cfgNow atomic.Pointer[config.Config]
	names  *containers.Namer
	// The namespace watcher's goroutine (watchNamespaces): what it hands
	// the loop, whether it watches process starts, and its stop. Started
	// at start, and again at a reload that changes what it must watch.
	nsChanges  <-chan netns.Change
	nsOpened   <-chan opened
	nsProcs    bool
	nsStop     func()
	watchStart func(netns.WatchOptions) (netns.Watcher, []error, error)

	dropped      uint64 // sink drops already reported
	dropReported time.Time
}

// newLoop builds a loop on the given seams; opts.Metrics and opts.Notify
// may be nil. It opens the sinks but no namespace.
func newLoop(cfg *config.Config, opts Options, clock Clock, open opener, discover discoverer, openSinks sinkOpener) (*loop, error) {
	plan, err := NewPlan(cfg, 1)
	if err != nil {
		return nil, err
	}
	d := &loop{
		log:       opts.Log,
		version:   opts.Version,
		host:      hostname(),
		plan:      plan,
		watches:   map[netns.ID]*namespace{},
		ready:     make(chan *namespace),
		met:       opts.Metrics,
		notify:    opts.Notify,
		clock:     clock,
		open:      open,
		discover:  discover,
		openSinks: openSinks,
		dumpReq:   make(chan dumpJob, 1),
		dumpDone:  make(chan dumpJob, 1),
		chunks:    make(chan *snapshot.Table, chunkTables),
		chunkSize: DumpChunk,
		// Tests start a fake watcher instead.
		watchStart: startLiveWatcher,
	}
	for range chunkTables {
		d.chunks <- new(snapshot.Table)
	}
	if d.met == nil {
		d.met = noMetrics{}
	}
	if d.notify == nil {
		d.notify = noNotifier{}
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.out, err = openSinks(cfg); err != nil {
		return nil, err
	}
	d.owners = attribution.New(cfg.Attribution)
	d.cfgNow.Store(cfg)
	d.met.Sinks(d.out)
	return d, nil
}

// openSinksFunc returns the daemon's sink opener.
func openSinksFunc(host, version string) sinkOpener {
	return func(cfg *config.Config) (Output, error) {
		return sink.Open(cfg.Sinks, sink.Options{Host: host, Version: version})
	}
}

// close releases every namespace and the resolver.
func (d *loop) close() {
	for _, w := range d.order {
		w.close()
	}
	d.owners.Close()
}

// Run watches the namespaces cfg names until ctx is done, then saves the
// table (when configured) and flushes the sinks. Everything happens on
// one goroutine, this loop, except the dumps (one worker, one dump at a
// time) and the waits for destroy notifications.
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	d, err := newLoop(cfg, opts, systemClock{}, openKernel, discoverKernel, openSinksFunc(hostname(), opts.Version))
	if err != nil {
		return err
	}
	return d.run(ctx, opts)
}

// run is Run on the loop's seams; tests call it with fakes. It closes
// the loop when it returns.
func (d *loop) run(ctx context.Context, opts Options) error {
	defer d.close()
	cfg := d.plan.Config
	log := d.log
	d.openAudit()
	defer func() {
		if d.audit != nil {
			d.audit.stop() // shutdown has written what it held
		}
	}()
	if err := d.rescan(); err != nil {
		d.out.Close()
		return err
	}
	// Every start-up namespace's destroy subscription is open: closes from
	// now on are reported, those before were missed (see
	// event.GapNotRunning).
	d.write(&event.Event{Kind: event.Gap, Time: d.clock.Now(), Reason: event.GapNotRunning})
	restored := d.restoreState()
	if cfg.Containers.Names {
		var srcs []containers.Source
		if cfg.Containers.Docker {
			srcs = containers.DockerSources(cfg.Containers.DockerSockets)
		}
		if cfg.Containers.CRI {
			srcs = append(srcs, containers.CRISources(cfg.Containers.CRISockets)...)
		}
		d.names = containers.New(srcs, containers.Options{})
		defer d.names.Close()
	}
	var soon <-chan time.Time // a rescan after the watcher's Gone
	d.watchNamespaces()
	defer d.stopNamespaceWatch()

	// A ticker drops ticks a slow poll overran instead of queueing them.
	tick := d.clock.NewTicker(cfg.Interval)
	defer tick.Stop()
	rescan := d.clock.NewTicker(cfg.NamespaceRescan)
	defer rescan.Stop()
	// The watchdog is fed from this loop, so a stuck poll stops the pings.
	var dogC <-chan time.Time
	if opts.WatchdogPeriod > 0 {
		dog := d.clock.NewTicker(opts.WatchdogPeriod)
		defer dog.Stop()
		dogC = dog.C()
	}

	// The first poll builds every table at once: collect garbage eagerly
	// meanwhile, so the heap does not double past the live tables, then
	// hand the burst's memory back rather than carry it as RSS.
	go d.dumper()
	defer close(d.dumpReq)
	// A stop during it (SIGTERM, SIGINT: ctx) takes the shutdown path at
	// once, as in the loop below: the first round of many namespaces can
	// take longer than systemd waits for a stop before it kills.
	gc := debug.SetGCPercent(25)
	d.startRound()
	for d.sched.inflight != nil {
		select {
		case <-ctx.Done():
			debug.SetGCPercent(gc)
			return d.stop()
		case j := <-d.dumpDone:
			d.dumped(j)
		}
	}
	debug.SetGCPercent(gc)
	debug.FreeOSMemory()
	d.notify.Ready()
	log.Info("watching", "namespaces", len(d.order), "restored_sockets", restored)
	for {
		select {
		case <-ctx.Done():
			return d.stop()
		case <-tick.C():
			d.startRound()
		case j := <-d.dumpDone:
			d.dumped(j)
		case w := <-d.ready:
			d.destroyReady(w)
		case <-d.auditReady():
			d.auditWoke()
		case <-d.auditRelease():
			d.drainAudit(d.clock.Now())
			d.sync()
		case <-dogC:
			d.notify.Watchdog()
		case <-rescan.C():
			if d.plan.Config.Namespaces.Mode != config.NamespacesHost {
				d.rescanNow()
			}
		case <-opts.Rescan:
			d.rescanNow()
		case c := <-d.nsChanges:
			switch {
			case d.plan.Config.Namespaces.Mode == config.NamespacesHost:
			case c.Gone:
				// A namespace may have vanished: list them again soon,
				// once for a burst.
				if soon == nil {
					soon = d.clock.After(goneDelay)
				}
			default:
				// The watcher fell behind, or a bind directory changed
				// while namespaces are listed: list them again now.
				d.rescanNow()
			}
		case <-soon:
			soon = nil
			if d.plan.Config.Namespaces.Mode != config.NamespacesHost {
				d.rescanNow()
			}
		case o := <-d.nsOpened:
			d.adopt(o)
		case sig := <-opts.Reopen:
			if err := d.out.Reopen(); err != nil {
				log.Error("reopening sinks failed; writing to the old files", "signal", sig, "err", err)
			} else {
				log.Info("sinks reopened", "signal", sig)
			}
		case r := <-opts.Reload:
			if prev, ok := d.reload(r); ok {
				cfg := d.plan.Config
				if cfg.Interval != prev.Interval {
					tick.Reset(cfg.Interval)
				}
				if cfg.NamespaceRescan != prev.NamespaceRescan {
					rescan.Reset(cfg.NamespaceRescan)
				}
			}
		}
	}
}

// stop finishes the dump under way, drops the rest of the round, and
// shuts down.
func (d *loop) stop() error {
	d.notify.Stopping()
	d.sched.queue = nil
	d.finishRounds()
	return d.shutdown()
}

func (d *loop) rescanNow() {
	if err := d.rescan(); err != nil {
		d.log.Error("namespace rescan failed", "err", err)
	}
	d.sync()
}

// destroyReady reads what w's destroy waiter signalled, then lets it wait
// again.
func (d *loop) destroyReady(w *namespace) {
	if d.watches[w.ns.ID] == w {
		if d.drainDestroy(w, false) {
			d.resync(w)
		}
		d.sync()
	}
	select {
	case w.drained <- struct{}{}:
	default:
	}
}

type noMetrics struct{}

func (noMetrics) Event(*event.Event)     {}
func (noMetrics) Polled(time.Duration)   {}
func (noMetrics) Sockets([2][2]int)      {}
func (noMetrics) Netlink(uint64, uint64) {}
func (noMetrics) Overrun()               {}
func (noMetrics) DumpFailed()            {}
func (noMetrics) Reloaded(bool)          {}
func (noMetrics) Namespaces(int)         {}
func (noMetrics) Sinks(Output)           {}

type noNotifier struct{}

func (noNotifier) Ready()     {}
func (noNotifier) Reloading() {}
func (noNotifier) Stopping()  {}
func (noNotifier) Watchdog()  {}

// shutdown saves the table when configured and flushes the sinks.
func (d *loop) shutdown() error {
	var tracked, dups, skips, undecided, overruns uint64
	for _, w := range d.order {
		ds := w.differ.Stats()
		tracked += uint64(w.differ.Len())
		dups += ds.Duplicates
		skips += ds.Skipped
		undecided += ds.Unconfirmed
		overruns += w.overruns
	}
	d.log.Info("stopping", "sockets_tracked", tracked,
		"dump_duplicates", dups, "dump_skips_confirmed_alive", skips,
		"lookups_undecided", undecided, "destroy_overruns", overruns)
	// Under a flood that goes on, the queue never empties: stop chasing
	// it once the time is up, as closes read then happened after the stop.
	deadline := d.clock.Now().Add(shutdownDrainTime)
	began := time.Now()
	unread := make([]bool, len(d.order))
	for i, w := range d.order {
		// What the kernel queued before the stop is logged, not dropped
		// with the socket: under load the queue holds seconds of closes.
		more := w.destroy != nil
		for range shutdownDrains {
			if !more || d.clock.Now().After(deadline) {
				break
			}
			_, more = d.drainDestroyMore(w, true)
		}
		unread[i] = more
	}
	d.awaitLateCloses(deadline, began, unread)
	for i, w := range d.order {
		if unread[i] && w.destroy != nil {
			// Closes still queued go with the subscription: say so.
			d.log.Warn("stopping with destroy notifications unread; their closes are not reported", "netns", w.String())
			ev := event.Event{Kind: event.Gap, Time: d.clock.Now(), Reason: event.GapStopUnread}
			w.tag(&ev)
			d.write(&ev)
		}
		if w.stop != nil {
			w.stop()
		}
	}
	d.closeAudit()
	d.saveState()
	if err := d.out.Close(); err != nil {
		return fmt.Errorf("flush sinks: %w", err)
	}
	return nil
}

// rescan opens namespaces new to the configuration's list and closes
// those that vanished, reporting their sockets closed.
func (d *loop) rescan() error {
	want, err := d.discover(d.plan.Config.Namespaces)
	if err != nil {
		return err
	}
	// A namespace is known gone once the listing that misses it is done.
	now := d.clock.Now()
	seen := make(map[netns.ID]bool, len(want))
	changed := false
	var denied []string // namespaces entering was refused for
	var deniedErr error
	for _, ns := range want {
		seen[ns.ID] = true
		if w, ok := d.watches[ns.ID]; ok {
			w.named(ns)
			continue
		}
		w, err := d.openNamespace(ns)
		if err != nil {
			if !ns.Host && netns.IsPermission(err) {
				denied, deniedErr = append(denied, ns.String()), err
				continue
			}
			if ns.Host {
				return err
			}
			d.log.Warn("cannot watch namespace; will retry at the next rescan", "netns", ns.String(), "err", err)
			continue
		}
		d.watches[ns.ID] = w
		changed = true
		if len(d.order) > 0 {
			d.log.Info("watching namespace", "netns", ns.String(), "inode", ns.ID.Ino)
			// A namespace found after start-up: its sockets are new to us,
			// not initial; the first poll reports them as appeared.
			w.differ.NotInitial()
		}
	}
	if len(denied) > 0 && !d.nsDenied {
		d.nsDenied = true
		d.deniedNamespaces(denied, deniedErr)
		d.write(&event.Event{Kind: event.Gap, Time: now, Reason: event.GapNetnsUnwatchable})
	}
	for id, w := range d.watches {
		if seen[id] {
			continue
		}
		d.log.Info("namespace gone", "netns", w.ns.String(), "inode", id.Ino)
		// Closes queued before it went are its sockets' last words: a
		// short-lived namespace's last connections may be there alone.
		d.drainDestroy(w, true)
		w.abortPoll()
		evs := w.differ.CloseAll(now, event.ReasonNetnsGone)
		for i := range evs {
			w.tag(&evs[i])
			d.write(&evs[i])
		}
		// Forgotten before the close: closing frees the namespace, whose
		// inode a new namespace may then take and be reported under.
		if d.nsw != nil {
			d.nsw.Forget(id)
		}
		w.close()
		delete(d.watches, id)
		changed = true
	}
	if changed {
		d.reorder()
	}
	return nil
}

// deniedNamespaces says, once, which namespaces cannot be entered and
// what is watched instead: the host namespace when the configuration
// asks for it, or nothing.
func (d *loop) deniedNamespaces(denied []string, err error) {
	const show = 10
	names := strings.Join(denied[:min(len(denied), show)], ",")
	if len(denied) > show {
		names += fmt.Sprintf(",… (%d in all)", len(denied))
	}
	var watching []string
	for _, w := range d.watches {
		watching = append(watching, w.ns.String())
	}
	sort.Strings(watching)
	what := strings.Join(watching, ",")
	if what == "" {
		what = "none"
	}
	d.log.Warn("cannot enter these network namespaces (needs CAP_SYS_ADMIN); they are not watched",
		"not_watched", names, "watching", what, "err", err)
}

// reorder rebuilds the polling order after namespaces came or went.
func (d *loop) reorder() {
	d.order = d.order[:0]
	for _, w := range d.watches {
		d.order = append(d.order, w)
	}
	sort.Slice(d.order, func(i, j int) bool { return d.order[i].ns.ID.Ino < d.order[j].ns.ID.Ino })
	d.met.Namespaces(len(d.order))
}

// pollChunk diffs one chunk of a namespace's dump, the first one
// starting the diff. Its events are stamped with the time the chunk was
// read: the dump is what told the loop, and it listed each socket before
// then.
func (d *loop) pollChunk(j dumpJob) {
	w := j.w
	if !w.polling {
		if w.sizeHint > 0 {
			// The first poll: size the tables for the sockets the
			// probe at open counted (nothing once they hold sockets).
			w.differ.Reserve(w.sizeHint)
			w.owners.Reserve(w.sizeHint)
			w.sizeHint = 0
		}
		w.polling, w.tally = true, [2][2]int{}
		w.differ.SetTimeWaitDumped(!j.noTimeWait)
		w.differ.Begin()
		w.owners.BeginRefresh()
	}
	// The kernel filtered this dump with the plan it was made with; a
	// reload since then may have changed the filter (and forgotten the
	// sockets the new one excludes), so only the running plan's own
	// dumps skip the filter here.
	if !w.plan.filtered(j.plan) {
		w.plan.keep(j.chunk)
	}
	// Every notification queued before the chunk was read goes first:
	// the chunk may list a socket they report (the dump raced with its
	// destroy), or its TIME_WAIT remnant. The waiter's batches, then a
	// read of what is queued now, after the chunk's reading ended.
	w.lost = d.drainDestroy(w, true) || w.lost
	w.owners.RefreshChunk(j.chunk)
	d.ownerWarnings()
	w.differ.Step(j.chunk, j.at)
	w.countSockets(j.chunk)
}

// finishPoll takes the end of a namespace's dump: diffs its last chunk
// and sweeps the tracked sockets no chunk listed (the differ's confirmed
// closes: lookups, stamped when they answered), or reports its failure.
func (d *loop) finishPoll(j dumpJob) {
	w, now := j.w, j.at
	w.lastCost = d.clock.Now().Sub(j.start)
	if err := j.err; err != nil {
		// What the chunks read so far showed is reported, but a partial
		// dump has no suspects: every socket it did not reach would be
		// one. Report the failure once per streak.
		w.abortPoll()
		d.met.DumpFailed()
		w.diffed = false
		if !w.failing {
			w.failing = true
			d.log.Error("poll failed; retrying every interval", "netns", w.String(), "err", err)
			ev := event.Event{Kind: event.Gap, Time: now, Reason: event.GapDumpFailed}
			w.tag(&ev)
			d.write(&ev)
		}
		if w.lost {
			w.lost = false
			d.resync(w)
		}
		return
	}
	if w.failing {
		w.failing = false
		d.log.Info("polling recovered", "netns", w.String())
	}
	d.pollChunk(j)
	w.polling = false
	w.owners.EndRefresh(true)
	if _, err := w.differ.Finish(now, w.conn); err != nil {
		d.log.Warn("lookup of missing sockets failed; they stay tracked until confirmed", "netns", w.String(), "err", err)
	}
	w.diffed = true
	w.counts = w.tally
	d.met.Polled(w.lastCost)
	d.reportCounters(w, d.clock.Now())
	if w.lost {
		w.lost = false
		d.resync(w) // the dump predates the lost notifications
	}
}

// drainDestroy logs the closes of every destroy notification read: the
// batches the waiter kept, then, with queued, what is still queued (the
// waiter reads it otherwise, and wakes the loop). It reports whether
// notifications were lost, after reporting the gap: the caller then
// resynchronises with a fresh dump.
//
// Each batch is stamped when its read returned: every notification in it
// was queued, so its socket destroyed, before then. A time read before
// the read (a poll's, or the drain's start) could precede closes that
// were queued while it ran.
func (d *loop) drainDestroy(w *namespace, queued bool) (lost bool) {
	lost, _ = d.drainDestroyMore(w, queued)
	return lost
}

// drainDestroyMore is drainDestroy that also says whether notifications
// may remain queued: its last read filled a batch.
func (d *loop) drainDestroyMore(w *namespace, queued bool) (lost, more bool) {
	d.drainAudit(d.clock.Now()) // the calls behind the closes first
	if w.destroy == nil {
		return false, false
	}
	// Bounded: under a flood the queue refills as fast as it drains, and
	// the loop must get back to its other work; the waiter signals again.
	reads := 0
	if queued {
		reads = maxDrainBatches
	}
	batches := w.destroyBatches(reads, d.clock.Now)
	defer func() {
		for i := range batches {
			w.recycle(batches[i].tab)
			batches[i] = destroyBatch{}
		}
	}()
	for _, b := range batches {
		w.destroyRead += uint64(b.tab.Len())
		w.plan.keep(b.tab) // the kernel does not filter notifications
		w.differ.Destroyed(b.tab, b.at)
		more = b.full
		if b.err == nil {
			continue
		}
		ev := event.Event{Kind: event.Gap, Time: b.at}
		w.tag(&ev)
		if errors.Is(b.err, diag.ErrOverrun) {
			w.overruns++
			d.met.Overrun()
			d.log.Warn("destroy notifications lost (receive buffer overrun); resynchronising with a full dump", "netns", w.String(), "overruns", w.overruns)
			ev.Reason = event.GapOverrun
			d.write(&ev)
			lost, more = true, true // the queue refills after an overrun
			continue
		}
		d.log.Error("destroy notifications stopped; closes come from polls only", "netns", w.String(), "err", b.err)
		ev.Reason = event.GapDestroyFailed
		d.write(&ev)
		if w.stop != nil {
			w.stop()
			w.stop = nil
		}
		w.destroy = nil
		w.differ.SetDestroy(false)
		return true, false
	}
	return lost, more
}

// awaitLateCloses goes on reading the destroy notifications after the
// shutdown's drains emptied the queues, until none has come for
// stopQuiet: the kernel sends them from a work queue, which a loaded
// machine runs hundreds of milliseconds late, so the closes of the last
// moment before a stop would otherwise arrive after it and be lost with
// no gap. It is bounded by the shutdown's deadline (d.clock), and by
// shutdownDrainTime of real time since began: the kernel's delay is real
// time, whatever clock the loop is given. unread[i] is d.order[i]'s
// queue still holding notifications.
func (d *loop) awaitLateCloses(deadline, began time.Time, unread []bool) {
	subscribed := false
	read := func() uint64 {
		var n uint64
		for _, w := range d.order {
			n += w.destroyRead
			subscribed = subscribed || w.destroy != nil
		}
		return n
	}
	quietSince, last := time.Now(), read()
	for subscribed && time.Since(quietSince) < stopQuiet && time.Since(began) < shutdownDrainTime && !d.clock.Now().After(deadline) {
		time.Sleep(stopQuiet / 10)
		for i, w := range d.order {
			if w.destroy != nil {
				_, unread[i] = d.drainDestroyMore(w, true)
			}
		}
		if n := read(); n != last {
			quietSince, last = time.Now(), n
		}
	}
}

// stopQuiet is how long the shutdown listens for closes after the last
// one came: past the delays of the kernel's work queue seen on a loaded
// machine at full churn (p99.9 of the notifications' latency, a few
// hundred milliseconds), short against systemd's stop timeout.
const stopQuiet = 300 * time.Millisecond

// shutdownDrains bounds the drains at shutdown: up to 64 × 16 batches of
// 1,024 sockets, more than a 16 MiB receive buffer holds.
const shutdownDrains = 64

// shutdownDrainTime bounds the time the drains at shutdown take, for all
// namespaces together: well within systemd's stop timeout.
const shutdownDrainTime = 5 * time.Second

// maxDrainBatches bounds one drain: 16 batches of up to 1,024 sockets.
const maxDrainBatches = 16

// reportCounters logs what the netlink layer refused since the last poll,
// and reports malformed replies, which may hide sockets, as a gap.
func (d *loop) reportCounters(w *namespace, now time.Time) {
	var st snapshot.Stats
	var lastBad error
	if c, ok := w.conn.(netlinkCounter); ok {
		st, lastBad = c.Stats(), c.LastMalformed()
	}
	if w.destroy != nil {
		st.Add(w.destroy.Stats())
		if e := w.destroy.LastMalformed(); e != nil {
			lastBad = e
		}
	}
	if n := st.Malformed - w.parse.Malformed; n > 0 {
		d.log.Warn("malformed netlink messages dropped", "netns", w.String(), "count", n, "example", lastBad)
		ev := event.Event{Kind: event.Gap, Time: now, Reason: event.GapMalformed, Count: n}
		w.tag(&ev)
		d.write(&ev)
	}
	if n := st.Interrupted - w.parse.Interrupted; n > 0 {
		// The table changed while the kernel walked it: sockets may be
		// missing or doubled, which the differ's confirmed closes absorb.
		d.log.Info("dump flagged interrupted by the kernel; missing sockets are confirmed by lookup", "netns", w.String(), "count", n)
	}
	if n := st.Foreign - w.parse.Foreign; n > 0 {
		d.log.Warn("netlink messages not from the kernel or not for our requests dropped", "netns", w.String(), "count", n)
	}
	d.met.Netlink(st.Malformed-w.parse.Malformed, st.Foreign-w.parse.Foreign)
	w.parse = st
}

// ownerWarnings logs what attribution could not do (missing privileges,
// no cgroup v2), each kind once: it reports each only once itself.
func (d *loop) ownerWarnings() {
	for _, w := range d.owners.Warnings() {
		d.log.Warn("owner attribution degraded", "err", w)
	}
	if d.names != nil {
		for _, w := range d.names.Warnings() {
			d.log.Warn("container names degraded", "err", w)
		}
	}
}

func (d *loop) reportSinkDrops(now time.Time) {
	if n := d.out.Dropped(); n > d.dropped && now.Sub(d.dropReported) >= sinkReportEvery {
		d.log.Warn("sinks dropped events", "count", n-d.dropped, "dropped_by_sink", droppedBySink(d.out.Stats()))
		// The gap reaches the sinks that work; the failing one counts it
		// among its drops.
		d.write(&event.Event{Kind: event.Gap, Time: now, Reason: event.GapSinkDropped, Count: n - d.dropped})
		d.dropped = n
		d.dropReported = now
	}
}

// droppedBySink says which sinks lost events: "name=count" for each,
// comma-separated, for one log field.
func droppedBySink(st []sink.Stats) string {
	var b []byte
	for _, s := range st {
		if s.Dropped == 0 {
			continue
		}
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, "%s=%d", s.Sink, s.Dropped)
	}
	return string(b)
}

func (d *loop) write(ev *event.Event) {
	if d.names != nil && ev.Container == nil && ev.Cgroup != nil && ev.Cgroup.ContainerID != "" {
		ev.Container = d.names.Lookup(ev.Cgroup.ContainerID)
	}
	d.met.Event(ev)
	if err := d.out.Write(ev); err != nil && !d.sinkErr {
		d.sinkErr = true
		d.log.Error("writing events failed; counting drops", "err", err)
	}
}

func (d *loop) sync() {
	if err := d.out.Sync(); err != nil {
		if !d.sinkErr {
			d.sinkErr = true
			d.log.Error("flushing events failed", "err", err)
		}
		return
	}
	if d.sinkErr && d.out.Dropped() == d.dropped {
		d.sinkErr = false
		d.log.Info("sinks recovered")
	}
}

// publishSockets sums every namespace's last poll into the socket gauges.
func (d *loop) publishSockets() {
	var sum [2][2]int
	for _, w := range d.order {
		for p := range 2 {
			for f := range 2 {
				sum[p][f] += w.counts[p][f]
			}
		}
	}
	d.met.Sockets(sum)
}
