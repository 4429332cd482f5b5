//go:build !linux

package netns

// WatchOptions say what a LiveWatcher watches.
type WatchOptions struct {
	Dirs  []string
	Procs bool
}

// WatchStats are cumulative counters of a LiveWatcher.
type WatchStats struct {
	ProcEvents, Overruns, Malformed, Reported uint64
}

// LiveWatcher is not available on this platform.
type LiveWatcher struct{}

// NewWatcher returns ErrNotSupported.
func NewWatcher(WatchOptions) (*LiveWatcher, []error, error) { return nil, nil, ErrNotSupported }

// Changes returns nil.
func (*LiveWatcher) Changes() <-chan Change { return nil }

// Forget does nothing.
func (*LiveWatcher) Forget(ID) {}

// Stats returns zeros.
func (*LiveWatcher) Stats() WatchStats { return WatchStats{} }

// Close does nothing.
func (*LiveWatcher) Close() error { return nil }
