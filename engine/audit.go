package engine

import (
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/connlogd/connlogd/audit"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/netns"
)

// auditGrace is how long an event of a socket no poll saw may wait for
// the audit records of the call that made it. The kernel's audit thread
// sends records a little after the call (auditd, when it runs, paces
// it), and may send them after the socket's destroy notification. Held
// events go out as soon as a record stamped after them is read, which
// connlogd's own probe calls provide within tens of milliseconds; the
// grace, counted from when the loop got the event, is the bound for a
// reader that lags (a machine with far more runnable threads than cores).
const auditGrace = 5 * time.Second

// auditFeed is the audit source of the loop (attribution.audit): its
// records are read by the loop, which a waiter goroutine wakes.
type auditFeed struct {
	src     *audit.Source
	ready   chan struct{} // calls were read
	stop    func()
	release *time.Timer // fires when a held event's grace runs out
	lost    uint64      // records reported lost
}

// auditStatePath is where the audit enabled flag to restore is kept while
// connlogd's rules are in: beside the state file, or in /run.
func (d *loop) auditStatePath() string {
	if p := d.statePath(); p != "" {
		return filepath.Join(filepath.Dir(p), "audit-enabled")
	}
	return "/run/connlogd/audit-enabled"
}

// openAudit starts audit attribution when configured. Without it (no
// privilege, no kernel support) attribution works as without audit, and
// one warning says why.
func (d *loop) openAudit() {
	if !d.plan.Config.Attribution.Audit {
		return
	}
	keep := max(10*time.Second, 3*d.plan.Config.Interval)
	src, err := audit.Open(audit.Options{
		StateFile: d.auditStatePath(),
		Keep:      keep,
		Grace:     auditGrace,
		InitialNetns: func(fn func() error) error {
			// The kernel multicasts audit records in the initial network
			// namespace only, where its threads are: kthreadd's (pid 2 of
			// the initial pid namespace, which audit needs anyway; init's
			// may be closed to inspection).
			path := "/proc/1/ns/net"
			if b, err := os.ReadFile("/proc/2/comm"); err == nil && string(b) == "kthreadd\n" {
				path = "/proc/2/ns/net"
			}
			init, err := netns.Resolve(path)
			if err != nil {
				return err
			}
			if self, err := netns.Host(); err == nil && self.ID == init.ID {
				return fn()
			}
			return netns.Do(init, fn)
		},
		Owner: func(c *audit.Call) *event.Process {
			return d.owners.Describe(c.PID, c.EUID, c.Comm, c.Exe, c.Proctitle)
		},
	})
	if err != nil {
		d.log.Warn("audit attribution unavailable; connections shorter than a poll get no owner", "err", err)
		return
	}
	if src.RulesErr != nil {
		d.log.Warn("audit rules not added; owners come only from the audit rules already present (connect, accept, accept4)", "err", src.RulesErr)
	} else if r := src.Rules(); r.Stale > 0 {
		d.log.Info("removed audit rules a previous run left", "rules", r.Stale)
	}
	a := &auditFeed{src: src, ready: make(chan struct{}, 1), release: time.NewTimer(time.Hour)}
	a.release.Stop()
	done := make(chan struct{})
	go func() {
		// Reads and learns at once, whatever the loop is doing; the loop
		// joins what it read when woken, or before the next closes.
		defer close(done)
		for src.Read() == nil {
			select {
			case a.ready <- struct{}{}:
			default: // the loop has a wake-up pending
			}
		}
	}()
	var once sync.Once
	a.stop = func() {
		once.Do(func() {
			if err := src.Close(); err != nil {
				d.log.Error("restoring the audit rules and flag failed", "err", err)
			}
			<-done
		})
	}
	d.audit = a
	d.log.Info("audit attribution on", "rules_added", src.RulesErr == nil)
}

// auditReady returns the channel the audit waiter signals on; nil (never
// ready) when audit attribution is off.
func (d *loop) auditReady() <-chan struct{} {
	if d.audit == nil {
		return nil
	}
	return d.audit.ready
}

// auditRelease returns the channel of the held-events timer, nil when off.
func (d *loop) auditRelease() <-chan time.Time {
	if d.audit == nil {
		return nil
	}
	return d.audit.release.C
}

// drainAudit hands the calls read so far to the joiner, then writes the
// held events that are ready. Called before anything is annotated, so
// that events find every call read up to now.
func (d *loop) drainAudit(now time.Time) {
	a := d.audit
	if a == nil {
		return
	}
	if n := a.src.Take(d.auditHorizon(now)); n > 0 {
		d.log.Warn("audit records lost (receive buffer overrun); some short connections may have no owner", "times", n)
		d.write(&event.Event{Kind: event.Gap, Time: now, Reason: event.GapAuditLost})
	}
	d.releaseAudit(now, false)
	if m, ok := d.met.(AuditMetrics); ok {
		m.Audit(a.src.Stats())
	}
}

// auditHorizon is the time calls are kept for (Take): the oldest of now,
// the start of the dump being made or diffed, and the oldest close a
// destroy waiter read and the loop has not taken. A loop held up for
// longer than the calls are kept (a scan of /proc on a loaded machine)
// must not forget the calls of the closes it has yet to log.
func (d *loop) auditHorizon(now time.Time) time.Time {
	h := now
	if s := d.sched.since; !s.IsZero() && s.Before(h) {
		h = s
	}
	for _, w := range d.order {
		if t, ok := w.oldestKept(); ok && t.Before(h) {
			h = t
		}
	}
	return h
}

// releaseAudit writes the held events that are ready (all, at shutdown),
// and sets the timer for the next.
func (d *loop) releaseAudit(now time.Time, all bool) {
	a := d.audit
	a.src.Release(now, all, d.finishEvent)
	a.release.Stop()
	if t, ok := a.src.NextRelease(); ok {
		// Still holding: probe again, and look again soon even if the
		// probe's record is slow to come.
		a.src.Probe(now)
		a.release.Reset(min(auditRecheck, max(time.Millisecond, t.Sub(now)+time.Millisecond)))
	}
}

// auditRecheck is how often held events are looked at without news.
const auditRecheck = 50 * time.Millisecond

// auditWoke takes the calls the reader read.
func (d *loop) auditWoke() {
	held := d.audit.src.Held()
	d.drainAudit(d.clock.Now())
	if d.audit.src.Held() < held {
		d.sync()
	}
}

// auditLost reports records the kernel counted lost since the last call.
func (d *loop) auditLost(now time.Time) {
	if d.audit == nil {
		return
	}
	n, known, err := d.audit.src.Lost()
	if err != nil || !known || n == 0 {
		return
	}
	d.audit.lost += n
	d.log.Warn("the kernel lost audit records (backlog full or rate limit); some short connections may have no owner", "count", n)
	d.write(&event.Event{Kind: event.Gap, Time: now, Reason: event.GapAuditLost, Count: n})
}

// closeAudit writes the events still held and removes connlogd's rules.
func (d *loop) closeAudit() {
	if d.audit == nil {
		return
	}
	d.drainAudit(d.clock.Now())
	d.releaseAudit(d.clock.Now(), true)
	d.audit.stop()
}

// auditHold gives ev the owner audit knows when attribution found none,
// and reports whether it held the event back for the records of its call
// (it is then written by releaseAudit).
func (d *loop) auditHold(ev *event.Event) (held bool) {
	if d.audit == nil {
		return false
	}
	if d.audit.src.Attribute(ev, ev.Netns, d.clock.Now()) {
		d.audit.src.Probe(d.clock.Now())
		d.audit.release.Reset(auditRecheck)
		return true
	}
	return false
}

// finishEvent writes an event audit attribution held back, through the
// owner rules as the namespace's output does.
func (d *loop) finishEvent(ev *event.Event) {
	if d.plan.admitOwner(ev) {
		d.write(ev)
	}
}

// AuditMetrics is what a Metrics implementation also offers when it
// reports audit attribution's counters.
type AuditMetrics interface {
	Audit(st audit.JoinStats)
}
