package attribution

import (
	"strings"
	"testing"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// withID gives s a cookie, an inode and a cgroup id.
func withID(s snapshot.Socket, cookie uint64, inode uint32, cgid uint64) snapshot.Socket {
	s.Cookie, s.Inode, s.CgroupID = cookie, inode, cgid
	return s
}

func tableOf(socks ...snapshot.Socket) *snapshot.Table {
	return &snapshot.Table{Sockets: socks}
}

// annotated returns an event of kind about s after Annotate.
func annotated(tr *Tracker, kind event.Kind, s snapshot.Socket) event.Event {
	evs := []event.Event{{Kind: kind, Socket: s}}
	tr.Annotate(evs)
	return evs[0]
}

func pidOf(ev event.Event) int {
	if ev.Process == nil {
		return 0
	}
	return ev.Process.PID
}

// estab is a connected TCP socket; sockets are told apart by cookie.
func estab(cookie uint64, inode uint32, cgid uint64) snapshot.Socket {
	return withID(sock(tcp, established, "10.0.0.5:40000", "10.0.0.9:443"), cookie, inode, cgid)
}

func TestOwnerRule(t *testing.T) {
	const cgA, cgB = 10, 11
	tests := []struct {
		name  string
		setup func(f *fakeFS)
		cgid  uint64
		want  int
	}{
		{"the only holder", func(f *fakeFS) {
			f.add(40, "app", "/a.service", 500)
		}, cgA, 40},
		{"lowest pid in the socket's cgroup, not a lower pid elsewhere", func(f *fakeFS) {
			f.add(5, "other", "/b.service", 500)
			f.add(30, "worker", "/a.service", 500)
			f.add(20, "master", "/a.service", 500)
		}, cgA, 20},
		{"held only outside its cgroup: the lowest pid there", func(f *fakeFS) {
			f.add(25, "creator", "/a.service") // created it, passed it on
			f.add(40, "x", "/b.service", 500)
			f.add(7, "y", "/b.service", 500)
		}, cgA, 7},
		{"no cgroup id: the lowest pid", func(f *fakeFS) {
			f.add(9, "a", "/a.service", 500)
			f.add(3, "b", "/b.service", 500)
		}, 0, 3},
		{"cgroup gone: the lowest pid", func(f *fakeFS) {
			f.add(9, "a", "/a.service", 500)
			f.add(3, "b", "/b.service", 500)
		}, 99, 3},
		{"nobody holds it", func(f *fakeFS) {
			f.add(9, "a", "/a.service", 501)
		}, cgA, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFS()
			f.cgroups[cgA], f.cgroups[cgB] = "/a.service", "/b.service"
			tt.setup(f)
			tr := newFakeResolver(defaultCfg, f).NewTracker()
			s := estab(1, 500, tt.cgid)
			tr.Refresh(tableOf(s))
			tr.Refresh(tableOf(s)) // the retry of a socket not found
			if got := pidOf(annotated(tr, event.Appeared, s)); got != tt.want {
				t.Errorf("owner pid %d; want %d", got, tt.want)
			}
		})
	}
}

func TestOwnerFields(t *testing.T) {
	f := newFakeFS()
	f.cgroups[10] = "/system.slice/docker-" + id1 + ".scope"
	p := f.add(40, "nginx", "/system.slice/docker-"+id1+".scope", 500)
	p.uid, p.cmdline = 33, "nginx: worker process\x00\x00"
	q := f.add(41, "helper", "/", 501)
	q.uid = 1234
	cfg := defaultCfg
	cfg.Cmdline, cfg.CmdlineMaxBytes = true, 12
	tr := newFakeResolver(cfg, f).NewTracker()
	a, b := estab(1, 500, 10), estab(2, 501, 1)
	tr.Refresh(tableOf(a, b))

	ev := annotated(tr, event.Appeared, a)
	want := event.Process{PID: 40, UID: 33, User: "www-data", Comm: "nginx", Exe: "/usr/bin/nginx", Cmdline: "nginx: worke"}
	if ev.Process == nil || *ev.Process != want {
		t.Errorf("process %+v; want %+v", ev.Process, want)
	}
	wantCg := event.Cgroup{Path: "/system.slice/docker-" + id1 + ".scope", SystemdUnit: "docker-" + id1 + ".scope", ContainerID: id1}
	if ev.Cgroup == nil || *ev.Cgroup != wantCg {
		t.Errorf("cgroup %+v; want %+v", ev.Cgroup, wantCg)
	}
	// A uid without a name is reported as its number.
	if ev := annotated(tr, event.Appeared, b); ev.Process == nil || ev.Process.User != "1234" || ev.Cgroup == nil || ev.Cgroup.Path != "/" {
		t.Errorf("process %+v cgroup %+v; want user 1234, cgroup /", ev.Process, ev.Cgroup)
	}
}

func TestConfigOff(t *testing.T) {
	f := newFakeFS()
	f.add(40, "app", "/", 500)
	ln := withID(sock(tcp, listen, "0.0.0.0:80", "0.0.0.0:0"), 1, 500, 1)
	for _, tt := range []struct {
		name            string
		cfg             config.Attribution
		process, cgroup bool
	}{
		{"process off", config.Attribution{Cgroup: true, CmdlineMaxBytes: 1}, false, true},
		{"cgroup off", config.Attribution{Process: true, CmdlineMaxBytes: 1}, true, false},
		{"both off", config.Attribution{CmdlineMaxBytes: 1}, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newFakeResolver(tt.cfg, f)
			if !tt.cfg.Process {
				r.procfs = nil // what New does
			}
			tr := r.NewTracker()
			tr.Refresh(tableOf(ln))
			ev := annotated(tr, event.Appeared, ln)
			if (ev.Process != nil) != tt.process || (ev.Cgroup != nil) != tt.cgroup {
				t.Errorf("process %+v cgroup %+v; want present %v, %v", ev.Process, ev.Cgroup, tt.process, tt.cgroup)
			}
			if ev.Direction != event.DirectionListen {
				t.Errorf("direction %q; want listen whatever the configuration", ev.Direction)
			}
		})
	}
}

func TestSteadyStateReadsNothing(t *testing.T) {
	f := newFakeFS()
	f.add(10, "a", "/", 500, 501, 502)
	f.add(11, "b", "/", 503)
	f.add(12, "idle", "/")
	r := newFakeResolver(defaultCfg, f)
	tr := r.NewTracker()
	tab := tableOf(estab(1, 500, 1), estab(2, 501, 1), estab(3, 502, 1), estab(4, 503, 1))
	tr.Refresh(tab)
	// Every socket is found once pid 11 is read: the idle process, last
	// in pid order, is not.
	if f.tables != 2 || f.links != 2*3+4 {
		t.Errorf("first pass read %d tables, %d links; want 2, 10", f.tables, f.links)
	}
	st := r.Stats()
	for range 5 {
		tr.Refresh(tab)
	}
	if f.tables != 2 || f.links != 10 || r.Stats().Scans != st.Scans {
		t.Errorf("steady state read %d tables, %d links, %d scans; want none", f.tables-2, f.links-10, r.Stats().Scans-st.Scans)
	}
}

func TestNewSocketReadsOnlyNewLinks(t *testing.T) {
	f := newFakeFS()
	inodes := make([]uint32, 100)
	var socks []snapshot.Socket
	for i := range inodes {
		inodes[i] = uint32(1000 + i)
		socks = append(socks, estab(uint64(i+1), inodes[i], 1))
	}
	p := f.add(10, "server", "/", inodes...)
	r := newFakeResolver(defaultCfg, f)
	tr := r.NewTracker()
	tr.Refresh(tableOf(socks...))
	links := f.links
	p.fds[200] = 2000
	socks = append(socks, estab(500, 2000, 1))
	tr.Refresh(tableOf(socks...))
	// The new descriptor and the three that are not sockets; none of the
	// 100 known ones.
	if n := f.links - links; n != 4 {
		t.Errorf("read %d links for one new socket; want 4", n)
	}
	if got := pidOf(annotated(tr, event.Appeared, socks[100])); got != 10 {
		t.Errorf("new socket's owner %d; want 10", got)
	}
}

func TestDescriptorReuse(t *testing.T) {
	f := newFakeFS()
	p := f.add(10, "client", "/", 500)
	tr := newFakeResolver(defaultCfg, f).NewTracker()
	tr.Refresh(tableOf(estab(1, 500, 1)))
	// The socket at descriptor 3 closed; a new one took descriptor 3. The
	// count did not change: the first look skips the process, the second
	// reads it.
	p.fds[3] = 501
	s := estab(2, 501, 1)
	tr.Refresh(tableOf(s))
	if ev := annotated(tr, event.Appeared, s); ev.Process != nil {
		t.Errorf("first look found %+v in a process whose count did not change", ev.Process)
	}
	tr.Refresh(tableOf(s))
	if got := pidOf(annotated(tr, event.Appeared, s)); got != 10 {
		t.Errorf("owner of the socket at a reused descriptor: %d; want 10", got)
	}
}

func TestExitLeavesSocketToChild(t *testing.T) {
	f := newFakeFS()
	f.add(10, "parent", "/", 500)
	f.add(11, "child", "/", 500, 501)
	tr := newFakeResolver(defaultCfg, f).NewTracker()
	ln := withID(sock(tcp, listen, "0.0.0.0:80", "0.0.0.0:0"), 1, 500, 1)
	tab := tableOf(ln, estab(2, 501, 1))
	tr.Refresh(tab)
	if got := pidOf(annotated(tr, event.Appeared, ln)); got != 10 {
		t.Fatalf("shared listener's owner %d; want the lower pid, 10", got)
	}
	delete(f.procs, 10)
	tr.Refresh(tab) // notices the exit
	if got := pidOf(annotated(tr, event.StateChanged, ln)); got != 10 {
		t.Errorf("right after the exit, owner %d; want still 10 until the next dump says the socket lives on", got)
	}
	tr.Refresh(tab)
	ev := annotated(tr, event.StateChanged, ln)
	if pidOf(ev) != 11 || ev.Process.Comm != "child" {
		t.Errorf("after the parent exited, owner %+v; want pid 11, child", ev.Process)
	}
}

func TestHandOverToAnotherProcess(t *testing.T) {
	f := newFakeFS()
	p := f.add(10, "acceptor", "/", 500)
	q := f.add(20, "worker", "/")
	tr := newFakeResolver(defaultCfg, f).NewTracker()
	conn := estab(1, 500, 1)
	tr.Refresh(tableOf(conn))
	if got := pidOf(annotated(tr, event.Appeared, conn)); got != 10 {
		t.Fatalf("owner %d; want 10", got)
	}
	// The acceptor passes the connection to the worker, closes its
	// descriptor and accepts another: its count is unchanged.
	delete(p.fds, 3)
	q.fds[7] = 500
	p.fds[4] = 501
	next := estab(2, 501, 1)
	tab := tableOf(conn, next)
	tr.Refresh(tab) // first look for the new socket: the acceptor is skipped
	tr.Refresh(tab) // second look: reads the acceptor, finds it let go
	if got := pidOf(annotated(tr, event.Appeared, next)); got != 10 {
		t.Errorf("new connection's owner %d; want 10", got)
	}
	tr.Refresh(tab) // attributes the handed-over one again
	if got := pidOf(annotated(tr, event.StateChanged, conn)); got != 20 {
		t.Errorf("owner after the hand-over %d; want 20", got)
	}
}

func TestClosedEventKeepsOwner(t *testing.T) {
	f := newFakeFS()
	p := f.add(10, "client", "/", 500)
	r := newFakeResolver(defaultCfg, f)
	tr := r.NewTracker()
	s := estab(1, 500, 1)
	tr.Refresh(tableOf(s))
	// The process closed it: FIN_WAIT2 orphan, no inode.
	delete(p.fds, 3)
	orphan := s
	orphan.Inode, orphan.State = 0, snapshot.StateFinWait2
	tr.Refresh(tableOf(orphan))
	if got := pidOf(annotated(tr, event.StateChanged, orphan)); got != 10 {
		t.Errorf("orphan's owner %d; want 10", got)
	}
	// Then gone: the destroy notification's event carries the last dumped
	// record, and the process has exited too.
	delete(f.procs, 10)
	tr.Refresh(tableOf())
	if got := pidOf(annotated(tr, event.Closed, s)); got != 10 {
		t.Errorf("closed event's owner %d; want 10", got)
	}
	for range keepRefreshes {
		tr.Refresh(tableOf())
	}
	if tr.Len() != 0 || r.owners.Len() != 0 || len(r.procs) != 0 {
		t.Errorf("after %d dumps without it: %d records, %d owners, %d processes remembered; want none", keepRefreshes, tr.Len(), r.owners.Len(), len(r.procs))
	}
}

func TestUnknownAfterOneRetry(t *testing.T) {
	f := newFakeFS()
	f.add(10, "a", "/")
	r := newFakeResolver(defaultCfg, f)
	tr := r.NewTracker()
	s := estab(1, 500, 1)
	tr.Refresh(tableOf(s))
	tr.Refresh(tableOf(s))
	if st := r.Stats(); st.Unknown != 1 || st.Scans != 2 {
		t.Errorf("stats %+v; want 2 scans, 1 unknown", st)
	}
	tables := f.tables
	tr.Refresh(tableOf(s))
	if f.tables != tables {
		t.Errorf("a socket given up on is looked for again")
	}
	if ev := annotated(tr, event.Appeared, s); ev.Process != nil {
		t.Errorf("owner %+v; want none", ev.Process)
	}
}

func TestRetryFindsLateDescriptor(t *testing.T) {
	f := newFakeFS()
	p := f.add(10, "server", "/")
	tr := newFakeResolver(defaultCfg, f).NewTracker()
	s := estab(1, 500, 1)
	tr.Refresh(tableOf(s)) // accepted, not yet in the table of descriptors
	p.fds[3] = 500
	tr.Refresh(tableOf(s))
	if got := pidOf(annotated(tr, event.Appeared, s)); got != 10 {
		t.Errorf("owner %d; want 10", got)
	}
}

func TestDeniedProcess(t *testing.T) {
	f := newFakeFS()
	f.add(10, "rootd", "/", 500).denied = true
	q := f.add(20, "mine", "/", 501)
	r := newFakeResolver(defaultCfg, f)
	tr := r.NewTracker()
	a, b := estab(1, 500, 1), estab(2, 501, 1)
	tr.Refresh(tableOf(a, b))
	if ev := annotated(tr, event.Appeared, a); ev.Process != nil {
		t.Errorf("socket of an unreadable process attributed to %+v", ev.Process)
	}
	if got := pidOf(annotated(tr, event.Appeared, b)); got != 20 {
		t.Errorf("readable process's socket owner %d; want 20", got)
	}
	w := r.Warnings()
	if len(w) != 1 || !strings.Contains(w[0].Error(), "CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE") || !strings.Contains(w[0].Error(), "permission denied") {
		t.Fatalf("warnings %v; want one naming the capabilities", w)
	}
	q.fds[4] = 502
	tr.Refresh(tableOf(a, b, estab(3, 502, 1)))
	tr.Refresh(tableOf(a, b, estab(3, 502, 1)))
	if w := r.Warnings(); len(w) != 0 {
		t.Errorf("warned again: %v", w)
	}
}

func TestExecShowsInNewSockets(t *testing.T) {
	f := newFakeFS()
	p := f.add(10, "sh", "/", 500)
	tr := newFakeResolver(defaultCfg, f).NewTracker()
	a := estab(1, 500, 1)
	tr.Refresh(tableOf(a))
	before := annotated(tr, event.Appeared, a).Process
	p.comm, p.exe = "python3", "/usr/bin/python3"
	p.fds[4] = 501
	b := estab(2, 501, 1)
	tr.Refresh(tableOf(a, b))
	if ev := annotated(tr, event.Appeared, b); ev.Process == nil || ev.Process.Comm != "python3" {
		t.Errorf("socket opened after exec: %+v; want comm python3", ev.Process)
	}
	if ev := annotated(tr, event.Closed, a); ev.Process != before || before.Comm != "sh" {
		t.Errorf("socket attributed before the exec: %+v; want the description it had (sh)", ev.Process)
	}
}

func TestCountFilter(t *testing.T) {
	f := newFakeFS()
	f.cgroups[10], f.cgroups[11] = "/a.service", "/b.service"
	f.add(5, "creator", "/a.service")
	q := f.add(30, "receiver", "/b.service", 600)
	tr := newFakeResolver(defaultCfg, f).NewTracker()
	first := estab(1, 600, 11)
	tr.Refresh(tableOf(first))

	// A socket created in /a.service, passed to the receiver, which opened
	// a descriptor more: its count changed, so the second tier reads it.
	q.fds[4] = 700
	s := estab(2, 700, 10)
	tr.Refresh(tableOf(first, s))
	if got := pidOf(annotated(tr, event.Appeared, s)); got != 30 {
		t.Errorf("handed-over socket's owner %d; want 30", got)
	}

	// One closed and one received: same count, so the first look skips
	// it; the second finds it.
	delete(q.fds, 3)
	q.fds[3] = 800
	u := estab(3, 800, 10)
	tr.Refresh(tableOf(s, u))
	if ev := annotated(tr, event.Appeared, u); ev.Process != nil {
		t.Errorf("first look: owner %+v; the count did not change, so none was expected", ev.Process)
	}
	tr.Refresh(tableOf(s, u))
	if got := pidOf(annotated(tr, event.Appeared, u)); got != 30 {
		t.Errorf("second look: owner %d; want 30", got)
	}
}

func TestDirectionRemembered(t *testing.T) {
	f := newFakeFS()
	tr := newFakeResolver(defaultCfg, f).NewTracker()
	ln := withID(sock(tcp, listen, "127.0.0.1:8080", "0.0.0.0:0"), 1, 0, 0)
	acc := withID(sock(tcp, established, "127.0.0.1:8080", "127.0.0.1:50000"), 2, 0, 0)
	cli := withID(sock(tcp, established, "127.0.0.1:50000", "127.0.0.1:8080"), 3, 0, 0)
	tr.Refresh(tableOf(ln, acc, cli))
	for _, c := range []struct {
		s    snapshot.Socket
		want event.Direction
	}{{ln, event.DirectionListen}, {acc, event.DirectionInbound}, {cli, event.DirectionOutbound}} {
		if got := annotated(tr, event.Appeared, c.s).Direction; got != c.want {
			t.Errorf("%v: direction %q; want %q", c.s.Src, got, c.want)
		}
	}
	// The server stops listening, then its connection closes: still inbound.
	tr.Refresh(tableOf(acc, cli))
	tr.Refresh(tableOf(cli))
	if got := annotated(tr, event.Closed, acc).Direction; got != event.DirectionInbound {
		t.Errorf("accepted connection closed after its listener: %q; want inbound", got)
	}

	// A UDP socket that connects keeps its cookie: the closed event of its
	// unconnected identity is listen, the appeared of the new one outbound.
	u := withID(sock(udp, closeState, "0.0.0.0:41000", "0.0.0.0:0"), 9, 0, 0)
	tr.Refresh(tableOf(u))
	uc := u
	uc.Dst, uc.State = cli.Dst, established
	tr.Refresh(tableOf(uc))
	evs := []event.Event{{Kind: event.Closed, Socket: u}, {Kind: event.Appeared, Socket: uc}}
	tr.Annotate(evs)
	if evs[0].Direction != event.DirectionListen || evs[1].Direction != event.DirectionOutbound {
		t.Errorf("udp connect: closed %q, appeared %q; want listen, outbound", evs[0].Direction, evs[1].Direction)
	}
}

func TestShortLivedSockets(t *testing.T) {
	f := newFakeFS()
	f.cgroups[10] = "/system.slice/app.service"
	tr := newFakeResolver(defaultCfg, f).NewTracker()
	ln := withID(sock(tcp, listen, "127.0.0.1:8080", "0.0.0.0:0"), 1, 0, 0)
	tr.Refresh(tableOf(ln))
	// Both ends of a connection that lived between two dumps, as destroy
	// notifications report them: no inode, a cgroup id.
	srv := withID(sock(tcp, established, "127.0.0.1:8080", "127.0.0.1:50000"), 7, 0, 10)
	cli := withID(sock(tcp, established, "127.0.0.1:50000", "127.0.0.1:8080"), 8, 0, 10)
	evs := []event.Event{
		{Kind: event.Appeared, Socket: srv, ShortLived: true},
		{Kind: event.Closed, Socket: cli, ShortLived: true},
		{Kind: event.Gap, Reason: "destroy_overrun"},
	}
	tr.Annotate(evs)
	if evs[0].Direction != event.DirectionInbound || evs[1].Direction != event.DirectionOutbound {
		t.Errorf("directions %q, %q; want inbound, outbound", evs[0].Direction, evs[1].Direction)
	}
	for _, ev := range evs[:2] {
		if ev.Process != nil || ev.Cgroup == nil || ev.Cgroup.SystemdUnit != "app.service" {
			t.Errorf("process %+v cgroup %+v; want no process, app.service", ev.Process, ev.Cgroup)
		}
	}
	if evs[2].Direction != 0 || evs[2].Process != nil || evs[2].Cgroup != nil {
		t.Errorf("gap annotated: %+v", evs[2])
	}
}

func TestCgroupWalks(t *testing.T) {
	f := newFakeFS()
	r := newFakeResolver(config.Attribution{Cgroup: true, CmdlineMaxBytes: 1}, f)
	r.procfs = nil
	tr := r.NewTracker()
	gone := withID(sock(udp, closeState, "0.0.0.0:53", "0.0.0.0:0"), 1, 0, 99)
	for range 5 {
		tr.Refresh(tableOf(gone))
		annotated(tr, event.Closed, gone)
	}
	if f.walks != 1 {
		t.Errorf("%d walks for a cgroup that does not exist; want 1", f.walks)
	}
	// A cgroup created after the last walk is found by a new one.
	f.cgroups[100] = "/new.scope"
	s := withID(sock(udp, closeState, "0.0.0.0:54", "0.0.0.0:0"), 2, 0, 100)
	tr.Refresh(tableOf(gone, s))
	if ev := annotated(tr, event.Appeared, s); ev.Cgroup == nil || ev.Cgroup.SystemdUnit != "new.scope" {
		t.Errorf("cgroup %+v; want /new.scope", ev.Cgroup)
	}
	walks := f.walks
	for range 3 {
		tr.Refresh(tableOf(gone, s))
	}
	if f.walks != walks {
		t.Errorf("known cgroups walked again")
	}
}

func TestTrackerClose(t *testing.T) {
	f := newFakeFS()
	f.add(10, "a", "/", 500, 501)
	r := newFakeResolver(defaultCfg, f)
	tr := r.NewTracker()
	tr.Refresh(tableOf(estab(1, 500, 1), estab(2, 501, 1)))
	other := r.NewTracker()
	other.Refresh(tableOf(estab(3, 500, 1)))
	tr.Close()
	if tr.Len() != 0 || r.owners.Len() != 1 {
		t.Errorf("after Close: %d records, %d owners; want 0, and the other namespace's 1", tr.Len(), r.owners.Len())
	}
}

func TestDuplicateInDump(t *testing.T) {
	f := newFakeFS()
	f.add(10, "a", "/", 500)
	r := newFakeResolver(defaultCfg, f)
	tr := r.NewTracker()
	s := estab(1, 500, 1)
	tr.Refresh(tableOf(s, s))
	tr.Refresh(tableOf(s))
	if tr.Len() != 1 || r.owner(r.ownerOf(500)).refs != 1 {
		t.Errorf("%d records, %d refs; want 1, 1", tr.Len(), r.owner(r.ownerOf(500)).refs)
	}
}

func TestFirstLookReadsOnlyChangedProcesses(t *testing.T) {
	f := newFakeFS()
	for pid := int32(10); pid < 20; pid++ {
		f.add(pid, "p", "/", uint32(pid)*100)
	}
	tr := newFakeResolver(defaultCfg, f).NewTracker()
	var socks []snapshot.Socket
	for pid := uint64(10); pid < 20; pid++ {
		socks = append(socks, estab(pid, uint32(pid)*100, 1))
	}
	tr.Refresh(tableOf(socks...))
	tables := f.tables
	f.procs[17].fds[9] = 5000
	s := estab(99, 5000, 1)
	tr.Refresh(tableOf(append(socks, s)...))
	if n := f.tables - tables; n != 1 {
		t.Errorf("read %d tables for one new socket; want 1, the process whose count changed", n)
	}
	if got := pidOf(annotated(tr, event.Appeared, s)); got != 17 {
		t.Errorf("owner %d; want 17", got)
	}
}

func TestOwnerSlotsReused(t *testing.T) {
	f := newFakeFS()
	p := f.add(10, "a", "/", 600)
	r := newFakeResolver(defaultCfg, f)
	tr := r.NewTracker()
	tr.Refresh(tableOf(estab(1, 500, 1))) // nobody holds 500: queued for a second look
	tr.Close()                            // released while queued
	tr = r.NewTracker()
	a := estab(2, 600, 1)
	tr.Refresh(tableOf(a))
	if got := pidOf(annotated(tr, event.Appeared, a)); got != 10 {
		t.Fatalf("owner %d; want 10", got)
	}
	slots := len(r.ownerTab)
	p.fds[9] = 700
	b := estab(3, 700, 1)
	tr.Refresh(tableOf(a, b))
	if len(r.ownerTab) != slots {
		t.Errorf("owner table grew from %d to %d; the freed slot was not reused", slots, len(r.ownerTab))
	}
	if pidOf(annotated(tr, event.Appeared, a)) != 10 || pidOf(annotated(tr, event.Appeared, b)) != 10 {
		t.Errorf("owners after reuse: %d, %d; want 10, 10", pidOf(annotated(tr, event.Appeared, a)), pidOf(annotated(tr, event.Appeared, b)))
	}
}

// TestManyWantedInOneRound: a round looking for more sockets than its
// small map holds finds them through the owners index, ranks holders by
// the same rule, and leaves no scratch of its size behind.
func TestManyWantedInOneRound(t *testing.T) {
	const cgA, cgB = 10, 11
	const n = maxKeptCands + 100
	f := newFakeFS()
	f.cgroups[cgA], f.cgroups[cgB] = "/a.service", "/b.service"
	var all, even []uint32
	var socks []snapshot.Socket
	for i := uint32(1); i <= n; i++ {
		ino := 1000 + i
		all = append(all, ino)
		if i%2 == 0 {
			even = append(even, ino)
		}
		socks = append(socks, estab(uint64(i), ino, cgA))
	}
	f.add(5, "elsewhere", "/b.service", all...)
	f.add(30, "own", "/a.service", even...)
	r := newFakeResolver(defaultCfg, f)
	tr := r.NewTracker()
	tr.Refresh(tableOf(socks...))
	for i, s := range socks {
		want := 5
		if (i+1)%2 == 0 {
			want = 30
		}
		if got := pidOf(annotated(tr, event.Appeared, s)); got != want {
			t.Fatalf("socket %d (inode %d): owner %d; want %d", i+1, s.Inode, got, want)
		}
	}
	if r.sc.cands != nil || r.sc.candOf != nil {
		t.Errorf("a round of %d kept its scratch: %d cands, %d-entry table", n, cap(r.sc.cands), len(r.sc.candOf))
	}
	for i, w := range r.sc.wantBits {
		if w != 0 {
			t.Fatalf("owners still marked wanted after the round: word %d is %#x", i, w)
		}
	}
}

// TestOwnerRefsBounded: records of one inode beyond what an owner counts
// go without an owner, and the count never wraps.
func TestOwnerRefsBounded(t *testing.T) {
	f := newFakeFS()
	f.add(10, "a", "/", 500)
	r := newFakeResolver(defaultCfg, f)
	tr := r.NewTracker()
	socks := make([]snapshot.Socket, maxRefs+1)
	for i := range socks {
		socks[i] = estab(uint64(i+1), 500, 1)
	}
	tr.Refresh(tableOf(socks...))
	if got := r.owner(r.ownerOf(500)).refs; got != maxRefs {
		t.Fatalf("%d refs; want %d", got, maxRefs)
	}
	if got := pidOf(annotated(tr, event.Appeared, socks[0])); got != 10 {
		t.Errorf("first record's owner %d; want 10", got)
	}
	last := socks[len(socks)-1]
	if slot, ok := tr.byCookie.Get(last.Cookie, tr.cookieOf); !ok || tr.recs[slot].own != 0 {
		t.Errorf("the record beyond the bound: found %v, owner %d; want found, 0", ok, tr.recs[slot].own)
	}
	tr.Close()
	if r.owners.Len() != 0 {
		t.Errorf("after Close: %d owners; want 0", r.owners.Len())
	}
}

// TestCgroupSlotsFollowRecords: records refer to their cgroup's entry by
// a slot that lives while some record does, is reused after, and keeps a
// removed cgroup's fields for its sockets' closed events once the cache
// has dropped it.
func TestCgroupSlotsFollowRecords(t *testing.T) {
	f := newFakeFS()
	f.cgroups[10], f.cgroups[11] = "/a.service", "/b.service"
	r := newFakeResolver(config.Attribution{Cgroup: true, CmdlineMaxBytes: 1}, f)
	r.procfs = nil
	tr := r.NewTracker()
	a1, a2, b := estab(1, 0, 10), estab(2, 0, 10), estab(3, 0, 11)
	tr.Refresh(tableOf(a1, a2, b))
	if len(r.cgSlots) != 3 || r.cgroups[10].refs != 2 || r.cgroups[11].refs != 1 {
		t.Fatalf("%d slots, refs %d and %d; want 3 (none, a, b), 2 and 1", len(r.cgSlots), r.cgroups[10].refs, r.cgroups[11].refs)
	}
	// b's socket closes: its record, kept keepRefreshes dumps after the
	// first that missed it, frees its slot.
	for range keepRefreshes {
		tr.Refresh(tableOf(a1, a2))
	}
	if tr.Len() != 3 || r.cgroups[11].refs != 1 {
		t.Fatalf("%d records, b's entry %d refs, %d dumps after the first that missed b; want 3, 1", tr.Len(), r.cgroups[11].refs, keepRefreshes-1)
	}
	tr.Refresh(tableOf(a1, a2))
	if e := r.cgroups[11]; e.refs != 0 || e.slot != 0 || len(r.cgFree) != 1 {
		t.Fatalf("b's entry: %d refs, slot %d, %d free slots; want 0, 0, 1", e.refs, e.slot, len(r.cgFree))
	}
	f.cgroups[12] = "/c.service"
	c := estab(4, 0, 12)
	tr.Refresh(tableOf(a1, a2, c))
	if len(r.cgSlots) != 3 || len(r.cgFree) != 0 {
		t.Errorf("%d slots, %d free; want the freed slot reused: 3, 0", len(r.cgSlots), len(r.cgFree))
	}
	if ev := annotated(tr, event.Appeared, c); ev.Cgroup == nil || ev.Cgroup.Path != "/c.service" {
		t.Errorf("c's cgroup %+v; want /c.service", ev.Cgroup)
	}
	// a's cgroup is removed and the cache dropped: its records keep it.
	delete(f.cgroups, 10)
	delete(r.cgroups, 10)
	tr.Refresh(tableOf(a1, a2, c))
	if ev := annotated(tr, event.Closed, a1); ev.Cgroup == nil || ev.Cgroup.Path != "/a.service" {
		t.Errorf("a's cgroup after its removal %+v; want /a.service", ev.Cgroup)
	}
	tr.Close()
	for x, s := range r.cgSlots {
		if s.e != nil {
			t.Errorf("after Close: slot %d still holds cgroup %d", x, s.id)
		}
	}
}
