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
)

var kindNames = [...]string{
	Appeared:     "appeared",
	StateChanged: "state_changed",
	Closed:       "closed",
	Gap:          "gap",
	Snapshot:     "socket",
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
	// Reason qualifies Closed (see the Reason constants) and Gap events.
	Reason string
	// Count is how many notifications a Gap may have lost (0: unknown).
	Count uint64
}

// Duration returns how long the socket was known, for Closed events.
func (e *Event) Duration() time.Duration {
	if e.FirstSeen.IsZero() || e.Time.Before(e.FirstSeen) {
		return 0
	}
	return e.Time.Sub(e.FirstSeen)
}
