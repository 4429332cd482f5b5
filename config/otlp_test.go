package config

import (
	"testing"
)

func TestParseOTLP(t *testing.T) {
	in := `sinks:
  - type: otlp
    endpoint: https://collector.example:4318
    compression: gzip
    headers:
      X-Tenant: ops
    tls: {ca_file: /etc/ca.pem}
    spool: {dir: /var/lib/connlogd/spool, max_bytes: 1GiB}
    schema: ecs
  - type: otlp
    endpoint: http://127.0.0.1:4318
`
	c, err := Parse([]byte(in), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sinks[0]
	if s.Type != SinkOTLP || s.OTLP.Endpoint != "https://collector.example:4318" || s.OTLP.Compression != "gzip" ||
		s.OTLP.Headers["X-Tenant"] != "ops" || s.TLS.CAFile != "/etc/ca.pem" || s.Schema != "ecs" ||
		s.Spool != (Spool{Dir: "/var/lib/connlogd/spool", MaxBytes: 1 << 30}) {
		t.Fatalf("sink 0: %+v %+v", s, s.OTLP)
	}
	// Defaults: no spool, no compression, no headers, the queue's defaults.
	d := c.Sinks[1]
	if d.OTLP.Compression != "" || d.OTLP.Headers != nil || d.Spool != (Spool{}) || d.QueueSize != 0 || d.DrainTimeout != 0 {
		t.Fatalf("sink 1: %+v %+v", d, d.OTLP)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("a parsed config does not validate: %v", err)
	}
}

func TestParseOTLPErrors(t *testing.T) {
	tests := []struct {
		name, in string
		line     int
		want     string
	}{
		{"no endpoint", "sinks:\n  - type: otlp\n", 2, `sinks[0]: missing key "endpoint"`},
		{"endpoint not a URL", "sinks:\n  - type: otlp\n    endpoint: 127.0.0.1:4318\n", 3, `sinks[0].endpoint: "127.0.0.1:4318"`},
		{"endpoint grpc scheme", "sinks:\n  - type: otlp\n    endpoint: grpc://h:4317\n", 3, "want an http:// or https:// URL"},
		{"endpoint with user", "sinks:\n  - type: otlp\n    endpoint: http://u:p@h:4318\n", 3, "credentials go in headers"},
		{"compression", "sinks:\n  - type: otlp\n    endpoint: http://h:4318\n    compression: zstd\n", 4, `sinks[0].compression: unknown compression "zstd" (want gzip or none)`},
		{"header name", "sinks:\n  - type: otlp\n    endpoint: http://h:4318\n    headers:\n      'a b': c\n", 5, `header name "a b"`},
		{"header value", "sinks:\n  - type: otlp\n    endpoint: http://h:4318\n    headers:\n      a: \"x\\ny\"\n", 5, "value has a control character"},
		{"tls on http", "sinks:\n  - type: otlp\n    endpoint: http://h:4318\n    tls: {ca_file: /ca}\n", 2, "TLS settings need an https:// endpoint"},
		{"spool relative", "sinks:\n  - type: otlp\n    endpoint: http://h:4318\n    spool: {dir: spool}\n", 4, `sinks[0].spool.dir: "spool" is not an absolute path`},
		{"spool small", "sinks:\n  - type: otlp\n    endpoint: http://h:4318\n    spool: {dir: /s, max_bytes: 1MiB}\n", 4, "sinks[0].spool.max_bytes: \"1MiB\" is not a size of at least"},
		{"spool no dir", "sinks:\n  - type: otlp\n    endpoint: http://h:4318\n    spool: {max_bytes: 1GiB}\n", 4, `sinks[0].spool: missing key "dir"`},
		{"spool unknown key", "sinks:\n  - type: otlp\n    endpoint: http://h:4318\n    spool: {path: /s}\n", 4, `unknown key "path" (want dir or max_bytes)`},
		{"spool on a file sink", "sinks:\n  - type: file\n    path: /x\n    spool: {dir: /s}\n", 4, `sinks[0]: key "spool" is for syslog sinks, not file`},
		{"spool on syslog udp", "sinks:\n  - type: syslog\n    network: udp\n    address: h:514\n    spool: {dir: /s}\n", 2, "sinks[0].spool: needs network tcp, tls, relp or relp-tls, not udp"},
		{"spool on syslog unix", "sinks:\n  - type: syslog\n    spool: {dir: /s}\n", 2, "not unix"},
		{"endpoint on syslog", "sinks:\n  - type: syslog\n    endpoint: http://h:4318\n", 3, `key "endpoint" is for otlp sinks, not syslog`},
		{"two sinks on one endpoint", "sinks:\n  - {type: otlp, endpoint: 'http://h:4318'}\n  - {type: otlp, endpoint: 'http://h:4318', schema: ecs}\n", 3, "sinks[1]: same destination as sinks[0]"},
		{"two sinks on one spool", "sinks:\n  - {type: otlp, endpoint: 'http://a:4318', spool: {dir: /s}}\n  - {type: otlp, endpoint: 'http://b:4318', spool: {dir: /s/}}\n", 3, "sinks[1]: same destination as sinks[0]"},
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

func TestValidateOTLP(t *testing.T) {
	ok := Sink{Type: SinkOTLP, OTLP: &OTLP{Endpoint: "http://127.0.0.1:4318"}}
	if err := ok.validate(); err != nil {
		t.Fatalf("minimal otlp sink: %v", err)
	}
	for _, n := range []string{"tcp", "tls", "relp", "relp-tls"} {
		s := Sink{Type: SinkSyslog, Network: n, Address: "h:1", Format: "rfc5424", Facility: 16, Tag: "connlogd", Spool: Spool{Dir: "/s"}}
		if err := s.validate(); err != nil {
			t.Errorf("syslog %s with a spool: %v", n, err)
		}
	}
	bad := []Sink{
		{Type: SinkOTLP},
		{Type: SinkOTLP, OTLP: &OTLP{Endpoint: "ftp://h"}},
		{Type: SinkOTLP, OTLP: &OTLP{Endpoint: "http://h:1"}, Spool: Spool{Dir: "rel"}},
		{Type: SinkOTLP, OTLP: &OTLP{Endpoint: "http://h:1"}, Spool: Spool{Dir: "/s", MaxBytes: 10}},
		{Type: SinkOTLP, OTLP: &OTLP{Endpoint: "http://h:1"}, Path: "/x"},
		{Type: SinkSyslog, Network: "udp", Address: "h:1", Spool: Spool{Dir: "/s"}},
		{Type: SinkSyslog, Network: "tcp", Address: "h:1", Spool: Spool{Dir: "s"}},
		{Type: SinkFile, Path: "/x", OTLP: &OTLP{Endpoint: "http://h:1"}},
	}
	for i, s := range bad {
		if err := s.validate(); err == nil {
			t.Errorf("bad sink %d validated: %+v", i, s)
		}
	}
}
