package sink

import (
	"fmt"
	"path/filepath"
	"sync"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/spool"
)

// sharedSpool is a spool directory open in this process. A reload opens
// the new sinks before it closes the old ones, and a spool admits one
// process at a time (an flock), so the two sinks share the open spool:
// the new one appends at once, after what the old one appended, and
// reads only once the old one's sender has stopped. Two readers of one
// spool would each acknowledge the other's events.
type sharedSpool struct {
	*spool.Spool
	dir  string
	max  int64
	refs int
	// turn holds one token: the right to read and acknowledge. A sender
	// takes it before its first read and gives it back when it stops.
	turn chan struct{}
}

var spools = struct {
	sync.Mutex
	m map[string]*sharedSpool
}{m: map[string]*sharedSpool{}}

// acquireSpool opens the spool of c, or shares the one this process has
// open there; release gives it back.
func acquireSpool(c config.Spool) (*sharedSpool, error) {
	max := c.MaxBytes
	if max == 0 {
		max = config.DefaultSpoolBytes
	}
	dir := filepath.Clean(c.Dir)
	spools.Lock()
	defer spools.Unlock()
	if s, ok := spools.m[dir]; ok {
		if s.max != max {
			return nil, fmt.Errorf("spool %s: max_bytes changes from %d to %d on restart only", dir, s.max, max)
		}
		s.refs++
		return s, nil
	}
	sp, err := spool.Open(dir, max)
	if err != nil {
		return nil, err
	}
	s := &sharedSpool{Spool: sp, dir: dir, max: max, refs: 1, turn: make(chan struct{}, 1)}
	s.turn <- struct{}{}
	spools.m[dir] = s
	return s, nil
}

// release gives the spool back; the last holder closes it.
func (s *sharedSpool) release() error {
	spools.Lock()
	defer spools.Unlock()
	if s.refs--; s.refs > 0 {
		return nil
	}
	delete(spools.m, s.dir)
	return s.Close()
}

// waitTurn waits for the right to read, or for stop; it reports whether
// it got it. A new reader starts at the oldest event not acknowledged.
func (s *sharedSpool) waitTurn(stop <-chan struct{}) bool {
	select {
	case <-s.turn:
		s.Rewind()
		return true
	case <-stop:
		return false
	}
}

// endTurn gives the right to read to the next holder.
func (s *sharedSpool) endTurn() { s.turn <- struct{}{} }
