package config

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/connlogd/connlogd/spool"
)

// OTLP configures an otlp sink: OTLP/HTTP with protobuf encoding to an
// OpenTelemetry Collector or any OTLP receiver.
type OTLP struct {
	// Endpoint is the receiver's base URL, http:// or https://; the
	// logs path /v1/logs is appended.
	Endpoint string
	// Compression is gzip or none (default).
	Compression string
	// Headers are sent with every request (an API key, a tenant).
	Headers map[string]string
}

// Spool configures a network sink's disk queue (package spool): events
// wait there, across restarts, until the receiver acknowledges them.
type Spool struct {
	Dir      string // absolute path; "" means no spool
	MaxBytes int64  // default DefaultSpoolBytes
}

// Spool and OTLP defaults.
const (
	DefaultSpoolBytes  = 256 << 20
	MinSpoolBytes      = spool.MinBytes
	DefaultCompression = "none"
)

func checkEndpoint(e string) error {
	u, err := url.Parse(e)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", e, errors.Unwrap(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: want an http:// or https:// URL", e)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q has no host", e)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q: want scheme://host:port[/path], without user, query or fragment (credentials go in headers)", e)
	}
	return nil
}

func checkCompression(c string) error {
	switch c {
	case "", "none", "gzip":
		return nil
	}
	return fmt.Errorf("unknown compression %q (want gzip or none)", c)
}

// checkHeader checks a header's name (an HTTP token) and value (no line
// breaks or other control characters).
func checkHeader(name, value string) error {
	if name == "" {
		return errors.New("empty header name")
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 127 || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return fmt.Errorf("header name %q: want letters, digits and !#$%%&'*+-.^_`|~", name)
		}
	}
	for _, c := range []byte(value) {
		if (c < ' ' && c != '\t') || c == 127 {
			return fmt.Errorf("header %s: value has a control character", name)
		}
	}
	return nil
}

func checkSpool(s *Spool) error {
	if *s == (Spool{}) {
		return nil
	}
	if s.Dir == "" {
		return errors.New("dir: must be set")
	}
	if !filepath.IsAbs(s.Dir) {
		return fmt.Errorf("dir: %q is not an absolute path", s.Dir)
	}
	if s.MaxBytes != 0 && s.MaxBytes < MinSpoolBytes {
		return fmt.Errorf("max_bytes: %d is below the minimum %d", s.MaxBytes, MinSpoolBytes)
	}
	return nil
}

// CheckOTLP checks an otlp sink's own settings (the sink package checks
// them again when it opens one, with this same function).
func CheckOTLP(s *Sink) error { return checkOTLP(s) }

// checkSyslogSpool checks a syslog sink's spool: only stream networks,
// whose receiver acknowledges what it got, can let a spool go of events.
func checkSyslogSpool(network string, s *Spool) error {
	if *s == (Spool{}) {
		return nil
	}
	switch network {
	case "tcp", "tls", "relp", "relp-tls":
	default:
		return fmt.Errorf("needs network tcp, tls, relp or relp-tls, not %s (nothing acknowledges a datagram)", network)
	}
	return checkSpool(s)
}

// checkOTLP checks an otlp sink's own settings.
func checkOTLP(s *Sink) error {
	if s.OTLP == nil {
		return errors.New("endpoint: must be set")
	}
	if err := checkEndpoint(s.OTLP.Endpoint); err != nil {
		return fmt.Errorf("endpoint: %w", err)
	}
	if err := checkCompression(s.OTLP.Compression); err != nil {
		return fmt.Errorf("compression: %w", err)
	}
	for k, v := range s.OTLP.Headers {
		if err := checkHeader(k, v); err != nil {
			return fmt.Errorf("headers: %w", err)
		}
	}
	if s.TLS != (TLS{}) {
		if !strings.HasPrefix(s.OTLP.Endpoint, "https:") {
			return errors.New("tls: TLS settings need an https:// endpoint")
		}
		if (s.TLS.CertFile == "") != (s.TLS.KeyFile == "") {
			return errors.New("tls: cert_file and key_file go together (mutual TLS): set both or neither")
		}
	}
	if err := checkQueueSize(s.QueueSize); err != nil {
		return fmt.Errorf("queue_size: %w", err)
	}
	if err := checkDrainTimeout(s.DrainTimeout); err != nil {
		return fmt.Errorf("drain_timeout: %w", err)
	}
	if err := checkSpool(&s.Spool); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// headers parses an otlp sink's headers mapping.
func (p *parser) headers(n *yaml.Node, path string) (map[string]string, error) {
	if n.Kind != yaml.MappingNode {
		return nil, p.errorf(n.Line, path, "want a mapping of header names to values, not a %s", kindName(n))
	}
	h := make(map[string]string, len(n.Content)/2)
	err := p.fields(n, path, func(key string, k, v *yaml.Node) error {
		val, err := p.scalar(v, path+"."+key)
		if err != nil {
			return err
		}
		if err := checkHeader(key, val); err != nil {
			return p.errorf(k.Line, path, "%w", err)
		}
		h[key] = val
		return nil
	})
	return h, err
}

// spool parses a sink's spool mapping.
func (p *parser) spool(n *yaml.Node, path string) (Spool, error) {
	var s Spool
	if n.Kind != yaml.MappingNode {
		return s, p.errorf(n.Line, path, "want a mapping with dir and max_bytes, not a %s", kindName(n))
	}
	err := p.fields(n, path, func(key string, k, v *yaml.Node) error {
		kpath := path + "." + key
		val, err := p.scalar(v, kpath)
		if err != nil {
			return err
		}
		switch key {
		case "dir":
			if !filepath.IsAbs(val) {
				return p.errorf(v.Line, kpath, "%q is not an absolute path", val)
			}
			s.Dir = val
		case "max_bytes":
			b, ok := parseBytes(val)
			if !ok || b < MinSpoolBytes {
				return p.errorf(v.Line, kpath, "%q is not a size of at least %d bytes (like 1GiB, 512MiB or a byte count)", val, MinSpoolBytes)
			}
			s.MaxBytes = b
		default:
			return p.errorf(k.Line, path, "unknown key %q (want dir or max_bytes)", key)
		}
		return nil
	})
	if err == nil && s.Dir == "" {
		err = p.errorf(n.Line, path, "missing key \"dir\"")
	}
	return s, err
}

// parseBytes reads a byte count with an optional KiB, MiB, GiB or TiB
// suffix.
func parseBytes(s string) (int64, bool) {
	mult := int64(1)
	for i, suf := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if num, ok := strings.CutSuffix(s, suf); ok {
			s, mult = strings.TrimSpace(num), int64(1)<<(10*(i+1))
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, false
	}
	return n * mult, true
}

// otlp returns s.OTLP, allocating it on first use.
func (s *Sink) otlp() *OTLP {
	if s.OTLP == nil {
		s.OTLP = &OTLP{}
	}
	return s.OTLP
}
