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
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	collogspb "go.opentelemetry.io/proto/slim/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/slim/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/slim/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/slim/otlp/resource/v1"
	"google.golang.org/protobuf/proto"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
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
	store    otlpStore
	spooled  bool
	errFull  error
	msg      []byte // the producer's scratch
	drain    time.Duration
	closing  chan struct{}
	ctx      context.Context
	abort    context.CancelFunc
	done     chan struct{}
	once     sync.Once
	started  bool
	timer    *time.Timer
	recover  uint64 // events found in the spool at start
	openDrop uint64

	reconnect // Reopen's: TLS files, new connections

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

	senderErr

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
		backoff: func(fails int) time.Duration { return jitteredBackoff(fails, minBackoff, maxBackoff) },
	}
	if o.drain <= 0 {
		o.drain = config.DefaultDrainTimeout
	}
	o.ctx, o.abort = context.WithCancel(context.Background())
	o.kick = make(chan struct{}, 1)
	if strings.HasPrefix(s.OTLP.Endpoint, "https:") {
		u, err := urlHost(s.OTLP.Endpoint)
		if err != nil {
			return nil, err
		}
		if err := o.useTLS(&s.TLS, u); err != nil {
			return nil, err
		}
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
	if err := o.lastError(); err != nil {
		return fmt.Errorf("%s: %w (%d events queued)", o.name, err, o.store.queued())
	}
	return nil
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
	if o.takeFresh() {
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
		o.wait(o.ctx, o.backoff(o.fails))
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
		o.wait(o.ctx, max(retryAfter, o.backoff(o.fails)))
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

// reopen reloads the TLS files and makes the sender start new
// connections at once.
func (o *otlpSink) reopen() error { return o.reconnect.reopen(o.name) }

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
		cause := o.closeCause()
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
