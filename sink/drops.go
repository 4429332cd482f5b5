package sink

import "sync/atomic"

// DropReason says why a sink lost events.
type DropReason uint8

// Drop reasons; Stats.DroppedBy is indexed by them.
const (
	// DropQueueFull: a syslog sink's queue was full (receiver slow or away).
	DropQueueFull DropReason = iota
	// DropOutputFailed: the output could not take the event: a file's
	// backlog of failed writes was full, the event did not encode, a
	// message was too long for a datagram, a rotation cut a line.
	DropOutputFailed
	// DropShutdown: still undelivered when Close gave up on it.
	DropShutdown
	// DropRefused: the receiver answered it with a refusal (RELP).
	DropRefused
	// DropSpoolFull: the spool reached max_bytes and its oldest
	// events were dropped to make room.
	DropSpoolFull
	// DropRejected: an OTLP receiver refused the batch for good (HTTP
	// 400 and other 4xx that a resend cannot fix) or refused records of
	// an accepted one (partial success).
	DropRejected
	// NumDropReasons is the number of reasons.
	NumDropReasons
)

var dropReasonNames = [NumDropReasons]string{
	DropQueueFull:    "queue_full",
	DropOutputFailed: "output_failed",
	DropShutdown:     "shutdown",
	DropRefused:      "refused",
	DropSpoolFull:    "spool_full",
	DropRejected:     "rejected",
}

// String returns the reason's metric label.
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropReasonNames[r]
	}
	return "unknown"
}

// drops counts a sink's lost events by reason.
type drops [NumDropReasons]atomic.Uint64

func (d *drops) add(r DropReason, n uint64) { d[r].Add(n) }

func (d *drops) total() uint64 {
	var n uint64
	for i := range d {
		n += d[i].Load()
	}
	return n
}

// fill sets s's Dropped and DroppedBy.
func (d *drops) fill(s *Stats) {
	for i := range d {
		s.DroppedBy[i] = d[i].Load()
		s.Dropped += s.DroppedBy[i]
	}
}
