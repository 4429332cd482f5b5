package sink

// The otlp sink speaks OTLP/HTTP with protobuf encoding (the OTLP
// specification's "OTLP/HTTP" section): a POST of an
// ExportLogsServiceRequest to <endpoint>/v1/logs. The messages are the
// official generated types of go.opentelemetry.io/proto/slim/otlp (the
// OpenTelemetry project's own, without the gRPC stubs that the non-slim
// module drags in); only the HTTP exchange around them is written here,
// since an OTLP exporter library would bring the OpenTelemetry SDK's log
// pipeline, its own queue and retry policy, in place of the sink's.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	collogspb "go.opentelemetry.io/proto/slim/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/slim/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/slim/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/slim/otlp/resource/v1"
	"go.uber.org/zap/zapcore"
	"google.golang.org/protobuf/proto"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/spool"
)

const (
	// otlpBatchEvents and otlpBatchBytes bound one request: well under
	// the collector's default 20 MiB body limit, large enough that a
	// backlog goes out in few requests.
	otlpBatchEvents = 2048
	otlpBatchBytes  = 2 << 20
	// otlpTimeout bounds one request, connection and TLS handshake
	// included.
	otlpTimeout = 30 * time.Second
	// maxRetryAfter caps a receiver's Retry-After: a typo in its
	// configuration must not park the sender for a day.
	maxRetryAfter = 10 * time.Minute
	// spoolSyncEvery is how often a spool's new records are fsynced
	// (the policy of package spool: appends reach the page cache at
	// once, the disk within this time).
	spoolSyncEvery = time.Second
	// otlpMsgHeader is the bytes before the event's JSON in a queued
	// message: time (8), severity (1), kind length (1).
	otlpMsgHeader = 10
)

// otlpSink sends each event as one OTLP LogRecord. Write only stores the
// event (in memory, or in the spool on disk); a sender goroutine posts
// what is stored and removes it once the receiver answers 2xx.
type otlpSink struct {
	name     string
	url      string
	gzip     bool
	headers  map[string]string
	host     string
	version  string
	tlsSpec  *config.TLS
	tlsHost  string
	tlsConf  atomic.Pointer[tls.Config]
	store    otlpStore
	spooled  bool
	errFull  error
	msg      []byte // the producer's scratch
	drain    time.Duration
	closing  chan struct{}
	ctx      context.Context
	abort    context.CancelFunc
	done     chan struct{}
	kick     chan struct{}
	reload   atomic.Bool
	once     sync.Once
	started  bool
	timer    *time.Timer
	recover  uint64 // events found in the spool at start
	openDrop uint64

	// The sender goroutine's own.
	arena   bodyArena
	recs    []*logspb.LogRecord
	client  *http.Client
	b       batch
	body    []byte
	zbuf    bytes.Buffer
	zw      *gzip.Writer
	fails   int
	backoff func(fails int) time.Duration

	errMu   sync.Mutex
	lastErr error

	written atomic.Uint64
	dropped drops
	errors  atomic.Uint64
}

// newOTLPSink opens the sink (and its spool, whose leftovers from a
// previous run are sent first); start starts its sender.
func newOTLPSink(s *config.Sink, opt Options) (*otlpSink, error) {
	if s.OTLP == nil {
		return nil, errors.New("no endpoint")
	}
	if err := config.CheckOTLP(s); err != nil {
		return nil, err
	}
	o := &otlpSink{
		name:    "sink otlp " + s.OTLP.Endpoint,
		url:     strings.TrimSuffix(s.OTLP.Endpoint, "/") + "/v1/logs",
		gzip:    s.OTLP.Compression == "gzip",
		headers: s.OTLP.Headers,
		host:    opt.Host,
		version: opt.Version,
		drain:   s.DrainTimeout,
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		kick:    make(chan struct{}, 1),
		backoff: func(fails int) time.Duration { return jitteredBackoff(fails, minBackoff, maxBackoff) },
	}
	if o.drain <= 0 {
		o.drain = config.DefaultDrainTimeout
	}
	o.ctx, o.abort = context.WithCancel(context.Background())
	if strings.HasPrefix(s.OTLP.Endpoint, "https:") {
		o.tlsSpec = &s.TLS
		u, err := urlHost(s.OTLP.Endpoint)
		if err != nil {
			return nil, err
		}
		o.tlsHost = u
		conf, err := loadTLS(o.tlsSpec, o.tlsHost)
		if err != nil {
			return nil, err
		}
		o.tlsConf.Store(conf)
	}
	if s.Spool.Dir != "" {
		max := s.Spool.MaxBytes
		if max == 0 {
			max = config.DefaultSpoolBytes
		}
		sp, err := acquireSpool(s.Spool)
		if err != nil {
			return nil, err
		}
		o.store = &spoolStore{sp: sp}
		o.spooled = true
		o.recover = sp.Stats().Events
		o.errFull = fmt.Errorf("%s: spool full (max_bytes %d): oldest events dropped", o.name, sp.max)
	} else {
		limit := s.QueueSize
		if limit <= 0 {
			limit = config.DefaultQueueSize
		}
		o.store = newMemStore(limit)
		o.errFull = fmt.Errorf("%s: queue full (%d events): events dropped", o.name, limit)
	}
	o.client = o.newClient()
	return o, nil
}

func urlHost(endpoint string) (string, error) {
	req, err := http.NewRequest(http.MethodPost, endpoint, nil)
	if err != nil {
		return "", fmt.Errorf("endpoint: %w", err)
	}
	return req.URL.Hostname(), nil
}

// newClient returns an HTTP client with the current TLS settings. No
// proxy from the environment: a daemon's environment is not the
// administrator's shell, and the endpoint says where events go.
func (o *otlpSink) newClient() *http.Client {
	d := &net.Dialer{Timeout: writeTimeout}
	tr := &http.Transport{
		DialContext:           d.DialContext,
		TLSClientConfig:       o.tlsConf.Load(),
		TLSHandshakeTimeout:   writeTimeout,
		ForceAttemptHTTP2:     o.tlsConf.Load() != nil,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: otlpTimeout,
		DisableCompression:    true,
	}
	return &http.Client{Transport: tr, Timeout: otlpTimeout}
}

func (o *otlpSink) start() {
	o.started = true
	go o.run()
}

// write stores one event; line is its JSON with the newline. With a
// spool, the event is in the spool file when write returns.
func (o *otlpSink) write(ev *event.Event, line []byte) error {
	ent := entry(ev)
	line = bytes.TrimSuffix(line, []byte{'\n'})
	m := o.msg[:0]
	m = binary.LittleEndian.AppendUint64(m, uint64(ent.Time.UnixNano()))
	m = append(m, byte(ent.Level+1), byte(len(ent.Message)))
	m = append(m, ent.Message...)
	m = append(m, line...)
	o.msg = m
	dropped, err := o.store.put(m, ent.Time)
	if dropped > 0 {
		o.dropped.add(DropSpoolFull, uint64(dropped))
	}
	switch {
	case err == nil && dropped > 0:
		return o.errFull
	case errors.Is(err, errQueueFull):
		o.dropped.add(DropQueueFull, 1)
		return o.errFull
	case err != nil:
		o.dropped.add(DropOutputFailed, 1)
		return fmt.Errorf("%s: %w", o.name, err)
	}
	return nil
}

func (o *otlpSink) lose(err error) error {
	o.dropped.add(DropOutputFailed, 1)
	return fmt.Errorf("%s: %w", o.name, err)
}

// sync reports the sender's state: nil while it delivers, else why it
// cannot. It does not wait.
func (o *otlpSink) sync() error {
	o.errMu.Lock()
	defer o.errMu.Unlock()
	if o.lastErr != nil {
		return fmt.Errorf("%s: %w (%d events queued)", o.name, o.lastErr, o.store.queued())
	}
	return nil
}

func (o *otlpSink) setErr(err error) {
	o.errMu.Lock()
	o.lastErr = err
	o.errMu.Unlock()
}

// run is the sender goroutine.
func (o *otlpSink) run() {
	defer close(o.done)
	var tick <-chan time.Time
	if o.spooled {
		sp := o.store.(*spoolStore).sp
		if !sp.waitTurn(o.closing) {
			return // closed before the sink it replaced let go of the spool
		}
		defer sp.endTurn()
		t := time.NewTicker(spoolSyncEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		if !o.store.pending() {
			select {
			case <-o.store.wake():
			case <-o.kick:
			case <-tick:
				if err := o.store.sync(); err != nil {
					o.errors.Add(1)
					o.setErr(err)
				}
			case <-o.closing:
				if !o.store.pending() {
					o.finish()
					return
				}
			}
			continue
		}
		o.deliver()
		if o.ctx.Err() != nil {
			o.finish()
			return
		}
	}
}

// errRejected marks a batch the receiver refused for good (HTTP 400 and
// the like): resending it would be refused again.
var errRejected = errors.New("rejected by the receiver")

// deliver posts one batch; on a retryable failure it rewinds the store
// and waits out the backoff.
func (o *otlpSink) deliver() {
	if o.reload.Swap(false) {
		o.client.CloseIdleConnections()
		o.client = o.newClient()
		o.fails = 0
	}
	o.b.reset()
	n, corrupt, err := o.store.next(&o.b, otlpBatchEvents, otlpBatchBytes)
	if corrupt > 0 {
		o.dropped.add(DropOutputFailed, uint64(corrupt))
	}
	if err != nil {
		o.errors.Add(1)
		o.setErr(err)
		o.fails++
		o.wait(o.backoff(o.fails))
		return
	}
	if n == 0 {
		return
	}
	body, bad := o.request(&o.b)
	rejected, partial, retryAfter, err := o.post(body)
	switch {
	case err == nil:
		got, aerr := o.store.ack()
		rejected = min(rejected, got)
		badc := min(uint64(bad), got-rejected)
		o.written.Add(got - rejected - badc)
		// Records the receiver refused in an accepted batch (partial
		// success), and records that did not decode.
		o.dropped.add(DropRejected, rejected)
		o.dropped.add(DropOutputFailed, badc)
		o.fails = 0
		if aerr != nil {
			o.errors.Add(1)
			partial = aerr
		}
		o.setErr(partial)
	case errors.Is(err, errRejected):
		got, aerr := o.store.ack()
		o.dropped.add(DropRejected, got)
		o.errors.Add(1)
		o.setErr(errors.Join(err, aerr))
	default:
		o.store.rewind()
		o.errors.Add(1)
		o.setErr(err)
		o.fails++
		o.wait(max(retryAfter, o.backoff(o.fails)))
	}
}

// wait sleeps for a backoff, cut short by Reopen or the end of the drain.
func (o *otlpSink) wait(d time.Duration) {
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-o.kick:
	case <-o.ctx.Done():
	}
}

// request builds the ExportLogsServiceRequest of a batch; bad counts
// messages that did not decode (they are left out).
func (o *otlpSink) request(b *batch) ([]byte, int) {
	o.arena.reset()
	recs := o.recs[:0]
	bad := 0
	for i := range b.len() {
		r, err := o.arena.logRecord(b.msg(i))
		if err != nil {
			bad++
			continue
		}
		recs = append(recs, r)
	}
	req := &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			strKV("host.name", o.host),
			strKV("service.name", "connlogd"),
			strKV("service.version", o.version),
		}},
		ScopeLogs: []*logspb.ScopeLogs{{
			Scope:      &commonpb.InstrumentationScope{Name: "connlogd", Version: o.version},
			LogRecords: recs,
		}},
	}}}
	o.recs = recs[:0]
	var err error
	o.body, err = proto.MarshalOptions{}.MarshalAppend(o.body[:0], req)
	if err != nil {
		// Generated types with valid UTF-8 strings always marshal; a
		// string that is not UTF-8 is the one way to fail.
		return nil, b.len()
	}
	if !o.gzip {
		return o.body, bad
	}
	o.zbuf.Reset()
	if o.zw == nil {
		o.zw = gzip.NewWriter(&o.zbuf)
	} else {
		o.zw.Reset(&o.zbuf)
	}
	o.zw.Write(o.body)
	o.zw.Close()
	return o.zbuf.Bytes(), bad
}

// post sends one request. It returns how many records a 2xx answer
// refused (partial success); errRejected when the receiver refused the
// batch for good; another error (with the receiver's Retry-After, if
// any) when the batch may be sent again.
func (o *otlpSink) post(body []byte) (rejected uint64, partial error, retryAfter time.Duration, err error) {
	if body == nil {
		return 0, nil, 0, fmt.Errorf("%w: request did not encode", errRejected)
	}
	req, err := http.NewRequestWithContext(o.ctx, http.MethodPost, o.url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, 0, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", "connlogd/"+o.version)
	if o.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	for k, v := range o.headers {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap() // "Post \"url\": " repeats the sink's name
		}
		return 0, nil, 0, fmt.Errorf("post: %w", bare(err))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		var r collogspb.ExportLogsServiceResponse
		if len(data) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-protobuf") && proto.Unmarshal(data, &r) == nil {
			if ps := r.GetPartialSuccess(); ps != nil && ps.GetRejectedLogRecords() > 0 {
				return uint64(ps.GetRejectedLogRecords()), fmt.Errorf("%w: %d records: %s",
					errRejected, ps.GetRejectedLogRecords(), ps.GetErrorMessage()), 0, nil
			}
		}
		return 0, nil, 0, nil
	case retryable(c):
		return 0, nil, parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), fmt.Errorf("HTTP %s", resp.Status)
	default:
		return 0, nil, 0, fmt.Errorf("%w: HTTP %s", errRejected, resp.Status)
	}
}

// retryable reports whether a request answered with HTTP status code c
// may be sent again. The OTLP specification names 429, 502, 503 and 504;
// 401, 403, 404 and 408 are retried too, because they come from a
// receiver or proxy that is misconfigured or starting, which someone can
// fix while the events wait. Other 4xx answers (400 bad data, 413 too
// large) refuse the batch itself: they are dropped and counted.
func retryable(c int) bool {
	switch c {
	case 401, 403, 404, 408, 429:
		return true
	}
	return c >= 500
}

// parseRetryAfter reads a Retry-After header: seconds, or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseUint(v, 10, 32); err == nil {
		return min(time.Duration(s)*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}

// jitteredBackoff returns the wait before attempt fails+1: none after
// the first failure (a receiver restart costs no delay), then doubling
// from lo up to hi, with ±20% jitter so that many hosts do not retry in
// step.
func jitteredBackoff(fails int, lo, hi time.Duration) time.Duration {
	if fails <= 1 {
		return 0
	}
	d := hi
	if shift := fails - 2; shift < 30 {
		d = min(lo<<shift, hi)
	}
	return d - d/5 + rand.N(d*2/5+1)
}

// logRecord decodes a stored message into its LogRecord.
func (a *bodyArena) logRecord(m []byte) (*logspb.LogRecord, error) {
	if len(m) < otlpMsgHeader || len(m) < otlpMsgHeader+int(m[9]) {
		return nil, errors.New("short message")
	}
	ts := binary.LittleEndian.Uint64(m)
	lvl := zapcore.Level(int8(m[8]) - 1)
	kind := a.str(m[otlpMsgHeader : otlpMsgHeader+int(m[9])])
	body, err := a.jsonAny(m[otlpMsgHeader+int(m[9]):])
	if err != nil {
		return nil, err
	}
	sev, text := logspb.SeverityNumber_SEVERITY_NUMBER_INFO, "INFO"
	if lvl >= zapcore.WarnLevel {
		sev, text = logspb.SeverityNumber_SEVERITY_NUMBER_WARN, "WARN"
	}
	r := a.recs.next()
	r.TimeUnixNano, r.ObservedTimeUnixNano = ts, ts
	r.SeverityNumber, r.SeverityText = sev, text
	r.EventName, r.Body = kind, body
	return r, nil
}

func strKV(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// jsonAny turns an event's JSON (an object) into the body's AnyValue: an
// object becomes a kvlistValue with its keys in order, an array an
// arrayValue, a whole number an intValue (a string when beyond int64,
// so that it stays exact), other numbers a doubleValue.
//
// The parser is written here because encoding/json's token API, the only
// one that keeps the keys' order, cost about 60 µs per event (a third of
// the whole path's budget many times over); the input is the sink's own
// encoders' output, but it is checked all the same.
func jsonAny(line []byte) (*commonpb.AnyValue, error) {
	var a bodyArena
	return a.jsonAny(line)
}

func (a *bodyArena) jsonAny(line []byte) (*commonpb.AnyValue, error) {
	p := jsonParser{b: line, a: a}
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		return nil, errors.New("event JSON: not an object")
	}
	v, err := p.value(0)
	if err == nil {
		if p.ws(); p.i != len(p.b) {
			err = errors.New("data after the object")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("event JSON: %w", err)
	}
	return v, nil
}

type jsonParser struct {
	b []byte
	i int
	a *bodyArena
}

var errJSON = errors.New("malformed")

func (p *jsonParser) ws() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

func (p *jsonParser) value(depth int) (*commonpb.AnyValue, error) {
	if depth > 32 {
		return nil, errors.New("nested too deep")
	}
	p.ws()
	if p.i >= len(p.b) {
		return nil, io.ErrUnexpectedEOF
	}
	switch c := p.b[p.i]; {
	case c == '{':
		p.i++
		mark := len(p.a.stack)
		for first := true; ; first = false {
			p.ws()
			if p.i < len(p.b) && p.b[p.i] == '}' && first {
				p.i++
				break
			}
			k, err := p.str()
			if err != nil {
				return nil, err
			}
			if p.ws(); p.i >= len(p.b) || p.b[p.i] != ':' {
				return nil, errJSON
			}
			p.i++
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			kv := p.a.kvs.next()
			kv.Key, kv.Value = k, v
			p.a.stack = append(p.a.stack, kv)
			if p.ws(); p.i < len(p.b) && p.b[p.i] == ',' {
				p.i++
				continue
			}
			if p.i < len(p.b) && p.b[p.i] == '}' {
				p.i++
				break
			}
			return nil, errJSON
		}
		l := p.a.lists.next()
		l.Values = p.a.kvList(p.a.stack[mark:])
		p.a.stack = p.a.stack[:mark]
		v := p.a.avs.next()
		v.Value = &commonpb.AnyValue_KvlistValue{KvlistValue: l}
		return v, nil
	case c == '[':
		p.i++
		var vs []*commonpb.AnyValue
		for first := true; ; first = false {
			p.ws()
			if p.i < len(p.b) && p.b[p.i] == ']' && first {
				p.i++
				break
			}
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			vs = append(vs, v)
			if p.ws(); p.i < len(p.b) && p.b[p.i] == ',' {
				p.i++
				continue
			}
			if p.i < len(p.b) && p.b[p.i] == ']' {
				p.i++
				break
			}
			return nil, errJSON
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: vs}}}, nil
	case c == '"':
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		return p.a.strValue(s), nil
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range [...]string{"true", "false", "null"} {
			if bytes.HasPrefix(p.b[p.i:], []byte(lit)) {
				p.i += len(lit)
				switch lit {
				case "true":
					return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}, nil
				case "false":
					return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: false}}, nil
				}
				return &commonpb.AnyValue{}, nil
			}
		}
		return nil, errJSON
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	return nil, errJSON
}

// str reads a string; one with escapes or bytes that are not UTF-8 is
// decoded by encoding/json, which knows them all (they are rare in
// events).
func (p *jsonParser) str() (string, error) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return "", errJSON
	}
	start, esc := p.i, false
	for p.i++; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '\\':
			esc = true
			p.i++
		case c == '"':
			p.i++
			// Not UTF-8: encoding/json replaces the bad bytes, as protobuf
			// strings must be UTF-8 or the whole request fails to encode.
			if raw := p.b[start+1 : p.i-1]; !esc && utf8.Valid(raw) {
				return p.a.str(raw), nil
			}
			var s string
			if err := json.Unmarshal(p.b[start:p.i], &s); err != nil {
				return "", err
			}
			return s, nil
		case c < 0x20:
			return "", errJSON
		}
	}
	return "", io.ErrUnexpectedEOF
}

func (p *jsonParser) number() (*commonpb.AnyValue, error) {
	// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
	start, frac := p.i, false
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return nil, errJSON
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		frac = true
		if digits() == 0 {
			return nil, errJSON
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		frac = true
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return nil, errJSON
		}
	}
	if !frac {
		if i, ok := parseInt(p.b[start:p.i]); ok {
			iv := p.a.ints.next()
			iv.IntValue = i
			v := p.a.avs.next()
			v.Value = iv
			return v, nil
		}
	}
	t := string(p.b[start:p.i])
	if !frac {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: t}}, nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return nil, errJSON
	}
	if err != nil || math.IsInf(f, 0) {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: t}}, nil
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: f}}, nil
}

// bodyArena holds the protobuf objects of one request, and is reused for
// the next once it has been marshaled: building a request then allocates
// little beyond the strings it has not seen before (keys and most values
// repeat from event to event).
type bodyArena struct {
	recs   slab[logspb.LogRecord]
	kvs    slab[commonpb.KeyValue]
	avs    slab[commonpb.AnyValue]
	strs   slab[commonpb.AnyValue_StringValue]
	ints   slab[commonpb.AnyValue_IntValue]
	lists  slab[commonpb.KeyValueList]
	ptrs   []*commonpb.KeyValue // backing of the objects' entry lists
	stack  []*commonpb.KeyValue // entries of the objects being parsed
	intern map[string]string
}

// maxInterned bounds the strings kept for reuse (addresses and ports
// vary without end; the cache must not).
const maxInterned = 16 << 10

func (a *bodyArena) reset() {
	a.recs.reset()
	a.kvs.reset()
	a.avs.reset()
	a.strs.reset()
	a.ints.reset()
	a.lists.reset()
	a.ptrs = a.ptrs[:0]
}

// str returns b as a string, the same one each time while it is cached.
func (a *bodyArena) str(b []byte) string {
	if len(b) > 64 {
		return string(b)
	}
	if s, ok := a.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if a.intern == nil {
		a.intern = make(map[string]string, 1024)
	}
	if len(a.intern) < maxInterned {
		a.intern[s] = s
	}
	return s
}

func (a *bodyArena) strValue(s string) *commonpb.AnyValue {
	sv := a.strs.next()
	sv.StringValue = s
	v := a.avs.next()
	v.Value = sv
	return v
}

// kvList copies an object's entries into the arena's backing array.
func (a *bodyArena) kvList(kvs []*commonpb.KeyValue) []*commonpb.KeyValue {
	if len(a.ptrs)+len(kvs) > cap(a.ptrs) {
		// The old backing stays referenced by the lists made from it.
		a.ptrs = make([]*commonpb.KeyValue, 0, max(4096, 2*len(kvs)))
	}
	start := len(a.ptrs)
	a.ptrs = append(a.ptrs, kvs...)
	return a.ptrs[start:len(a.ptrs):len(a.ptrs)]
}

// slab hands out zeroed T from chunks it keeps for reuse after reset.
type slab[T any] struct {
	chunks [][]T
	c, i   int
}

const slabChunk = 512

func (s *slab[T]) next() *T {
	if s.c < len(s.chunks) && s.i == slabChunk {
		s.c, s.i = s.c+1, 0
	}
	if s.c == len(s.chunks) {
		s.chunks = append(s.chunks, make([]T, slabChunk))
	}
	p := &s.chunks[s.c][s.i]
	s.i++
	var zero T
	*p = zero
	return p
}

func (s *slab[T]) reset() { s.c, s.i = 0, 0 }

// parseInt parses a JSON integer already checked by the grammar; false
// when it does not fit an int64.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		u = u*10 + uint64(c-'0')
	}
	switch {
	case neg && u <= 1<<63:
		return int64(-u), true
	case !neg && u < 1<<63:
		return int64(u), true
	}
	return 0, false
}

// reopen reloads the TLS files and makes the sender start new
// connections at once.
func (o *otlpSink) reopen() error {
	var err error
	if o.tlsSpec != nil {
		var conf *tls.Config
		if conf, err = loadTLS(o.tlsSpec, o.tlsHost); err == nil {
			o.tlsConf.Store(conf)
		} else {
			err = fmt.Errorf("%s: reopen: %w", o.name, err)
		}
	}
	o.reload.Store(true)
	select {
	case o.kick <- struct{}{}:
	default:
	}
	return err
}

// beginClose starts the drain: the sender delivers what is stored, for
// at most the drain time from now.
func (o *otlpSink) beginClose() {
	if !o.started {
		return
	}
	o.once.Do(func() {
		o.openDrop = o.dropped.total()
		close(o.closing)
		o.timer = time.AfterFunc(o.drain, o.abort)
	})
}

// finish runs as the sender stops: a memory queue's leftovers are lost
// and counted; a spool keeps them for the next start.
func (o *otlpSink) finish() {
	if !o.spooled {
		if n := o.store.queued(); n > 0 {
			o.store.(*memStore).clear()
			o.dropped.add(DropShutdown, n)
		}
	}
}

// close drains (bounded by the drain time) and stops the sender, then
// closes the spool. Events a memory queue could not deliver are counted
// as dropped; a spool's stay on disk, and the error says how many.
func (o *otlpSink) close() error {
	var err error
	if o.started {
		o.beginClose()
		<-o.done
		o.timer.Stop()
		o.abort()
		o.client.CloseIdleConnections()
		o.errMu.Lock()
		cause := o.lastErr
		o.errMu.Unlock()
		if cause == nil {
			cause = errors.New("drain time up")
		}
		if lost := o.dropped.total() - o.openDrop; lost > 0 {
			err = fmt.Errorf("%s: close: %d events not delivered within %v: %w", o.name, lost, o.drain, cause)
		} else if left := o.store.queued(); left > 0 && o.spooled {
			err = fmt.Errorf("%s: close: %d events not delivered within %v stay in the spool for the next start: %w", o.name, left, o.drain, cause)
		}
	}
	if cerr := o.store.close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("%s: %w", o.name, cerr))
	}
	return err
}

func (o *otlpSink) stats() Stats {
	st := Stats{Sink: o.name, Written: o.written.Load(), Queued: o.store.queued(), Errors: o.errors.Load()}
	o.dropped.fill(&st)
	if ss, ok := o.store.(*spoolStore); ok {
		sp := ss.sp.Stats()
		st.Spool = &SpoolStats{Bytes: sp.Bytes, Events: sp.Events, Oldest: sp.Oldest, TornBytes: sp.TornBytes, Recovered: o.recover}
	}
	return st
}

// SpoolStats describe a sink's spool (package spool).
type SpoolStats struct {
	Bytes     int64     // the spool files' size
	Events    uint64    // events in it not yet acknowledged
	Oldest    time.Time // when the oldest of them was stored; zero if none
	TornBytes int64     // bytes cut at start: records torn by a crash
	Recovered uint64    // events found in it at start, from a previous run
}

// String describes the spool in a log line.
func (s *SpoolStats) String() string {
	if s == nil {
		return "none"
	}
	return fmt.Sprintf("{bytes %d, events %d, oldest %s, torn %d, recovered %d}",
		s.Bytes, s.Events, s.Oldest.UTC().Format(time.RFC3339), s.TornBytes, s.Recovered)
}

// otlpStore holds a sink's events between write and the receiver's
// acknowledgement.
type otlpStore interface {
	// put stores a message; it returns how many older events it
	// dropped to make room, or errQueueFull when it refused this one.
	put(msg []byte, t time.Time) (int, error)
	// next copies the messages after those in flight into b.
	next(b *batch, maxN, maxBytes int) (n, corrupt int, err error)
	// ack removes the messages in flight; it returns how many of them
	// were still held (the rest were dropped for room meanwhile).
	ack() (uint64, error)
	// rewind makes the messages in flight the next ones again.
	rewind()
	pending() bool
	wake() <-chan struct{}
	queued() uint64
	sync() error
	close() error
}

var errQueueFull = errors.New("queue full")

// memStore is the store of a sink without a spool: a bounded FIFO.
type memStore struct {
	mu       sync.Mutex
	q        batch
	inflight int
	limit    int
	wakeC    chan struct{}
}

func newMemStore(limit int) *memStore {
	return &memStore{limit: limit, wakeC: make(chan struct{}, 1)}
}

func (m *memStore) put(msg []byte, _ time.Time) (int, error) {
	m.mu.Lock()
	if m.q.len() >= m.limit {
		m.mu.Unlock()
		return 0, errQueueFull
	}
	m.q.add(msg)
	m.mu.Unlock()
	select {
	case m.wakeC <- struct{}{}:
	default:
	}
	return 0, nil
}

func (m *memStore) next(b *batch, maxN, maxBytes int) (int, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, size := 0, 0
	for i := m.inflight; i < m.q.len() && n < maxN; i++ {
		msg := m.q.msg(i)
		if n > 0 && size+len(msg) > maxBytes {
			break
		}
		b.add(msg)
		size += len(msg)
		n++
	}
	m.inflight += n
	return n, 0, nil
}

func (m *memStore) ack() (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.inflight
	m.q.dropFront(n)
	m.inflight = 0
	return uint64(n), nil
}

func (m *memStore) rewind() {
	m.mu.Lock()
	m.inflight = 0
	m.mu.Unlock()
}

func (m *memStore) pending() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.q.len() > m.inflight
}

func (m *memStore) wake() <-chan struct{} { return m.wakeC }

func (m *memStore) queued() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return uint64(m.q.len())
}

func (m *memStore) clear() {
	m.mu.Lock()
	m.q.reset()
	m.inflight = 0
	m.mu.Unlock()
}

func (m *memStore) sync() error  { return nil }
func (m *memStore) close() error { return nil }

// spoolStore keeps the events in a spool on disk.
type spoolStore struct {
	sp  *sharedSpool
	end spool.Cursor // after the last message handed out
}

func (s *spoolStore) put(msg []byte, t time.Time) (int, error) {
	return s.sp.Append(msg, t)
}

func (s *spoolStore) next(b *batch, maxN, maxBytes int) (int, int, error) {
	end, n, corrupt, err := s.sp.Read(maxN, maxBytes, b.add)
	if n > 0 {
		s.end = end
	}
	return n, corrupt, err
}

func (s *spoolStore) ack() (uint64, error) { return s.sp.Ack(s.end) }

func (s *spoolStore) rewind()               { s.sp.Rewind() }
func (s *spoolStore) pending() bool         { return s.sp.Pending() }
func (s *spoolStore) wake() <-chan struct{} { return s.sp.Wake() }
func (s *spoolStore) queued() uint64        { return s.sp.Len() }
func (s *spoolStore) sync() error           { return s.sp.Sync() }
func (s *spoolStore) close() error          { return s.sp.release() }
