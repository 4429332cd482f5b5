//go:build linux

package attribution

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/connlogd/connlogd/config"
)

// openSystem opens what the configuration needs: /proc for processes,
// the cgroup v2 mount for cgroups (and for narrowing the search for
// processes, so it is opened for either).
func openSystem(cfg config.Attribution) (procFS, cgroupFS, []sysWarning) {
	var warns []sysWarning
	var pfs procFS
	var cfs cgroupFS
	if cfg.Process {
		p, err := openProcFS()
		if err != nil {
			warns = append(warns, sysWarning{warnProcList, fmt.Errorf("attribution: %w; sockets get no process fields", err)})
		} else {
			pfs = p
			if missing := missingCaps(); missing != "" {
				warns = append(warns, sysWarning{warnPermission, fmt.Errorf("attribution: running without %s: %s", missing, privilegeHelp)})
			}
		}
	}
	if cfg.Process || cfg.Cgroup {
		c, err := openCgroupFS()
		switch {
		case err == nil:
			cfs = c
		case cfg.Cgroup:
			warns = append(warns, sysWarning{warnCgroupMount, fmt.Errorf("attribution: %w; sockets get no cgroup fields", err)})
		}
	}
	return pfs, cfs, warns
}

// missingCaps names the effective capabilities that reading other users'
// /proc/PID/fd needs and this process lacks, or returns "".
func missingCaps() string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3, Pid: int32(os.Getpid())}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return "" // cannot tell; reads will say
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	switch dac, ptrace := has(unix.CAP_DAC_READ_SEARCH), has(unix.CAP_SYS_PTRACE); {
	case !dac && !ptrace:
		return "CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE"
	case !dac:
		return "CAP_DAC_READ_SEARCH"
	case !ptrace:
		return "CAP_SYS_PTRACE"
	}
	return ""
}
