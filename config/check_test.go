package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connlogd/connlogd/safefile"
)

// writeCA writes a self-signed CA certificate and its key as PEM files.
func writeCA(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "check test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// Each case parses (what -check-config did before Check existed) and must
// then be refused by Check, which start and reload also call.
func TestCheckRefusesWhatStartRefuses(t *testing.T) {
	dir := t.TempDir()
	ca, key := writeCA(t, dir)
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink("/etc/passwd", link); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "hard.json")
	if err := os.Link(ca, hard); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	spoolLink := filepath.Join(dir, "spool-link")
	if err := os.Symlink(open, spoolLink); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(dir, "theirs")
	if err := os.Mkdir(theirs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(theirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	tlsSink := func(tls string) string {
		return "sinks:\n  - type: syslog\n    network: tls\n    address: 127.0.0.1:6514\n    tls: {" + tls + "}\n"
	}
	for _, tt := range []struct {
		name, yaml, want string
	}{
		{"file sink in a missing directory", "sinks:\n  - {type: file, path: " + dir + "/missing/events.json}\n",
			"sinks[0] (line 2): path: stat " + dir + "/missing: no such file or directory"},
		{"file sink through a symlink", "sinks:\n  - {type: file, path: " + link + "}\n",
			link + ": refused: is a symbolic link"},
		{"file sink on a hard-linked file", "sinks:\n  - {type: file, path: " + hard + "}\n",
			hard + ": refused: regular file has 2 hard links"},
		{"file sink in a world-writable directory", "sinks:\n  - {type: file, path: " + open + "/events.json}\n",
			open + ": refused: directory is writable by group or others"},
		{"missing ca_file", tlsSink("ca_file: " + dir + "/none.pem"),
			"sinks[0] (line 2): tls.ca_file: open " + dir + "/none.pem: no such file or directory"},
		{"ca_file that is not PEM", tlsSink("ca_file: /etc/passwd"), "tls.ca_file: /etc/passwd: no PEM certificate found"},
		{"key that does not match", tlsSink("ca_file: " + ca + ", cert_file: " + ca + ", key_file: " + ca), "tls.cert_file"},
		{"otlp over https with a missing ca_file", "sinks:\n  - {type: otlp, endpoint: 'https://127.0.0.1:4318', tls: {ca_file: " + dir + "/none.pem}}\n",
			"sinks[0] (line 2): tls.ca_file: open " + dir + "/none.pem: no such file or directory"},
		{"spool directory that is a symlink", "sinks:\n  - {type: otlp, endpoint: 'http://127.0.0.1:4318', spool: {dir: " + spoolLink + "}}\n",
			"spool " + spoolLink + ": open: not a directory (a symbolic link is never followed)"},
		{"spool directory of another user", "sinks:\n  - {type: otlp, endpoint: 'http://127.0.0.1:4318', spool: {dir: " + theirs + "}}\n",
			"spool " + theirs + ": owned by uid 65534"},
		{"state file in a missing directory", "state_file: " + dir + "/nodir/state.json\n", "state_file: stat " + dir + "/nodir: no such file or directory"},
		{"state file in a world-writable directory", "state_file: " + open + "/state.json\n", "state_file: " + open + ": refused"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), "c.yaml")
			if err != nil {
				t.Fatalf("Parse = %v; the case is for Check", err)
			}
			err = c.Check()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v, want …%s…", err, tt.want)
			}
		})
	}
	// What start accepts, Check accepts.
	good := "sinks:\n  - {type: file, path: " + dir + "/events.json}\n  - {type: file, path: /dev/null}\n" +
		"  - {type: syslog, network: tls, address: '127.0.0.1:6514', tls: {ca_file: " + ca + ", cert_file: " + ca + ", key_file: " + key + "}}\n" +
		"  - {type: otlp, endpoint: 'https://127.0.0.1:4318', tls: {ca_file: " + ca + "}, spool: {dir: " + dir + "/new/spool}}\n" +
		"state_file: " + dir + "/state.json\nmetrics: {listen: '127.0.0.1:0'}\n"
	c, err := Parse([]byte(good), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(); err != nil {
		t.Errorf("Check of a good configuration = %v", err)
	}
	if err := Default().Check(); err != nil {
		t.Errorf("Check of the defaults = %v", err)
	}
}

func TestCheckReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	c, err := Parse([]byte("sinks:\n  - {type: file, path: "+dir+"/a/x}\n  - {type: file, path: "+dir+"/b/y}\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check()
	if err == nil || !strings.Contains(err.Error(), "sinks[0] (line 2)") || !strings.Contains(err.Error(), "sinks[1] (line 3)") {
		t.Errorf("Check = %v, want both sinks named", err)
	}
}

func TestMetricsListen(t *testing.T) {
	for _, tt := range []struct{ listen, want string }{
		{":abc", `metrics.listen: ":abc": port "abc" is neither a number nor a known tcp service name`},
		{":99999", "port 99999 is out of range 0-65535"},
		{"127.0.0.1", `"127.0.0.1" is not host:port`},
		{"127.0.0.1:", `"127.0.0.1:" has no port`},
	} {
		_, err := Parse([]byte("metrics:\n  listen: '"+tt.listen+"'\n"), "c.yaml")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("listen %q: Parse = %v, want …%s…", tt.listen, err, tt.want)
		}
		c := Default()
		c.Metrics.Listen = tt.listen
		if err := c.Validate(); err == nil {
			t.Errorf("listen %q: Validate accepted it", tt.listen)
		}
	}
	for _, tt := range []struct{ listen, network string }{
		{"0.0.0.0:9480", "tcp4"},
		{"127.0.0.1:9480", "tcp4"},
		{"[::]:9480", "tcp6"},
		{"[::1]:9480", "tcp6"},
		{":9480", "tcp"},
		{"localhost:9480", "tcp"},
		{":http", "tcp"},
	} {
		if _, err := Parse([]byte("metrics:\n  listen: '"+tt.listen+"'\n"), "c.yaml"); err != nil {
			t.Errorf("listen %q: %v", tt.listen, err)
		}
		if got := (Metrics{Listen: tt.listen}).Network(); got != tt.network {
			t.Errorf("Network(%q) = %s, want %s", tt.listen, got, tt.network)
		}
	}
}

// A configuration file is bounded: /dev/zero is refused at once instead
// of filling memory, and so is a file past MaxFileSize.
func TestLoadBounded(t *testing.T) {
	start := time.Now()
	_, err := Load("/dev/zero")
	if err == nil || !strings.Contains(err.Error(), "/dev/zero: refused: not a regular file") {
		t.Errorf("Load(/dev/zero) = %v", err)
	}
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", MaxFileSize)+"\ninterval: 1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(big)
	if !errors.Is(err, safefile.ErrTooLarge) || !strings.Contains(err.Error(), big) {
		t.Errorf("Load(%d bytes) = %v, want ErrTooLarge naming the file", MaxFileSize+16, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Logf("bounded loads took %v", d) // reported, not asserted: the machine may be busy
	}
	// A pipe (process substitution) still works, bounded the same way.
	dir := t.TempDir()
	fifo := filepath.Join(dir, "c.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			f.WriteString("interval: 2s\n")
			f.Close()
		}
	}()
	c, err := Load(fifo)
	if err != nil || c.Interval != 2*time.Second {
		t.Errorf("Load(fifo) = %+v, %v", c, err)
	}
}
