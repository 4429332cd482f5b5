package engine

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/snapshot"
)

// reload validates and applies the configuration file, the way a dynamic
// exporter swaps its configuration: build everything new first (the
// plan, the sinks), refuse the file if any of it fails, then compare the
// new plan with the running one, swap them, and stop the old sinks. A bad
// file is refused and the running configuration stays. The socket tables
// are kept, so live sockets are not announced again and no event is
// lost. It returns the configuration it replaced.
func (d *loop) reload(r ReloadRequest) (prev *config.Config, ok bool) {
	if r.Path == "" {
		d.log.Info("reload requested, but connlogd runs on built-in defaults: nothing to read", "reason", r.Reason)
		return nil, false
	}
	d.notify.Reloading()
	defer d.notify.Ready()
	cfg, err := config.Load(r.Path)
	if err == nil {
		// What start and -check-config check, reload checks.
		if cerr := cfg.Check(); cerr != nil {
			err = fmt.Errorf("%s: %w", r.Path, cerr)
		}
	}
	if err != nil {
		d.met.Reloaded(false)
		d.log.Error("configuration refused; keeping the running one", "reason", r.Reason, "err", err)
		return nil, false
	}
	plan, err := NewPlan(cfg, d.plan.Gen+1)
	if err != nil {
		d.met.Reloaded(false)
		d.log.Error("configuration refused; keeping the running one", "reason", r.Reason, "err", err)
		return nil, false
	}
	out, err := d.openSinks(cfg)
	if err != nil {
		d.met.Reloaded(false)
		d.log.Error("configuration refused: cannot open its sinks; keeping the running one", "reason", r.Reason, "err", err)
		return nil, false
	}
	prev = d.apply(plan, out)
	d.met.Reloaded(true)
	d.log.Info("configuration reloaded", "reason", r.Reason, "interval", cfg.Interval, "sinks", len(cfg.Sinks), "generation", plan.Gen)
	return prev, true
}

// apply swaps in a new plan and its sinks, then brings the namespaces in
// line with it. It returns the configuration it replaced.
func (d *loop) apply(plan *Plan, out Output) (prev *config.Config) {
	old := d.out
	d.sync()
	d.out = out
	d.met.Sinks(out)
	if err := old.Close(); err != nil {
		d.log.Warn("closing the previous sinks", "err", err)
	}
	d.dropped = 0

	oldPlan := d.plan
	d.plan = plan
	d.cfgNow.Store(plan.Config)
	prev, cfg := oldPlan.Config, plan.Config
	if cfg.Attribution != prev.Attribution {
		d.log.Warn("attribution settings change on restart only")
	}
	if !reflect.DeepEqual(cfg.Containers, prev.Containers) {
		d.log.Warn("containers settings change on restart only")
	}
	if cfg.Metrics != prev.Metrics {
		d.log.Warn("metrics settings change on restart only", "running", prev.Metrics.Listen, "configured", cfg.Metrics.Listen)
	}
	filterChanged := !reflect.DeepEqual(cfg.Filters, prev.Filters)
	for _, w := range d.order {
		w.differ.SetStates(plan.States)
		w.differ.SetUpdateInterval(plan.Config.FlowUpdateInterval)
		// A dump in flight keeps the nsPlan it was made with; pollChunk
		// sees it is not this one and filters its chunks here. Sockets
		// forgotten between two chunks come back in no later one.
		w.plan = plan.forNamespace(w.reqs)
		if filterChanged {
			// Sockets the new filters exclude leave silently: no longer
			// reporting them is not their close.
			w.differ.Forget(func(s *snapshot.Socket) bool { return !plan.Filter.Match(s) })
		}
	}
	if !slices.Equal(cfg.Protocols, prev.Protocols) || !slices.Equal(cfg.Families, prev.Families) || cfg.Destroy != prev.Destroy {
		for _, w := range slices.Clone(d.order) {
			d.rewatch(w)
		}
	}
	if !slices.Equal(cfg.Namespaces.List, prev.Namespaces.List) || cfg.Namespaces.Mode != prev.Namespaces.Mode {
		// The watcher first: a namespace made during the rescan is then
		// found by one or the other.
		d.watchNamespaces()
		if err := d.rescan(); err != nil {
			d.log.Error("namespace rescan failed", "err", err)
		}
	}
	return prev
}

// rewatch reopens a namespace's sockets for new protocols, families or
// destroy settings, keeping its socket table. Sockets of what is no longer
// watched are forgotten silently: not dumping them is not their close.
func (d *loop) rewatch(w *namespace) {
	nw, err := d.openNamespace(w.ns)
	if err != nil {
		d.log.Error("cannot apply the new protocols or families to this namespace; keeping the old ones", "netns", w.String(), "err", err)
		return
	}
	// Keep what the old namespace learned: the table and the owners. The
	// diff of a dump in flight on w ends here: its chunks go nowhere.
	w.abortPoll()
	nw.owners.Close()
	nw.owners, w.owners = w.owners, nil
	w.close()
	nw.differ = w.differ
	nw.differ.SetOutput(nw.output)
	nw.container = w.container
	nw.differ.SetDestroy(nw.destroy != nil && nw.stop != nil)
	protos, fams := d.plan.Config.Protocols, d.plan.Config.Families
	if n := nw.differ.Forget(func(s *snapshot.Socket) bool {
		return !slices.Contains(protos, s.Proto) || !slices.Contains(fams, s.Family)
	}); n > 0 {
		d.log.Info("no longer watched; forgotten without events", "netns", w.String(), "sockets", n)
	}
	d.watches[w.ns.ID] = nw
	for i := range d.order {
		if d.order[i] == w {
			d.order[i] = nw
		}
	}
	// A dump in flight on w finishes on its closed sockets; dumped drops
	// the result, as w is no longer watched, and nw is polled next round.
}
