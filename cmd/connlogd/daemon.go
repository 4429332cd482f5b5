package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/attribution"
	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/filter"
	"github.com/connlogd/connlogd/netns"
	"github.com/connlogd/connlogd/sink"
	"github.com/connlogd/connlogd/snapshot"
)

// Gap reasons.
const (
	gapDumpFailed = "dump_failed"
	gapMalformed  = "malformed_netlink"
	gapOverrun    = "destroy_overrun"
	gapDestroy    = "destroy_failed"
	gapSinkDrop   = "sink_dropped"
	gapNetns      = "netns_unwatchable"

	// sinkReportEvery bounds how often sink drops are reported while a
	// sink keeps failing.
	sinkReportEvery = 10 * time.Second
)

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}

func stateMask(states []snapshot.State) uint32 {
	var m uint32
	for _, s := range states {
		m |= 1 << s
	}
	return m
}

// usableRequests dumps each request once and keeps those the kernel
// serves. A family or protocol the kernel lacks (IPv6 disabled, udp_diag
// not built) is reported once and left out, instead of failing every poll.
func usableRequests(conn *diag.Conn, reqs []diag.Request, log *slog.Logger) ([]diag.Request, error) {
	var ok []diag.Request
	var tab snapshot.Table
	var firstErr error
	for i := 0; i < len(reqs); i++ {
		r := reqs[i]
		err := conn.Dump(&tab, []diag.Request{r})
		switch {
		case err == nil:
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
		return nil, fmt.Errorf("sock_diag: %w", firstErr)
	}
	return ok, nil
}

// runOnce prints the socket table as it is now.
func runOnce(cfg *config.Config, stdout io.Writer) error {
	conn, err := diag.Open()
	if err != nil {
		return err
	}
	defer conn.Close()
	reqs, err := usableRequests(conn, diag.Requests(cfg.Protocols, cfg.Families, true), slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	var tab snapshot.Table
	if err := conn.Dump(&tab, reqs); err != nil {
		return err
	}
	out, err := sink.NewWriter(stdout, hostname())
	if err != nil {
		return err
	}
	f, err := filter.New(cfg.Filters)
	if err != nil {
		return err
	}
	owners := attribution.New(cfg.Attribution)
	defer owners.Close()
	tr := owners.NewTracker()
	defer tr.Close()
	tr.Refresh(&tab)
	for _, w := range owners.Warnings() {
		fmt.Fprintln(os.Stderr, "connlogd: owner attribution degraded:", w)
	}
	seen := make(map[snapshot.Key]bool, tab.Len())
	mask := stateMask(cfg.States)
	now := time.Now()
	for i := range tab.Sockets {
		s := &tab.Sockets[i]
		if seen[s.Key] || (mask != 0 && mask&(1<<s.State) == 0) || !f.Match(s) {
			continue
		}
		seen[s.Key] = true
		ev := event.Event{Kind: event.Snapshot, Time: now, Socket: *s}
		tr.AnnotateEvent(&ev)
		if f.NeedsOwner() && !f.MatchOwner(s, ownerOf(&ev)) {
			continue
		}
		if err := out.Write(&ev); err != nil {
			return err
		}
	}
	return out.Close()
}

// daemon is the poll loop's state. Everything here is touched by the
// loop's goroutine only; destroy waiters only tell it when to read.
type daemon struct {
	log     *slog.Logger
	cfg     *config.Config
	host    string
	out     *sink.Tee
	outp    atomic.Pointer[sink.Tee] // out, for the metrics scraper
	watches map[netns.ID]*watch
	order   []*watch       // watches in a stable order, for polling
	ready   chan *watch    // a namespace has destroy notifications queued
	filter  *filter.Filter // nil: report every socket
	owners  *attribution.Resolver
	met     *metrics
	notify  notifier

	dumpReq  chan dumpJob // to the dump worker
	dumpDone chan dumpJob // from it
	inflight *watch       // being dumped
	queue    []*watch     // to dump in this round
	roundNow time.Time    // the round's event time

	nsDenied    bool // entering namespaces was refused; said once
	sinkErr     bool
	rr          int  // next non-host namespace to poll
	roundWarned bool // the namespace budget overran; said once

	dropped      uint64 // sink drops already reported
	dropReported time.Time
}

func run(ctx context.Context, cfg *config.Config, cfgPath string, log *slog.Logger) error {
	f, err := filter.New(cfg.Filters)
	if err != nil {
		return err
	}
	out, err := sink.Open(cfg.Sinks, sink.Options{Host: hostname(), Version: buildVersion()})
	if err != nil {
		return err
	}
	d := &daemon{
		filter:  f,
		log:     log,
		cfg:     cfg,
		host:    hostname(),
		out:     out,
		watches: map[netns.ID]*watch{},
		ready:   make(chan *watch),

		dumpReq:  make(chan dumpJob, 1),
		dumpDone: make(chan dumpJob, 1),
		notify:   newNotifier(log),
	}
	defer func() {
		for _, w := range d.order {
			w.close()
		}
	}()
	d.owners = attribution.New(cfg.Attribution)
	defer d.owners.Close()
	d.outp.Store(out)
	if d.met, err = startMetrics(cfg.Metrics.Listen, log, d.outp.Load); err != nil {
		out.Close()
		return err
	}
	defer d.met.close()
	if err := d.rescan(time.Now()); err != nil {
		out.Close()
		return err
	}
	restored := d.restoreState()

	reopen := make(chan os.Signal, 1)
	signal.Notify(reopen, syscall.SIGUSR1)
	defer signal.Stop(reopen)
	reloads, stopReload := watchConfig(cfgPath, log)
	defer stopReload()

	// A ticker drops ticks a slow poll overran instead of queueing them.
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	rescan := time.NewTicker(cfg.NamespaceRescan)
	defer rescan.Stop()
	// The watchdog is fed from this loop, so a stuck poll stops the pings.
	dog := time.NewTicker(d.notify.watchdogPeriod())
	defer dog.Stop()

	// The first poll builds every table at once: collect garbage eagerly
	// meanwhile, so the heap does not double past the live tables, then
	// hand the burst's memory back rather than carry it as RSS.
	go d.dumper()
	defer close(d.dumpReq)
	gc := debug.SetGCPercent(25)
	d.startRound(time.Now())
	d.finishRounds()
	debug.SetGCPercent(gc)
	debug.FreeOSMemory()
	d.notify.ready()
	log.Info("watching", "namespaces", len(d.order), "restored_sockets", restored)
	for {
		select {
		case <-ctx.Done():
			d.notify.stopping()
			d.queue = nil
			d.finishRounds() // finish the cycle under way
			return d.shutdown()
		case <-tick.C:
			d.startRound(time.Now())
		case j := <-d.dumpDone:
			d.dumped(j)
		case w := <-d.ready:
			if d.watches[w.ns.ID] == w {
				if d.drainDestroy(w, time.Now()) {
					d.resync(w)
				}
				d.sync()
			}
			select {
			case w.drained <- struct{}{}:
			default:
			}
		case <-dog.C:
			d.notify.watchdog()
		case <-rescan.C:
			if d.cfg.Namespaces.Mode != config.NamespacesHost {
				if err := d.rescan(time.Now()); err != nil {
					log.Error("namespace rescan failed", "err", err)
				}
				d.sync()
			}
		case sig := <-reopen:
			if err := d.out.Reopen(); err != nil {
				log.Error("reopening sinks failed; writing to the old files", "signal", sig, "err", err)
			} else {
				log.Info("sinks reopened", "signal", sig)
			}
		case r := <-reloads:
			d.reload(r, tick, rescan)
		}
	}
}

// shutdown saves the table when configured and flushes the sinks.
func (d *daemon) shutdown() error {
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
	for _, w := range d.order {
		if w.stop != nil {
			w.stop()
		}
	}
	d.saveState()
	if err := d.out.Close(); err != nil {
		return fmt.Errorf("flush sinks: %w", err)
	}
	return nil
}

// wanted lists the namespaces the configuration asks for.
func (d *daemon) wanted() ([]netns.NS, error) {
	nsc := d.cfg.Namespaces
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

// rescan opens watches for new namespaces and closes those of vanished
// ones, reporting their sockets closed.
func (d *daemon) rescan(now time.Time) error {
	want, err := d.wanted()
	if err != nil {
		return err
	}
	seen := make(map[netns.ID]bool, len(want))
	changed := false
	for _, ns := range want {
		seen[ns.ID] = true
		if _, ok := d.watches[ns.ID]; ok {
			continue
		}
		w, err := openWatch(ns, d.cfg, d.filter, d.owners, d.log, d.ready, d.write)
		if err != nil {
			if !ns.Host && netns.IsPermission(err) {
				if !d.nsDenied {
					d.nsDenied = true
					d.log.Warn("cannot enter other network namespaces (needs CAP_SYS_ADMIN); watching the host namespace only", "err", err)
					d.write(&event.Event{Kind: event.Gap, Time: now, Reason: gapNetns})
				}
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
	for id, w := range d.watches {
		if seen[id] {
			continue
		}
		d.log.Info("namespace gone", "netns", w.ns.String(), "inode", id.Ino)
		evs := w.differ.CloseAll(now, event.ReasonNetnsGone)
		for i := range evs {
			w.tag(&evs[i])
			d.write(&evs[i])
		}
		w.close()
		delete(d.watches, id)
		changed = true
	}
	if changed {
		d.order = d.order[:0]
		for _, w := range d.watches {
			d.order = append(d.order, w)
		}
		sort.Slice(d.order, func(i, j int) bool { return d.order[i].ns.ID.Ino < d.order[j].ns.ID.Ino })
		d.met.namespaces(len(d.order))
	}
	return nil
}

// nsBudget is the share of each interval that polling namespaces other
// than the host's may take. A dump walks the whole host-wide TCP hash even
// for a namespace with three sockets (milliseconds each), so at a hundred
// namespaces polling all of them every tick would cost most of a core;
// past the budget they are polled round-robin over several ticks. Closes
// stay immediate through the destroy notifications; appearances and state
// changes in those namespaces are seen up to a round later.
const nsBudget = 5 // 1/nsBudget of the interval

// dumpJob is one namespace's dump, run by the dump worker so that the
// loop keeps logging destroy notifications while the kernel walks its
// tables (100 ms and more for a large table): a close then waits for the
// loop only as long as a diff takes, not a dump.
type dumpJob struct {
	w          *watch
	now, start time.Time
	err        error
}

// dumper runs dumps one at a time; the loop starts the next one when it
// has the result of the last.
func (d *daemon) dumper() {
	for j := range d.dumpReq {
		j.err = j.w.conn.Dump(&j.w.tab, j.w.reqsNow)
		d.dumpDone <- j
	}
}

// startRound queues this tick's polls: the host's namespace, and other
// namespaces round-robin within their budget, judged by what each one's
// last poll cost. A round still running when the next tick comes is not
// doubled: the tick is skipped, as a slow poll skips ticks.
func (d *daemon) startRound(now time.Time) {
	if d.inflight != nil || len(d.queue) > 0 {
		return
	}
	var others []*watch
	for _, w := range d.order {
		if w.ns.Host {
			d.queue = append(d.queue, w)
		} else {
			others = append(others, w)
		}
	}
	if len(others) > 0 {
		budget := d.cfg.Interval / nsBudget
		var spent time.Duration
		polled := 0
		for polled < len(others) && (polled == 0 || spent < budget) {
			d.rr %= len(others)
			w := others[d.rr]
			d.queue = append(d.queue, w)
			spent += w.lastCost
			d.rr++
			polled++
		}
		if polled < len(others) && !d.roundWarned {
			d.roundWarned = true
			d.log.Warn("polling every namespace takes longer than its budget; namespaces are polled in turn over several intervals (closes stay immediate)",
				"namespaces", len(others), "per_interval", polled, "budget", budget)
		}
	}
	d.roundNow = now
	d.nextDump()
}

// resync polls w as soon as the worker is free, ahead of the round.
//
// At most once an interval per namespace: under a flood that overruns
// the buffer again and again, resyncs must not starve the other
// namespaces, nor keep the first round from ever ending.
func (d *daemon) resync(w *watch) {
	if w == d.inflight || slices.Contains(d.queue, w) || time.Since(w.lastResync) < d.cfg.Interval {
		return
	}
	w.lastResync = time.Now()
	d.queue = append(d.queue, w)
	if d.inflight == nil && len(d.queue) == 1 {
		d.roundNow = time.Now()
	}
	d.nextDump()
}

// nextDump hands the next queued namespace to the worker; when the round
// is over, it publishes and flushes.
func (d *daemon) nextDump() {
	for d.inflight == nil && len(d.queue) > 0 {
		w := d.queue[0]
		d.queue = d.queue[1:]
		if d.watches[w.ns.ID] != w {
			continue // closed meanwhile
		}
		w.reqsNow = w.activeRequests(w.reqsNow[:0])
		d.inflight = w
		d.dumpReq <- dumpJob{w: w, now: d.roundNow, start: time.Now()}
		return
	}
	if d.inflight == nil {
		d.met.publishSockets(d.order)
		d.reportSinkDrops(time.Now())
		d.sync()
	}
}

// dumped takes a finished dump and starts the next.
func (d *daemon) dumped(j dumpJob) {
	d.inflight = nil
	if d.watches[j.w.ns.ID] == j.w {
		d.finishPoll(j)
	}
	d.nextDump()
}

// finishRounds waits for the dumps in flight and queued, for the first
// poll and for shutdown.
func (d *daemon) finishRounds() {
	for d.inflight != nil {
		d.dumped(<-d.dumpDone)
	}
}

func (d *daemon) finishPoll(j dumpJob) {
	w, now := j.w, j.now
	w.lastCost = time.Since(j.start)
	if err := j.err; err != nil {
		// A partial table must not be diffed: every socket it lacks would
		// become a suspect. Report the failure once per streak.
		d.met.dumpFailed()
		w.diffed = false // tab holds part of a dump
		if !w.failing {
			w.failing = true
			d.log.Error("poll failed; retrying every interval", "netns", w.String(), "err", err)
			ev := event.Event{Kind: event.Gap, Time: now, Reason: gapDumpFailed}
			w.tag(&ev)
			d.write(&ev)
		}
		return
	}
	if w.failing {
		w.failing = false
		d.log.Info("polling recovered", "netns", w.String())
	}
	if !w.kernelFiltered {
		w.keep(&w.tab)
	}
	// Notifications queued while the dump ran go first: the dump may hold
	// the TIME_WAIT remnant of a connection they report.
	lost := d.drainDestroy(w, time.Now()) // stamped when read, not with the poll's time
	w.owners.Refresh(&w.tab)
	d.ownerWarnings()
	if _, err := w.differ.Diff(&w.tab, now, w.conn); err != nil {
		d.log.Warn("lookup of missing sockets failed; they stay tracked until confirmed", "netns", w.String(), "err", err)
	}
	w.diffed = true
	d.met.polled(w, w.lastCost)
	d.reportCounters(w, now)
	if lost {
		d.resync(w) // the dump predates the lost notifications
	}
}

// drainDestroy logs the closes of every destroy notification queued in
// w's subscription. It reports whether notifications were lost, after
// reporting the gap: the caller then resynchronises with a fresh dump.
func (d *daemon) drainDestroy(w *watch, now time.Time) (lost bool) {
	// Bounded: under a flood the queue refills as fast as it drains, and
	// the loop must get back to its other work; the waiter signals again.
	for range maxDrainBatches {
		if w.destroy == nil {
			break
		}
		w.dtab.Reset()
		full, err := w.destroy.Drain(&w.dtab)
		w.keep(&w.dtab) // the kernel does not filter notifications
		w.differ.Destroyed(&w.dtab, now)
		if err != nil {
			ev := event.Event{Kind: event.Gap, Time: now}
			w.tag(&ev)
			if errors.Is(err, diag.ErrOverrun) {
				w.overruns++
				d.met.overrun()
				d.log.Warn("destroy notifications lost (receive buffer overrun); resynchronising with a full dump", "netns", w.String(), "overruns", w.overruns)
				ev.Reason = gapOverrun
				d.write(&ev)
				lost = true
				continue
			}
			d.log.Error("destroy notifications stopped; closes come from polls only", "netns", w.String(), "err", err)
			ev.Reason = gapDestroy
			d.write(&ev)
			if w.stop != nil {
				w.stop()
				w.stop = nil
			}
			w.destroy = nil
			w.differ.SetDestroy(false)
			return true
		}
		if !full {
			break
		}
	}
	return lost
}

// maxDrainBatches bounds one drain: 16 batches of up to 1,024 sockets.
const maxDrainBatches = 16

// reportCounters logs what the netlink layer refused since the last poll,
// and reports malformed replies, which may hide sockets, as a gap.
func (d *daemon) reportCounters(w *watch, now time.Time) {
	st := w.conn.Stats()
	lastBad := w.conn.LastMalformed()
	if w.destroy != nil {
		st.Add(w.destroy.Stats())
		if e := w.destroy.LastMalformed(); e != nil {
			lastBad = e
		}
	}
	if n := st.Malformed - w.parse.Malformed; n > 0 {
		d.log.Warn("malformed netlink messages dropped", "netns", w.String(), "count", n, "example", lastBad)
		ev := event.Event{Kind: event.Gap, Time: now, Reason: gapMalformed, Count: n}
		w.tag(&ev)
		d.write(&ev)
	}
	if n := st.Foreign - w.parse.Foreign; n > 0 {
		d.log.Warn("netlink messages not from the kernel or not for our requests dropped", "netns", w.String(), "count", n)
	}
	d.met.netlink(st.Malformed-w.parse.Malformed, st.Foreign-w.parse.Foreign)
	w.parse = st
	w.dstats = w.differ.Stats()
}

// ownerWarnings logs what attribution could not do (missing privileges,
// no cgroup v2), each kind once: it reports each only once itself.
func (d *daemon) ownerWarnings() {
	for _, w := range d.owners.Warnings() {
		d.log.Warn("owner attribution degraded", "err", w)
	}
}

func (d *daemon) reportSinkDrops(now time.Time) {
	if n := d.out.Dropped(); n > d.dropped && now.Sub(d.dropReported) >= sinkReportEvery {
		d.log.Warn("sinks dropped events", "count", n-d.dropped, "sinks", fmt.Sprint(d.out.Stats()))
		// The gap reaches the sinks that work; the failing one counts it
		// among its drops.
		d.write(&event.Event{Kind: event.Gap, Time: now, Reason: gapSinkDrop, Count: n - d.dropped})
		d.dropped = n
		d.dropReported = now
	}
}

func (d *daemon) write(ev *event.Event) {
	d.met.event(ev)
	if err := d.out.Write(ev); err != nil && !d.sinkErr {
		d.sinkErr = true
		d.log.Error("writing events failed; counting drops", "err", err)
	}
}

func (d *daemon) sync() {
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
