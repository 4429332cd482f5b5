package engine

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/connlogd/connlogd/statefile"
)

// statePath is the configured state file or, under systemd with
// StateDirectory=, state.json there.
func (d *loop) statePath() string {
	if d.plan.Config.StateFile != "" {
		return d.plan.Config.StateFile
	}
	if dir := os.Getenv("STATE_DIRECTORY"); dir != "" && filepath.IsAbs(dir) {
		// Several directories may be listed, colon-separated; use the first.
		if i := strings.IndexByte(dir, ':'); i >= 0 {
			dir = dir[:i]
		}
		return filepath.Join(dir, "state.json")
	}
	return ""
}

// saveState writes the tables, atomically, when a state file is
// configured. Failure costs only continuity, so it is logged.
func (d *loop) saveState() {
	path := d.statePath()
	if path == "" {
		return
	}
	st := statefile.State{Version: statefile.Version, BootID: statefile.BootID(), SavedAt: d.clock.Now().UTC()}
	n := 0
	for _, w := range d.order {
		ts := w.differ.Export()
		n += len(ts)
		st.Namespaces = append(st.Namespaces, statefile.NS{Dev: w.ns.ID.Dev, Ino: w.ns.ID.Ino, Sockets: ts})
	}
	if err := statefile.Write(path, &st); err != nil {
		d.log.Error("saving the socket table failed; the next start reports every socket as initial", "err", err)
		return
	}
	d.log.Info("socket table saved", "path", path, "sockets", n)
}

// restoreState loads the saved tables into the watches of the same
// namespaces, before the first poll, and removes the file: were it kept,
// a crash later would make the next start replay closes already logged.
// A missing file is normal; a corrupt or stale one is ignored with a
// warning. It returns how many sockets were restored.
func (d *loop) restoreState() int {
	path := d.statePath()
	if path == "" {
		return 0
	}
	st, rep, err := statefile.Read(path, d.clock.Now())
	if errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	// Removed even when refused: a link or a corrupt file would otherwise
	// be refused again at every start.
	defer os.Remove(path)
	switch {
	case err != nil:
		d.log.Warn("saved socket table is corrupt or unsafe; starting afresh", "path", path, "err", err)
		return 0
	case st.BootID == "" || st.BootID != statefile.BootID():
		d.log.Warn("saved socket table is from another boot; starting afresh", "path", path, "saved_at", st.SavedAt)
		return 0
	}
	if rep.Skipped > 0 || rep.Duplicates > 0 {
		d.log.Warn("saved socket table: records skipped; they make no events", "path", path,
			"skipped", rep.Skipped, "duplicates", rep.Duplicates, "example", rep.Example)
	}
	n := 0
	for _, ns := range st.Namespaces {
		for _, w := range d.order {
			if w.ns.ID.Dev == ns.Dev && w.ns.ID.Ino == ns.Ino {
				w.differ.Restore(ns.Sockets)
				n += len(ns.Sockets)
			}
		}
	}
	return n
}
