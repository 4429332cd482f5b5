package sink

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
)

// Debian's logrotate rotates a file sink twice, with the shipped
// configuration (systemd/connlogd.logrotate: create mode, delaycompress,
// postrotate signalling the daemon), while about 300 events a second are
// written. The postrotate here signals this test process with SIGUSR1,
// and the test calls Reopen on it as the daemon does. Across the files,
// no line may be lost, broken or written twice.
func TestLogrotate(t *testing.T) {
	bin, err := exec.LookPath("logrotate")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/logrotate"); serr == nil {
			bin, err = "/usr/sbin/logrotate", nil
		}
	}
	needComponent(t, "logrotate (Debian package logrotate)", err)
	if os.Geteuid() != 0 {
		// logrotate gives the new file the old one's owner: a chown.
		needComponent(t, "root", fmt.Errorf("running as uid %d", os.Geteuid()))
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "events.json")
	shipped, err := os.ReadFile("../systemd/connlogd.logrotate")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(shipped)
	for old, repl := range map[string]string{
		"/var/log/connlogd/*.json":                                       filepath.Join(dir, "*.json"),
		"systemctl kill --signal=USR1 --kill-whom=main connlogd.service": fmt.Sprintf("kill -USR1 %d", os.Getpid()),
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("systemd/connlogd.logrotate no longer contains %q", old)
		}
		conf = strings.ReplaceAll(conf, old, repl)
	}
	confPath := filepath.Join(dir, "logrotate.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	tee, err := New([]config.Sink{{Type: config.SinkFile, Path: path}}, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	defer tee.Close()

	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	reopened := make(chan error, 10)
	stopSig := make(chan struct{})
	var sigWG sync.WaitGroup
	sigWG.Add(1)
	go func() {
		defer sigWG.Done()
		for {
			select {
			case <-usr1:
				reopened <- tee.Reopen()
			case <-stopSig:
				return
			}
		}
	}()

	// The writer: ~300 events a second, synced every 30 as a poll would.
	stop := make(chan struct{})
	written := 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / 300)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			written++
			if err := tee.Write(seqEvent(written)); err != nil {
				t.Error(err)
				return
			}
			if written%30 == 0 {
				if err := tee.Sync(); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()

	state := filepath.Join(dir, "logrotate.state")
	for round := 1; round <= 2; round++ {
		time.Sleep(1500 * time.Millisecond)
		out, err := exec.Command(bin, "-f", "-s", state, confPath).CombinedOutput()
		if err != nil {
			t.Fatalf("logrotate round %d: %v: %s", round, err, out)
		}
		select {
		case err := <-reopened:
			if err != nil {
				t.Fatalf("Reopen after round %d: %v", round, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no SIGUSR1 from logrotate's postrotate in round %d", round)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("round %d: logrotate created the file with mode %v, want 0640", round, fi.Mode().Perm())
		}
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	close(stopSig)
	sigWG.Wait()
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}

	// After two rounds: events.json, events.json.1 and events.json.2.gz.
	seen := make(map[uint64]int, written)
	files := []string{path + ".2.gz", path + ".1", path}
	for _, f := range files {
		n := readEventFile(t, f, seen)
		t.Logf("%s: %d events", filepath.Base(f), n)
		if n == 0 {
			t.Errorf("%s holds no events", f)
		}
	}
	for i := 1; i <= written; i++ {
		if seen[uint64(i)] != 1 {
			t.Errorf("event %d found %d times", i, seen[uint64(i)])
		}
	}
	if len(seen) != written {
		t.Errorf("%d distinct events in the files, %d written", len(seen), written)
	}
	t.Logf("%d events written across two rotations, all found once, every line whole", written)
}

// readEventFile counts the events of a (possibly gzipped) file by cookie,
// failing on any line that is not one whole event.
func readEventFile(t *testing.T, path string, seen map[uint64]int) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Errorf("%s ends in a partial line", path)
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		var ev struct {
			Event  string
			Cookie uint64
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Event != "appeared" || ev.Cookie == 0 {
			t.Errorf("%s: broken line %q (%v)", path, sc.Text(), err)
			continue
		}
		seen[ev.Cookie]++
		n++
	}
	return n
}
