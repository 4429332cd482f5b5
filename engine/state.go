package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/connlogd/connlogd/differ"
)

// stateVersion changes whenever the saved layout does.
const stateVersion = 1

// savedState is the socket table kept across a restart. Cookies are
// unique only within one boot, so a state from another boot is useless.
type savedState struct {
	Version    int       `json:"version"`
	BootID     string    `json:"boot_id"`
	SavedAt    time.Time `json:"saved_at"`
	Namespaces []savedNS `json:"namespaces"`
}

type savedNS struct {
	Dev     uint64           `json:"dev"`
	Ino     uint64           `json:"ino"`
	Sockets []differ.Tracked `json:"sockets"`
}

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

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
	st := savedState{Version: stateVersion, BootID: bootID(), SavedAt: d.clock.Now().UTC()}
	n := 0
	for _, w := range d.order {
		ts := w.differ.Export()
		n += len(ts)
		st.Namespaces = append(st.Namespaces, savedNS{Dev: w.ns.ID.Dev, Ino: w.ns.ID.Ino, Sockets: ts})
	}
	if err := writeState(path, &st); err != nil {
		d.log.Error("saving the socket table failed; the next start reports every socket as initial", "err", err)
		return
	}
	d.log.Info("socket table saved", "path", path, "sockets", n)
}

func writeState(path string, st *savedState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("state %s: encode: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".connlogd-state-*")
	if err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("state %s: write: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("state %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	return nil
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
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	defer os.Remove(path)
	if err != nil {
		d.log.Warn("cannot read the saved socket table; starting afresh", "path", path, "err", err)
		return 0
	}
	var st savedState
	if err := json.Unmarshal(b, &st); err != nil {
		d.log.Warn("saved socket table is corrupt; starting afresh", "path", path, "err", err)
		return 0
	}
	switch {
	case st.Version != stateVersion:
		d.log.Warn("saved socket table has another format version; starting afresh", "path", path, "version", st.Version)
		return 0
	case st.BootID == "" || st.BootID != bootID():
		d.log.Warn("saved socket table is from another boot; starting afresh", "path", path, "saved_at", st.SavedAt)
		return 0
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
