//go:build !linux

package netns

// Host returns ErrNotSupported.
func Host() (NS, error) { return NS{}, ErrNotSupported }

// Discover returns ErrNotSupported.
func Discover() ([]NS, error) { return nil, ErrNotSupported }

// Resolve returns ErrNotSupported.
func Resolve(string) (NS, error) { return NS{}, ErrNotSupported }

// Do returns ErrNotSupported.
func Do(NS, func() error) error { return ErrNotSupported }

// IsPermission reports false.
func IsPermission(error) bool { return false }
