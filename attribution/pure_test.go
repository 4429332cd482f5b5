package attribution

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

const (
	id1 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	id2 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

func TestParseCgroupPath(t *testing.T) {
	tests := []struct {
		name, path, unit, container string
	}{
		{"root", "/", "", ""},
		{"empty", "", "", ""},
		{"system service", "/system.slice/nginx.service", "nginx.service", ""},
		{"service sub-cgroup (delegation)", "/system.slice/nginx.service/worker", "nginx.service", ""},
		{"template instance", "/system.slice/system-getty.slice/getty@tty1.service", "getty@tty1.service", ""},
		{"systemd itself", "/init.scope", "init.scope", ""},
		{"login session", "/user.slice/user-1000.slice/session-3.scope", "session-3.scope", ""},
		{"user manager: the system unit, as journald", "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-1234.scope", "user@1000.service", ""},
		{"slice only", "/system.slice", "", ""},
		{"unmanaged top level", "/mygroup/sub.service", "", ""},
		{"escaped unit name", `/system.slice/system-systemd\x2dfsck.slice/systemd-fsck@dev-disk-by\x2duuid-1234.service`, `systemd-fsck@dev-disk-by\x2duuid-1234.service`, ""},
		{"docker, systemd driver", "/system.slice/docker-" + id1 + ".scope", "docker-" + id1 + ".scope", id1},
		{"docker, cgroupfs driver", "/docker/" + id1, "", id1},
		{"docker in docker: the inner one", "/docker/" + id1 + "/docker/" + id2, "", id2},
		{"containerd via CRI, systemd driver", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-" + id1 + ".scope", "cri-containerd-" + id1 + ".scope", id1},
		{"kubernetes, cgroupfs driver", "/kubepods/burstable/pod1234-5678/" + id1, "", id1},
		{"kubernetes guaranteed pod, cgroupfs driver", "/kubepods/pod1234-5678/" + id2, "", id2},
		{"containerd's slice:runtime:id form", "/kubepods-besteffort-pod12.slice:cri-containerd:" + id1, "", id1},
		{"cri-o, systemd driver", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/crio-" + id1 + ".scope", "crio-" + id1 + ".scope", id1},
		{"cri-o, sub-cgroup of the container", "/kubepods.slice/kubepods-pod12.slice/crio-" + id1 + ".scope/container", "crio-" + id1 + ".scope", id1},
		{"cri-o conmon is not the container", "/kubepods.slice/kubepods-pod12.slice/crio-conmon-" + id1 + ".scope", "crio-conmon-" + id1 + ".scope", ""},
		{"cri-o, cgroupfs driver", "/kubepods/besteffort/pod12/crio-" + id1, "", id1},
		{"containerd via CRI, pod without a cgroup parent (seen with containerd 1.6)", "/k8s.io/" + id1, "", id1},
		{"k8s.io deeper down is not containerd's", "/user.slice/k8s.io/" + id1, "", ""},
		{"podman, root", "/machine.slice/libpod-" + id1 + ".scope", "libpod-" + id1 + ".scope", id1},
		{"podman with systemd inside", "/machine.slice/libpod-" + id1 + ".scope/container/init.scope", "libpod-" + id1 + ".scope", id1},
		{"podman rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id2 + ".scope", "user@1000.service", id2},
		{"podman conmon", "/machine.slice/libpod-conmon-" + id1 + ".scope", "libpod-conmon-" + id1 + ".scope", ""},
		{"podman, cgroupfs driver", "/libpod_parent/libpod-" + id1, "", id1},
		{"short id is not an id", "/system.slice/docker-0123456789ab.scope", "docker-0123456789ab.scope", ""},
		{"uppercase hex is not an id", "/docker/" + strings.ToUpper(id1), "", ""},
		{"bare id outside runtime parents", "/somewhere/" + id1, "", ""},
		{"bare id at the top", "/" + id1, "", ""},
		{"trailing slash", "/system.slice/nginx.service/", "nginx.service", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unit, ctr := ParseCgroupPath(tt.path)
			if unit != tt.unit || ctr != tt.container {
				t.Errorf("ParseCgroupPath(%q) = %q, %q; want %q, %q", tt.path, unit, ctr, tt.unit, tt.container)
			}
		})
	}
}

func TestCgroup2Mount(t *testing.T) {
	tests := []struct {
		name, info, mount, root string
		ok                      bool
	}{
		{"unified", "24 31 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n", "/sys/fs/cgroup", "/", true},
		{"hybrid: after the v1 mounts", "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n31 25 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup/unified", "/", true},
		{"no optional fields, escaped space", "40 1 0:30 / /mnt/my\\040cgroup rw - cgroup2 none rw\n", "/mnt/my cgroup", "/", true},
		{"bind-mounted subtree", "50 1 0:22 /kubepods/pod1 /sys/fs/cgroup ro master:3 - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup", "/kubepods/pod1", true},
		{"v1 only", "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n", "", "", false},
		{"empty", "", "", "", false},
		{"malformed line", "garbage - cgroup2\n", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mount, root, ok := cgroup2Mount([]byte(tt.info))
			if mount != tt.mount || root != tt.root || ok != tt.ok {
				t.Errorf("cgroup2Mount = %q, %q, %v; want %q, %q, %v", mount, root, ok, tt.mount, tt.root, tt.ok)
			}
		})
	}
}

func TestFormatCmdline(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		max  int
		want string
	}{
		{"arguments", "nginx\x00-g\x00daemon off;\x00", 256, "nginx -g daemon off;"},
		{"rewritten title without NULs", "postgres: checkpointer   ", 256, "postgres: checkpointer"},
		{"title padded with NULs", "sshd: root [priv]\x00\x00\x00\x00", 256, "sshd: root [priv]"},
		{"empty (kernel thread, zombie)", "", 256, ""},
		{"cut", "python3\x00-m\x00http.server\x00", 12, "python3 -m h"},
		{"cut at the limit exactly", "abc\x00", 3, "abc"},
		{"cut backs up out of a character", "ab\u00e9cd", 3, "ab"},   // é is 2 bytes at 2..3
		{"cut after a whole character", "ab\u00e9cd", 4, "ab\u00e9"}, // the cut at 4 is a boundary
		{"cut inside a 4-byte character", "a\U0001F600b", 3, "a"},
		{"invalid bytes are cut where asked", "a\xff\xfe\xfdb", 3, "a\xff\xfe"},
		{"continuation bytes only", "\x80\x80\x80\x80\x80\x80", 5, "\x80\x80\x80\x80\x80"},
		{"one byte", "xyz", 1, "x"},
		{"embedded empty argument", "a\x00\x00b\x00", 256, "a  b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := formatCmdline([]byte(tt.raw), tt.max); got != tt.want {
				t.Errorf("formatCmdline(%q, %d) = %q; want %q", tt.raw, tt.max, got, tt.want)
			}
		})
	}
}

func TestParseSocketLink(t *testing.T) {
	tests := []struct {
		name  string
		link  string
		inode uint32
		ok    bool
	}{
		{"socket", "socket:[12345]", 12345, true},
		{"largest inode", "socket:[4294967295]", 4294967295, true},
		{"too large", "socket:[4294967296]", 0, false},
		{"zero", "socket:[0]", 0, false},
		{"file", "/dev/null", 0, false},
		{"pipe", "pipe:[12345]", 0, false},
		{"anon inode", "anon_inode:[eventfd]", 0, false},
		{"empty brackets", "socket:[]", 0, false},
		{"no closing bracket", "socket:[123", 0, false},
		{"not digits", "socket:[12a]", 0, false},
		{"file named like a socket", "/tmp/socket:[1]x", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inode, ok := parseSocketLink([]byte(tt.link))
			if inode != tt.inode || ok != tt.ok {
				t.Errorf("parseSocketLink(%q) = %d, %v; want %d, %v", tt.link, inode, ok, tt.inode, tt.ok)
			}
		})
	}
}

// sock builds a socket record for direction and tracker tests.
func sock(proto snapshot.Proto, state snapshot.State, src, dst string) snapshot.Socket {
	s := snapshot.Socket{
		Key: snapshot.Key{
			Proto: proto,
			Src:   netip.MustParseAddrPort(src),
			Dst:   netip.MustParseAddrPort(dst),
		},
		State: state,
	}
	s.Family = snapshot.FamilyIPv4
	if s.Src.Addr().Is6() {
		s.Family = snapshot.FamilyIPv6
	}
	return s
}

const (
	tcp = snapshot.ProtoTCP
	udp = snapshot.ProtoUDP

	listen      = snapshot.StateListen
	established = snapshot.StateEstablished
	synSent     = snapshot.StateSynSent
	synRecv     = snapshot.StateSynRecv
	timeWait    = snapshot.StateTimeWait
	closeState  = snapshot.StateClose
)

func TestDirection(t *testing.T) {
	table := []snapshot.Socket{
		sock(tcp, listen, "127.0.0.1:8080", "0.0.0.0:0"),
		sock(tcp, listen, "0.0.0.0:22", "0.0.0.0:0"),
		sock(tcp, listen, "[::]:443", "[::]:0"),
		sock(tcp, listen, "[fe80::1%eth0]:9000", "[::]:0"),
		sock(udp, closeState, "0.0.0.0:53", "0.0.0.0:0"),
		sock(udp, closeState, "[::]:4433", "[::]:0"),
	}
	var l listeners
	l.reset()
	for i := range table {
		if classOf(&table[i]) == classListen {
			l.add(&table[i])
		}
	}
	tests := []struct {
		name string
		s    snapshot.Socket
		want event.Direction
	}{
		{"tcp listener", table[0], event.DirectionListen},
		{"unconnected udp", table[4], event.DirectionListen},
		{"unconnected udp client (autobound)", sock(udp, closeState, "0.0.0.0:41000", "0.0.0.0:0"), event.DirectionListen},
		{"accepted on a specific address", sock(tcp, established, "127.0.0.1:8080", "127.0.0.1:50000"), event.DirectionInbound},
		{"client of that listener", sock(tcp, established, "127.0.0.1:50000", "127.0.0.1:8080"), event.DirectionOutbound},
		{"accepted by a wildcard listener", sock(tcp, established, "10.0.0.5:22", "10.0.0.9:51000"), event.DirectionInbound},
		{"port of a specific listener, other address", sock(tcp, established, "10.0.0.5:8080", "10.0.0.9:51000"), event.DirectionOutbound},
		{"request socket", sock(tcp, synRecv, "10.0.0.5:22", "10.0.0.9:51001"), event.DirectionInbound},
		{"request socket of a listener not indexed yet", sock(tcp, synRecv, "10.9.9.1:33999", "10.8.1.1:5555"), event.DirectionInbound},
		{"time_wait of an accepted connection", sock(tcp, timeWait, "10.0.0.5:22", "10.0.0.9:51002"), event.DirectionInbound},
		{"connecting", sock(tcp, synSent, "10.0.0.5:40000", "93.184.216.34:443"), event.DirectionOutbound},
		{"dual-stack listener, IPv4 client", sock(tcp, established, "[::ffff:10.0.0.5]:443", "[::ffff:10.0.0.9]:51000"), event.DirectionInbound},
		{"IPv4 socket does not match an IPv6 listener", sock(tcp, established, "10.0.0.5:443", "10.0.0.9:51000"), event.DirectionOutbound},
		{"link-local listener, zone ignored", sock(tcp, established, "[fe80::1%eth0]:9000", "[fe80::2%eth0]:50000"), event.DirectionInbound},
		{"udp does not match a tcp listener", sock(udp, established, "0.0.0.0:22", "10.0.0.9:51000"), event.DirectionOutbound},
		{"connected udp client", sock(udp, established, "10.0.0.5:41000", "9.9.9.9:53"), event.DirectionOutbound},
		{"connected udp on a served port (SO_REUSEPORT server)", sock(udp, established, "[::1]:4433", "[::1]:60000"), event.DirectionInbound},
		{"connected udp on a specific-address listener's port", sock(udp, established, "10.0.0.5:53", "10.0.0.9:5353"), event.DirectionInbound},
		{"bound tcp socket, neither listening nor connected", sock(tcp, closeState, "0.0.0.0:7000", "0.0.0.0:0"), event.DirectionUnknown},
		{"unbound udp", sock(udp, closeState, "0.0.0.0:0", "0.0.0.0:0"), event.DirectionUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := l.direction(&tt.s); got != tt.want {
				t.Errorf("direction(%v → %v %v) = %q; want %q", tt.s.Src, tt.s.Dst, tt.s.State, got, tt.want)
			}
		})
	}
}

func TestListenersResetForgetsUnusedKeys(t *testing.T) {
	var l listeners
	l.reset()
	a := sock(udp, closeState, "0.0.0.0:41000", "0.0.0.0:0")
	b := sock(udp, closeState, "0.0.0.0:53", "0.0.0.0:0")
	l.add(&a)
	l.add(&b)
	l.reset()
	l.add(&b)
	l.reset() // a's key was unused by the last build: it goes
	if len(l.m) != 1 {
		t.Errorf("%d keys kept; want 1 (the one still in use)", len(l.m))
	}
	c := sock(udp, established, "0.0.0.0:41000", "9.9.9.9:53")
	if d := l.direction(&c); d != event.DirectionOutbound {
		t.Errorf("after reset, direction = %q; want outbound", d)
	}
}

func TestContainerOfProcCgroup(t *testing.T) {
	const id = "45ea1a6a804e7788d39c8de42baf74cf00297ef44c6b258c7e053ecf6efab10a"
	const other = "0000000000000000000000000000000000000000000000000000000000000001"
	tests := []struct{ name, text, want string }{
		{"hybrid", "9:name=systemd:/docker/" + other + "\n1:cpu:/docker/" + other + "\n0::/docker/" + id + "\n", id},
		{"v2 only", "0::/system.slice/docker-" + id + ".scope\n", id},
		{"v1 only", "4:memory:/kubepods/besteffort/pod1/" + id + "\n", id},
		{"none", "0::/user.slice/user-0.slice/session-1.scope\n", ""},
		{"empty", "", ""},
		{"malformed", "garbage\n0:/docker/" + id + "\n", ""},
	}
	for _, tt := range tests {
		if got := ContainerOfProcCgroup([]byte(tt.text)); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}
