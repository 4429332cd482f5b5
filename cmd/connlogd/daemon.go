package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/differ"
	"github.com/connlogd/connlogd/event"
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
	for _, r := range reqs {
		err := conn.Dump(&tab, []diag.Request{r})
		switch {
		case err == nil:
			ok = append(ok, r)
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
	seen := make(map[snapshot.Key]bool, tab.Len())
	mask := stateMask(cfg.States)
	now := time.Now()
	for i := range tab.Sockets {
		s := &tab.Sockets[i]
		if seen[s.Key] || (mask != 0 && mask&(1<<s.State) == 0) {
			continue
		}
		seen[s.Key] = true
		ev := event.Event{Kind: event.Snapshot, Time: now, Socket: *s}
		if err := out.Write(&ev); err != nil {
			return err
		}
	}
	return out.Close()
}

// daemon is the poll loop's state.
type daemon struct {
	log     *slog.Logger
	conn    *diag.Conn
	reqs    []diag.Request
	differ  *differ.Differ
	out     *sink.Tee
	tab     snapshot.Table
	parse   snapshot.Stats // last reported parser counters
	dstats  differ.Stats
	failing bool // the last poll failed; report recovery once
	sinkErr bool

	destroy  *diag.Destroy // nil when notifications are unavailable
	overruns uint64

	dropped      uint64 // sink drops already reported
	dropReported time.Time
}

func run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	conn, err := diag.Open()
	if err != nil {
		return err
	}
	defer conn.Close()
	reqs, err := usableRequests(conn, diag.Requests(cfg.Protocols, cfg.Families, true), log)
	if err != nil {
		return err
	}
	out, err := sink.New(cfg.Sinks, hostname())
	if err != nil {
		return err
	}
	d := &daemon{
		log:    log,
		conn:   conn,
		reqs:   reqs,
		differ: differ.New(differ.Options{States: stateMask(cfg.States)}),
		out:    out,
	}
	destroyed, stopDestroy := d.watchDestroy(cfg)
	defer stopDestroy()
	// SIGUSR1 (logrotate's postrotate) and SIGHUP reopen file sinks.
	reopen := make(chan os.Signal, 1)
	signal.Notify(reopen, syscall.SIGUSR1, syscall.SIGHUP)
	defer signal.Stop(reopen)
	// A ticker drops ticks a slow poll overran instead of queueing them.
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	d.poll(time.Now())
	for {
		select {
		case sig := <-reopen:
			if err := out.Reopen(); err != nil {
				log.Error("reopening sinks failed; writing to the old files", "signal", sig, "err", err)
			} else {
				log.Info("sinks reopened", "signal", sig)
			}
		case <-ctx.Done():
			ds := d.differ.Stats()
			log.Info("stopping", "sockets_tracked", d.differ.Len(),
				"dump_duplicates", ds.Duplicates, "dump_skips_confirmed_alive", ds.Skipped,
				"lookups_undecided", ds.Unconfirmed, "destroy_overruns", d.overruns)
			stopDestroy()
			if err := out.Close(); err != nil {
				return fmt.Errorf("flush sinks: %w", err)
			}
			return nil
		case <-tick.C:
			d.poll(time.Now())
		case b := <-destroyed:
			if d.handleDestroy(b) {
				// Notifications were lost: a full dump now finds the
				// closes among tracked sockets without waiting a tick.
				d.poll(time.Now())
			}
			d.sync()
		}
	}
}

// destroyBatch is what the destroy reader hands the poll loop: sockets
// from one notification datagram, or an error.
type destroyBatch struct {
	tab  *snapshot.Table
	err  error
	free chan *snapshot.Table
}

// watchDestroy subscribes to destroy notifications, so closes are logged
// at once and connections too short for any poll are logged at all. When
// that is impossible, polls remain the source of closes; say so once.
func (d *daemon) watchDestroy(cfg *config.Config) (<-chan destroyBatch, func()) {
	ch := make(chan destroyBatch)
	if !cfg.Destroy.Enabled {
		d.log.Info("destroy notifications disabled by configuration; closes come from polls only")
		return ch, func() {}
	}
	sub, err := diag.OpenDestroy(cfg.Protocols, cfg.Families, cfg.Destroy.Buffer)
	if err != nil {
		d.log.Warn("destroy notifications unavailable; closes come from polls only, and connections shorter than the interval are missed", "err", err)
		return ch, func() {}
	}
	if !sub.Forced && sub.Buffer < cfg.Destroy.Buffer {
		d.log.Warn("destroy notification buffer smaller than asked (no CAP_NET_ADMIN, net.core.rmem_max too low); bursts of closes may overrun it",
			"asked", cfg.Destroy.Buffer, "granted", sub.Buffer)
	}
	d.destroy = sub
	free := make(chan *snapshot.Table, 4)
	for range cap(free) {
		free <- &snapshot.Table{}
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var tab *snapshot.Table
			select {
			case tab = <-free:
			case <-quit:
				return
			}
			tab.Reset()
			err := sub.Read(tab)
			if errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case ch <- destroyBatch{tab: tab, err: err, free: free}:
			case <-quit:
				return
			}
			if err != nil && !errors.Is(err, diag.ErrOverrun) {
				return
			}
		}
	}()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			close(quit)
			if err := sub.Close(); err != nil {
				d.log.Warn("closing destroy subscription", "err", err)
			}
			<-done
		})
	}
}

// handleDestroy logs the closes of one notification batch. It reports
// whether notifications were lost, so the caller resynchronises.
func (d *daemon) handleDestroy(b destroyBatch) (lost bool) {
	now := time.Now()
	if b.tab != nil {
		evs := d.differ.Destroyed(b.tab, now)
		for i := range evs {
			d.write(&evs[i])
		}
		b.free <- b.tab
	}
	switch {
	case errors.Is(b.err, diag.ErrOverrun):
		d.overruns++
		d.log.Warn("destroy notifications lost (receive buffer overrun); resynchronising with a full dump", "overruns", d.overruns)
		d.write(&event.Event{Kind: event.Gap, Time: now, Reason: gapOverrun})
		return true
	case b.err != nil:
		d.log.Error("destroy notifications stopped; closes come from polls only", "err", b.err)
		d.write(&event.Event{Kind: event.Gap, Time: now, Reason: gapDestroy})
		return true
	}
	return false
}

func (d *daemon) poll(now time.Time) {
	if err := d.conn.Dump(&d.tab, d.reqs); err != nil {
		// A partial table must not be diffed: every socket it lacks would
		// become a suspect. Report the failure once per streak.
		if !d.failing {
			d.failing = true
			d.log.Error("poll failed; retrying every interval", "err", err)
			d.write(&event.Event{Kind: event.Gap, Time: now, Reason: gapDumpFailed})
			d.sync()
		}
		return
	}
	if d.failing {
		d.failing = false
		d.log.Info("polling recovered")
	}
	evs, err := d.differ.Diff(&d.tab, now, d.conn)
	if err != nil {
		d.log.Warn("lookup of missing sockets failed; they stay tracked until confirmed", "err", err)
	}
	for i := range evs {
		d.write(&evs[i])
	}
	d.reportCounters(now)
	d.sync()
}

// reportCounters logs what the netlink layer refused since the last poll,
// and reports malformed replies, which may hide sockets, as a gap.
func (d *daemon) reportCounters(now time.Time) {
	st := d.conn.Stats()
	lastBad := d.conn.LastMalformed()
	if d.destroy != nil {
		st.Add(d.destroy.Stats())
		if e := d.destroy.LastMalformed(); e != nil {
			lastBad = e
		}
	}
	if n := st.Malformed - d.parse.Malformed; n > 0 {
		d.log.Warn("malformed netlink messages dropped", "count", n, "example", lastBad)
		d.write(&event.Event{Kind: event.Gap, Time: now, Reason: gapMalformed, Count: n})
	}
	if n := st.Foreign - d.parse.Foreign; n > 0 {
		d.log.Warn("netlink messages not from the kernel or not for our requests dropped", "count", n)
	}
	d.parse = st
	ds := d.differ.Stats()
	if n := ds.Duplicates - d.dstats.Duplicates; n > 0 {
		d.log.Debug("dump returned sockets twice", "count", n)
	}
	d.dstats = ds
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
	if d.sinkErr {
		d.sinkErr = false
		d.log.Info("sinks recovered")
	}
}
