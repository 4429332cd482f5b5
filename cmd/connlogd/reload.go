package main

import (
	"crypto/sha256"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/filter"
	"github.com/connlogd/connlogd/sink"
	"github.com/connlogd/connlogd/snapshot"
)

// reloadDebounce lets an editor or a ConfigMap update finish its burst of
// writes and renames before the file is read.
const reloadDebounce = 200 * time.Millisecond

// reloadRequest asks the loop to apply the configuration file again.
type reloadRequest struct {
	path   string
	reason string // "SIGHUP" or "file changed"
}

// watchConfig sends a request on SIGHUP, and when the file's content
// changes. It watches the file's directory, not the file: editors save by
// renaming a new file over the old one, and Kubernetes swaps a symlink,
// and both leave a watch on the old inode blind. A content hash skips
// writes that change nothing. path "" (built-in defaults) watches nothing
// but still turns SIGHUP into a request, which then has nothing to read.
func watchConfig(path string, log *slog.Logger) (<-chan reloadRequest, func()) {
	out := make(chan reloadRequest, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	quit := make(chan struct{})
	done := make(chan struct{})

	var events chan fsnotify.Event
	var errs chan error
	var w *fsnotify.Watcher
	if path != "" {
		var err error
		w, err = fsnotify.NewWatcher()
		if err == nil {
			err = w.Add(filepath.Dir(path))
		}
		if err != nil {
			log.Warn("cannot watch the configuration file; reload with SIGHUP", "path", path, "err", err)
			if w != nil {
				w.Close()
				w = nil
			}
		} else {
			events, errs = w.Events, w.Errors
		}
	}
	last := hashFile(path)
	send := func(reason string) {
		select {
		case out <- reloadRequest{path: path, reason: reason}:
		default: // one request already waiting covers this one
		}
	}
	go func() {
		defer close(done)
		var debounce <-chan time.Time
		for {
			select {
			case <-quit:
				return
			case <-hup:
				last = hashFile(path)
				send("SIGHUP")
			case ev, ok := <-events:
				if !ok {
					events = nil
					continue
				}
				_ = ev // any change in the directory may be ours (symlink swaps rename other names)
				debounce = time.After(reloadDebounce)
			case err, ok := <-errs:
				if !ok {
					errs = nil
					continue
				}
				log.Warn("configuration watch error", "err", err)
			case <-debounce:
				debounce = nil
				if h := hashFile(path); h != last {
					last = h
					send("file changed")
				}
			}
		}
	}()
	return out, func() {
		signal.Stop(hup)
		close(quit)
		<-done
		if w != nil {
			w.Close()
		}
	}
}

func hashFile(path string) [32]byte {
	if path == "" {
		return [32]byte{}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return [32]byte{} // unreadable: differs from any real content
	}
	return sha256.Sum256(b)
}

// reload validates and applies the configuration. A bad file is refused
// and the running configuration stays. The socket tables are kept, so
// live sockets are not announced again and no event is lost.
func (d *daemon) reload(r reloadRequest, tick, rescan *time.Ticker) {
	if r.path == "" {
		d.log.Info("reload requested, but connlogd runs on built-in defaults: nothing to read", "reason", r.reason)
		return
	}
	d.notify.reloading()
	defer d.notify.ready()
	cfg, err := config.Load(r.path)
	if err != nil {
		d.met.reloaded(false)
		d.log.Error("configuration refused; keeping the running one", "reason", r.reason, "err", err)
		return
	}
	f, err := filter.New(cfg.Filters)
	if err != nil {
		d.met.reloaded(false)
		d.log.Error("configuration refused; keeping the running one", "reason", r.reason, "err", err)
		return
	}
	out, err := sink.Open(cfg.Sinks, sink.Options{Host: d.host, Version: buildVersion()})
	if err != nil {
		d.met.reloaded(false)
		d.log.Error("configuration refused: cannot open its sinks; keeping the running one", "reason", r.reason, "err", err)
		return
	}
	old := d.out
	d.sync()
	d.out = out
	d.outp.Store(out)
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
		w.differ.SetUpdateInterval(cfg.FlowUpdateInterval)
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
	d.met.reloaded(true)
	d.log.Info("configuration reloaded", "reason", r.reason, "interval", cfg.Interval, "sinks", len(cfg.Sinks))
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
	nw.differ.SetDestroy(nw.destroy != nil && nw.stop != nil)
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
