package sink

import (
	"fmt"
	"strconv"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

// schema numbers the output schemas; a Tee encodes each event once per
// schema its sinks use.
type schema uint8

const (
	schemaNative schema = iota
	schemaECS
	schemaOCSF
	numSchemas
)

func parseSchema(s string) (schema, error) {
	switch s {
	case "", config.SchemaNative:
		return schemaNative, nil
	case config.SchemaECS:
		return schemaECS, nil
	case config.SchemaOCSF:
		return schemaOCSF, nil
	}
	return 0, fmt.Errorf("unknown schema %q (want native, ecs or ocsf)", s)
}

// encoder appends one event as a JSON object and a newline.
type encoder interface {
	encode(b []byte, ev *event.Event) ([]byte, error)
}

func newSchemaEncoder(s schema, host, version string) encoder {
	switch s {
	case schemaECS:
		return newECSEncoder(host, version)
	case schemaOCSF:
		return newOCSFEncoder(host, version)
	}
	return newNativeEncoder(host)
}

// socketKind reports whether ev describes a socket (not a gap).
func socketKind(ev *event.Event) bool {
	return ev.Kind != event.Gap
}

// ianaNumbers are the IP protocol numbers as text (ECS network.iana_number
// is a keyword).
func ianaNumber(p snapshot.Proto) string {
	return strconv.Itoa(int(p))
}

// eventTime is the event's time; an event without one is stamped now, as
// the native schema does (every line has a time).
func eventTime(ev *event.Event) time.Time {
	if ev.Time.IsZero() {
		return time.Now()
	}
	return ev.Time
}
