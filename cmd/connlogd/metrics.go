package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/connlogd/connlogd/audit"
	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/engine"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/internal/version"
	"github.com/connlogd/connlogd/sink"
)

// metrics is the Prometheus endpoint. A nil *metrics (metrics off) is
// valid: every method does nothing. No label is per connection, so the
// series count stays fixed whatever the traffic.
type metrics struct {
	srv  *http.Server
	done chan struct{}

	events *prometheus.CounterVec
	// byKind holds events' children, resolved once: a label lookup
	// hashes the label values, which is too dear once per event.
	byKind     [event.Updated + 1]prometheus.Counter
	pollTime   prometheus.Histogram
	sockets    *prometheus.GaugeVec
	netlinkErr *prometheus.CounterVec
	overruns   prometheus.Counter
	dumpFail   prometheus.Counter
	reloads    *prometheus.CounterVec
	reloadTime prometheus.Gauge
	nsCount    prometheus.Gauge
	out        atomic.Pointer[engine.Output]   // for the scraper
	audit      atomic.Pointer[audit.JoinStats] // nil until audit attribution reports
}

// startMetrics serves metrics on listen; an empty listen turns them off.
func startMetrics(listen string, log *slog.Logger) (*metrics, error) {
	if listen == "" {
		return nil, nil
	}
	m := &metrics{
		done: make(chan struct{}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connlogd_events_total", Help: "Events written, by kind.",
		}, []string{"kind"}),
		pollTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "connlogd_poll_duration_seconds", Help: "Time to dump and diff one namespace's socket table.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		sockets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "connlogd_sockets", Help: "Sockets in the last poll's tables, by protocol and family.",
		}, []string{"proto", "family"}),
		netlinkErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connlogd_netlink_dropped_messages_total", Help: "Netlink messages dropped: malformed, or foreign (not from the kernel or not for our requests).",
		}, []string{"reason"}),
		overruns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "connlogd_destroy_overruns_total", Help: "Times the kernel dropped destroy notifications (receive buffer full).",
		}),
		dumpFail: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "connlogd_dump_failures_total", Help: "Polls whose dump failed.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "connlogd_config_reloads_total", Help: "Configuration reloads, by result.",
		}, []string{"result"}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "connlogd_config_last_reload_success_timestamp_seconds", Help: "When the configuration was last applied.",
		}),
		nsCount: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "connlogd_namespaces", Help: "Network namespaces watched.",
		}),
	}
	m.reloadTime.SetToCurrentTime()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "connlogd_build_info", Help: "Build information; the value is 1.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(version.Version(), runtime.Version()).Set(1)
	for _, k := range []event.Kind{event.Appeared, event.StateChanged, event.Updated, event.Closed, event.Gap} {
		m.byKind[k] = m.events.WithLabelValues(k.String())
	}
	for _, r := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(r)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.events, m.pollTime, m.sockets, m.netlinkErr, m.overruns, m.dumpFail,
		m.reloads, m.reloadTime, m.nsCount, build, sinkCollector{m}, auditCollector{m})

	// The families the address names and no more (0.0.0.0 is IPv4 only).
	ln, err := net.Listen(config.Metrics{Listen: listen}.Network(), listen)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w", listen, err)
	}
	if ap, ok := ln.Addr().(*net.TCPAddr); ok && !ap.IP.IsLoopback() {
		log.Warn("metrics listen on a non-loopback address: anyone who reaches it sees the counters", "listen", listen)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("metrics", "listen", ln.Addr().String())
	return m, nil
}

func (m *metrics) close() {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m.srv.Shutdown(ctx)
	<-m.done
}

func (m *metrics) Event(ev *event.Event) {
	if m == nil {
		return
	}
	if int(ev.Kind) < len(m.byKind) && m.byKind[ev.Kind] != nil {
		m.byKind[ev.Kind].Inc()
		return
	}
	m.events.WithLabelValues(ev.Kind.String()).Inc()
}

func (m *metrics) Polled(took time.Duration) {
	if m != nil {
		m.pollTime.Observe(took.Seconds())
	}
}

func (m *metrics) Sockets(sum [2][2]int) {
	if m == nil {
		return
	}
	for p, pn := range []string{"tcp", "udp"} {
		for f, fn := range []string{"ipv4", "ipv6"} {
			m.sockets.WithLabelValues(pn, fn).Set(float64(sum[p][f]))
		}
	}
}

func (m *metrics) Netlink(malformed, foreign uint64) {
	if m != nil {
		m.netlinkErr.WithLabelValues("malformed").Add(float64(malformed))
		m.netlinkErr.WithLabelValues("foreign").Add(float64(foreign))
	}
}

func (m *metrics) Overrun() {
	if m != nil {
		m.overruns.Inc()
	}
}

func (m *metrics) DumpFailed() {
	if m != nil {
		m.dumpFail.Inc()
	}
}

func (m *metrics) Reloaded(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.reloads.WithLabelValues("success").Inc()
		m.reloadTime.SetToCurrentTime()
		return
	}
	m.reloads.WithLabelValues("failure").Inc()
}

func (m *metrics) Namespaces(n int) {
	if m != nil {
		m.nsCount.Set(float64(n))
	}
}

func (m *metrics) Sinks(out engine.Output) {
	if m != nil {
		m.out.Store(&out)
	}
}

// sinkCollector reads the sinks' own counters at scrape time, so they are
// exact and survive a reload that replaces the sinks.
type sinkCollector struct{ m *metrics }

var (
	sinkWrittenDesc = prometheus.NewDesc("connlogd_sink_events_total", "Events each sink put out (syslog: written to the connection and not given back as unacknowledged).", []string{"sink"}, nil)
	sinkDroppedDesc = prometheus.NewDesc("connlogd_sink_dropped_total", "Events each sink lost, by reason: queue_full, output_failed, shutdown, refused, spool_full, rejected.", []string{"sink", "reason"}, nil)
	sinkErrorsDesc  = prometheus.NewDesc("connlogd_sink_errors_total", "Failures of each sink's output (failed writes, flushes, dials, sends); the events wait for the next attempt.", []string{"sink"}, nil)
	sinkQueuedDesc  = prometheus.NewDesc("connlogd_sink_queued_events", "Events each syslog or otlp sink holds for delivery.", []string{"sink"}, nil)

	spoolBytesDesc  = prometheus.NewDesc("connlogd_sink_spool_bytes", "Size of each sink's spool files.", []string{"sink"}, nil)
	spoolEventsDesc = prometheus.NewDesc("connlogd_sink_spool_events", "Events in each sink's spool that the receiver has not acknowledged.", []string{"sink"}, nil)
	spoolAgeDesc    = prometheus.NewDesc("connlogd_sink_spool_oldest_age_seconds", "Age of the oldest event in each sink's spool; 0 when it is empty.", []string{"sink"}, nil)
)

func (c sinkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sinkWrittenDesc
	ch <- sinkDroppedDesc
	ch <- sinkErrorsDesc
	ch <- sinkQueuedDesc
	ch <- spoolBytesDesc
	ch <- spoolEventsDesc
	ch <- spoolAgeDesc
}

func (c sinkCollector) Collect(ch chan<- prometheus.Metric) {
	out := c.m.out.Load()
	if out == nil {
		return
	}
	for _, st := range (*out).Stats() {
		ch <- prometheus.MustNewConstMetric(sinkWrittenDesc, prometheus.CounterValue, float64(st.Written), st.Sink)
		for r, n := range st.DroppedBy {
			ch <- prometheus.MustNewConstMetric(sinkDroppedDesc, prometheus.CounterValue, float64(n), st.Sink, sink.DropReason(r).String())
		}
		ch <- prometheus.MustNewConstMetric(sinkErrorsDesc, prometheus.CounterValue, float64(st.Errors), st.Sink)
		ch <- prometheus.MustNewConstMetric(sinkQueuedDesc, prometheus.GaugeValue, float64(st.Queued), st.Sink)
		if sp := st.Spool; sp != nil {
			age := 0.0
			if !sp.Oldest.IsZero() {
				age = max(time.Since(sp.Oldest).Seconds(), 0)
			}
			ch <- prometheus.MustNewConstMetric(spoolBytesDesc, prometheus.GaugeValue, float64(sp.Bytes), st.Sink)
			ch <- prometheus.MustNewConstMetric(spoolEventsDesc, prometheus.GaugeValue, float64(sp.Events), st.Sink)
			ch <- prometheus.MustNewConstMetric(spoolAgeDesc, prometheus.GaugeValue, age, st.Sink)
		}
	}
}

// Audit publishes audit attribution's counters for the scraper
// (engine.AuditMetrics).
func (m *metrics) Audit(st audit.JoinStats) {
	if m == nil {
		return
	}
	m.audit.Store(&st)
}

var (
	auditCallsDesc     = prometheus.NewDesc("connlogd_audit_calls_total", "Audited connect and accept calls read.", nil, nil)
	auditMatchedDesc   = prometheus.NewDesc("connlogd_audit_matched_total", "Sockets given an owner from audit records.", nil, nil)
	auditAmbiguousDesc = prometheus.NewDesc("connlogd_audit_ambiguous_total", "Times a socket was left without owner because calls of different processes fit it.", nil, nil)
	auditExpiredDesc   = prometheus.NewDesc("connlogd_audit_unclaimed_total", "Audited calls no reported socket claimed in time.", nil, nil)
)

// auditCollector reports audit attribution's counters, when it is on.
type auditCollector struct{ m *metrics }

func (c auditCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- auditCallsDesc
	ch <- auditMatchedDesc
	ch <- auditAmbiguousDesc
	ch <- auditExpiredDesc
}

func (c auditCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.audit.Load()
	if st == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(auditCallsDesc, prometheus.CounterValue, float64(st.Sightings))
	ch <- prometheus.MustNewConstMetric(auditMatchedDesc, prometheus.CounterValue, float64(st.Matched))
	ch <- prometheus.MustNewConstMetric(auditAmbiguousDesc, prometheus.CounterValue, float64(st.Ambiguous))
	ch <- prometheus.MustNewConstMetric(auditExpiredDesc, prometheus.CounterValue, float64(st.Expired))
}
