package main

import (
	"fmt"
	"log/slog"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// notifier speaks systemd's sd_notify protocol when NOTIFY_SOCKET is set
// (Type=notify), and does nothing otherwise.
type notifier struct {
	log *slog.Logger
	// dog is the watchdog ping period, WatchdogSec/2; 0 when off.
	dog    time.Duration
	warned bool
}

func newNotifier(log *slog.Logger) *notifier {
	n := &notifier{log: log}
	// false: keep NOTIFY_SOCKET and WATCHDOG_USEC set; the daemon sends
	// for its whole life.
	if d, err := sd.SdWatchdogEnabled(false); err == nil && d > 0 {
		n.dog = d / 2
	}
	return n
}

// watchdogPeriod is the period of the pings; 0 when the watchdog is off.
func (n *notifier) watchdogPeriod() time.Duration { return n.dog }

func (n *notifier) send(state string) {
	if _, err := sd.SdNotify(false, state); err != nil && !n.warned {
		n.warned = true
		n.log.Warn("sd_notify failed", "err", err)
	}
}

func (n *notifier) Ready() { n.send(sd.SdNotifyReady) }

func (n *notifier) Watchdog() {
	if n.dog > 0 {
		n.send(sd.SdNotifyWatchdog)
	}
}

func (n *notifier) Stopping() { n.send(sd.SdNotifyStopping) }

// Reloading announces a reload; systemd wants the monotonic time with it.
func (n *notifier) Reloading() {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	usec := ts.Sec*1e6 + ts.Nsec/1e3
	n.send(fmt.Sprintf("%s\nMONOTONIC_USEC=%d", sd.SdNotifyReloading, usec))
}
