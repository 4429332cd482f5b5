// Package event defines the one event type that flows from the differ to
// the sinks. Its fields are the schema's content; the names on the wire
// belong to package sink and docs/events.md.
package event

import (
	"time"

	"github.com/connlogd/connlogd/snapshot"
)

// Kind says what happened.
type Kind uint8

// Event kinds. Socket events first, then the daemon's reports about its
// own delivery (gaps and drops), which SIEMs must see in the same stream.
const (
	Appeared Kind = iota + 1
	StateChanged
	Closed
	// Gap says events may be missing for a window: the kernel dropped
	// notifications or a dump failed. Count and Reason say why.
	Gap
	// Snapshot is a line of `connlogd -once`: a socket as it is now.
	Snapshot
	// Updated reports a connection that is still alive, with its
	// cumulative counters and its duration so far: one per connection
	// and flow update interval (see differ.Options.UpdateInterval).
	Updated
)

var kindNames = [...]string{
	Appeared:     "appeared",
	StateChanged: "state_changed",
	Closed:       "closed",
	Gap:          "gap",
	Snapshot:     "socket",
	Updated:      "updated",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "unknown"
}

// Close reasons, in Event.Reason of Closed events.
const (
	// ReasonGone: a poll missed the socket and an exact lookup (or, when
	// lookups are impossible, further polls) confirmed it is gone.
	ReasonGone = "gone"
	// ReasonDestroyed: the kernel's destroy notification reported it.
	ReasonDestroyed = "destroyed"
	// ReasonNetnsGone: the socket's network namespace disappeared.
	ReasonNetnsGone = "netns_gone"
)

// Gap reasons, in Event.Reason of Gap events: why events may be missing.
// docs/events.md lists them for consumers, who treat an unknown reason as
// a gap all the same.
const (
	// GapDumpFailed: a poll's dump failed. Reported once per failing
	// streak; the partial table is not diffed, so nothing is reported
	// closed from it.
	GapDumpFailed = "dump_failed"
	// GapMalformed: Count netlink messages did not parse and were dropped;
	// the sockets they described are seen by the next poll.
	GapMalformed = "malformed_netlink"
	// GapOverrun: the kernel dropped destroy notifications (receive
	// buffer full); a full poll follows at once.
	GapOverrun = "destroy_overrun"
	// GapDestroyFailed: the destroy subscription stopped with an error;
	// closes come from polls only from then on.
	GapDestroyFailed = "destroy_failed"
	// GapSinkDropped: sinks lost Count events. Written to the sinks that
	// work; the failing one counts it among its drops.
	GapSinkDropped = "sink_dropped"
	// GapNetnsUnwatchable: other network namespaces cannot be entered
	// (no CAP_SYS_ADMIN); only the host's is watched.
	GapNetnsUnwatchable = "netns_unwatchable"
	// GapAuditLost: audit records were lost (the kernel's lost counter
	// grew, or the read-log subscription overran), so connections of that
	// window may have no owner. Count is how many records the kernel
	// counted lost, 0 when unknown.
	GapAuditLost = "audit_lost"
	// GapStopUnread: connlogd stopped with destroy notifications still
	// queued after its bounded drain at shutdown (a flood that outlasts
	// it); the closes they carried are not reported.
	GapStopUnread = "stop_unread"
	// GapNotRunning: written once at start, stamped when every destroy
	// subscription of the start-up namespaces is open and the first poll
	// is about to dump: connections that opened and closed before it,
	// while connlogd was not running, are not reported. Every close after
	// it is. A log's continuity is thus explicit at each restart, a crash
	// included, and the first start marks where the log begins.
	GapNotRunning = "not_running"
)

// Event is one line of output.
type Event struct {
	Kind Kind
	Time time.Time
	// Socket is the socket's record: the current one, or for Closed the
	// last one seen (with the final counters when the kernel sent them).
	Socket snapshot.Socket
	// PrevState is the state before a StateChanged.
	PrevState snapshot.State
	// FirstSeen is when connlogd first saw the socket; a Closed event's
	// duration is Time - FirstSeen.
	FirstSeen time.Time
	// Initial marks Appeared events for sockets that already existed when
	// connlogd started.
	Initial bool
	// ShortLived marks sockets no poll ever saw: appeared and closed are
	// both reported from the destroy notification.
	ShortLived bool
	// Late marks events found at start-up from a table saved by the
	// previous run: the socket appeared or closed while connlogd was not
	// running, so Time is when connlogd noticed, not when it happened.
	Late bool
	// Direction is the socket's role: listening, accepted (inbound) or
	// initiated here (outbound); DirectionUnknown when not decided.
	Direction Direction
	// Process is the process that holds the socket, and Cgroup the cgroup
	// v2 it was created in; nil when attribution does not know them. The
	// values are shared between events and must not be modified.
	Process *Process
	Cgroup  *Cgroup
	// Container is what the container runtime says of the container of
	// Cgroup.ContainerID: its name, image and Kubernetes pod; nil while
	// the runtime has not answered (a later event of the socket has it)
	// or when no runtime knows the container. Shared, like Process.
	Container *Container
	// Reason qualifies Closed (see the Reason constants) and Gap events.
	Reason string
	// Count is how many notifications a Gap may have lost (0: unknown).
	Count uint64
	// Netns is the inode number of the socket's network namespace (for a
	// Gap, the namespace it concerns; 0 when it concerns none), and
	// NetnsName its /run/netns name when it has one.
	Netns     uint64
	NetnsName string
	// Failure marks the Closed event of a connection attempt that never
	// reached established, and says why when sock_diag tells.
	Failure Failure
	// ID identifies the event (see NewID); zero until the output sets it.
	ID ID
}

// ContainerID returns the id of the socket's container: its cgroup's, or,
// for a socket whose cgroup is unknown (a destroy notification carries
// none), the container its network namespace belongs to. "" for none.
func (e *Event) ContainerID() string {
	if e.Cgroup != nil && e.Cgroup.ContainerID != "" {
		return e.Cgroup.ContainerID
	}
	if e.Container != nil {
		return e.Container.ID
	}
	return ""
}

// Duration returns how long the socket was known: for Closed events its
// whole life, for Updated ones its life so far.
func (e *Event) Duration() time.Duration {
	if e.FirstSeen.IsZero() || e.Time.Before(e.FirstSeen) {
		return 0
	}
	return e.Time.Sub(e.FirstSeen)
}

// Direction is a socket's role in its connection, as seen from this host.
type Direction uint8

// Directions. See docs/events.md for how each is decided.
const (
	DirectionUnknown Direction = iota
	// DirectionListen: a TCP listener, or a bound, unconnected UDP socket.
	DirectionListen
	// DirectionInbound: a connection accepted by a local listener.
	DirectionInbound
	// DirectionOutbound: a connection this host initiated.
	DirectionOutbound
)

var directionNames = [...]string{
	DirectionListen:   "listen",
	DirectionInbound:  "inbound",
	DirectionOutbound: "outbound",
}

// String returns the event name of d, or "" when it is unknown.
func (d Direction) String() string {
	if int(d) < len(directionNames) {
		return directionNames[d]
	}
	return ""
}

// Process describes the process that holds a socket, as it was when the
// socket was attributed to it.
type Process struct {
	PID  int
	UID  uint32 // effective uid
	User string // name of UID, or UID in decimal when it has none
	Comm string // /proc/PID/comm
	Exe  string // /proc/PID/exe; "" when unreadable (kernel thread, no privilege)
	// Cmdline is the command line, arguments joined by spaces and
	// truncated; "" unless configured.
	Cmdline string
}

// Cgroup describes the cgroup v2 a socket was created in.
type Cgroup struct {
	Path        string // relative to the cgroup2 mount: "/system.slice/nginx.service"
	SystemdUnit string // "nginx.service"; "" when the path holds none
	ContainerID string // 64 hex digits; "" when the path is no container's
}

// Container is what a container runtime reports of a container. Each
// field but ID is "" when the runtime has no value for it.
type Container struct {
	ID    string // the container's id, 64 hex digits
	Name  string // "web-1", without docker's leading "/"
	Image string // the image as the container was created from it: "nginx:1.27"
	// ImageID is the runtime's id of that image ("sha256:…"): a tag can
	// be moved to another image, the id cannot.
	ImageID string
	// The Kubernetes pod, from the labels the kubelet sets
	// (io.kubernetes.pod.name, .namespace, .uid).
	PodName      string
	PodNamespace string
	PodUID       string
}

// Failure says how a connection attempt failed. The differ decides it
// from what sock_diag shows (see package differ, "Failed attempts").
type Failure uint8

// Failures.
const (
	// NotFailed: the connection was established, or the socket was no
	// connection attempt, or nothing shows that it failed.
	NotFailed Failure = iota
	// FailedUnknown: the attempt failed for a reason sock_diag does not
	// show: an outbound connect that got no answer and was not retried
	// (an ICMP error, or the application gave up first), or an inbound
	// handshake that the client never completed (a scan, a SYN flood, a
	// client that gave up).
	FailedUnknown
	// FailedRefused: the peer answered the SYN with a reset.
	FailedRefused
	// FailedTimeout: the SYN was sent again and never answered.
	FailedTimeout
)

var failureNames = [...]string{
	FailedRefused: "refused",
	FailedTimeout: "timeout",
}

// Failed reports whether f marks a failed attempt.
func (f Failure) Failed() bool { return f != NotFailed }

// String returns the cause's event name: "refused", "timeout", or "" when
// the attempt did not fail or its cause is unknown.
func (f Failure) String() string {
	if int(f) < len(failureNames) {
		return failureNames[f]
	}
	return ""
}
