package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/snapshot"
)

// checkErr asserts that err is a one-line *Error at file:line whose
// message contains want.
func checkErr(t *testing.T, err error, file string, line int, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %s:%d: …%s…", file, line, want)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	prefix := file + ":" + strconv.Itoa(line) + ": "
	if !strings.HasPrefix(msg, prefix) {
		t.Errorf("error %q does not start with %q", msg, prefix)
	}
	if !strings.Contains(msg, want) {
		t.Errorf("error %q does not contain %q", msg, want)
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Errorf("error %q is a %T, not an *Error", msg, err)
	} else if ce.File != file || ce.Line != line {
		t.Errorf("Error has File %q Line %d; want %q %d", ce.File, ce.Line, file, line)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		line int
		want string
	}{
		// The file as a whole.
		{"empty file", "", 1, "empty configuration"},
		{"destroy not a mapping", "destroy: 5\n", 1, "want a mapping with enabled and buffer"},
		{"namespaces bad mode", "namespaces: some\n", 1, `"some" is not host, all or a list`},
		{"namespaces relative path", "namespaces:\n  - a/b\n", 2, "neither a namespace name nor an absolute path"},
		{"namespaces twice", "namespaces:\n  - red\n  - red\n", 3, "listed twice"},
		{"namespace_rescan too short", "namespace_rescan: 1ms\n", 1, "not a duration of at least"},
		{"metrics unknown key", "metrics:\n  port: 9\n", 2, `unknown key "port"`},
		{"metrics bad listen", "metrics:\n  listen: localhost\n", 2, "not host:port"},
		{"state_file relative", "state_file: state.json\n", 1, "not an absolute path"},
		{"destroy unknown key", "destroy:\n  enabled: true\n  size: 5\n", 3, `unknown key "size"`},
		{"destroy enabled not a bool", "destroy:\n  enabled: yes please\n", 2, "not true or false"},
		{"destroy buffer too small", "destroy:\n  buffer: 10\n", 2, "not a byte count"},
		{"destroy buffer not a number", "destroy:\n  buffer: 8MiB\n", 2, "not a byte count"},
		{"only comments", "# nothing\n\n# here\n", 1, "empty configuration"},
		{"only blank lines", "\n\n\n", 1, "empty configuration"},
		{"only document start", "---\n", 1, "empty configuration"},
		{"null document", "~\n", 1, "empty configuration"},
		{"second document", "interval: 1s\n---\ninterval: 2s\n", 2, "second YAML document"},
		{"empty second document", "interval: 1s\n---\n", 2, "second YAML document"},
		{"second document after end marker", "interval: 1s\n...\n---\nprotocols: [tcp]\n", 3, "second YAML document"},
		{"top level list", "- interval: 1s\n", 1, "want a mapping of settings"},
		{"top level scalar", "hello\n", 1, "want a mapping of settings"},

		// YAML syntax, with yaml.v3's line numbers corrected.
		{"scanner error line 1", "interval: a: b\n", 1, "invalid YAML: mapping values are not allowed"},
		{"scanner error line 3", "interval: 1s\nprotocols: [tcp]\nfamilies: a: b\n", 3, "invalid YAML: mapping values are not allowed"},
		{"unclosed flow list", "interval: 1s\nprotocols: [tcp\n", 2, "invalid YAML: did not find expected ',' or ']'"},
		{"unclosed quote", "interval: 1s\nsinks:\n  - type: \"stdout\n", 3, "invalid YAML: found unexpected end of stream"},
		{"bad indentation", "interval: 1s\nsinks:\n  - type: stdout\n bad: 1\n", 4, "invalid YAML: did not find expected key"},
		{"list after mapping", "interval: 1s\n- tcp\n", 2, "invalid YAML: did not find expected key"},
		{"tab indentation", "sinks:\n\t- type: stdout\n", 2, "invalid YAML: found character that cannot start any token"},
		{"unknown anchor", "interval: 1s\n\nprotocols: *p\n", 3, "invalid YAML: unknown anchor 'p' referenced"},
		{"syntax error in second document", "interval: 1s\n---\na: b: c\n", 3, "invalid YAML: mapping values are not allowed"},
		{"invalid UTF-8", "interval: 1s\nsinks: \xff\n", 2, "invalid UTF-8 byte 0xff"},
		{"UTF-16 BOM", "\xff\xfei\x00:\x00", 1, "invalid UTF-8"},
		{"control character", "interval: 1s\n\nprotocols: [tcp\x01]\n", 3, "character U+0001 is not allowed"},
		{"CRLF lines", "interval: 1s\r\n\r\nfoo: 1\r\n", 3, `unknown key "foo"`},
		{"CR lines", "interval: 1s\r\rfoo: 1\r", 3, `unknown key "foo"`},

		// Keys.
		{"unknown top key", "intervall: 1s\n", 1, `unknown key "intervall" (want interval, protocols, families, states, sinks, destroy, filters, attribution, namespaces, namespace_rescan, metrics, state_file, containers or flow_update_interval)`},
		{"unknown top key later", "interval: 1s\n# c\nprotocol: [tcp]\n", 3, `unknown key "protocol"`},
		{"merge key", "interval: 1s\n<<: {protocols: [tcp]}\n", 2, `unknown key "<<"`},
		{"duplicate top key", "interval: 1s\nprotocols: [tcp]\ninterval: 2s\n", 3, `duplicate key "interval" (first at line 1)`},
		{"duplicate key in flow mapping", "{interval: 1s, interval: 1s}\n", 1, `duplicate key "interval"`},
		{"list as key", "? [interval]\n: 1s\n", 1, "a key must be a name, not a list"},

		// interval.
		{"interval not a duration", "interval: fast\n", 1, `interval: "fast" is not a duration like 1s or 200ms`},
		{"interval without unit", "protocols: [tcp]\ninterval: 5\n", 2, `interval: "5" is not a duration`},
		{"interval too short", "interval: 9ms\n", 1, "interval: 9ms is shorter than the minimum 10ms"},
		{"interval zero", "interval: 0s\n", 1, "shorter than the minimum"},
		{"interval negative", "interval: -1s\n", 1, "shorter than the minimum"},
		{"interval missing", "interval:\n", 1, "interval: missing value"},
		{"interval null", "interval: ~\n", 1, "interval: missing value"},
		{"interval list", "interval: [1s]\n", 1, "interval: want a single value, not a list"},
		{"interval mapping", "interval:\n  s: 1\n", 2, "interval: want a single value, not a mapping"},
		{"interval tagged", "interval: !env INTERVAL\n", 1, "interval: YAML tag !env is not supported"},
		{"interval int tag", "interval: !!int 1\n", 1, "interval: YAML tag !!int is not supported"},

		// protocols, families, states.
		{"protocol unknown", "protocols: [tcp, sctp]\n", 1, `protocols[1]: unknown protocol "sctp" (want tcp or udp)`},
		{"protocol upper case", "protocols:\n  - TCP\n", 2, `protocols[0]: unknown protocol "TCP"`},
		{"protocol twice", "protocols:\n  - tcp\n  - udp\n  - tcp\n", 4, `protocols[2]: "tcp" listed twice`},
		{"protocols empty", "protocols: []\n", 1, "protocols: empty list; leave the key out"},
		{"protocols missing", "protocols:\n", 1, "protocols: missing value"},
		{"protocols not a list", "protocols: tcp\n", 1, "protocols: want a list, not a single value"},
		{"protocol item list", "protocols: [[tcp]]\n", 1, "protocols[0]: want a single value, not a list"},
		{"protocol item null", "protocols: [tcp, ~]\n", 1, "protocols[1]: missing value"},
		{"family unknown", "families: [ipv4, ipx]\n", 1, `families[1]: unknown family "ipx" (want ipv4 or ipv6)`},
		{"family twice", "families: [ipv6, ipv6]\n", 1, `families[1]: "ipv6" listed twice`},
		{"families empty", "families: []\n", 1, "families: empty list"},
		{"state unknown", "states:\n  - listen\n  - open\n", 3, `states[1]: unknown state "open" (want one of established, syn_sent`},
		{"state upper case", "states: [LISTEN]\n", 1, `states[0]: unknown state "LISTEN"`},
		{"state twice", "states: [listen, established, listen]\n", 1, `states[2]: "listen" listed twice`},
		{"states empty", "states: []\n", 1, "states: empty list; leave the key out to report all states"},

		// sinks.
		{"sinks empty", "sinks: []\n", 1, "sinks: empty list; at least one sink is needed"},
		{"sinks missing", "interval: 1s\nsinks:\n", 2, "sinks: missing value"},
		{"sinks mapping", "sinks:\n  type: stdout\n", 2, "sinks: want a list, not a mapping"},
		{"sink scalar", "sinks:\n  - stdout\n", 2, "sinks[0]: want a mapping with a type key, not a single value"},
		{"sink null", "sinks:\n  - type: stdout\n  -\n", 3, "sinks[1]: empty sink"},
		{"sink without type", "sinks:\n  - path: /x\n", 2, `sinks[0]: missing key "type"`},
		{"sink unknown type", "sinks:\n  - type: pipe\n", 2, `sinks[0].type: unknown sink type "pipe" (want stdout, file, syslog or otlp)`},
		{"sink type list", "sinks:\n  - type: [stdout]\n", 2, "sinks[0].type: want a single value, not a list"},
		{"sink type twice", "sinks:\n  - type: stdout\n    type: stdout\n", 3, `sinks[0]: duplicate key "type" (first at line 2)`},
		{"sink key twice", "sinks:\n  - type: file\n    path: /a\n    path: /b\n", 4, `sinks[0]: duplicate key "path" (first at line 3)`},
		{"sink unknown key", "interval: 1s\nsinks:\n  - type: stdout\n  - type: syslog\n    network: udp\n    format: rfc5424\n    adress: 127.0.0.1:514\n",
			7, `sinks[1]: unknown key "adress" (a syslog sink takes type, network, address, format, facility, tag, tls, queue_size, drain_timeout, spool, schema)`},
		{"stdout with path", "sinks:\n  - type: stdout\n    path: /x\n", 3, `sinks[0]: key "path" is for file sinks, not stdout`},
		{"syslog with path", "sinks:\n  - type: syslog\n    path: /x\n", 3, `sinks[0]: key "path" is for file sinks, not syslog`},
		{"file with network", "sinks:\n  - type: file\n    path: /x\n    network: udp\n", 4, `sinks[0]: key "network" is for syslog sinks, not file`},
		{"file with unknown key", "sinks:\n  - type: file\n    path: /x\n    rotate: daily\n", 4, `sinks[0]: unknown key "rotate" (a file sink takes type, path, mode, schema)`},

		// file sinks.
		{"file without path", "sinks:\n  - type: stdout\n  - type: file\n    mode: 0600\n", 3, `sinks[1]: missing key "path"`},
		{"file empty path", "sinks:\n  - type: file\n    path: \"\"\n", 3, "sinks[0].path: must not be empty"},
		{"file null path", "sinks:\n  - type: file\n    path:\n", 3, "sinks[0].path: missing value"},
		{"mode not octal", "sinks:\n  - type: file\n    path: /x\n    mode: 0999\n", 4, `sinks[0].mode: "0999" is not an octal permission like 0640`},
		{"mode decimal", "sinks:\n  - type: file\n    path: /x\n    mode: 640\n", 4, `sinks[0].mode: "640" is not an octal permission`},
		{"mode hex", "sinks:\n  - type: file\n    path: /x\n    mode: 0x1a0\n", 4, `sinks[0].mode: "0x1a0" is not an octal permission`},
		{"mode symbolic", "sinks:\n  - type: file\n    path: /x\n    mode: rw-r-----\n", 4, `sinks[0].mode: "rw-r-----" is not an octal permission`},
		{"mode empty", "sinks:\n  - type: file\n    path: /x\n    mode: ''\n", 4, `sinks[0].mode: "" is not an octal permission`},
		{"mode above 0777", "sinks:\n  - type: file\n    path: /x\n    mode: 01777\n", 4, "sinks[0].mode: 01777: only read and write bits (at most 0666) are allowed"},
		{"mode 0o above 0777", "sinks:\n  - type: file\n    path: /x\n    mode: 0o1000\n", 4, "sinks[0].mode: 01000: only read and write bits"},
		// An audit log others can write is not an audit log.
		{"mode 0777", "sinks:\n  - type: file\n    path: /x\n    mode: 0777\n", 4, "sinks[0].mode: 0777: only read and write bits"},
		{"mode 0666", "sinks:\n  - type: file\n    path: /x\n    mode: 0666\n", 4, "sinks[0].mode: 0666 lets group or others write"},
		{"mode 0620", "sinks:\n  - type: file\n    path: /x\n    mode: 0o620\n", 4, "sinks[0].mode: 0620 lets group or others write"},
		{"mode 0755", "sinks:\n  - type: file\n    path: /x\n    mode: 0755\n", 4, "sinks[0].mode: 0755: only read and write bits"},
		{"mode huge", "sinks:\n  - type: file\n    path: /x\n    mode: 077777777777777\n", 4, "sinks[0].mode: \"077777777777777\" is not an octal permission"},

		// syslog sinks.
		{"syslog unknown network", "sinks:\n  - type: syslog\n    network: udp6\n    address: h:514\n", 3, `sinks[0].network: unknown network "udp6" (want unix, udp, tcp, tls, relp or relp-tls)`},
		{"syslog udp without address", "sinks:\n  - type: syslog\n    network: udp\n", 2, `sinks[0]: missing key "address" (network udp needs host:port)`},
		{"syslog tcp without address", "sinks:\n  - type: stdout\n  - type: syslog\n    network: tcp\n", 3, `sinks[1]: missing key "address" (network tcp needs host:port)`},
		{"syslog address without port", "sinks:\n  - type: syslog\n    network: udp\n    address: logs.example\n", 4, `sinks[0].address: "logs.example" is not host:port: missing port in address`},
		{"syslog address before network", "sinks:\n  - type: syslog\n    address: logs.example\n    network: tcp\n", 3, `sinks[0].address: "logs.example" is not host:port`},
		{"syslog address without host", "sinks:\n  - type: syslog\n    network: udp\n    address: ':514'\n", 4, "missing host or port"},
		{"syslog address port zero", "sinks:\n  - type: syslog\n    network: udp\n    address: 'h:0'\n", 4, "port 0 is out of range 1-65535"},
		{"syslog address port too big", "sinks:\n  - type: syslog\n    network: tcp\n    address: 'h:65536'\n", 4, "port 65536 is out of range"},
		{"syslog address bad IPv6", "sinks:\n  - type: syslog\n    network: udp\n    address: '::1:514'\n", 4, "too many colons"},
		{"syslog empty unix address", "sinks:\n  - type: syslog\n    address: ''\n", 3, "sinks[0].address: must not be empty"},
		{"syslog unknown format", "sinks:\n  - type: syslog\n    format: json\n", 3, `sinks[0].format: unknown format "json" (want rfc5424 or rfc3164)`},
		{"syslog unknown facility", "sinks:\n  - type: syslog\n    facility: local8\n", 3, `sinks[0].facility: unknown facility "local8"`},
		{"syslog facility upper case", "sinks:\n  - type: syslog\n    facility: LOCAL0\n", 3, `unknown facility "LOCAL0"`},
		{"syslog facility too big", "sinks:\n  - type: syslog\n    facility: 24\n", 3, `unknown facility "24"`},
		{"syslog facility negative", "sinks:\n  - type: syslog\n    facility: -1\n", 3, `unknown facility "-1"`},
		{"syslog empty tag", "sinks:\n  - type: syslog\n    tag: ''\n", 3, "sinks[0].tag: \"\" must be 1 to 48 characters long"},
		{"syslog long tag", "sinks:\n  - type: syslog\n    tag: " + strings.Repeat("x", 49) + "\n", 3, "must be 1 to 48 characters long"},
		{"syslog tag with space", "sinks:\n  - type: syslog\n    tag: 'conn logd'\n", 3, `sinks[0].tag: "conn logd" must be printable ASCII without spaces`},
		// One rule with the sink's: ':' and brackets end an RFC 3164 TAG.
		{"syslog tag with colon", "sinks:\n  - type: syslog\n    tag: 'app:1'\n", 3, `sinks[0].tag: "app:1" must be printable ASCII without spaces, brackets or colons`},
		{"syslog tag with bracket", "sinks:\n  - type: syslog\n    tag: 'app[1]'\n", 3, "without spaces, brackets or colons"},
		{"syslog address port name unknown", "sinks:\n  - type: syslog\n    network: tcp\n    address: 'h:abc'\n", 4, `port "abc" is neither a number nor a known tcp service name`},
		{"syslog tag not ASCII", "sinks:\n  - type: syslog\n    tag: connlögd\n", 3, "must be printable ASCII"},

		// Delivery, TLS and schemas.
		{"tls without address", "sinks:\n  - type: syslog\n    network: tls\n", 2, `sinks[0]: missing key "address" (network tls needs host:port)`},
		{"tls settings on tcp", "sinks:\n  - type: syslog\n    tls: {ca_file: /ca.pem}\n    network: tcp\n    address: h:514\n", 3, "sinks[0].tls: TLS settings need network tls or relp-tls, not tcp"},
		{"tls settings on relp", "sinks:\n  - type: syslog\n    network: relp\n    address: h:2514\n    tls: {ca_file: /ca.pem}\n", 5, "sinks[0].tls: TLS settings need network tls or relp-tls, not relp"},
		{"tls settings on default unix", "sinks:\n  - type: syslog\n    tls:\n      ca_file: /ca.pem\n", 3, "TLS settings need network tls or relp-tls, not unix"},
		{"tls not a mapping", "sinks:\n  - {type: syslog, network: tls, address: 'h:6514', tls: /ca.pem}\n", 2, "sinks[0].tls: want a mapping with ca_file, cert_file, key_file, server_name, not a single value"},
		{"tls unknown key", "sinks:\n  - type: syslog\n    network: tls\n    address: h:6514\n    tls:\n      ca: /ca.pem\n", 6, `sinks[0].tls: unknown key "ca" (want ca_file, cert_file, key_file or server_name)`},
		{"tls empty value", "sinks:\n  - type: syslog\n    network: tls\n    address: h:6514\n    tls:\n      ca_file: ''\n", 6, "sinks[0].tls.ca_file: must not be empty"},
		{"tls cert without key", "sinks:\n  - type: syslog\n    network: tls\n    address: h:6514\n    tls:\n      cert_file: /c.pem\n", 6, "sinks[0].tls: cert_file without key_file"},
		{"tls key without cert", "sinks:\n  - type: syslog\n    network: tls\n    address: h:6514\n    tls:\n      key_file: /k.pem\n", 6, "sinks[0].tls: key_file without cert_file"},
		{"tls on a file sink", "sinks:\n  - type: file\n    path: /x\n    tls: {}\n", 4, `sinks[0]: key "tls" is for syslog sinks, not file`},
		{"queue_size zero", "sinks:\n  - type: syslog\n    queue_size: 0\n", 3, `sinks[0].queue_size: "0" is not an event count from 1 to 1048576`},
		{"queue_size huge", "sinks:\n  - type: syslog\n    queue_size: 2000000\n", 3, "is not an event count"},
		{"queue_size words", "sinks:\n  - type: syslog\n    queue_size: many\n", 3, `"many" is not an event count`},
		{"queue_size on stdout", "sinks:\n  - type: stdout\n    queue_size: 5\n", 3, `sinks[0]: key "queue_size" is for syslog sinks, not stdout`},
		{"drain_timeout zero", "sinks:\n  - type: syslog\n    drain_timeout: 0s\n", 3, `sinks[0].drain_timeout: "0s" is not a duration from 1ms to 10m0s`},
		{"drain_timeout unitless", "sinks:\n  - type: syslog\n    drain_timeout: 5\n", 3, `"5" is not a duration`},
		{"drain_timeout too long", "sinks:\n  - type: syslog\n    drain_timeout: 1h\n", 3, "sinks[0].drain_timeout: 1h0m0s is not a duration from 1ms to 10m0s"},
		{"unknown schema", "sinks:\n  - type: stdout\n    schema: cef\n", 3, `sinks[0].schema: unknown schema "cef" (want native, ecs or ocsf)`},
		{"schema list", "sinks:\n  - type: file\n    path: /x\n    schema: [ecs]\n", 4, "sinks[0].schema: want a single value, not a list"},

		// Sinks on one destination.
		{"two stdout sinks", "sinks:\n  - type: stdout\n  - type: file\n    path: /x\n  - type: stdout\n", 5, "sinks[2]: same destination as sinks[0]"},
		{"two file sinks on one file", "sinks:\n  - type: file\n    path: /var/log/x\n  - type: file\n    path: /var/log/./x\n", 4, "sinks[1]: same destination as sinks[0]"},
		{"two syslog sinks on one socket", "sinks:\n  - type: syslog\n  - type: syslog\n    address: /dev/log\n    format: rfc3164\n", 3, "sinks[1]: same destination as sinks[0]"},
		{"aliased sink", "sinks:\n  - &s {type: file, path: /x}\n  - *s\n", 3, "sinks[1]: same destination as sinks[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in), "config.yaml")
			if c != nil {
				t.Errorf("got a config with the error: %+v", c)
			}
			checkErr(t, err, "config.yaml", tt.line, tt.want)
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want func(c *Config) // edits Default() into the expected config
	}{
		{"interval only", "interval: 1s\n", func(c *Config) {}},
		{"empty mapping", "{}\n", func(c *Config) {}},
		{"document markers", "---\ninterval: 1s\n...\n", func(c *Config) {}},
		{"byte order mark", "\ufeffinterval: 1s\n", func(c *Config) {}},
		{"CRLF", "interval: 2s\r\nprotocols: [udp]\r\n", func(c *Config) {
			c.Interval = 2 * time.Second
			c.Protocols = []snapshot.Proto{snapshot.ProtoUDP}
		}},
		{"short interval", "interval: 200ms\n", func(c *Config) { c.Interval = 200 * time.Millisecond }},
		{"minimum interval", "interval: 10ms\n", func(c *Config) { c.Interval = 10 * time.Millisecond }},
		{"compound interval", "interval: \"1m30s\"\n", func(c *Config) { c.Interval = 90 * time.Second }},
		{"one protocol and family", "protocols: [udp]\nfamilies:\n  - ipv6\n", func(c *Config) {
			c.Protocols = []snapshot.Proto{snapshot.ProtoUDP}
			c.Families = []snapshot.Family{snapshot.FamilyIPv6}
		}},
		{"order kept", "protocols: [udp, tcp]\nfamilies: [ipv6, ipv4]\n", func(c *Config) {
			c.Protocols = []snapshot.Proto{snapshot.ProtoUDP, snapshot.ProtoTCP}
			c.Families = []snapshot.Family{snapshot.FamilyIPv6, snapshot.FamilyIPv4}
		}},
		{"some states", "states: [listen, 'established']\n", func(c *Config) {
			c.States = []snapshot.State{snapshot.StateListen, snapshot.StateEstablished}
		}},
		{"every state means all", "states: [" + strings.Join(snapshot.StateNames(), ", ") + "]\n", func(c *Config) {}},
		{"aliases", "protocols: &p [tcp]\nstates: [&l listen]\nsinks:\n  - type: file\n    path: *l\n", func(c *Config) {
			c.Protocols = []snapshot.Proto{snapshot.ProtoTCP}
			c.States = []snapshot.State{snapshot.StateListen}
			c.Sinks = []Sink{{Type: SinkFile, Line: 4, Path: "listen", Mode: 0o640}}
		}},
		{"stdout sink", "sinks:\n  - type: stdout\n", func(c *Config) { c.Sinks[0].Line = 2 }},
		{"file sink defaults", "interval: 1s\nsinks:\n  - type: file\n    path: /var/log/connlogd.json\n", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkFile, Line: 3, Path: "/var/log/connlogd.json", Mode: 0o640}}
		}},
		{"file mode plain", "sinks:\n  - type: file\n    path: /x\n    mode: 0600\n", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkFile, Line: 2, Path: "/x", Mode: 0o600}}
		}},
		{"file mode quoted", "sinks:\n  - type: file\n    path: /x\n    mode: \"0644\"\n", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkFile, Line: 2, Path: "/x", Mode: 0o644}}
		}},
		{"file mode 0o", "sinks:\n  - type: file\n    path: /x\n    mode: 0o604\n", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkFile, Line: 2, Path: "/x", Mode: 0o604}}
		}},
		{"file mode 0644 and 0", "sinks:\n  - {type: file, path: /x, mode: 0644}\n  - {type: file, path: /y, mode: 0}\n", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkFile, Line: 2, Path: "/x", Mode: 0o644}, {Type: SinkFile, Line: 3, Path: "/y", Mode: 0}}
		}},
		{"syslog sink defaults", "sinks:\n  - type: syslog\n", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkSyslog, Line: 2, Network: "unix", Address: "/dev/log", Format: "rfc5424", Facility: 16, Tag: "connlogd"}}
		}},
		{"syslog sink unix path", "sinks:\n  - type: syslog\n    network: unix\n    address: /run/systemd/journal/syslog\n", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkSyslog, Line: 2, Network: "unix", Address: "/run/systemd/journal/syslog", Format: "rfc5424", Facility: 16, Tag: "connlogd"}}
		}},
		{"syslog sink every key", "sinks:\n  - type: syslog\n    address: logs.example:514\n    network: udp\n    format: rfc3164\n    facility: daemon\n    tag: netlog\n", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkSyslog, Line: 2, Network: "udp", Address: "logs.example:514", Format: "rfc3164", Facility: 3, Tag: "netlog"}}
		}},
		{"syslog tcp IPv6 and port name", "sinks:\n  - {type: syslog, network: tcp, address: '[::1]:syslog', facility: 0}\n", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkSyslog, Line: 2, Network: "tcp", Address: "[::1]:syslog", Format: "rfc5424", Facility: 0, Tag: "connlogd"}}
		}},
		{"syslog facilities", "sinks:\n  - {type: syslog, facility: local7}\n  - {type: syslog, network: udp, address: 'h:514', facility: '23'}\n  - {type: syslog, network: tcp, address: 'h:514', facility: authpriv}\n", func(c *Config) {
			def := Sink{Type: SinkSyslog, Network: "unix", Address: "/dev/log", Format: "rfc5424", Tag: "connlogd"}
			c.Sinks = []Sink{def, def, def}
			c.Sinks[0].Line, c.Sinks[0].Facility = 2, 23
			c.Sinks[1].Line, c.Sinks[1].Facility, c.Sinks[1].Network, c.Sinks[1].Address = 3, 23, "udp", "h:514"
			c.Sinks[2].Line, c.Sinks[2].Facility, c.Sinks[2].Network, c.Sinks[2].Address = 4, 10, "tcp", "h:514"
		}},
		{"syslog tag quoted string tag", "sinks:\n  - {type: syslog, tag: !!str 1}\n", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkSyslog, Line: 2, Network: "unix", Address: "/dev/log", Format: "rfc5424", Facility: 16, Tag: "1"}}
		}},
		{"syslog tls every key", "sinks:\n  - type: syslog\n    network: tls\n    address: logs.example:6514\n    tls:\n      ca_file: /etc/ssl/ca.pem\n      cert_file: /etc/connlogd/client.pem\n      key_file: /etc/connlogd/client.key\n      server_name: syslog.example\n    queue_size: 50000\n    drain_timeout: 1500ms\n    schema: ocsf\n", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkSyslog, Line: 2, Network: "tls", Address: "logs.example:6514", Format: "rfc5424", Facility: 16, Tag: "connlogd",
				TLS:       TLS{CAFile: "/etc/ssl/ca.pem", CertFile: "/etc/connlogd/client.pem", KeyFile: "/etc/connlogd/client.key", ServerName: "syslog.example"},
				QueueSize: 50000, DrainTimeout: 1500 * time.Millisecond, Schema: "ocsf"}}
		}},
		{"syslog relp and relp over tls", "sinks:\n  - {type: syslog, network: relp, address: 'h:2514'}\n  - type: syslog\n    network: relp-tls\n    address: h:2515\n    tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /c.key}\n", func(c *Config) {
			c.Sinks = []Sink{
				{Type: SinkSyslog, Line: 2, Network: "relp", Address: "h:2514", Format: "rfc5424", Facility: 16, Tag: "connlogd"},
				{Type: SinkSyslog, Line: 3, Network: "relp-tls", Address: "h:2515", Format: "rfc5424", Facility: 16, Tag: "connlogd",
					TLS: TLS{CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/c.key"}},
			}
		}},
		{"syslog tls system roots", "sinks:\n  - {type: syslog, network: tls, address: 'h:6514'}\n  - {type: syslog, network: tls, address: 'h2:6514', tls: {}}\n", func(c *Config) {
			def := Sink{Type: SinkSyslog, Network: "tls", Format: "rfc5424", Facility: 16, Tag: "connlogd"}
			c.Sinks = []Sink{def, def}
			c.Sinks[0].Line, c.Sinks[0].Address = 2, "h:6514"
			c.Sinks[1].Line, c.Sinks[1].Address = 3, "h2:6514"
		}},
		{"schemas", "sinks:\n  - {type: stdout, schema: ecs}\n  - {type: file, path: /x, schema: native}\n", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkStdout, Line: 2, Schema: "ecs"}, {Type: SinkFile, Line: 3, Path: "/x", Mode: 0o640, Schema: "native"}}
		}},
		{"sinks of every type", "sinks:\n  - type: stdout\n  - type: file\n    path: a.json\n  - type: file\n    path: b.json\n  - type: syslog\n", func(c *Config) {
			c.Sinks = []Sink{
				{Type: SinkStdout, Line: 2},
				{Type: SinkFile, Line: 3, Path: "a.json", Mode: 0o640},
				{Type: SinkFile, Line: 5, Path: "b.json", Mode: 0o640},
				{Type: SinkSyslog, Line: 7, Network: "unix", Address: "/dev/log", Format: "rfc5424", Facility: 16, Tag: "connlogd"},
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in), "config.yaml")
			if err != nil {
				t.Fatal(err)
			}
			want := Default()
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate on a parsed config: %v", err)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	want := &Config{
		Interval:  time.Second,
		Protocols: []snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP},
		Families:  []snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6},
		States:    nil,
		Sinks:     []Sink{{Type: SinkStdout}},
		Destroy:   Destroy{Enabled: true, Buffer: 8 << 20},

		Attribution: Attribution{Process: true, Cgroup: true, CmdlineMaxBytes: 256},

		Namespaces:      Namespaces{Mode: "host"},
		NamespaceRescan: 5 * time.Second,

		Containers: Containers{Names: true, Docker: true, CRI: true},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Default() = %+v; want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	// Each call returns its own slices.
	c.Protocols[0] = snapshot.ProtoUDP
	c.Sinks[0].Type = SinkFile
	if d := Default(); d.Protocols[0] != snapshot.ProtoTCP || d.Sinks[0].Type != SinkStdout {
		t.Error("Default shares its slices between calls")
	}
}

func TestStates(t *testing.T) {
	all := Default()
	if got := all.StateMask(); got != snapshot.AllStates {
		t.Errorf("StateMask with no states = %#x; want AllStates", got)
	}
	for s := snapshot.StateEstablished; s <= snapshot.StateBoundInactive; s++ {
		if all.StateMask()&(1<<s) == 0 {
			t.Errorf("no states: state %v masked out", s)
		}
	}

	c := &Config{States: []snapshot.State{snapshot.StateListen, snapshot.StateSynRecv, snapshot.StateClose}}
	want := uint32(1<<snapshot.StateListen | 1<<snapshot.StateSynRecv | 1<<snapshot.StateNewSynRecv |
		1<<snapshot.StateClose | 1<<snapshot.StateBoundInactive)
	if got := c.StateMask(); got != want {
		t.Errorf("StateMask = %#x; want %#x", got, want)
	}
	for s := snapshot.State(0); s < 40; s++ {
		wanted := s == snapshot.StateListen || s == snapshot.StateSynRecv || s == snapshot.StateClose ||
			s == snapshot.StateNewSynRecv || s == snapshot.StateBoundInactive
		if got := c.StateMask()&(1<<s) != 0; got != wanted {
			t.Errorf("state %v in the mask: %v; want %v", s, got, wanted)
		}
	}
}

func TestValidate(t *testing.T) {
	syslog := func(edit func(*Sink)) func(*Config) {
		return func(c *Config) {
			s := Sink{Type: SinkSyslog, Network: "unix", Address: "/dev/log", Format: "rfc5424", Facility: 16, Tag: "connlogd"}
			edit(&s)
			c.Sinks = []Sink{s}
		}
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"default", func(c *Config) {}, ""},
		{"syslog", syslog(func(s *Sink) {}), ""},
		{"file", func(c *Config) { c.Sinks = []Sink{{Type: SinkFile, Path: "/x", Mode: 0o600}} }, ""},
		{"some states", func(c *Config) { c.States = []snapshot.State{snapshot.StateListen} }, ""},
		{"interval too short", func(c *Config) { c.Interval = time.Millisecond }, "interval: 1ms is shorter than the minimum 10ms"},
		{"zero interval", func(c *Config) { c.Interval = 0 }, "interval: 0s is shorter"},
		{"no protocols", func(c *Config) { c.Protocols = nil }, "protocols: empty list"},
		{"unknown protocol", func(c *Config) { c.Protocols = []snapshot.Proto{132} }, "protocols[0]: unknown protocol 132"},
		{"protocol twice", func(c *Config) { c.Protocols = []snapshot.Proto{6, 17, 6} }, "protocols[2]: tcp listed twice"},
		{"no families", func(c *Config) { c.Families = []snapshot.Family{} }, "families: empty list"},
		{"unknown family", func(c *Config) { c.Families = []snapshot.Family{1} }, "families[0]: unknown family 1"},
		{"family twice", func(c *Config) { c.Families = []snapshot.Family{10, 10} }, "families[1]: ipv6 listed twice"},
		{"internal state", func(c *Config) { c.States = []snapshot.State{snapshot.StateNewSynRecv} }, "states[0]: unknown state 12"},
		{"state twice", func(c *Config) { c.States = []snapshot.State{1, 1} }, "states[1]: established listed twice"},
		{"no sinks", func(c *Config) { c.Sinks = nil }, "sinks: empty list"},
		{"unknown sink type", func(c *Config) { c.Sinks = []Sink{{Type: "pipe"}} }, `sinks[0]: unknown sink type "pipe"`},
		{"stdout with a path", func(c *Config) { c.Sinks = []Sink{{Type: SinkStdout, Path: "/x"}} }, "sinks[0]: sets fields that a stdout sink does not use"},
		{"file with a tag", func(c *Config) { c.Sinks = []Sink{{Type: SinkFile, Path: "/x", Tag: "t"}} }, "sinks[0]: sets fields that a file sink does not use"},
		{"file without path", func(c *Config) { c.Sinks = []Sink{{Type: SinkFile, Mode: 0o640}} }, "sinks[0]: path: must not be empty"},
		{"file mode too big", func(c *Config) { c.Sinks = []Sink{{Type: SinkFile, Path: "/x", Mode: fs.ModeDir | 0o755}} }, "sinks[0]: mode:"},
		{"file mode 0777", func(c *Config) { c.Sinks = []Sink{{Type: SinkFile, Path: "/x", Mode: 0o777}} }, "sinks[0]: mode: 0777"},
		{"file mode 0666", func(c *Config) { c.Sinks = []Sink{{Type: SinkFile, Path: "/x", Mode: 0o666}} }, "sinks[0]: mode: 0666 lets group or others write"},
		{"syslog tag with colon", syslog(func(s *Sink) { s.Tag = "app:1" }), "sinks[0]: tag:"},
		{"syslog with mode", syslog(func(s *Sink) { s.Mode = 0o640 }), "sets fields that a syslog sink does not use"},
		{"syslog bad network", syslog(func(s *Sink) { s.Network = "" }), `sinks[0]: network: unknown network ""`},
		{"syslog udp without address", syslog(func(s *Sink) { s.Network, s.Address = "udp", "" }), "sinks[0]: address: must not be empty"},
		{"syslog udp unix address", syslog(func(s *Sink) { s.Network = "udp" }), `sinks[0]: address: "/dev/log" is not host:port`},
		{"syslog bad format", syslog(func(s *Sink) { s.Format = "" }), `sinks[0]: format: unknown format ""`},
		{"syslog bad facility", syslog(func(s *Sink) { s.Facility = 24 }), "sinks[0]: facility: 24 is out of range 0-23"},
		{"syslog bad tag", syslog(func(s *Sink) { s.Tag = "" }), "sinks[0]: tag:"},
		{"syslog tls", syslog(func(s *Sink) {
			s.Network, s.Address, s.TLS = "tls", "h:6514", TLS{CAFile: "/ca", CertFile: "/c", KeyFile: "/k"}
		}), ""},
		{"syslog tls half a client pair", syslog(func(s *Sink) { s.Network, s.Address, s.TLS = "tls", "h:6514", TLS{CertFile: "/c"} }), "sinks[0]: tls: cert_file and key_file go together"},
		{"syslog tls settings on udp", syslog(func(s *Sink) { s.Network, s.Address, s.TLS = "udp", "h:514", TLS{CAFile: "/ca"} }), "sinks[0]: tls: set for network udp"},
		{"syslog queue", syslog(func(s *Sink) { s.QueueSize, s.DrainTimeout = 1, time.Minute }), ""},
		{"syslog negative queue", syslog(func(s *Sink) { s.QueueSize = -1 }), "sinks[0]: queue_size: -1 is not an event count"},
		{"syslog long drain", syslog(func(s *Sink) { s.DrainTimeout = time.Hour }), "sinks[0]: drain_timeout:"},
		{"file with a queue", func(c *Config) { c.Sinks = []Sink{{Type: SinkFile, Path: "/x", QueueSize: 5}} }, "sinks[0]: sets fields that a file sink does not use"},
		{"stdout schema", func(c *Config) { c.Sinks = []Sink{{Type: SinkStdout, Schema: "ocsf"}} }, ""},
		{"bad schema", func(c *Config) { c.Sinks = []Sink{{Type: SinkStdout, Schema: "cef"}} }, `sinks[0]: schema: unknown schema "cef"`},
		{"same file twice", func(c *Config) {
			c.Sinks = []Sink{{Type: SinkFile, Path: "/x", Mode: 0o640}, {Type: SinkStdout}, {Type: SinkFile, Path: "//x", Mode: 0o600}}
		}, "sinks[2]: same destination as sinks[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.edit(c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v; want nil", err)
			case tt.want == "":
			case err == nil:
				t.Fatalf("Validate() = nil; want …%s…", tt.want)
			case !strings.Contains(err.Error(), tt.want) || strings.ContainsAny(err.Error(), "\r\n"):
				t.Errorf("Validate() = %q; want one line containing %q", err, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()

	t.Run("missing file", func(t *testing.T) {
		c, err := Load(filepath.Join(dir, "absent.yaml"))
		if c != nil || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load = %v, %v; want an fs.ErrNotExist error", c, err)
		}
	})

	t.Run("named in errors", func(t *testing.T) {
		path := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(path, []byte("interval: 1s\nintreval: 2s\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		checkErr(t, err, path, 2, `unknown key "intreval"`)
	})

	t.Run("good file", func(t *testing.T) {
		path := filepath.Join(dir, "good.yaml")
		if err := os.WriteFile(path, []byte("interval: 5s\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if c.Interval != 5*time.Second {
			t.Errorf("Interval = %v; want 5s", c.Interval)
		}
	})
}

// withoutLines clears the sinks' source lines so that a parsed config can
// be compared with Default.
func withoutLines(c *Config) *Config {
	for i := range c.Sinks {
		c.Sinks[i].Line = 0
	}
	return c
}

// TestExample checks that config.example.yaml shows the defaults as its
// active values, and that its commented-out sinks are valid once
// uncommented.
func TestExample(t *testing.T) {
	const path = "../config.example.yaml"
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := withoutLines(c); !reflect.DeepEqual(got, Default()) {
		t.Errorf("example differs from Default():\ngot  %+v\nwant %+v", got, Default())
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	for i, l := range lines {
		if rest, ok := strings.CutPrefix(l, "  # "); ok && (strings.HasPrefix(rest, "- ") || strings.HasPrefix(rest, "  ")) {
			lines[i] = "  " + rest
		}
	}
	c, err = Parse([]byte(strings.Join(lines, "\n")), "uncommented example")
	if err != nil {
		t.Fatal(err)
	}
	want := []Sink{
		{Type: SinkStdout},
		{Type: SinkFile, Path: "/var/log/connlogd/events.json", Mode: 0o640},
		{Type: SinkSyslog, Network: "tls", Address: "logs.example.net:6514", Format: "rfc5424", Facility: 16, Tag: "connlogd",
			TLS:       TLS{CAFile: "/etc/connlogd/ca.pem", CertFile: "/etc/connlogd/client.pem", KeyFile: "/etc/connlogd/client.key", ServerName: "logs.example.net"},
			QueueSize: 10000, DrainTimeout: 5 * time.Second, Spool: Spool{Dir: "/var/lib/connlogd/spool-syslog", MaxBytes: DefaultSpoolBytes}},
		{Type: SinkOTLP, OTLP: &OTLP{Endpoint: "https://otel.example.net:4318", Compression: "none", Headers: map[string]string{"X-Tenant": "ops"}},
			TLS: TLS{CAFile: "/etc/connlogd/ca.pem"}, QueueSize: 10000, DrainTimeout: 5 * time.Second,
			Spool: Spool{Dir: "/var/lib/connlogd/spool-otel", MaxBytes: DefaultSpoolBytes}},
	}
	if got := withoutLines(c).Sinks; !reflect.DeepEqual(got, want) {
		t.Errorf("uncommented example sinks:\ngot  %+v\nwant %+v", got, want)
	}
}

func TestParseDestroy(t *testing.T) {
	c, err := Parse([]byte("destroy:\n  enabled: false\n  buffer: 4096\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Destroy != (Destroy{Enabled: false, Buffer: 4096}) {
		t.Errorf("destroy = %+v", c.Destroy)
	}
	c, err = Parse([]byte("destroy:\n  buffer: 2048\n"), "c.yaml")
	if err != nil || c.Destroy != (Destroy{Enabled: true, Buffer: 2048}) {
		t.Errorf("destroy = %+v, %v; want enabled by default", c.Destroy, err)
	}
}

func TestParseDaemonKeys(t *testing.T) {
	c, err := Parse([]byte("namespaces: all\nnamespace_rescan: 2s\nmetrics:\n  listen: 127.0.0.1:9477\nstate_file: /var/lib/connlogd/state.json\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespaces.Mode != "all" || c.NamespaceRescan != 2*time.Second || c.Metrics.Listen != "127.0.0.1:9477" || c.StateFile != "/var/lib/connlogd/state.json" {
		t.Errorf("parsed %+v", c)
	}
	c, err = Parse([]byte("namespaces: [host, red, /proc/1/ns/net]\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespaces.Mode != "" || len(c.Namespaces.List) != 3 || c.Namespaces.List[1] != "red" {
		t.Errorf("namespaces %+v", c.Namespaces)
	}
}
