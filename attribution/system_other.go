//go:build !linux

package attribution

import "github.com/connlogd/connlogd/config"

// openSystem has nothing to open where there is no /proc nor cgroup v2:
// events get their direction only.
func openSystem(cfg config.Attribution) (procFS, cgroupFS, []sysWarning) {
	if !cfg.Process && !cfg.Cgroup {
		return nil, nil, nil
	}
	return nil, nil, []sysWarning{{warnUnsupported, ErrNotSupported}}
}
