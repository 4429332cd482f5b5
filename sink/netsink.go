package sink

// What the network sinks (syslog, otlp) share: how Reopen reconnects
// them, and how their sender goroutine's failures reach Sync and Close.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connlogd/connlogd/config"
)

// reconnect is what Reopen changes in a network sink (syslog, otlp): the
// TLS settings, loaded again from their files (a renewed certificate), and
// a request to the sender goroutine to drop its connections and make new
// ones at once, not at the next failure, cutting short a backoff wait.
// Both sinks embed it, so that the reload and the wake-up have one owner.
type reconnect struct {
	tlsConf atomic.Pointer[tls.Config]
	tlsSpec *config.TLS // nil unless the sink speaks TLS
	tlsHost string      // default server name: the address's host

	kick  chan struct{} // wakes a sender that waits; the sink makes it, with room for one
	fresh atomic.Bool   // the sender is to start new connections
}

// useTLS loads the TLS settings of spec, host naming the server when the
// settings do not; reopen loads them again.
func (r *reconnect) useTLS(spec *config.TLS, host string) error {
	conf, err := loadTLS(spec, host)
	if err != nil {
		return err
	}
	r.tlsSpec, r.tlsHost = spec, host
	r.tlsConf.Store(conf)
	return nil
}

// reopen reloads the TLS files and asks the sender for new connections.
// Bad TLS files keep the old settings, and the error says so under the
// sink's name.
func (r *reconnect) reopen(name string) error {
	var err error
	if r.tlsSpec != nil {
		var conf *tls.Config
		if conf, err = loadTLS(r.tlsSpec, r.tlsHost); err == nil {
			r.tlsConf.Store(conf)
		} else {
			err = fmt.Errorf("%s: reopen: %w", name, err)
		}
	}
	r.fresh.Store(true)
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return err
}

// takeFresh reports, once, that reopen asked for new connections.
func (r *reconnect) takeFresh() bool { return r.fresh.Swap(false) }

// wait sleeps for a backoff, cut short by reopen or by ctx (the end of
// the drain).
func (r *reconnect) wait(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-r.kick:
	case <-ctx.Done():
	}
}

// senderErr is a network sink's last delivery failure: set by its sender
// goroutine, read by Sync and Close; nil once it delivers again.
type senderErr struct {
	errMu   sync.Mutex
	lastErr error
}

func (e *senderErr) setErr(err error) {
	e.errMu.Lock()
	e.lastErr = err
	e.errMu.Unlock()
}

func (e *senderErr) lastError() error {
	e.errMu.Lock()
	defer e.errMu.Unlock()
	return e.lastErr
}

// closeCause says why events were left undelivered at close: the last
// failure, or the drain time running out while none was seen.
func (e *senderErr) closeCause() error {
	if err := e.lastError(); err != nil {
		return err
	}
	return errors.New("drain time up")
}
