package attribution

import "strings"

// unitSuffixes are the systemd unit types whose cgroups hold processes.
// Slices only group other units, so they are never a process's unit.
var unitSuffixes = [...]string{".service", ".scope", ".socket", ".mount", ".swap"}

// ParseCgroupPath returns the systemd unit and the container id that a
// cgroup v2 path (as in /proc/PID/cgroup, "/system.slice/nginx.service")
// names. Either is "" when the path holds none.
//
// The unit follows systemd's own rule (cg_path_get_unit, journald's
// _SYSTEMD_UNIT): leading slices are skipped and the next component is the
// unit, so a user's processes are in user@UID.service or session-N.scope,
// and a cgroup systemd does not manage ("/docker/…") has no unit.
//
// The container id is taken from the innermost component with one of the
// shapes container runtimes create, and is always 64 lowercase hex digits:
//
//	docker-ID.scope                 docker (systemd driver)
//	cri-containerd-ID.scope         containerd (CRI, systemd driver)
//	crio-ID.scope, crio-ID          CRI-O (systemd, cgroupfs driver)
//	libpod-ID.scope, libpod-ID      podman (systemd, cgroupfs driver)
//	SLICE:cri-containerd:ID         containerd's systemd-driver form, also crio, docker
//	ID under /docker or /kubepods*  docker, or any CRI runtime, cgroupfs driver
//	/k8s.io/ID                      containerd's CRI, pod without a cgroup parent
//
// Monitor cgroups (crio-conmon-ID.scope, libpod-conmon-ID.scope) hold
// conmon, not the container, and do not match.
func ParseCgroupPath(path string) (unit, container string) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) == 1 && parts[0] == "" {
		return "", ""
	}
	for _, p := range parts {
		if strings.HasSuffix(p, ".slice") {
			continue
		}
		if isUnitName(p) {
			unit = p
		}
		break
	}
	for i := len(parts) - 1; i >= 0; i-- {
		if id, ok := containerID(parts[:i], parts[i]); ok {
			return unit, id
		}
	}
	return unit, ""
}

// containerID reports whether component c, below the components parents,
// names a container, and its id.
func containerID(parents []string, c string) (string, bool) {
	if name, ok := strings.CutSuffix(c, ".scope"); ok {
		for _, prefix := range [...]string{"docker-", "cri-containerd-", "crio-", "libpod-"} {
			if id, ok := strings.CutPrefix(name, prefix); ok && isID(id) {
				return id, true
			}
		}
		return "", false
	}
	for _, prefix := range [...]string{"crio-", "libpod-"} {
		if id, ok := strings.CutPrefix(c, prefix); ok && isID(id) {
			return id, true
		}
	}
	// SLICE:RUNTIME:ID, which containerd and CRI-O write as a systemd
	// driver's cgroup path when they manage the cgroup themselves.
	if _, rest, ok := strings.Cut(c, ":"); ok {
		runtime, id, ok := strings.Cut(rest, ":")
		if ok && isID(id) && (runtime == "cri-containerd" || runtime == "crio" || runtime == "docker") {
			return id, true
		}
		return "", false
	}
	// A bare id is a container only where runtimes put one: a lone hex
	// name elsewhere could be anything.
	if !isID(c) || len(parents) == 0 {
		return "", false
	}
	// /k8s.io/ID: containerd's CRI plugin when the pod has no cgroup
	// parent (crictl), named for its containerd namespace.
	if parents[len(parents)-1] == "docker" || len(parents) == 1 && parents[0] == "k8s.io" {
		return c, true
	}
	for _, p := range parents {
		if strings.HasPrefix(p, "kubepods") {
			return c, true
		}
	}
	return "", false
}

// isID reports whether s is a full container id: 64 lowercase hex digits.
func isID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// isUnitName reports whether s is a valid systemd unit name of a type
// that holds processes: a non-empty prefix of the characters systemd
// allows, and one of unitSuffixes.
func isUnitName(s string) bool {
	if len(s) > 255 {
		return false
	}
	for _, suf := range unitSuffixes {
		prefix, ok := strings.CutSuffix(s, suf)
		if !ok || prefix == "" {
			continue
		}
		for i := 0; i < len(prefix); i++ {
			c := prefix[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			case c == ':', c == '-', c == '_', c == '.', c == '\\', c == '@':
			default:
				return false
			}
		}
		return true
	}
	return false
}

// cgroup2Mount finds the first cgroup2 mount in the contents of
// /proc/self/mountinfo and returns its mount point and the cgroup path of
// its root directory ("/" unless a subtree is bind-mounted).
func cgroup2Mount(mountinfo []byte) (mount, root string, ok bool) {
	for line := range strings.SplitSeq(string(mountinfo), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPEROPTS
		pre, post, found := strings.Cut(line, " - ")
		if !found {
			continue
		}
		if fstype, _, _ := strings.Cut(post, " "); fstype != "cgroup2" {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 {
			continue
		}
		return unescapeMount(f[4]), unescapeMount(f[3]), true
	}
	return "", "", false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// ContainerOfProcCgroup returns the container id that a /proc/PID/cgroup
// text names: that of the cgroup v2 line ("0::/…") when it names one,
// else that of the first v1 line that does; "" for none.
func ContainerOfProcCgroup(b []byte) string {
	first := ""
	for line := range strings.SplitSeq(string(b), "\n") {
		// ID:CONTROLLERS:PATH; the path may hold colons.
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		_, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		_, ctr := ParseCgroupPath(path)
		if ctr == "" {
			continue
		}
		if id == "0" {
			return ctr
		}
		if first == "" {
			first = ctr
		}
	}
	return first
}
