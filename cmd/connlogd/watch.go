package main

import (
	"bytes"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/connlogd/connlogd/attribution"
	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/diag"
	"github.com/connlogd/connlogd/differ"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/filter"
	"github.com/connlogd/connlogd/netns"
	"github.com/connlogd/connlogd/snapshot"
)

// watch is one network namespace's sock_diag sockets and socket table.
type watch struct {
	ns      netns.NS
	conn    *diag.Conn
	reqs    []diag.Request
	differ  *differ.Differ
	tab     snapshot.Table
	destroy *diag.Destroy // nil when notifications are unavailable
	stop    func()        // stops the destroy reader
	// sockstat files opened inside the namespace: when they count no TCP
	// socket, the TCP dump, which walks the whole host-wide hash table
	// even for an empty namespace, is skipped.
	sockstat, sockstat6 *os.File
	statBuf             []byte
	// used is the namespace's "sockets: used" count at the last poll.
	used   int
	usedOK bool
	// diffed: tab holds the last dump, the one the differ took (no dump
	// failed since).
	diffed bool

	counts [2][2]int // last poll: tcp/udp × ipv4/ipv6, for the metrics
	filter *filter.Filter
	// owners attributes the namespace's sockets to processes and cgroups.
	owners *attribution.Tracker
	// output tags, annotates and filters each event of the differ, then
	// writes it.
	output func(*event.Event)
	// kernelFiltered: every request carries the filter's program, so the
	// dump holds only matching sockets and Match need not run on it.
	kernelFiltered bool

	// drained tells the destroy waiter that the loop has read what it
	// signalled; dtab holds one drained batch.
	drained chan struct{}
	dtab    snapshot.Table
	// reqsNow are the requests of the dump in flight; lastCost what the
	// last poll took, for the namespace budget.
	reqsNow    []diag.Request
	lastCost   time.Duration
	lastResync time.Time

	failing  bool
	parse    snapshot.Stats
	dstats   differ.Stats
	overruns uint64
}

// openWatch opens the sock_diag sockets of ns. Sockets are created inside
// the namespace and stay bound to it; nothing else needs to enter it.
// Its differ hands each event to emit as it is found, tagged with the
// namespace.
func openWatch(ns netns.NS, cfg *config.Config, f *filter.Filter, res *attribution.Resolver, log *slog.Logger, ready chan<- *watch, emit func(*event.Event)) (*watch, error) {
	w := &watch{ns: ns, statBuf: make([]byte, 512), owners: res.NewTracker()}
	w.output = func(ev *event.Event) {
		w.tag(ev)
		w.owners.AnnotateEvent(ev)
		if w.filter.NeedsOwner() && !w.filter.MatchOwner(&ev.Socket, ownerOf(ev)) {
			return
		}
		emit(ev)
	}
	w.differ = differ.New(differ.Options{States: stateMask(cfg.States), Output: w.output, UpdateInterval: cfg.FlowUpdateInterval})
	var destroyErr error
	err := netns.Do(ns, func() error {
		c, err := diag.Open()
		if err != nil {
			return err
		}
		w.conn = c
		if cfg.Destroy.Enabled {
			w.destroy, destroyErr = diag.OpenDestroy(cfg.Protocols, cfg.Families, cfg.Destroy.Buffer)
		}
		// Bound to this namespace at open; optional, so errors only cost
		// the optimisation.
		w.sockstat, _ = os.Open("/proc/thread-self/net/sockstat")
		w.sockstat6, _ = os.Open("/proc/thread-self/net/sockstat6")
		return nil
	})
	if err != nil {
		w.close()
		return nil, err
	}
	// Probe without the filter program: usableRequests reads EINVAL as
	// "cannot dump this family", which a bad program must not fake.
	reqs, err := usableRequests(w.conn, diag.Requests(cfg.Protocols, cfg.Families, true), log.With("netns", ns.String()))
	if err != nil {
		w.close()
		return nil, err
	}
	w.reqs = reqs
	w.setFilter(f)
	switch {
	case !cfg.Destroy.Enabled:
	case destroyErr != nil:
		log.Warn("destroy notifications unavailable; closes come from polls only, and connections shorter than the interval are missed",
			"netns", ns.String(), "err", destroyErr)
	default:
		if !w.destroy.Forced && w.destroy.Buffer < cfg.Destroy.Buffer {
			log.Warn("destroy notification buffer smaller than asked (no CAP_NET_ADMIN, net.core.rmem_max too low); bursts of closes may overrun it",
				"netns", ns.String(), "asked", cfg.Destroy.Buffer, "granted", w.destroy.Buffer)
		}
		w.stop = w.waitDestroy(ready)
		w.differ.SetDestroy(true)
	}
	return w, nil
}

// waitDestroy runs a goroutine that waits for destroy notifications and
// tells the poll loop, which does every read itself: only then can a poll
// take, before diffing a dump, every notification queued while the dump
// ran, so that the TIME_WAIT remnant of a connection it reports as
// short-lived is known for what it is. The goroutine waits again only
// once the loop has drained. The returned function stops it.
func (w *watch) waitDestroy(ready chan<- *watch) func() {
	w.drained = make(chan struct{}, 1)
	quit := make(chan struct{})
	done := make(chan struct{})
	sub := w.destroy
	go func() {
		defer close(done)
		for {
			if err := sub.WaitReadable(); err != nil {
				return // closed; any other error shows in the loop's next read
			}
			select {
			case ready <- w:
			case <-quit:
				return
			}
			select {
			case <-w.drained:
			case <-quit:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			sub.Close()
			<-done
		})
	}
}

// close releases every socket of the namespace: an open socket would pin
// a namespace that is otherwise gone.
func (w *watch) close() {
	if w.owners != nil {
		w.owners.Close()
	}
	if w.stop != nil {
		w.stop()
	} else if w.destroy != nil {
		w.destroy.Close()
	}
	if w.conn != nil {
		w.conn.Close()
	}
	for _, f := range []*os.File{w.sockstat, w.sockstat6} {
		if f != nil {
			f.Close()
		}
	}
}

// tag stamps an event with the namespace it happened in.
func (w *watch) tag(ev *event.Event) {
	ev.Netns = w.ns.ID.Ino
	ev.NetnsName = w.ns.Name
}

// activeRequests returns the dumps worth making now. A TCP dump walks the
// host-wide hash even for an empty namespace, so it is left out when
// nothing of the family could be in it: sockstat counts no hashed TCP
// socket of the family and no TIME_WAIT remnant, the last dump found
// none, and the namespace's socket count ("sockets: used") has not moved
// since the last poll. The last two matter because a socket that is only
// bound is in no count of the TCP line, yet dumps return it: without
// them its namespace's last listener going would make it look closed.
func (w *watch) activeRequests(buf []diag.Request) []diag.Request {
	b4 := w.readStat(w.sockstat)
	in4, tw, ok4 := netns.ParseSockstat(b4, "TCP:")
	used, okUsed := netns.ParseSockstatUsed(b4)
	quiet := okUsed && w.usedOK && used == w.used
	w.used, w.usedOK = used, okUsed
	in6, _, ok6 := netns.ParseSockstat(w.readStat(w.sockstat6), "TCP6:")
	empty4, empty6 := ok4 && in4 == 0, ok6 && in6 == 0
	if !quiet || !ok4 || tw != 0 || !w.diffed || (!empty4 && !empty6) {
		return append(buf, w.reqs...)
	}
	// Only now, with a family counted empty, look at the last table:
	// a namespace of many sockets never pays for the scan.
	had4, had6 := w.tab.HasTCP()
	empty4, empty6 = empty4 && !had4, empty6 && !had6
	for _, r := range w.reqs {
		// TIME_WAIT sockets of both families are counted together, in
		// the TCP: line's tw.
		if r.Proto == snapshot.ProtoTCP &&
			((r.Family == snapshot.FamilyIPv4 && empty4) || (r.Family == snapshot.FamilyIPv6 && empty6) ||
				(r.Family == snapshot.FamilyAny && empty4 && empty6)) {
			continue
		}
		buf = append(buf, r)
	}
	return buf
}

// readStat reads a sockstat file into statBuf, which the next read
// overwrites; nil when it cannot.
func (w *watch) readStat(f *os.File) []byte {
	if f == nil {
		return nil
	}
	m, err := f.ReadAt(w.statBuf, 0)
	if m == 0 || (err != nil && m == len(w.statBuf)) {
		return nil
	}
	return w.statBuf[:m]
}

func (w *watch) String() string { return w.ns.String() }

// setFilter attaches f's kernel program to the requests that can carry it.
// A request for both families keeps one program only when both families
// compile to the same one; otherwise it is split per family.
func (w *watch) setFilter(f *filter.Filter) {
	w.filter = f
	w.kernelFiltered = true
	var reqs []diag.Request
	for _, r := range w.reqs {
		if r.Family == snapshot.FamilyAny && f != nil {
			bc4, ok4 := f.Bytecode(snapshot.FamilyIPv4)
			bc6, ok6 := f.Bytecode(snapshot.FamilyIPv6)
			if ok4 != ok6 || !bytes.Equal(bc4, bc6) {
				reqs = append(reqs, r.Split()...)
				continue
			}
		}
		reqs = append(reqs, r)
	}
	for i := range reqs {
		fam := reqs[i].Family
		if fam == snapshot.FamilyAny {
			fam = snapshot.FamilyIPv4 // same program for both, checked above
		}
		reqs[i].Bytecode = nil
		if bc, ok := f.Bytecode(fam); ok {
			reqs[i].Bytecode = bc
		} else if f != nil {
			w.kernelFiltered = false
		}
	}
	w.reqs = reqs
}

// keep drops from t, in place, the sockets the filter does not report.
func (w *watch) keep(t *snapshot.Table) {
	if w.filter == nil {
		return
	}
	out := t.Sockets[:0]
	for i := range t.Sockets {
		if w.filter.Match(&t.Sockets[i]) {
			out = append(out, t.Sockets[i])
		}
	}
	t.Sockets = out
}

// ownerOf is what the filter's process and user rules see of an event's
// owner; nil when attribution does not know it.
func ownerOf(ev *event.Event) *filter.Owner {
	if ev.Process == nil {
		return nil
	}
	return &filter.Owner{Process: ev.Process.Comm, User: ev.Process.User, UID: ev.Process.UID, HasUID: true}
}
