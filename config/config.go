// Package config reads connlogd's YAML configuration, strictly: unknown
// keys, duplicate keys, bad values, an empty file and a second document
// are errors that name the file and line.
package config

import (
	"io/fs"
	"time"

	"github.com/connlogd/connlogd/snapshot"
)

// DefaultPath is read when no -config flag is given and the file exists.
const DefaultPath = "/etc/connlogd/config.yaml"

// Config is the whole configuration after defaults are applied.
type Config struct {
	// Interval is the period between the starts of two polls.
	Interval  time.Duration
	Protocols []snapshot.Proto  // default: tcp, udp
	Families  []snapshot.Family // default: ipv4, ipv6
	// States filters which states are reported; default all.
	States []snapshot.State
	Sinks  []Sink // default: one stdout sink
}

// SinkType names a sink kind.
type SinkType string

// Sink kinds.
const (
	SinkStdout SinkType = "stdout"
	SinkFile   SinkType = "file"
	SinkSyslog SinkType = "syslog"
)

// Sink configures one output.
type Sink struct {
	Type SinkType
	Line int // line of the sink in the file, for error messages; 0 for defaults

	// file
	Path string
	Mode fs.FileMode // default 0640

	// syslog
	Network  string // unix (default) | udp | tcp
	Address  string // default /dev/log for unix; required otherwise
	Format   string // rfc5424 (default) | rfc3164
	Facility int    // syslog facility number; default 16 (local0)
	Tag      string // app-name; default "connlogd"
}
