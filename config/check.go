package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/connlogd/connlogd/safefile"
	"github.com/connlogd/connlogd/spool"
)

// Check applies every rule that starting with c applies, without side
// effects: Validate's rules, and those that look at the system. A file
// sink's directory must exist and be writable, and the file must be one
// the sink would open (package safefile); a state file's directory too;
// TLS files must exist, be readable and parse; a spool directory must be
// one package spool would open. Start, reload and
// -check-config all call it, so the check says what start will say.
//
// What only doing it can tell (a port already in use, a collector that
// is down) is not checked. Every problem is reported, joined, each naming
// the setting and, for a sink read from a file, its line, on one line.
func (c *Config) Check() error {
	if err := c.Validate(); err != nil {
		return err
	}
	var errs []error
	for i := range c.Sinks {
		s := &c.Sinks[i]
		where := fmt.Sprintf("sinks[%d]", i)
		if s.Line > 0 {
			where += fmt.Sprintf(" (line %d)", s.Line)
		}
		switch s.Type {
		case SinkFile:
			if err := safefile.CheckWrite(s.Path); err != nil {
				errs = append(errs, fmt.Errorf("%s: path: %w", where, err))
			}
		case SinkSyslog:
			if s.Network == "tls" || s.Network == "relp-tls" {
				if _, _, err := s.TLS.Load(); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", where, err))
				}
			}
		case SinkOTLP:
			if s.OTLP != nil && strings.HasPrefix(s.OTLP.Endpoint, "https:") {
				if _, _, err := s.TLS.Load(); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", where, err))
				}
			}
		}
		if s.Spool.Dir != "" {
			if err := spool.Check(s.Spool.Dir); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
			}
		}
	}
	if c.StateFile != "" {
		if err := safefile.CheckDir(filepath.Dir(c.StateFile)); err != nil {
			errs = append(errs, fmt.Errorf("state_file: %w", err))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return problems(errs)
}

// problems is several errors said on one line, so that a refusal is one
// log record and one line of -check-config.
type problems []error

func (p problems) Error() string {
	var b strings.Builder
	for i, err := range p {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	return b.String()
}

func (p problems) Unwrap() []error { return p }

// maxPEMSize bounds each TLS file read: a system CA bundle is a few
// hundred KiB.
const maxPEMSize = 4 << 20

// Load reads the TLS files: the CA bundle (nil roots when CAFile is
// unset: the system's are used) and the client certificate pair (none
// when unset). It is the one reader of these files: the syslog sink
// loads them with it at start and at each reopen, and Check at check
// time.
func (t *TLS) Load() (roots *x509.CertPool, certs []tls.Certificate, err error) {
	if t.CAFile != "" {
		pem, err := safefile.ReadFile(t.CAFile, maxPEMSize)
		if err != nil {
			return nil, nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("tls.ca_file: %s: no PEM certificate found", t.CAFile)
		}
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := safefile.ReadFile(t.CertFile, maxPEMSize)
		if err != nil {
			return nil, nil, fmt.Errorf("tls.cert_file: %w", err)
		}
		key, err := safefile.ReadFile(t.KeyFile, maxPEMSize)
		if err != nil {
			return nil, nil, fmt.Errorf("tls.key_file: %w", err)
		}
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, nil, fmt.Errorf("tls.cert_file %s / key_file %s: %w", t.CertFile, t.KeyFile, err)
		}
		certs = []tls.Certificate{pair}
	}
	return roots, certs, nil
}
