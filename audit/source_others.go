//go:build !linux

package audit

import (
	"errors"
	"time"

	"github.com/connlogd/connlogd/event"
)

// ErrNoAudit: audit attribution needs Linux.
var ErrNoAudit = errors.New("audit attribution is supported on Linux only")

// Options configure a Source.
type Options struct {
	StateFile  string
	Keep       time.Duration
	Owner      func(c *Call) *event.Process
	ReadBuffer int
	Grace      time.Duration
	// InitialNetns runs fn in the initial network namespace.
	InitialNetns func(fn func() error) error
}

// Source is the audit side of attribution; Open always fails here.
type Source struct{ RulesErr error }

// ErrOverrun reports records lost on the subscription.
var ErrOverrun = errors.New("audit read-log: receive buffer overrun, records lost")

// Open fails: there is no audit subsystem to read.
func Open(Options) (*Source, error) { return nil, ErrNoAudit }

func (s *Source) WaitReadable() error                         { return ErrNoAudit }
func (s *Source) Drain(time.Time) (bool, error)               { return false, nil }
func (s *Source) Stats() JoinStats                            { return JoinStats{} }
func (s *Source) Malformed() (uint64, error)                  { return 0, nil }
func (s *Source) Lost() (uint64, bool, error)                 { return 0, false, nil }
func (s *Source) Close() error                                { return nil }
func (s *Source) Hold(*event.Event, uint64) bool              { return false }
func (s *Source) Release(time.Time, bool, func(*event.Event)) {}
func (s *Source) NextRelease() (time.Time, bool)              { return time.Time{}, false }
func (s *Source) Held() int                                   { return 0 }
func (s *Source) Probe(time.Time)                             {}
