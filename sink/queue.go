package sink

import "sync"

// batch is a run of syslog messages, unframed, stored end to end.
type batch struct {
	data []byte
	ends []int // ends[i] is the end offset of message i in data
}

func (b *batch) len() int { return len(b.ends) }

func (b *batch) msg(i int) []byte {
	start := 0
	if i > 0 {
		start = b.ends[i-1]
	}
	return b.data[start:b.ends[i]]
}

// add appends one message.
func (b *batch) add(msg []byte) {
	b.data = append(b.data, msg...)
	b.ends = append(b.ends, len(b.data))
}

// dropFront removes the first n messages, keeping the storage.
func (b *batch) dropFront(n int) {
	if n <= 0 {
		return
	}
	if n >= b.len() {
		b.data, b.ends = b.data[:0], b.ends[:0]
		return
	}
	cut := b.ends[n-1]
	b.data = b.data[:copy(b.data, b.data[cut:])]
	b.ends = b.ends[:copy(b.ends, b.ends[n:])]
	for i := range b.ends {
		b.ends[i] -= cut
	}
}

// reset empties b. It keeps the memory: a sustained rate would otherwise
// regrow the buffer every batch, and with the default queue size the
// two batches hold at most about 12 MiB. Only a backlog beyond 16 MiB
// (a queue_size raised far above the default) is given back, once
// batches are small again.
func (b *batch) reset() {
	if cap(b.data) > 16<<20 && len(b.data) < cap(b.data)/4 {
		b.data, b.ends = nil, nil
		return
	}
	b.data, b.ends = b.data[:0], b.ends[:0]
}

// queue is a syslog sink's bounded queue between the poll loop, which
// must never wait on a receiver, and the sender goroutine. The producer
// appends to pend under the lock; the sender swaps pend for its own empty
// batch and works on it unlocked, so each side touches the lock once per
// event or per batch, and a backlog is sent in large writes.
type queue struct {
	mu    sync.Mutex
	limit int
	pend  batch
	// held counts the events accepted and not yet delivered or dropped:
	// those in pend and those the sender has taken. The limit applies to
	// it, so memory stays bounded by about two limits' worth of messages.
	held int
	wake chan struct{} // one token: "pend is not empty"
}

func newQueue(limit int) *queue {
	return &queue{limit: limit, wake: make(chan struct{}, 1)}
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take swaps the pending messages into b, which must be empty, and
// returns how many there are.
func (q *queue) take(b *batch) int {
	q.mu.Lock()
	q.pend, *b = *b, q.pend
	q.mu.Unlock()
	return b.len()
}

// resolve records that n taken events were delivered or dropped.
func (q *queue) resolve(n int) {
	q.mu.Lock()
	q.held -= n
	q.mu.Unlock()
}

func (q *queue) queued() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.held
}
