package engine

import (
	"reflect"
	"slices"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/filter"
	"github.com/connlogd/connlogd/sink"
	"github.com/connlogd/connlogd/snapshot"
)

// reload validates and applies the configuration. A bad file is refused
// and the running configuration stays. The socket tables are kept, so
// live sockets are not announced again and no event is lost.
func (d *daemon) reload(r ReloadRequest, tick, rescan *time.Ticker) {
	if r.Path == "" {
		d.log.Info("reload requested, but connlogd runs on built-in defaults: nothing to read", "reason", r.Reason)
		return
	}
	d.notify.Reloading()
	defer d.notify.Ready()
	cfg, err := config.Load(r.Path)
	if err != nil {
		d.met.Reloaded(false)
		d.log.Error("configuration refused; keeping the running one", "reason", r.Reason, "err", err)
		return
	}
	f, err := filter.New(cfg.Filters)
	if err != nil {
		d.met.Reloaded(false)
		d.log.Error("configuration refused; keeping the running one", "reason", r.Reason, "err", err)
		return
	}
	out, err := sink.Open(cfg.Sinks, sink.Options{Host: d.host, Version: d.version})
	if err != nil {
		d.met.Reloaded(false)
		d.log.Error("configuration refused: cannot open its sinks; keeping the running one", "reason", r.Reason, "err", err)
		return
	}
	old := d.out
	d.sync()
	d.out = out
	d.met.Sinks(out)
	if err := old.Close(); err != nil {
		d.log.Warn("closing the previous sinks", "err", err)
	}
	d.dropped = 0

	prev := d.cfg
	d.cfg = cfg
	if cfg.Interval != prev.Interval {
		tick.Reset(cfg.Interval)
	}
	if cfg.NamespaceRescan != prev.NamespaceRescan {
		rescan.Reset(cfg.NamespaceRescan)
	}
	if cfg.Attribution != prev.Attribution {
		d.log.Warn("attribution settings change on restart only")
	}
	if cfg.Metrics != prev.Metrics {
		d.log.Warn("metrics settings change on restart only", "running", prev.Metrics.Listen, "configured", cfg.Metrics.Listen)
	}
	d.filter = f
	for _, w := range d.order {
		w.differ.SetStates(stateMask(cfg.States))
		if !reflect.DeepEqual(cfg.Filters, prev.Filters) {
			w.setFilter(f)
			// Sockets the new filters exclude leave silently: no longer
			// reporting them is not their close.
			w.differ.Forget(func(s *snapshot.Socket) bool { return !f.Match(s) })
		}
	}
	if !slices.Equal(cfg.Protocols, prev.Protocols) || !slices.Equal(cfg.Families, prev.Families) || cfg.Destroy != prev.Destroy {
		for _, w := range slices.Clone(d.order) {
			d.rewatch(w)
		}
	}
	if !slices.Equal(cfg.Namespaces.List, prev.Namespaces.List) || cfg.Namespaces.Mode != prev.Namespaces.Mode {
		if err := d.rescan(time.Now()); err != nil {
			d.log.Error("namespace rescan failed", "err", err)
		}
	}
	d.met.Reloaded(true)
	d.log.Info("configuration reloaded", "reason", r.Reason, "interval", cfg.Interval, "sinks", len(cfg.Sinks))
}

// rewatch reopens a namespace's sockets for new protocols, families or
// destroy settings, keeping its socket table. Sockets of what is no longer
// watched are forgotten silently: not dumping them is not their close.
func (d *daemon) rewatch(w *watch) {
	nw, err := openWatch(w.ns, d.cfg, d.filter, d.owners, d.log, d.ready, d.write)
	if err != nil {
		d.log.Error("cannot apply the new protocols or families to this namespace; keeping the old ones", "netns", w.String(), "err", err)
		return
	}
	// Keep what the old watch learned: the table and the owners.
	nw.owners.Close()
	nw.owners, w.owners = w.owners, nil
	w.close()
	nw.differ = w.differ
	nw.differ.SetOutput(nw.output)
	protos, fams := d.cfg.Protocols, d.cfg.Families
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
}
