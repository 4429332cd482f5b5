package main

import (
	"os"
	"runtime"
)

// oneProc runs the daemon's goroutines on one processor (GOMAXPROCS 1)
// unless the GOMAXPROCS environment variable says otherwise, as
// node_exporter does by default and for the same reason: the daemon's
// work is one loop, with goroutines beside it that mostly wait (destroy
// readers, the dump worker, sinks). With two processors, each hand-off
// between them woke the other's idle thread, which spun, polled and
// slept again: at full churn 8,400 context switches a second and a fifth
// of the daemon's CPU in the scheduler. On one, a hand-off is a switch of
// goroutines on the same thread. Measured with both settings watching
// the same connections (bench/churn/dual.sh, 10k–14k connections a
// second): 0.77–0.86 of the CPU per connection, the same capture and
// latency. The start-up line logs the setting (procs).
func oneProc() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}
