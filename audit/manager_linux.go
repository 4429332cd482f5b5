//go:build linux

package audit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Rules installs connlogd's rules and puts the audit state back as it
// found it. It never registers as the audit daemon nor changes anything
// of AUDIT_SET but the enabled flag, so auditd keeps running (or starts
// later) undisturbed.
type Rules struct {
	c       *control
	found   Status // at start
	enabled uint32 // the flag to restore at Close
	setOn   bool   // Close must set the flag back to enabled
	added   [][]byte
	state   string // where the flag to restore is kept while rules are in
	lost    uint32 // the kernel's lost counter at the last Lost
	// Stale is how many rules with Key an earlier run left (killed before
	// it could remove them); InstallRules removed them.
	Stale int
}

// ErrLocked: the audit configuration is locked (enabled=2, auditctl -e 2)
// until reboot, so rules can be neither added nor removed.
var ErrLocked = errors.New("audit configuration is locked (enabled 2) until reboot")

// ErrPanicOnFailure: the kernel panics when it loses an audit record
// (failure 2, auditctl -f 2). connlogd's rules would raise the record
// rate of every connection, so it adds none on such a host.
var ErrPanicOnFailure = errors.New("the kernel is set to panic when audit records are lost (failure 2); adding rules could crash the host")

// InstallRules adds connlogd's rules: connect, accept and accept4 in
// every ABI of the machine (ownRules), tagged with Key, after removing
// those an earlier run left. It enables auditing if it was off, and
// remembers in stateFile (if not "") that it did, so that a run started
// after this one was killed still restores the flag. It needs
// CAP_AUDIT_CONTROL and the initial pid namespace; an error leaves
// nothing changed.
func InstallRules(stateFile string) (*Rules, error) {
	c, err := openControl()
	if err != nil {
		return nil, err
	}
	r := &Rules{c: c, state: stateFile}
	if err := r.install(); err != nil {
		r.rollback()
		c.close()
		return nil, fmt.Errorf("audit rules: %w", err)
	}
	return r, nil
}

func (r *Rules) install() error {
	st, err := r.c.status()
	if err != nil {
		return err
	}
	r.found, r.lost = st, st.Lost
	if st.Enabled == 2 {
		return ErrLocked
	}
	if st.Failure == FailurePanic {
		return ErrPanicOnFailure
	}
	// An earlier run's flag, if it was killed with auditing switched on.
	r.enabled = st.Enabled
	if v, ok := readFlag(r.state); ok {
		r.enabled = v
	}
	n, err := r.removeKeyed()
	if err != nil {
		return fmt.Errorf("remove stale rules: %w", err)
	}
	r.Stale = n
	for _, ru := range ownRules() {
		b := ru.encode()
		if err := r.c.ruleOp(msgAddRule, b); err != nil {
			if errors.Is(err, unix.EEXIST) {
				// An identical rule of the administrator's (with our key):
				// it is not ours to remove later.
				continue
			}
			return fmt.Errorf("add %s: %w", ru, err)
		}
		r.added = append(r.added, b)
	}
	if st.Enabled == 0 {
		if err := writeFlag(r.state, 0); err != nil {
			return err
		}
		if err := r.c.setEnabled(1); err != nil {
			return err
		}
	}
	r.setOn = r.enabled == 0
	return nil
}

// removeKeyed deletes every rule carrying Key, and returns how many.
func (r *Rules) removeKeyed() (int, error) {
	rules, err := r.c.rules()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, b := range rules {
		k, err := ruleKey(b)
		if err != nil || k != Key {
			continue
		}
		if err := r.c.ruleOp(msgDelRule, b); err != nil && !errors.Is(err, unix.ENOENT) {
			return n, fmt.Errorf("delete: %w", err)
		}
		n++
	}
	return n, nil
}

// rollback undoes a failed install as far as it got.
func (r *Rules) rollback() {
	for _, b := range r.added {
		r.c.ruleOp(msgDelRule, b)
	}
	r.added = nil
}

// Found returns the audit state as InstallRules found it.
func (r *Rules) Found() Status { return r.found }

// Lost returns how many records the kernel lost since the last call (or
// since InstallRules): its backlog overflowed or its rate limit hit.
// The counter is system-wide: records of other rules count too.
func (r *Rules) Lost() (uint64, error) {
	st, err := r.c.status()
	if err != nil {
		return 0, err
	}
	n := st.Lost - r.lost // wraps as the kernel's counter does
	r.lost = st.Lost
	return uint64(n), nil
}

// Present reports whether connlogd's rules are still in the kernel: an
// administrator's `auditctl -D` (auditd's start-up does it) removes them.
func (r *Rules) Present() (bool, error) {
	rules, err := r.c.rules()
	if err != nil {
		return false, fmt.Errorf("audit rules: %w", err)
	}
	n := 0
	for _, b := range rules {
		if k, err := ruleKey(b); err == nil && k == Key {
			n++
		}
	}
	return n >= len(r.added), nil
}

// Close removes the rules InstallRules added, and switches auditing off
// again if it was off and nothing else has taken it on since: an auditd
// registered meanwhile enabled it for itself.
func (r *Rules) Close() error {
	var errs []error
	if _, err := r.removeKeyed(); err != nil {
		errs = append(errs, fmt.Errorf("remove rules: %w", err))
	}
	r.added = nil
	if r.setOn {
		st, err := r.c.status()
		switch {
		case err != nil:
			errs = append(errs, err)
		case st.PID != 0 && st.PID != r.found.PID:
			// An auditd started after us: it wants auditing on.
		case st.Enabled == 1:
			if err := r.c.setEnabled(r.enabled); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if r.state != "" {
		if err := os.Remove(r.state); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", r.state, err))
		}
	}
	if err := r.c.close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("audit rules close: %w", err)
	}
	return nil
}

// readFlag reads the enabled flag a run saved before switching auditing
// on. It counts only if saved since the last boot: the kernel forgets
// rules and flag at reboot.
func readFlag(path string) (uint32, bool) {
	if path == "" {
		return 0, false
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var buf [128]byte
	n, _ := f.Read(buf[:])
	boot, val, ok := strings.Cut(strings.TrimSpace(string(buf[:n])), " ")
	if !ok || boot != bootID() || boot == "" {
		return 0, false
	}
	v, err := strconv.ParseUint(val, 10, 32)
	if err != nil || v > 1 {
		return 0, false
	}
	return uint32(v), true
}

// writeFlag saves the flag to restore, never through a link.
func writeFlag(path string, v uint32) error {
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save audit flag: %w", err)
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("save audit flag: open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	_, err = fmt.Fprintf(f, "%s %d\n", bootID(), v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save audit flag: %w", err)
	}
	return nil
}

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}
