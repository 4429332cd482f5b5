package sink

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/slim/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/slim/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/slim/otlp/logs/v1"
	"google.golang.org/protobuf/proto"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/internal/otelcoltest"
)

// otlpReceiver is a scripted OTLP/HTTP receiver: answer decides each
// request's status (and headers); accepted requests' records are kept.
type otlpReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	reqs     int
	records  []*logspb.LogRecord
	resource []*commonpb.KeyValue
	headers  []http.Header
	times    []time.Time
	answer   func(n int, w http.ResponseWriter) bool // true: accepted
}

func newOTLPReceiver(t *testing.T, answer func(n int, w http.ResponseWriter) bool) *otlpReceiver {
	r := &otlpReceiver{answer: answer}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/logs" || req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "bad request line", http.StatusNotFound)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		data, err := io.ReadAll(body)
		var m collogspb.ExportLogsServiceRequest
		if err == nil {
			err = proto.Unmarshal(data, &m)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		n := r.reqs
		r.reqs++
		r.headers = append(r.headers, req.Header.Clone())
		r.times = append(r.times, time.Now())
		r.mu.Unlock()
		if r.answer != nil && !r.answer(n, w) {
			return
		}
		r.mu.Lock()
		for _, rl := range m.ResourceLogs {
			r.resource = rl.Resource.Attributes
			for _, sl := range rl.ScopeLogs {
				r.records = append(r.records, sl.LogRecords...)
			}
		}
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collogspb.ExportLogsServiceResponse{})
		w.Write(out)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *otlpReceiver) got() []*logspb.LogRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*logspb.LogRecord(nil), r.records...)
}

func (r *otlpReceiver) requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reqs
}

// downAndUp returns a receiver that is always unavailable and one that
// takes everything.
func downAndUp(t *testing.T) (down, up *otlpReceiver) {
	down = newOTLPReceiver(t, func(n int, w http.ResponseWriter) bool {
		w.WriteHeader(http.StatusServiceUnavailable)
		return false
	})
	return down, newOTLPReceiver(t, nil)
}

func otlpTee(t *testing.T, spec config.Sink) *Tee {
	t.Helper()
	tee, err := Open([]config.Sink{spec}, Options{Host: "web-1", Version: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	return tee
}

func kv(v *commonpb.AnyValue) map[string]*commonpb.AnyValue {
	m := map[string]*commonpb.AnyValue{}
	for _, e := range v.GetKvlistValue().GetValues() {
		m[e.Key] = e.Value
	}
	return m
}

func TestOTLPRecord(t *testing.T) {
	r := newOTLPReceiver(t, nil)
	tee := otlpTee(t, config.Sink{Type: config.SinkOTLP, OTLP: &config.OTLP{
		Endpoint: r.URL, Compression: "gzip", Headers: map[string]string{"X-Tenant": "ops"}}})
	evs := benchEvents()
	for i := range evs {
		if err := tee.Write(&evs[i]); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return len(r.got()) == 4 })
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	recs := r.got()
	for i, rec := range recs {
		if rec.EventName != evs[i].Kind.String() || rec.TimeUnixNano != uint64(t0.UnixNano()) {
			t.Errorf("record %d: event name %q, time %d", i, rec.EventName, rec.TimeUnixNano)
		}
	}
	if recs[3].SeverityNumber != logspb.SeverityNumber_SEVERITY_NUMBER_WARN || recs[0].SeverityNumber != logspb.SeverityNumber_SEVERITY_NUMBER_INFO {
		t.Errorf("severities %v, %v", recs[0].SeverityNumber, recs[3].SeverityNumber)
	}
	// The body is the native event, keys as in the JSON; the largest
	// cookie stays exact.
	b := kv(recs[2].Body)
	if b["event"].GetStringValue() != "closed" || b["host"].GetStringValue() != "web-1" ||
		b["cookie"].GetStringValue() != "18446744073709551615" {
		t.Errorf("closed body: %v", recs[2].Body)
	}
	if b["tcp_info"] != nil && b["tcp_info"].GetKvlistValue() == nil {
		t.Errorf("nested object not a kvlist: %v", b["tcp_info"])
	}
	res := map[string]string{}
	for _, a := range r.resource {
		res[a.Key] = a.Value.GetStringValue()
	}
	if res["host.name"] != "web-1" || res["service.name"] != "connlogd" || res["service.version"] != "1.2.3" {
		t.Errorf("resource %v", res)
	}
	if h := r.headers[0]; h.Get("X-Tenant") != "ops" || h.Get("Content-Encoding") != "gzip" {
		t.Errorf("headers %v", h)
	}
	st := tee.Stats()[0]
	if st.Written != 4 || st.Dropped != 0 || st.Queued != 0 || st.Spool != nil {
		t.Errorf("stats %+v", st)
	}
}

// TestOTLPRetryAfter: a 503 with Retry-After is honoured, then the batch
// is sent again and nothing is lost.
func TestOTLPRetryAfter(t *testing.T) {
	r := newOTLPReceiver(t, func(n int, w http.ResponseWriter) bool {
		if n < 2 {
			code := http.StatusServiceUnavailable
			if n == 1 {
				code = http.StatusTooManyRequests
			}
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(code)
			return false
		}
		return true
	})
	tee := otlpTee(t, config.Sink{Type: config.SinkOTLP, OTLP: &config.OTLP{Endpoint: r.URL}})
	defer tee.Close()
	for i := range 10 {
		tee.Write(gapAt(strconv.Itoa(i)))
	}
	waitFor(t, func() bool { return len(r.got()) == 10 })
	for i, rec := range r.got() {
		if kv(rec.Body)["reason"].GetStringValue() != strconv.Itoa(i) {
			t.Fatalf("record %d out of order: %v", i, rec.Body)
		}
	}
	r.mu.Lock()
	gaps := []time.Duration{r.times[1].Sub(r.times[0]), r.times[2].Sub(r.times[1])}
	r.mu.Unlock()
	for i, g := range gaps {
		if g < 900*time.Millisecond {
			t.Errorf("retry %d came %v after the Retry-After: 1 answer", i+1, g)
		}
	}
	waitFor(t, func() bool { st := tee.Stats()[0]; return st.Written == 10 && st.Queued == 0 })
	if st := tee.Stats()[0]; st.Dropped != 0 || st.Errors != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestOTLPBadRequest: a 400 drops the batch, counted as rejected, and
// it is not sent again.
func TestOTLPBadRequest(t *testing.T) {
	r := newOTLPReceiver(t, func(n int, w http.ResponseWriter) bool {
		if n == 0 {
			http.Error(w, "no", http.StatusBadRequest)
			return false
		}
		return true
	})
	tee := otlpTee(t, config.Sink{Type: config.SinkOTLP, OTLP: &config.OTLP{Endpoint: r.URL}})
	defer tee.Close()
	tee.Write(gapAt("first"))
	waitFor(t, func() bool { return tee.Stats()[0].DroppedBy[DropRejected] == 1 })
	tee.Write(gapAt("second"))
	waitFor(t, func() bool { return len(r.got()) == 1 })
	if got := kv(r.got()[0].Body)["reason"].GetStringValue(); got != "second" {
		t.Fatalf("received %q; the refused batch came again", got)
	}
	// The receiver has the request before the sink has its answer: wait
	// for the sink to count it.
	waitFor(t, func() bool { st := tee.Stats()[0]; return st.Written == 1 && st.Queued == 0 })
	st := tee.Stats()[0]
	if st.Written != 1 || st.Dropped != 1 || r.requests() != 2 {
		t.Fatalf("stats %+v after %d requests", st, r.requests())
	}
	if DropRejected.String() != "rejected" || DropSpoolFull.String() != "spool_full" {
		t.Fatalf("reason names %s, %s", DropRejected, DropSpoolFull)
	}
}

// TestOTLPSpoolOutage: the receiver is away while events come; they wait
// in the spool, survive a stop and a new start on the same directory,
// and all arrive once the receiver is back.
func TestOTLPSpoolOutage(t *testing.T) {
	dir := t.TempDir() + "/spool"
	// Two receivers, so that a request of the first run that the
	// receiver handles late cannot be taken.
	down, r := downAndUp(t)
	spec := config.Sink{Type: config.SinkOTLP, OTLP: &config.OTLP{Endpoint: down.URL},
		DrainTimeout: 200 * time.Millisecond, Spool: config.Spool{Dir: dir}}
	tee := otlpTee(t, spec)
	for i := range 500 {
		if err := tee.Write(gapAt(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	st := tee.Stats()[0]
	if st.Queued != 500 || st.Spool == nil || st.Spool.Events != 500 || st.Spool.Oldest.IsZero() {
		t.Fatalf("stats while the receiver is away: %+v %+v", st, st.Spool)
	}
	if err := tee.Close(); err == nil {
		t.Fatal("close with undelivered events said nothing")
	}
	if st := tee.Stats()[0]; st.Dropped != 0 {
		t.Fatalf("a spooled sink dropped at close: %+v", st)
	}

	spec.OTLP = &config.OTLP{Endpoint: r.URL}
	tee = otlpTee(t, spec)
	for i := 500; i < 600; i++ {
		tee.Write(gapAt(fmt.Sprint(i)))
	}
	waitFor(t, func() bool { return len(r.got()) >= 600 })
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	for i, rec := range r.got() {
		if kv(rec.Body)["reason"].GetStringValue() != fmt.Sprint(i) {
			t.Fatalf("record %d is %v (%d records in %d requests; stats %+v %v)", i, rec.Body, len(r.got()), r.requests(), tee.Stats()[0], tee.Stats()[0].Spool)
		}
	}
	st = tee.Stats()[0]
	if st.Written != 600 || st.Queued != 0 || st.Spool.Recovered != 500 || st.Spool.Events != 0 {
		t.Fatalf("stats after delivery: %+v %+v", st, st.Spool)
	}
}

func TestOTLPQueueFull(t *testing.T) {
	r := newOTLPReceiver(t, func(int, http.ResponseWriter) bool { return true })
	r.Close() // nobody listens
	tee := otlpTee(t, config.Sink{Type: config.SinkOTLP, OTLP: &config.OTLP{Endpoint: r.URL},
		QueueSize: 10, DrainTimeout: 50 * time.Millisecond})
	for i := range 15 {
		tee.Write(gapAt(fmt.Sprint(i)))
	}
	st := tee.Stats()[0]
	if st.Dropped != 5 || st.DroppedBy[DropQueueFull] != 5 || st.Queued != 10 {
		t.Fatalf("stats %+v", st)
	}
	if err := tee.Close(); err == nil {
		t.Fatal("close lost events silently")
	}
	if st := tee.Stats()[0]; st.Dropped != 15 || st.DroppedBy[DropShutdown] != 10 || st.Queued != 0 {
		t.Fatalf("stats after close %+v", st)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"3":                             3 * time.Second,
		"99999":                         maxRetryAfter,
		"Thu, 01 Jan 2026 00:00:30 GMT": 30 * time.Second,
		"Wed, 31 Dec 2025 00:00:30 GMT": 0,
		"soon":                          0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("%q: %v, want %v", in, got, want)
		}
	}
}

func TestJSONAny(t *testing.T) {
	v, err := jsonAny([]byte(`{"a":1,"b":"x","c":{"d":[true,null,1.5]},"e":18446744073709551615,"f":-2}`))
	if err != nil {
		t.Fatal(err)
	}
	m := kv(v)
	arr := kv(m["c"])["d"].GetArrayValue().GetValues()
	if m["a"].GetIntValue() != 1 || m["b"].GetStringValue() != "x" || len(arr) != 3 || !arr[0].GetBoolValue() ||
		arr[1].Value != nil || arr[2].GetDoubleValue() != 1.5 || m["e"].GetStringValue() != "18446744073709551615" || m["f"].GetIntValue() != -2 {
		t.Fatalf("%v", v)
	}
	for _, bad := range []string{`[1]`, `{"a":`, `"x"`, ``} {
		if _, err := jsonAny([]byte(bad)); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

// FuzzJSONAny: the body parser accepts exactly the JSON objects
// encoding/json accepts, and maps them to the same values.
func FuzzJSONAny(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":"x\"y\u00e9","c":{"d":[true,null,1.5e3]},"e":18446744073709551615,"f":-2}`, `{}`, `{"a":[]}`, `{"a":-}`, `{"a":01}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		v, err := jsonAny(in)
		var ref map[string]any
		dec := json.NewDecoder(bytes.NewReader(in))
		dec.UseNumber()
		refErr := dec.Decode(&ref)
		if !json.Valid(in) {
			refErr = errors.New("not valid JSON")
		}
		if refErr == nil && ref == nil {
			refErr = errors.New("null")
		}
		if (err == nil) != (refErr == nil) {
			t.Fatalf("%q: jsonAny error %v, encoding/json error %v", in, err, refErr)
		}
		if err != nil {
			return
		}
		if got, want := otelcoltest.Value(v), jsonNorm(ref); !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n got %#v\nwant %#v", in, got, want)
		}
	})
}

// jsonNorm maps a value encoding/json decoded with UseNumber the way the
// otlp sink maps JSON: whole numbers to int64 (a string beyond), other
// numbers to float64 (a string when out of range).
func jsonNorm(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = jsonNorm(e)
		}
		return out
	case []any:
		out := []any{}
		for _, e := range x {
			out = append(out, jsonNorm(e))
		}
		return out
	case json.Number:
		s := string(x)
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i
		}
		if !strings.ContainsAny(s, ".eE") {
			return s
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) {
			return f
		}
		return s
	}
	return v
}

// TestOTLPSpoolReload: a reload opens the new sinks before it closes the
// old ones; both share the spool, the new one sends only once the old
// one has stopped, and every event arrives once, in order.
func TestOTLPSpoolReload(t *testing.T) {
	// The old configuration sends to down, the new one to r: a late
	// request of the old sink cannot be taken.
	down, r := downAndUp(t)
	spec := config.Sink{Type: config.SinkOTLP, OTLP: &config.OTLP{Endpoint: down.URL},
		DrainTimeout: 200 * time.Millisecond, Spool: config.Spool{Dir: t.TempDir() + "/spool"}}
	old := otlpTee(t, spec)
	for i := range 100 {
		old.Write(gapAt(fmt.Sprint(i)))
	}
	spec.OTLP = &config.OTLP{Endpoint: r.URL}
	tee := otlpTee(t, spec) // the new configuration's sinks
	for i := 100; i < 150; i++ {
		tee.Write(gapAt(fmt.Sprint(i)))
	}
	if err := old.Close(); err == nil {
		t.Fatal("the old sink's close said nothing of the events left in the spool")
	}
	spec.Spool.MaxBytes = config.DefaultSpoolBytes * 2
	if _, err := Open([]config.Sink{spec}, Options{Host: "h"}); err == nil || !strings.Contains(err.Error(), "on restart only") {
		t.Fatalf("a second sink on the spool with another max_bytes: %v", err)
	}
	waitFor(t, func() bool { return len(r.got()) >= 150 })
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	got := r.got()
	if len(got) != 150 {
		t.Fatalf("%d records, want 150", len(got))
	}
	for i, rec := range got {
		if kv(rec.Body)["reason"].GetStringValue() != fmt.Sprint(i) {
			t.Fatalf("record %d is %v", i, rec.Body)
		}
	}
	// The spool is closed once both have let go: it opens again.
	again := otlpTee(t, spec)
	again.Close()
}
