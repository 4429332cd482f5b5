package engine

import (
	"slices"
	"time"

	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/snapshot"
)

// nsBudget is the share of each interval that polling namespaces other
// than the host's may take. A dump walks the whole host-wide TCP hash even
// for a namespace with three sockets (milliseconds each), so at a hundred
// namespaces polling all of them every tick would cost most of a core;
// past the budget they are polled round-robin over several ticks. Closes
// stay immediate through the destroy notifications; appearances and state
// changes in those namespaces are seen up to a round later.
const nsBudget = 5 // 1/nsBudget of the interval

// candidate is what the scheduler knows of a namespace.
type candidate struct {
	host bool
	cost time.Duration // what its last poll took
}

// planRound decides one tick's polls; it is a pure function. The host's
// namespace is always polled; the others are taken round-robin from
// position rr (an index among the non-host ones) while the costs of
// those taken stay under budget, and at least one is taken so that every
// namespace is polled in turn however slow. It returns the indexes into
// cands in polling order, the rr of the next round, and whether some
// namespace was left for later rounds.
func planRound(cands []candidate, rr int, budget time.Duration) (picks []int, next int, short bool) {
	var others []int
	for i, c := range cands {
		if c.host {
			picks = append(picks, i)
		} else {
			others = append(others, i)
		}
	}
	if len(others) == 0 {
		return picks, rr, false
	}
	var spent time.Duration
	taken := 0
	for taken < len(others) && (taken == 0 || spent < budget) {
		rr %= len(others)
		i := others[rr]
		picks = append(picks, i)
		spent += cands[i].cost
		rr++
		taken++
	}
	return picks, rr, taken < len(others)
}

// mayResync reports whether a namespace last resynchronised at last may
// be again at now: at most once an interval, so that under a flood that
// overruns the buffer again and again, resyncs neither starve the other
// namespaces nor keep the first round from ever ending.
func mayResync(last, now time.Time, interval time.Duration) bool {
	return last.IsZero() || now.Sub(last) >= interval
}

// scheduler is the state of the rounds: the namespace being dumped, those
// queued and the round-robin position. It does no I/O and reads no clock.
type scheduler struct {
	inflight *namespace   // being dumped
	since    time.Time    // when the dump being dumped or diffed started
	queue    []*namespace // to dump in this round
	rr       int          // next non-host namespace to poll
	warned   bool         // the namespace budget overran; said once
}

// dumpJob is one namespace's dump, run by the dump worker so that the
// loop keeps logging destroy notifications while the kernel walks its
// tables (100 ms and more for a large table). The worker hands the dump
// back in chunks as it reads them (DumpChunk sockets each, in tables the
// loop recycles), and the loop diffs each chunk as it comes: the table is
// never held whole, and a close waits for the loop at most one chunk's
// diff. The job carries the plan the dump is made with: a reload while it
// runs must not change how its result is read.
type dumpJob struct {
	w    *namespace
	plan *nsPlan
	reqs []diag.Request // plan's requests, less those not worth making now
	// noTimeWait: reqs leave TIME_WAIT sockets out (leaveOutTimeWait).
	noTimeWait bool
	// start is when the loop handed the job over.
	start time.Time
	// chunk is the part of the dump read since the last one, and at when
	// its reading ended, read by the worker. A chunk's events are stamped
	// with at: a socket it lists may have appeared, or changed state, at
	// any moment of the walk, and had by then; the dump's start could
	// precede the change. last says the dump is over: chunk holds its
	// rest, and err says whether it failed.
	chunk *snapshot.Table
	at    time.Time
	last  bool
	err   error
}

// DumpChunk is how many sockets the dump worker reads before it hands
// them to the loop: a quarter of a millisecond of the loop's work. A
// table holds that and up to a datagram more (some 100 sockets): the two
// take 0.44 MB whatever the table's size, where chunks of 2,048 took
// 0.83 MB, for the same CPU per poll at 108k sockets within the
// benchmark's noise (bench/churn/README.md). Exported for the poll
// benchmark, which diffs in the daemon's chunks.
const DumpChunk = 1024

// chunkTables is how many chunk tables the worker and the loop pass
// between them: the worker fills one while the loop diffs the other.
const chunkTables = 2

// dumper runs dumps one at a time, handing each over in chunks (see
// dumpJob); the loop starts the next dump when it has the last chunk of
// the one before.
func (d *loop) dumper() {
	var cur dumpJob
	// One closure for the worker's life: a steady poll allocates nothing.
	flush := func(t *snapshot.Table) *snapshot.Table {
		c := cur
		c.chunk, c.at = t, d.clock.Now()
		d.dumpDone <- c
		return <-d.chunks
	}
	for j := range d.dumpReq {
		cur = j
		j.chunk, j.err = j.w.conn.DumpEach(<-d.chunks, j.reqs, d.chunkSize, flush)
		j.at, j.last = d.clock.Now(), true
		d.dumpDone <- j
	}
}

// startRound queues this tick's polls (see planRound). A round still
// running when the next tick comes is not doubled: the tick is skipped,
// as a slow poll skips ticks.
func (d *loop) startRound() {
	s := &d.sched
	if s.inflight != nil || len(s.queue) > 0 {
		return
	}
	cands := make([]candidate, len(d.order))
	for i, w := range d.order {
		cands[i] = candidate{host: w.ns.Host, cost: w.lastCost}
	}
	budget := d.plan.Config.Interval / nsBudget
	picks, next, short := planRound(cands, s.rr, budget)
	s.rr = next
	for _, i := range picks {
		s.queue = append(s.queue, d.order[i])
	}
	if short && !s.warned {
		s.warned = true
		others := countOthers(cands)
		hosts := len(cands) - others
		d.log.Warn("polling every namespace takes longer than its budget; namespaces are polled in turn over several intervals (closes stay immediate)",
			"namespaces", others, "per_interval", len(picks)-hosts, "budget", budget)
	}
	d.nextDump()
}

// countOthers counts the namespaces other than the host's.
func countOthers(cands []candidate) int {
	n := 0
	for _, c := range cands {
		if !c.host {
			n++
		}
	}
	return n
}

// resync polls w as soon as the worker is free, ahead of the round, at
// most once an interval (mayResync).
func (d *loop) resync(w *namespace) {
	s := &d.sched
	now := d.clock.Now()
	if w == s.inflight || slices.Contains(s.queue, w) || !mayResync(w.lastResync, now, d.plan.Config.Interval) {
		return
	}
	w.lastResync = now
	s.queue = append(s.queue, w)
	d.nextDump()
}

// nextDump hands the next queued namespace to the worker, with the
// running plan; when the round is over, it publishes and flushes.
func (d *loop) nextDump() {
	s := &d.sched
	for s.inflight == nil && len(s.queue) > 0 {
		w := s.queue[0]
		s.queue = s.queue[1:]
		if d.watches[w.ns.ID] != w {
			continue // closed meanwhile
		}
		s.inflight = w
		w.dumping = true
		s.since = d.clock.Now()
		w.reqsNow = w.activeRequests(w.reqsNow[:0], w.plan.reqs)
		noTW := w.leaveOutTimeWait(w.reqsNow)
		d.dumpReq <- dumpJob{w: w, plan: w.plan, reqs: w.reqsNow, noTimeWait: noTW, start: d.clock.Now()}
		return
	}
	if s.inflight == nil {
		d.publishSockets()
		d.auditLost(d.clock.Now())
		d.reportSinkDrops(d.clock.Now())
		d.sync()
	}
}

// dumped takes a chunk of the dump in flight and, after its last one,
// starts the next dump.
func (d *loop) dumped(j dumpJob) {
	w := j.w
	watched := d.watches[w.ns.ID] == w
	if !j.last {
		if watched {
			d.pollChunk(j)
		}
		d.chunks <- j.chunk // never blocks: the channel holds every table
		return
	}
	d.sched.inflight = nil
	w.dumping = false
	if watched {
		d.finishPoll(j)
	} else if w.closeConn {
		// Closed while the worker had it (see namespace.close).
		_ = w.conn.Close()
	}
	d.chunks <- j.chunk
	d.nextDump()
	if d.sched.inflight == nil {
		d.sched.since = time.Time{}
	}
}

// finishRounds waits for the dumps in flight and queued, for the first
// poll and for shutdown.
func (d *loop) finishRounds() {
	for d.sched.inflight != nil {
		d.dumped(<-d.dumpDone)
	}
}
