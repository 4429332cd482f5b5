package sink

// Where an otlp sink's events wait: a bounded memory queue, or a spool.

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/connlogd/connlogd/spool"
)

// SpoolStats describe a sink's spool (package spool).
type SpoolStats struct {
	Bytes     int64     // the spool files' size
	Events    uint64    // events in it not yet acknowledged
	Oldest    time.Time // when the oldest of them was stored; zero if none
	TornBytes int64     // bytes cut at start: records torn by a crash
	Recovered uint64    // events found in it at start, from a previous run
}

// String describes the spool in a log line.
func (s *SpoolStats) String() string {
	if s == nil {
		return "none"
	}
	return fmt.Sprintf("{bytes %d, events %d, oldest %s, torn %d, recovered %d}",
		s.Bytes, s.Events, s.Oldest.UTC().Format(time.RFC3339), s.TornBytes, s.Recovered)
}

// otlpStore holds a sink's events between write and the receiver's
// acknowledgement.
type otlpStore interface {
	// put stores a message; it returns how many older events it
	// dropped to make room, or errQueueFull when it refused this one.
	put(msg []byte, t time.Time) (int, error)
	// next copies the messages after those in flight into b.
	next(b *batch, maxN, maxBytes int) (n, corrupt int, err error)
	// ack removes the messages in flight; it returns how many of them
	// were still held (the rest were dropped for room meanwhile).
	ack() (uint64, error)
	// rewind makes the messages in flight the next ones again.
	rewind()
	pending() bool
	wake() <-chan struct{}
	queued() uint64
	sync() error
	close() error
}

var errQueueFull = errors.New("queue full")

// memStore is the store of a sink without a spool: a bounded FIFO.
type memStore struct {
	mu       sync.Mutex
	q        batch
	inflight int
	limit    int
	wakeC    chan struct{}
}

func newMemStore(limit int) *memStore {
	return &memStore{limit: limit, wakeC: make(chan struct{}, 1)}
}

func (m *memStore) put(msg []byte, _ time.Time) (int, error) {
	m.mu.Lock()
	if m.q.len() >= m.limit {
		m.mu.Unlock()
		return 0, errQueueFull
	}
	m.q.add(msg)
	m.mu.Unlock()
	select {
	case m.wakeC <- struct{}{}:
	default:
	}
	return 0, nil
}

func (m *memStore) next(b *batch, maxN, maxBytes int) (int, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, size := 0, 0
	for i := m.inflight; i < m.q.len() && n < maxN; i++ {
		msg := m.q.msg(i)
		if n > 0 && size+len(msg) > maxBytes {
			break
		}
		b.add(msg)
		size += len(msg)
		n++
	}
	m.inflight += n
	return n, 0, nil
}

func (m *memStore) ack() (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.inflight
	m.q.dropFront(n)
	m.inflight = 0
	return uint64(n), nil
}

func (m *memStore) rewind() {
	m.mu.Lock()
	m.inflight = 0
	m.mu.Unlock()
}

func (m *memStore) pending() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.q.len() > m.inflight
}

func (m *memStore) wake() <-chan struct{} { return m.wakeC }

func (m *memStore) queued() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return uint64(m.q.len())
}

func (m *memStore) clear() {
	m.mu.Lock()
	m.q.reset()
	m.inflight = 0
	m.mu.Unlock()
}

func (m *memStore) sync() error  { return nil }
func (m *memStore) close() error { return nil }

// spoolStore keeps the events in a spool on disk.
type spoolStore struct {
	sp  *sharedSpool
	end spool.Cursor // after the last message handed out
}

func (s *spoolStore) put(msg []byte, t time.Time) (int, error) {
	return s.sp.Append(msg, t)
}

func (s *spoolStore) next(b *batch, maxN, maxBytes int) (int, int, error) {
	end, n, corrupt, err := s.sp.Read(maxN, maxBytes, b.add)
	if n > 0 {
		s.end = end
	}
	return n, corrupt, err
}

func (s *spoolStore) ack() (uint64, error) { return s.sp.Ack(s.end) }

func (s *spoolStore) rewind()               { s.sp.Rewind() }
func (s *spoolStore) pending() bool         { return s.sp.Pending() }
func (s *spoolStore) wake() <-chan struct{} { return s.sp.Wake() }
func (s *spoolStore) queued() uint64        { return s.sp.Len() }
func (s *spoolStore) sync() error           { return s.sp.Sync() }
func (s *spoolStore) close() error          { return s.sp.release() }
