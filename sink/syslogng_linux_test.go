package sink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/event"
)

// These tests run a real syslog-ng (Debian's syslog-ng-core) as a child
// process in the foreground, with its own configuration, persist, pid and
// control files in a temporary directory and no system source: it
// listens only where the test says (loopback ports, sockets in the
// temporary directory), so it leaves alone any syslog daemon the machine
// runs. Each message it receives goes through its RFC 5424 / RFC 3164
// parser and its json-parser, and is written as one JSON line of the
// fields it parsed (ngTemplate): what a syslog-ng user's rules see.

// syslogNGBin is how to run syslog-ng here.
type syslogNGBin struct {
	path    string
	args    []string // before the test's own
	env     []string
	version string // major.minor, for the configuration's @version
	banner  string // the first line of --version
}

// findSyslogNG finds syslog-ng: CONNLOGD_SYSLOG_NG_ROOT names a tree
// Debian's syslog-ng-core package was unpacked into (.ci/run unpacks it
// there, because installing it would remove rsyslog: the two packages
// conflict as system loggers); else one installed on the machine.
func findSyslogNG(t *testing.T) *syslogNGBin {
	t.Helper()
	const what = "syslog-ng (Debian package syslog-ng-core)"
	b := &syslogNGBin{}
	// The child is not a service: nothing of systemd's for it, should the
	// tests run under one.
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "LD_LIBRARY_PATH":
		default:
			b.env = append(b.env, kv)
		}
	}
	if root := os.Getenv("CONNLOGD_SYSLOG_NG_ROOT"); root != "" {
		b.path = filepath.Join(root, "usr", "sbin", "syslog-ng")
		mods, _ := filepath.Glob(filepath.Join(root, "usr", "lib", "syslog-ng", "[0-9]*"))
		if len(mods) != 1 {
			needComponent(t, what, fmt.Errorf("CONNLOGD_SYSLOG_NG_ROOT=%s: want one module directory, found %q", root, mods))
		}
		b.args = []string{"--module-path=" + mods[0]}
		b.env = append(b.env, "LD_LIBRARY_PATH="+filepath.Join(root, "usr", "lib", "syslog-ng"))
	} else {
		path, err := exec.LookPath("syslog-ng")
		if err != nil {
			if _, serr := os.Stat("/usr/sbin/syslog-ng"); serr == nil {
				path, err = "/usr/sbin/syslog-ng", nil
			}
		}
		needComponent(t, what, err)
		b.path = path
	}
	cmd := exec.Command(b.path, append(b.args[:len(b.args):len(b.args)], "--version")...)
	cmd.Env = b.env
	out, err := cmd.Output()
	needComponent(t, what, err)
	b.banner, _, _ = strings.Cut(string(out), "\n")
	m := regexp.MustCompile(`\((\d+\.\d+)\.`).FindStringSubmatch(b.banner)
	if m == nil {
		t.Fatalf("syslog-ng --version: no version in %q", b.banner)
	}
	b.version = m[1]
	return b
}

// ngInput is one syslog-ng source: its driver, and where it listens.
type ngInput struct {
	name   string // the source's name, and its output file's
	driver string // e.g. syslog(ip("127.0.0.1") port(6514) transport("tcp"))
	port   int    // loopback port, or
	udp    bool
	path   string // a unix socket
}

// ngTLSInput is a syslog() source named name on loopback port over TLS
// with the test PKI's server certificate, checking the client's
// certificate as peerVerify says (optional-untrusted, required-trusted).
func ngTLSInput(name string, port int, pki *testPKI, peerVerify string) ngInput {
	return ngInput{name: name, port: port, driver: fmt.Sprintf(
		`syslog(ip("127.0.0.1") port(%d) transport("tls") tls(key-file("%s") cert-file("%s") ca-file("%s") peer-verify(%s)))`,
		port, pki.serverKey, pki.serverCert, pki.caFile, peerVerify)}
}

// ngTemplate writes what syslog-ng parsed from each message as one JSON
// line: the header fields (S_UNIXTIME and S_ISODATE are the message's
// own time stamp), MSG as received, and under "parsed" what its
// json-parser made of MSG. Messages whose MSG is not JSON have no
// "parsed".
const ngTemplate = `$(format-json --scope none src=$SOURCE host=$HOST program=$PROGRAM pid=$PID msgid=$MSGID sdata=$SDATA facility=$FACILITY_NUM severity=$SEVERITY_NUM unixtime=$S_UNIXTIME isodate=$S_ISODATE msg=$MSG --key parsed.*)\n`

// syslogNG is one syslog-ng configuration; start and stop run it.
type syslogNG struct {
	t      *testing.T
	bin    *syslogNGBin
	dir    string
	inputs []ngInput
	proc   *receiver
}

// newSyslogNG configures a syslog-ng that writes what it parsed from
// each message of each input to DIR/INPUT.log (ngTemplate).
func newSyslogNG(t *testing.T, inputs ...ngInput) *syslogNG {
	t.Helper()
	dir := t.TempDir()
	var conf strings.Builder
	// keep-hostname: HOST is the message's, not the peer's address. No
	// internal() source: syslog-ng's own messages go to its stderr (-F).
	conf.WriteString(`options {
  keep-hostname(yes); chain-hostnames(no); use-dns(no); dns-cache(no); use-fqdn(no);
  frac-digits(6); log-msg-size(65536);
};
`)
	var names []string
	for _, in := range inputs {
		fmt.Fprintf(&conf, "source %s { %s; };\n", in.name, in.driver)
		names = append(names, "source("+in.name+");")
	}
	// flow-control: a busy destination slows the sources down instead of
	// dropping messages. A message whose MSG json-parser cannot parse
	// goes on without "parsed", so that the test sees it.
	fmt.Fprintf(&conf, `parser p_json { json-parser(prefix("parsed.")); };
destination d_out { file("%s/${SOURCE}.log" template("%s")); };
log {
  %s
  if { parser(p_json); } else { };
  destination(d_out);
  flags(flow-control);
};
`, dir, ngTemplate, strings.Join(names, " "))
	return newSyslogNGConf(t, dir, conf.String(), inputs...)
}

// newSyslogNGConf configures a syslog-ng with conf, to which it adds the
// @version line, in dir; it is ready when inputs listen.
func newSyslogNGConf(t *testing.T, dir, conf string, inputs ...ngInput) *syslogNG {
	t.Helper()
	s := &syslogNG{t: t, bin: findSyslogNG(t), dir: dir, inputs: inputs}
	conf = fmt.Sprintf("@version: %s\n", s.bin.version) + conf
	if err := os.WriteFile(filepath.Join(s.dir, "syslog-ng.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *syslogNG) start() {
	s.t.Helper()
	args := append(s.bin.args[:len(s.bin.args):len(s.bin.args)],
		"-F", "--no-caps", // foreground; as root, keep the test's privileges for its files
		"--cfgfile="+filepath.Join(s.dir, "syslog-ng.conf"),
		"--persist-file="+filepath.Join(s.dir, "syslog-ng.persist"),
		"--pidfile="+filepath.Join(s.dir, "syslog-ng.pid"),
		"--control="+filepath.Join(s.dir, "syslog-ng.ctl"))
	cmd := exec.Command(s.bin.path, args...)
	cmd.Env = s.bin.env
	// Ready when every source listens.
	s.proc = startReceiver(s.t, "syslog-ng", cmd, filepath.Join(s.dir, "syslog-ng.stderr"), 20*time.Second, func() bool {
		for _, in := range s.inputs {
			if in.path != "" {
				if fi, err := os.Stat(in.path); err != nil || fi.Mode()&os.ModeSocket == 0 {
					return false
				}
			} else if !portBound(in.port, in.udp) {
				return false
			}
		}
		return true
	}, "syslog-ng's sources not listening")
}

func (s *syslogNG) stderr() []byte {
	b, _ := os.ReadFile(filepath.Join(s.dir, "syslog-ng.stderr"))
	return b
}

// ngMsg is one message as syslog-ng parsed it (ngTemplate). Values are
// strings, or whatever types the syslog-ng version gives them.
type ngMsg map[string]any

func (m ngMsg) str(key string) string { return ngString(m[key]) }

// ngString writes a value syslog-ng gave as the string it stands for.
func ngString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	}
	return fmt.Sprint(v)
}

// received returns the messages syslog-ng has written so far for input.
func (s *syslogNG) received(t *testing.T, input string) []ngMsg {
	t.Helper()
	var msgs []ngMsg
	for _, l := range completeLines(filepath.Join(s.dir, input+".log")) {
		d := json.NewDecoder(strings.NewReader(l))
		d.UseNumber()
		var m ngMsg
		if err := d.Decode(&m); err != nil {
			t.Fatalf("syslog-ng wrote a line that is not JSON: %v: %q", err, l)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// wait waits until syslog-ng has written n messages for input and
// returns them.
func (s *syslogNG) wait(t *testing.T, input string, n int) []ngMsg {
	t.Helper()
	var got []ngMsg
	waitUntil(30*time.Second, func() bool { got = s.received(t, input); return len(got) >= n })
	if len(got) != n {
		t.Fatalf("syslog-ng wrote %d messages from %s, want %d; its stderr: %s", len(got), input, n, s.stderr())
	}
	return got
}

// ngSameJSON reports where syslog-ng's json-parser result got differs
// from the JSON value want (decoded with UseNumber): "" when they agree.
// syslog-ng keeps nested objects as nested keys, and gives scalars as
// text (3.x: true, 4097, 0.500000, null as empty) or typed.
func ngSameJSON(path string, want, got any) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: %v, want an object", path, got)
		}
		for k, wv := range w {
			if d := ngSameJSON(path+"."+k, wv, g[k]); d != "" {
				return d
			}
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				return fmt.Sprintf("%s.%s: %v, not in the event", path, k, g[k])
			}
		}
		return ""
	case []any:
		// Not in events today; syslog-ng would list them comma-separated.
		return fmt.Sprintf("%s: an array, which this check does not know", path)
	case json.Number:
		// json-c, under syslog-ng's json-parser, reads integers as int64
		// and clamps larger ones. Only a cookie could be that large, and
		// the kernel's cookies count from 1: docs/delivery.md says so.
		if u, err := strconv.ParseUint(w.String(), 10, 64); err == nil && u > math.MaxInt64 && ngString(got) == strconv.FormatInt(math.MaxInt64, 10) {
			return ""
		}
		wf, err1 := strconv.ParseFloat(w.String(), 64)
		gf, err2 := strconv.ParseFloat(ngString(got), 64)
		// Integers compare as text: float64 cannot hold every uint64.
		if err1 != nil || err2 != nil || wf != gf || (!strings.ContainsAny(w.String(), ".eE") && w.String() != ngString(got)) {
			return fmt.Sprintf("%s: %v, want %s", path, got, w)
		}
		return ""
	case nil:
		if got != nil && ngString(got) != "" {
			return fmt.Sprintf("%s: %v, want null", path, got)
		}
		return ""
	}
	if ngString(got) != ngString(want) {
		return fmt.Sprintf("%s: %v, want %v", path, got, want)
	}
	return ""
}

// unixMeta is the structured data syslog-ng's unix sources add to each
// message they read.
var unixMeta = regexp.MustCompile(`^\[meta sequenceId="\d+"\]$`)

// checkNGMessage checks what syslog-ng parsed from one message against
// the event and the JSON line (with its newline) the file sink beside
// the syslog sink wrote for it.
func checkNGMessage(t *testing.T, i int, m ngMsg, ev *event.Event, line []byte, spec config.Sink, host string) {
	t.Helper()
	rfc3164 := spec.Format == FormatRFC3164
	tag, facility := cmpOr(spec.Tag, DefaultTag), cmpOr(spec.Facility, DefaultFacility)
	sev := sevInfo
	if ev.Kind == event.Gap {
		sev = sevWarning
	}
	want := map[string]string{
		"host":     host,
		"program":  tag,
		"pid":      strconv.Itoa(os.Getpid()),
		"msgid":    ev.Kind.String(),
		"facility": strconv.Itoa(facility),
		"severity": strconv.Itoa(sev),
		"msg":      string(bytes.TrimSuffix(line, []byte{'\n'})),
		// RFC 5424 carries microseconds, in UTC.
		"unixtime": fmt.Sprintf("%d.%06d", ev.Time.Unix(), ev.Time.Nanosecond()/1000),
	}
	if rfc3164 {
		want["msgid"] = ""
		delete(want, "unixtime")
	}
	for k, v := range want {
		if got := m.str(k); got != v {
			t.Errorf("message %d: %s %q, want %q", i, k, got, v)
		}
	}
	if sd := m.str("sdata"); sd != "" && !(spec.Network == "unix" && unixMeta.MatchString(sd)) {
		t.Errorf("message %d: structured data %q, want none", i, sd)
	}
	if rfc3164 {
		// Local time without year or zone: syslog-ng takes its own zone
		// (the same as ours) and guesses the year.
		iso := m.str("isodate")
		if wantTime := ev.Time.Local().Format("-01-02T15:04:05"); len(iso) < 19 || iso[4:19] != wantTime {
			t.Errorf("message %d: time stamp %q, want ????%s", i, iso, wantTime)
		}
	}
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var body any
	if err := d.Decode(&body); err != nil {
		t.Fatalf("file sink line %d: %v", i, err)
	}
	if m["parsed"] == nil {
		t.Errorf("message %d: syslog-ng's json-parser could not parse MSG %q", i, m.str("msg"))
	} else if diff := ngSameJSON("MSG", body, m["parsed"]); diff != "" {
		t.Errorf("message %d: syslog-ng's json-parser: %s", i, diff)
	}
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// ngCase is one way to send to syslog-ng: the sink, and the source that
// takes it.
type ngCase struct {
	name   string
	spec   config.Sink // Address filled in by the test
	driver string      // with %s for the address: ip(...) port(...) or the socket's path
	udp    bool
	unix   string // the socket's file name, for unix
	n      int    // numbered events after one of each kind
}

// TestSyslogNGReceives sends events through each transport and format
// syslog-ng takes, to one syslog-ng with a source for each, and checks
// every message as syslog-ng parsed it: HOSTNAME, APP-NAME (PROGRAM),
// PROCID, MSGID, no structured data, facility and severity, the time
// stamp, MSG byte for byte the JSON line the file sink beside it wrote,
// and syslog-ng's json-parser's reading of MSG field by field.
func TestSyslogNGReceives(t *testing.T) {
	pki := newTestPKI(t)
	tlsServer := fmt.Sprintf(`key-file("%s") cert-file("%s") ca-file("%s")`, pki.serverKey, pki.serverCert, pki.caFile)
	cases := []ngCase{
		// syslog(): RFC 5424 (or 3164: syslog-ng tells them apart) framed
		// by octet counting over TCP and TLS, one per datagram over UDP.
		{name: "tcp", spec: config.Sink{Network: "tcp"}, driver: `syslog(%s transport("tcp"))`, n: 500},
		// A tag and facility of the configuration's own.
		{name: "tcp_rfc3164", spec: config.Sink{Network: "tcp", Format: FormatRFC3164, Tag: "edge-conn", Facility: 19},
			driver: `syslog(%s transport("tcp"))`, n: 500},
		{name: "tls", spec: config.Sink{Network: "tls", TLS: config.TLS{CAFile: pki.caFile}},
			driver: `syslog(%s transport("tls") tls(` + tlsServer + ` peer-verify(optional-untrusted)))`, n: 500},
		{name: "tls_rfc3164", spec: config.Sink{Network: "tls", Format: FormatRFC3164, TLS: config.TLS{CAFile: pki.caFile}},
			driver: `syslog(%s transport("tls") tls(` + tlsServer + ` peer-verify(optional-untrusted)))`, n: 100},
		// Mutual TLS: syslog-ng demands a client certificate of the CA.
		{name: "mtls", spec: config.Sink{Network: "tls", TLS: config.TLS{CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey}},
			driver: `syslog(%s transport("tls") tls(` + tlsServer + ` peer-verify(required-trusted)))`, n: 500},
		// Fewer over UDP, so that the loopback socket buffer cannot
		// overflow.
		{name: "udp", spec: config.Sink{Network: "udp"}, driver: `syslog(%s transport("udp"))`, udp: true, n: 50},
		// network(): RFC 3164, the BSD format, by default.
		{name: "udp_rfc3164", spec: config.Sink{Network: "udp", Format: FormatRFC3164}, driver: `network(%s transport("udp"))`, udp: true, n: 50},
		// A local datagram socket, as /dev/log: RFC 3164 without a
		// hostname, as syslog(3) sends; syslog-ng's unix sources read
		// RFC 5424 only with flags(syslog-protocol).
		{name: "unix_dgram_rfc3164", spec: config.Sink{Network: "unix", Format: FormatRFC3164}, driver: `unix-dgram("%s")`, unix: "dgram.sock", n: 200},
		{name: "unix_stream", spec: config.Sink{Network: "unix"}, driver: `unix-stream("%s" flags(syslog-protocol))`, unix: "stream.sock", n: 200},
	}
	sockDir := t.TempDir()
	var inputs []ngInput
	for i := range cases {
		c := &cases[i]
		in := ngInput{name: c.name, udp: c.udp}
		if c.unix != "" {
			in.path = filepath.Join(sockDir, c.unix)
			c.spec.Address = in.path
			in.driver = fmt.Sprintf(c.driver, in.path)
		} else {
			in.port = freePort(t, c.udp)
			c.spec.Address = fmt.Sprintf("127.0.0.1:%d", in.port)
			in.driver = fmt.Sprintf(c.driver, fmt.Sprintf(`ip("127.0.0.1") port(%d)`, in.port))
		}
		inputs = append(inputs, in)
	}
	ng := newSyslogNG(t, inputs...)
	ng.start()
	t.Logf("%s", ng.bin.banner)
	localHost, _ := os.Hostname()
	localHost, _, _ = strings.Cut(localHost, ".")

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := c.spec
			spec.Type = config.SinkSyslog
			evs := ngEvents(c.n)
			lines := sendBeside(t, spec, evs)
			got := ng.wait(t, c.name, len(evs))
			host := "web-1"
			if spec.Network == "unix" && spec.Format == FormatRFC3164 {
				host = localHost // no HOSTNAME on the local socket: syslog-ng's own
			}
			for i, m := range got {
				checkNGMessage(t, i, m, &evs[i], lines[i], spec, host)
				if t.Failed() {
					t.Fatalf("as syslog-ng parsed it: %v", m)
				}
			}
			t.Logf("%s: syslog-ng parsed %d messages as sent", c.name, len(got))
		})
	}
}

// ngEvents is one event of each kind, then n numbered ones.
func ngEvents(n int) []event.Event {
	evs := kindsEvents()
	for i := range n {
		evs = append(evs, *seqEvent(1000 + i))
	}
	return evs
}

// sendBeside writes evs to the syslog sink spec and to a file sink beside
// it, closes them (the syslog sink delivers its queue) and returns the
// file sink's lines, each with its newline: the JSON the syslog messages
// carry as MSG.
func sendBeside(t *testing.T, spec config.Sink, evs []event.Event) [][]byte {
	t.Helper()
	jsonl := filepath.Join(t.TempDir(), "events.jsonl")
	tee, err := New([]config.Sink{spec, {Type: config.SinkFile, Path: jsonl}}, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	defer tee.Close()
	writeEvents(t, tee, evs)
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	if st := tee.Stats()[0]; st.Written != uint64(len(evs)) || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	data, err := os.ReadFile(jsonl)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(data, []byte{'\n'})
	lines = lines[:len(lines)-1] // after the last newline
	if len(lines) != len(evs) {
		t.Fatalf("file sink wrote %d lines for %d events", len(lines), len(evs))
	}
	return lines
}

// TestSyslogNGDocsConfig runs the syslog-ng configuration docs/delivery.md
// shows, with loopback addresses, free ports and the test's files put in,
// and checks that it writes every event sent over TLS and then UDP to the
// host's file as the file sink beside the syslog sink wrote it.
func TestSyslogNGDocsConfig(t *testing.T) {
	doc, err := os.ReadFile("../docs/delivery.md")
	if err != nil {
		t.Fatal(err)
	}
	const first = "```\n# /etc/syslog-ng/conf.d/connlogd.conf\n"
	_, block, found := strings.Cut(string(doc), first)
	block, _, closed := strings.Cut(block, "\n```\n")
	if !found || !closed {
		t.Fatalf("docs/delivery.md: no block beginning %q", first)
	}
	pki := newTestPKI(t)
	dir := t.TempDir()
	tlsPort, udpPort := freePort(t, false), freePort(t, true)
	for _, r := range [][2]string{
		{`ip("0.0.0.0") port(6514)`, fmt.Sprintf(`ip("127.0.0.1") port(%d)`, tlsPort)},
		{`ip("0.0.0.0") port(514)`, fmt.Sprintf(`ip("127.0.0.1") port(%d)`, udpPort)},
		{"/etc/syslog-ng/tls/server.key", pki.serverKey},
		{"/etc/syslog-ng/tls/server.pem", pki.serverCert},
		{"/etc/syslog-ng/tls/ca.pem", pki.caFile},
		{"/var/log/connlogd/", dir + "/"},
	} {
		if n := strings.Count(block, r[0]); n != 1 {
			t.Fatalf("docs/delivery.md's syslog-ng configuration has %q %d times, want once:\n%s", r[0], n, block)
		}
		block = strings.Replace(block, r[0], r[1], 1)
	}
	ng := newSyslogNGConf(t, dir, block+"\n", ngInput{port: tlsPort}, ngInput{port: udpPort, udp: true})
	ng.start()
	out := filepath.Join(dir, "web-1.jsonl")
	var want []byte
	for _, spec := range []config.Sink{
		{Type: config.SinkSyslog, Network: "tls", Address: fmt.Sprintf("127.0.0.1:%d", tlsPort), TLS: config.TLS{CAFile: pki.caFile}},
		{Type: config.SinkSyslog, Network: "udp", Address: fmt.Sprintf("127.0.0.1:%d", udpPort)},
	} {
		n := 500
		if spec.Network == "udp" {
			n = 50 // so that the loopback socket buffer cannot overflow
		}
		want = append(want, bytes.Join(sendBeside(t, spec, ngEvents(n)), nil)...)
		var got []byte
		waitUntil(30*time.Second, func() bool { got, _ = os.ReadFile(out); return len(got) >= len(want) })
		if !bytes.Equal(got, want) {
			t.Fatalf("after %s: %s has %d bytes, want the file sink's %d; its stderr: %s", spec.Network, out, len(got), len(want), ng.stderr())
		}
	}
	t.Logf("the configuration of docs/delivery.md wrote %d bytes, every event as sent", len(want))
}

// TestSyslogNGSpool mirrors TestRsyslogSpool's TLS case: a syslog sink
// with a spool keeps what syslog-ng, down, cannot take, across a stop and
// a new start on the same spool; once syslog-ng is up every event
// arrives, in order and once, and the spool empties as syslog-ng's
// kernel acknowledges.
func TestSyslogNGSpool(t *testing.T) {
	pki := newTestPKI(t)
	port := freePort(t, false)
	ng := newSyslogNG(t, ngTLSInput("tls", port, pki, "optional-untrusted"))
	spec := config.Sink{Type: config.SinkSyslog, Network: "tls", Address: fmt.Sprintf("127.0.0.1:%d", port),
		TLS: config.TLS{CAFile: pki.caFile}, DrainTimeout: 300 * time.Millisecond,
		Spool: config.Spool{Dir: filepath.Join(t.TempDir(), "spool")}}
	spoolWhileDown(t, spec, "syslog-ng")

	ng.start()
	tee := otlpTee(t, spec)
	for i := 300; i < 500; i++ {
		if err := tee.Write(gapAt(fmt.Sprintf("%04d", i))); err != nil {
			t.Fatal(err)
		}
	}
	got := ng.wait(t, "tls", 500)
	waitFor(t, func() bool { return tee.Stats()[0].Spool.Events == 0 })
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	for i, m := range got {
		if m["parsed"] == nil {
			t.Fatalf("message %d: MSG is not JSON: %v", i, m)
		}
		parsed := m["parsed"].(map[string]any)
		if r := ngString(parsed["reason"]); r != fmt.Sprintf("%04d", i) || m.str("host") != "web-1" || m.str("msgid") != "gap" {
			t.Fatalf("message %d is %v", i, m)
		}
	}
	if st := tee.Stats()[0]; st.Written != 500 || st.Queued != 0 || st.Dropped != 0 || st.Spool.Recovered != 300 {
		t.Fatalf("stats %+v %v", st, st.Spool)
	}
}

// TestSyslogNGRefusesClientWithoutCertificate: a syslog-ng that requires
// a client certificate refuses a sink that has none, in TLS 1.3 after
// the client's handshake has ended. The sink must say so and count the
// events undelivered, not written: syslog-ng received none of them.
func TestSyslogNGRefusesClientWithoutCertificate(t *testing.T) {
	pki := newTestPKI(t)
	port := freePort(t, false)
	ng := newSyslogNG(t, ngTLSInput("mtls", port, pki, "required-trusted"))
	ng.start()
	spec := config.Sink{Type: config.SinkSyslog, Network: "tls", Address: fmt.Sprintf("127.0.0.1:%d", port),
		TLS: config.TLS{CAFile: pki.caFile}, DrainTimeout: 500 * time.Millisecond}
	tee, err := New([]config.Sink{spec}, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	for i := range n {
		if err := tee.Write(seqEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { err = tee.Sync(); return err != nil })
	if !strings.Contains(err.Error(), "refused the session after the handshake") {
		t.Errorf("Sync = %v, want the refusal", err)
	}
	if err := tee.Close(); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d events not delivered", n)) {
		t.Errorf("Close = %v, want %d events not delivered", err, n)
	}
	if st := tee.Stats()[0]; st.Written != 0 || st.Dropped != n {
		t.Errorf("stats %+v, want %d dropped, none written", st, n)
	}
	if got := ng.received(t, "mtls"); len(got) != 0 {
		t.Errorf("syslog-ng received %d messages from a client it refused", len(got))
	}
}
