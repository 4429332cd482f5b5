//go:build linux

package sink

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/internal/otelcoltest"
)

// jsonPlain decodes an event line the way the otlp sink maps it: whole
// numbers to int64 (a string beyond), other numbers to float64.
func jsonPlain(t *testing.T, line []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return plain(m).(map[string]any)
}

func plain(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = plain(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = plain(e)
		}
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		if !strings.ContainsAny(string(x), ".eE") {
			return string(x)
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

// TestOTLPCollector sends events in each schema to a real OpenTelemetry
// Collector (OTLP/HTTP receiver, file exporter): each arrives as one log
// record whose body is the schema's event object, nested objects as
// nested maps, with the event's time, its kind as the event name, and
// the host, service name and version as resource attributes.
func TestOTLPCollector(t *testing.T) {
	col := otelcoltest.Start(t)
	evs := benchEvents()
	for _, schemaName := range []string{"", config.SchemaECS, config.SchemaOCSF} {
		t.Run("schema="+schemaName, func(t *testing.T) {
			before, err := col.Records()
			if err != nil {
				t.Fatal(err)
			}
			tee := otlpTee(t, config.Sink{Type: config.SinkOTLP, Schema: schemaName,
				OTLP: &config.OTLP{Endpoint: col.Endpoint(), Compression: "gzip"}})
			for i := range evs {
				if err := tee.Write(&evs[i]); err != nil {
					t.Fatal(err)
				}
			}
			var recs []otelcoltest.Record
			deadline := time.Now().Add(time.Minute)
			for len(recs) < len(evs) {
				all, err := col.Records()
				if err != nil {
					t.Fatal(err)
				}
				recs = all[len(before):]
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d records in the collector's output after a minute", len(recs), len(evs))
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err := tee.Close(); err != nil {
				t.Fatal(err)
			}
			if len(recs) != len(evs) {
				t.Fatalf("%d records for %d events", len(recs), len(evs))
			}
			sch, _ := parseSchema(schemaName)
			enc := newSchemaEncoder(sch, "web-1", "1.2.3")
			for i, r := range recs {
				line, err := enc.encode(nil, &evs[i])
				if err != nil {
					t.Fatal(err)
				}
				if want := jsonPlain(t, line); !reflect.DeepEqual(r.Body(), want) {
					t.Errorf("record %d body:\n got %v\nwant %v", i, r.Body(), want)
				}
				if r.EventName != evs[i].Kind.String() || r.TimeUnixNano != uint64(evs[i].Time.UnixNano()) {
					t.Errorf("record %d: event name %q, time %d", i, r.EventName, r.TimeUnixNano)
				}
				if r.Resource["host.name"] != "web-1" || r.Resource["service.name"] != "connlogd" || r.Resource["service.version"] != "1.2.3" {
					t.Errorf("record %d resource %v", i, r.Resource)
				}
			}
			if st := tee.Stats()[0]; st.Written != uint64(len(evs)) || st.Dropped != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}
