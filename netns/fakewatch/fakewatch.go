// Package fakewatch is a netns.Watcher driven by a test: it reports the
// changes the test sends, and records what its user forgets.
package fakewatch

import (
	"sync"

	"github.com/connlogd/connlogd/netns"
)

// Watcher implements netns.Watcher.
type Watcher struct {
	c         chan netns.Change
	mu        sync.Mutex
	forgotten []netns.ID
	closed    bool
}

// New returns a Watcher whose Changes holds up to 64 unread changes.
func New() *Watcher { return &Watcher{c: make(chan netns.Change, 64)} }

// Send reports c to the watcher's user; it blocks while 64 are unread.
func (f *Watcher) Send(c netns.Change) { f.c <- c }

// Changes implements netns.Watcher.
func (f *Watcher) Changes() <-chan netns.Change { return f.c }

// Forget implements netns.Watcher.
func (f *Watcher) Forget(id netns.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgotten = append(f.forgotten, id)
}

// Forgotten returns the ids forgotten so far, in order.
func (f *Watcher) Forgotten() []netns.ID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]netns.ID(nil), f.forgotten...)
}

// Close implements netns.Watcher: it closes Changes, once.
func (f *Watcher) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		close(f.c)
	}
	return nil
}

var _ netns.Watcher = (*Watcher)(nil)
