// Package otelcoltest runs a real OpenTelemetry Collector for tests: the
// command in ./collector (the collector's own otelcol, OTLP receiver and
// file exporter modules, one release, in a Go module of its own so that
// connlogd's module never depends on the collector's tree), built once
// into a cache directory and reused while its sources are unchanged,
// started on 127.0.0.1 with a configuration the test writes, exporting
// to a file the test reads.
//
// Building takes minutes on a small machine: tests that need it call
// Binary early, and it builds at most once per machine and source
// version (an flock keeps parallel test binaries from building twice).
package otelcoltest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/slim/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/slim/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/slim/otlp/logs/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"golang.org/x/sys/unix"
)

// srcDir is the collector command's source, next to this file.
func srcDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "collector")
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary returns the collector's path, building it if needed. A failure
// fails the test: the collector's modules are in the module cache (CI
// downloads them) and it must build.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { binPath, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("build the OpenTelemetry Collector: %v", buildErr)
	}
	return binPath
}

func build() (string, error) {
	src := srcDir()
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	v, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("go env: %w", err)
	}
	h.Write(v)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "connlogd-otelcol", hex.EncodeToString(h.Sum(nil))[:16])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "otelcol")
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", dir, err)
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	tmp := bin + ".tmp"
	cmd := exec.Command("go", "build", "-trimpath", "-o", tmp, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %w\n%s", src, err, out)
	}
	return bin, os.Rename(tmp, bin)
}

// Collector is a running collector.
type Collector struct {
	t      testing.TB
	bin    string
	dir    string
	Addr   string // 127.0.0.1:port of the OTLP/HTTP receiver
	Out    string // the file exporter's file
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *bytes.Buffer
	mu     sync.Mutex
}

// Start runs a collector with an OTLP/HTTP receiver on a free loopback
// port and a file exporter, and stops it at cleanup.
func Start(t testing.TB) *Collector {
	t.Helper()
	c := &Collector{t: t, bin: Binary(t), dir: t.TempDir()}
	c.Out = filepath.Join(c.dir, "logs.json")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.Addr = l.Addr().String()
	l.Close()
	conf := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      http:
        endpoint: %s
exporters:
  file:
    path: %s
    flush_interval: 100ms
    append: true
service:
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [file]
`, c.Addr, c.Out)
	if err := os.WriteFile(filepath.Join(c.dir, "config.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Restart()
	t.Cleanup(c.Stop)
	return c
}

// Endpoint is the URL an otlp sink is given.
func (c *Collector) Endpoint() string { return "http://" + c.Addr }

// Restart starts the collector (again) and waits until its receiver
// accepts connections.
func (c *Collector) Restart() {
	c.t.Helper()
	c.mu.Lock()
	c.stderr = &bytes.Buffer{}
	c.cmd = exec.Command(c.bin, "--config", filepath.Join(c.dir, "config.yaml"))
	c.cmd.Stdout = c.stderr
	c.cmd.Stderr = c.stderr
	c.done = make(chan struct{})
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		conn, err := net.DialTimeout("tcp", c.Addr, time.Second)
		if err == nil {
			conn.Close()
			return
		}
		select {
		case <-done:
			c.t.Fatalf("collector exited at start: %s", c.logs())
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("collector not listening on %s after 2 minutes: %s", c.Addr, c.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Collector) logs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

// Stop stops the collector with SIGTERM (it flushes its exporters) and
// waits for it.
func (c *Collector) Stop() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		c.t.Errorf("collector did not stop within a minute of SIGTERM")
	}
}

// Records returns every log record in the exporter's file, with its
// resource's attributes, in the order written. The file exporter writes
// one OTLP/JSON ExportLogsServiceRequest per line; a line still being
// written is left for the next call.
func (c *Collector) Records() ([]Record, error) {
	data, err := os.ReadFile(c.Out)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[:i+1]
	} else {
		data = nil
	}
	var out []Record
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<20), 64<<20)
	for sc.Scan() {
		var req collogspb.ExportLogsServiceRequest
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(sc.Bytes(), &req); err != nil {
			return nil, fmt.Errorf("exporter line is not OTLP/JSON: %w", err)
		}
		for _, rl := range req.ResourceLogs {
			res := map[string]string{}
			for _, a := range rl.GetResource().GetAttributes() {
				res[a.Key] = a.Value.GetStringValue()
			}
			for _, sl := range rl.ScopeLogs {
				for _, r := range sl.LogRecords {
					out = append(out, Record{Resource: res, LogRecord: r})
				}
			}
		}
	}
	return out, sc.Err()
}

// Record is one log record the collector exported.
type Record struct {
	Resource map[string]string
	*logspb.LogRecord
}

// Body returns the record's body as a map of its top-level keys.
func (r Record) Body() map[string]any { return anyMap(r.LogRecord.GetBody()) }

// Value turns an OTLP AnyValue, as the collector exports it or as a
// sink builds it, into plain Go values: map[string]any for a kvlist,
// []any for an array, string, int64, float64, bool, []byte or nil. It is
// the one reading of AnyValue the tests compare against.
func Value(v *commonpb.AnyValue) any { return anyValue(v) }

// Str returns a top-level body field as text (numbers in decimal); ""
// when absent.
func (r Record) Str(key string) string {
	v, ok := r.Body()[key]
	switch {
	case !ok || v == nil:
		return ""
	case isString(v):
		return v.(string)
	}
	return fmt.Sprint(v)
}

func isString(v any) bool { _, ok := v.(string); return ok }

// anyValue turns an AnyValue into plain Go values: map[string]any for a
// kvlist, []any for an array, string, int64, float64, bool, []byte or
// nil.
func anyValue(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue
	case *commonpb.AnyValue_ArrayValue:
		out := make([]any, 0, len(x.ArrayValue.GetValues()))
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, anyValue(e))
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		return anyMap(v)
	}
	return nil
}

func anyMap(v *commonpb.AnyValue) map[string]any {
	m := map[string]any{}
	for _, kv := range v.GetKvlistValue().GetValues() {
		m[kv.Key] = anyValue(kv.Value)
	}
	return m
}
