package attribution

import (
	"errors"
	"fmt"
	"io/fs"
	"os/user"
	"strconv"
	"sync"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/internal/slotidx"
)

// Stats are cumulative counters of a Resolver's work.
type Stats struct {
	Scans       uint64 // resolution rounds that read /proc
	FDTables    uint64 // descriptor tables (/proc/PID/fd) listed
	Links       uint64 // descriptor links read
	Attributed  uint64 // sockets attributed to a process (again after a hand-over)
	Unknown     uint64 // sockets given up on: no readable process holds them
	CgroupWalks uint64 // walks of the cgroup tree
}

// warning kinds, each reported once.
const (
	//lint:ignore U1000 reported on systems other than Linux (system_other.go)
	warnUnsupported = 1 << iota
	// warnPermission: missing capabilities at start, or a descriptor
	// table refused later (an LSM, hidepid): one warning for both.
	warnPermission
	warnProcList
	warnCgroupMount
	warnCgroupWalk
)

// Resolver holds what attribution has learned: socket inode → owner,
// each process's socket descriptors, cgroup id → cgroup. It is shared by
// the Trackers of every network namespace, and safe for concurrent use.
type Resolver struct {
	mu     sync.Mutex
	cfg    config.Attribution
	procfs procFS   // nil when process attribution is off or impossible
	cgfs   cgroupFS // nil when there is no cgroup v2 hierarchy

	// lookupUser returns the name of a uid; a variable for tests.
	lookupUser func(uid uint32) (string, bool)
	users      map[uint32]string

	// Owners live in one table and are referred to by index: a pointer
	// per socket would give every garbage collection 100k objects to chase.
	owners    slotidx.Index // by socket inode, while some record refers to it (see inodeOf)
	inodeOf   func(int32) uint64
	ownerTab  []owner // [0] is unused: ownerID 0 is none
	ownerFree []ownerID
	queue     []ownerID // owners to (re)attribute at the next resolve
	// deferred are the second looks a chunk's round left for the round
	// at its dump's end.
	deferred []ownerID
	procs    map[int32]*proc // processes whose descriptors were read

	cgroups  map[uint64]*cgroupEntry
	cgSlots  []cgSlotEntry // the entries records refer to; [0] is none
	cgFree   []cgSlot
	cgIndex  map[uint64]string // the last walk: cgroup id → path
	walkCall uint64            // call in which the last walk ran
	call     uint64            // counts Refresh and Annotate calls

	round    uint64  // counts resolution rounds
	listGen  uint64  // counts process listings
	sc       scan    // the current round's scratch
	pidBuf   []int32 // the last listing of the processes
	listedOK bool    // it succeeded
	// sameDump: this round is a later chunk's of the dump whose first
	// round listed the processes (resolve).
	sameDump   bool
	pidScratch []int32
	fdBuf      []int32
	linked     []uint32
	tmpFDs     []fdEnt
	warnings   []error
	warned     uint32
	stats      Stats
}

// New returns a Resolver for the configuration. Problems opening /proc or
// finding the cgroup v2 mount are not errors: attribution then does less,
// and Warnings says why.
func New(cfg config.Attribution) *Resolver {
	r := newResolver(cfg)
	pfs, cfs, warns := openSystem(cfg)
	r.procfs, r.cgfs = pfs, cfs
	for _, w := range warns {
		r.warn(w.kind, w.err)
	}
	return r
}

func newResolver(cfg config.Attribution) *Resolver {
	r := &Resolver{
		cfg:        cfg,
		lookupUser: lookupUser,
		users:      make(map[uint32]string),
		ownerTab:   make([]owner, 1),
		procs:      make(map[int32]*proc),
		cgroups:    make(map[uint64]*cgroupEntry),
		cgSlots:    make([]cgSlotEntry, 1),
	}
	r.inodeOf = func(id int32) uint64 { return uint64(r.ownerTab[id].inode) }
	return r
}

// lookupUser asks the system's user database once per uid; the Resolver
// caches the answer for its life.
func lookupUser(uid uint32) (string, bool) {
	u, err := user.LookupId(uidString(uid))
	if err != nil {
		return "", false
	}
	return u.Username, true
}

// Close releases the descriptor the Resolver keeps on /proc.
func (r *Resolver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.procfs == nil {
		return nil
	}
	err := r.procfs.Close()
	r.procfs = nil
	if err != nil {
		return fmt.Errorf("attribution close: %w", err)
	}
	return nil
}

// Warnings returns what limited attribution since the last call, each
// kind of problem once for the Resolver's life: the caller logs them.
func (r *Resolver) Warnings() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.warnings
	r.warnings = nil
	return w
}

// Stats returns the cumulative counters.
func (r *Resolver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

func (r *Resolver) warn(kind uint32, err error) {
	if r.warned&kind != 0 {
		return
	}
	r.warned |= kind
	r.warnings = append(r.warnings, err)
}

type sysWarning struct {
	kind uint32
	err  error
}

// ownerState says where an owner stands in attribution.
type ownerState uint8

const (
	stWanted  ownerState = iota // to be looked for at the next resolve
	stRetry                     // the first look missed; one more
	stKnown                     // proc is the answer (or the last one, holder gone)
	stUnknown                   // given up: no readable process held it
)

// ownerID indexes Resolver.ownerTab; 0 is none.
type ownerID int32

// owner is what is known of one socket inode: 24 bytes, one per socket.
// What a resolution round needs of the owners it looks for (the best
// holder found so far) lives in that round's scratch (scan.cands), not
// here: most owners are in no round.
type owner struct {
	inode uint32
	refs  uint16 // Tracker records referring to it (see ownerFor)
	state ownerState
	flags ownerFlags
	cgid  uint64         // the socket's cgroup id, for the scan's first tier
	proc  *event.Process // the answer; kept when the holder exits
}

// ownerFlags are an owner's flags.
type ownerFlags uint8

const (
	// oPresent: in its namespace's last dump with this inode, so some
	// descriptor may hold it.
	oPresent ownerFlags = 1 << iota
	// oQueued: in Resolver.queue or Resolver.deferred.
	oQueued
	// oHeld: the process proc describes (proc.PID) still holds it, as
	// far as its descriptors were last read.
	oHeld
)

func (o *owner) present() bool { return o.flags&oPresent != 0 }
func (o *owner) queued() bool  { return o.flags&oQueued != 0 }

// heldBy reports whether process pid is the owner's holder.
func (o *owner) heldBy(pid int32) bool {
	return o.flags&oHeld != 0 && o.proc != nil && o.proc.PID == int(pid)
}

func (o *owner) set(f ownerFlags, on bool) {
	if on {
		o.flags |= f
	} else {
		o.flags &^= f
	}
}

// maxRefs bounds an owner's references. Each record of a socket inode
// takes one: that of the live socket (inodes are unique among them) and
// those of closed sockets kept a few dumps, which share its number only
// if the kernel's 32-bit inode counter wrapped meanwhile. A record beyond
// the bound goes without an owner rather than wrap the count.
const maxRefs = 1<<16 - 1

// proc is what the Resolver knows of one process.
type proc struct {
	pid    int32
	listed uint64  // listGen of the last listing that had it
	fds    fdCache // its socket descriptors at the last read
	nfds   int     // its descriptor count then
	read   bool    // fds were read at least once
	denied bool    // its descriptors are unreadable to us
	round  uint64  // round of the last read
	// readList is the listGen of its last whole read.
	readList uint64
	info     *event.Process
	infoRnd  uint64
}

// ownerOf returns the owner indexed for inode; 0 for none.
func (r *Resolver) ownerOf(inode uint32) ownerID {
	id, _ := r.owners.Get(uint64(inode), r.inodeOf)
	return ownerID(id)
}

// owner returns the owner at id. The pointer is valid until the next
// ownerFor, which may grow the table.
func (r *Resolver) owner(id ownerID) *owner { return &r.ownerTab[id] }

// ownerFor returns the owner of inode, creating it (wanted) when new, and
// takes a reference. It returns 0 when process attribution is off.
func (r *Resolver) ownerFor(inode uint32, cgid uint64) ownerID {
	if r.procfs == nil {
		return 0
	}
	id := r.ownerOf(inode)
	if id == 0 {
		if n := len(r.ownerFree); n > 0 {
			id = r.ownerFree[n-1]
			r.ownerFree = r.ownerFree[:n-1]
		} else {
			id = ownerID(len(r.ownerTab))
			r.ownerTab = append(r.ownerTab, owner{})
		}
		*r.owner(id) = owner{inode: inode, cgid: cgid, state: stWanted}
		r.owners.Put(uint64(inode), int32(id), r.inodeOf)
		r.enqueue(id)
	}
	o := r.owner(id)
	if o.refs == maxRefs {
		return 0
	}
	o.refs++
	o.set(oPresent, true)
	return id
}

// release drops a reference; the last one forgets the inode. The slot is
// reused once no queue holds it.
func (r *Resolver) release(id ownerID) {
	o := r.owner(id)
	o.refs--
	if o.refs > 0 {
		return
	}
	o.set(oPresent, false)
	if r.ownerOf(o.inode) == id {
		r.owners.Delete(uint64(o.inode), r.inodeOf)
	}
	if !o.queued() {
		r.free(id)
	}
}

func (r *Resolver) free(id ownerID) {
	*r.owner(id) = owner{}
	r.ownerFree = append(r.ownerFree, id)
}

func (r *Resolver) enqueue(id ownerID) {
	if o := r.owner(id); !o.queued() {
		o.set(oQueued, true)
		r.queue = append(r.queue, id)
	}
}

// lost is called when process p no longer holds inode at the descriptor
// it did (closed, or handed to another process): if p was its owner and
// the socket lives on, it is attributed again at the next resolve.
func (r *Resolver) lost(p *proc, inode uint32) {
	id := r.ownerOf(inode)
	if id == 0 {
		return
	}
	o := r.owner(id)
	if !o.heldBy(p.pid) {
		return
	}
	o.set(oHeld, false)
	if o.present() {
		o.state = stWanted
		r.enqueue(id)
	}
}

// details returns the event description of p, read again once per round
// in which p gains sockets so that an exec shows; an unchanged process
// keeps its pointer.
func (r *Resolver) details(p *proc) *event.Process {
	if p.info != nil && p.infoRnd == r.round {
		return p.info
	}
	in, err := r.procfs.Info(p.pid, r.cmdlineMax())
	if err != nil {
		// It held the socket a moment ago and is gone: the pid is all
		// that is known for sure, unless an earlier read said more.
		if p.info == nil {
			p.info = &event.Process{PID: int(p.pid)}
		}
		p.infoRnd = r.round
		return p.info
	}
	pi := event.Process{
		PID:  int(p.pid),
		UID:  in.UID,
		User: r.userName(in.UID),
		Comm: in.Comm,
		Exe:  in.Exe,
	}
	if r.cfg.Cmdline {
		pi.Cmdline = formatCmdline(in.Cmdline, r.cfg.CmdlineMaxBytes)
	}
	p.infoRnd = r.round
	if p.info == nil || *p.info != pi {
		p.info = &pi
	}
	return p.info
}

func (r *Resolver) cmdlineMax() int {
	if !r.cfg.Cmdline {
		return 0
	}
	return r.cfg.CmdlineMaxBytes
}

func (r *Resolver) userName(uid uint32) string {
	if n, ok := r.users[uid]; ok {
		return n
	}
	n, ok := r.lookupUser(uid)
	if !ok {
		n = uidString(uid)
	}
	r.users[uid] = n
	return n
}

// sweep lists the running processes and forgets those that exited; the
// sockets they owned that are still open are attributed again (a parent
// exiting leaves its sockets to the children that share them). It
// returns the listing, ascending.
func (r *Resolver) sweep() ([]int32, bool) {
	pids, err := r.procfs.Pids(r.pidBuf[:0])
	r.pidBuf = pids
	if err != nil {
		r.warn(warnProcList, fmt.Errorf("attribution: list processes: %w; sockets get no process fields", err))
		return nil, false
	}
	r.listGen++
	for _, pid := range pids {
		if p := r.procs[pid]; p != nil {
			p.listed = r.listGen
		}
	}
	for pid, p := range r.procs {
		if p.listed == r.listGen {
			continue
		}
		k := p.fds.cursor()
		for f, ok := k.next(); ok; f, ok = k.next() {
			r.lost(p, f.inode)
		}
		delete(r.procs, pid)
	}
	return pids, true
}

// permissionError reports whether err is a refusal to read another
// process's descriptors.
func permissionError(err error) bool {
	return errors.Is(err, fs.ErrPermission)
}

// privilegeHelp explains, in warnings, what reading other users'
// descriptors needs.
const privilegeHelp = "sockets of other users' processes get no process fields (reading /proc/PID/fd needs CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE)"

func (r *Resolver) warnDenied(pid int32, err error) {
	r.warn(warnPermission, fmt.Errorf("attribution: read descriptors of pid %s: %w; %s", strconv.Itoa(int(pid)), err, privilegeHelp))
}
