package sink

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/internal/proctest"
)

// receiver is a log receiver (rsyslogd, syslog-ng) the test runs as a
// child process in the foreground, its output appended to a file.
type receiver struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited,
	err  error         // with this
}

// startReceiver starts cmd, named name in messages, with its stdout and
// stderr appended to logPath, and stops it at cleanup. It waits up to
// timeout for ready (which reads /proc or the file system, so that no
// probe message lands in the output); it fails the test, with the log,
// if the process exits first or is not ready in time (notReady says what
// it did not do).
func startReceiver(t *testing.T, name string, cmd *exec.Cmd, logPath string, timeout time.Duration, ready func() bool, notReady string) *receiver {
	t.Helper()
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	r := &receiver{cmd: cmd, done: make(chan struct{})}
	go func() { r.err = cmd.Wait(); close(r.done) }()
	t.Cleanup(r.stop)
	ok := waitUntil(timeout, func() bool {
		select {
		case <-r.done:
			r.cmd = nil
			stderr, _ := os.ReadFile(logPath)
			t.Fatalf("%s exited at start-up (%v): %s", name, r.err, stderr)
		default:
		}
		return ready()
	})
	if !ok {
		stderr, _ := os.ReadFile(logPath)
		t.Fatalf("%s in %v: %s", notReady, timeout, stderr)
	}
	return r
}

// stop ends the receiver (proctest.Terminate) and waits for it; a
// second call does nothing.
func (r *receiver) stop() {
	if r == nil || r.cmd == nil {
		return
	}
	proctest.Terminate(r.cmd.Process, r.done, 15*time.Second)
	r.cmd = nil
}

// completeLines returns the lines of the file at path that a receiver
// has finished writing: a line still being written has no newline yet.
func completeLines(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(data, '\n')
	if i < 0 {
		return nil
	}
	return strings.Split(string(data[:i]), "\n")
}

// spoolWhileDown writes events 0000 to 0299 (gapAt) to a new sink of
// spec, whose receiver (named what) is down, and checks that the spool
// keeps them all, across the close that cannot deliver them.
func spoolWhileDown(t *testing.T, spec config.Sink, what string) {
	t.Helper()
	tee := otlpTee(t, spec)
	for i := range 300 {
		if err := tee.Write(gapAt(fmt.Sprintf("%04d", i))); err != nil {
			t.Fatal(err)
		}
	}
	st := tee.Stats()[0]
	if st.Queued != 300 || st.Spool == nil || st.Spool.Events != 300 {
		t.Fatalf("with %s down: %+v %v", what, st, st.Spool)
	}
	if err := tee.Close(); err == nil || !strings.Contains(err.Error(), "stay in the spool") {
		t.Fatalf("close with %s down: %v", what, err)
	}
	if st := tee.Stats()[0]; st.Dropped != 0 {
		t.Fatalf("dropped at close: %+v", st)
	}
}
