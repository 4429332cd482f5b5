// Package config reads connlogd's YAML configuration, strictly: unknown
// keys, duplicate keys, bad values, an empty file and a second document
// are errors that name the file and line.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/connlogd/connlogd/safefile"
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
	// States filters which states are reported. Empty (nil) means all
	// states: Parse stores nil both when the key is absent and when it
	// lists every state, so nil is the one spelling of "all".
	States []snapshot.State
	Sinks  []Sink // default: one stdout sink
	// Filters selects sockets by port, address, loopback and owner
	// (docs/filters.md). The zero value reports every socket.
	Filters Filters
	// Destroy configures the kernel's socket-destroy notifications, which
	// log closes at once and catch connections shorter than the interval.
	Destroy Destroy
	// Attribution says which owner fields events carry (process, cgroup).
	Attribution Attribution
	// Namespaces says which network namespaces to watch (default host).
	Namespaces Namespaces
	// NamespaceRescan is how often namespaces are rediscovered.
	NamespaceRescan time.Duration
	// Metrics configures the Prometheus endpoint (off by default).
	Metrics Metrics
	// StateFile, when set, keeps the socket table across restarts.
	StateFile string
	// Containers says how container names are asked for.
	Containers Containers
	// FlowUpdateInterval, when not 0, reports each connection still alive
	// that long after its last event in an updated event (docs/events.md).
	// 0, the default, turns flow updates off.
	FlowUpdateInterval time.Duration
}

// Destroy configures the destroy-notification subscription.
type Destroy struct {
	Enabled bool // default true
	// Buffer is the receive buffer in bytes (default 8 MiB); beyond
	// net.core.rmem_max it needs CAP_NET_ADMIN.
	Buffer int
}

// SinkType names a sink kind.
type SinkType string

// Sink kinds.
const (
	SinkStdout SinkType = "stdout"
	SinkFile   SinkType = "file"
	SinkSyslog SinkType = "syslog"
	SinkOTLP   SinkType = "otlp"
)

// Sink configures one output.
type Sink struct {
	Type SinkType
	Line int // line of the sink in the file, for error messages; 0 for defaults

	// file
	Path string
	Mode fs.FileMode // default 0640

	// syslog
	Network  string // unix (default) | udp | tcp | tls | relp | relp-tls
	Address  string // default /dev/log for unix; required otherwise
	Format   string // rfc5424 (default) | rfc3164
	Facility int    // syslog facility number; default 16 (local0)
	Tag      string // app-name; default "connlogd"
	TLS      TLS    // network tls only
	// QueueSize bounds the events a syslog sink holds while its receiver
	// is slow or away; beyond it events are dropped and counted. 0 means
	// DefaultQueueSize.
	QueueSize int
	// DrainTimeout bounds how long closing the sink waits for its queue
	// to be delivered. 0 means DefaultDrainTimeout.
	DrainTimeout time.Duration

	// otlp (TLS, QueueSize and DrainTimeout apply too)
	OTLP *OTLP
	// otlp; syslog tcp, tls, relp and relp-tls
	Spool Spool

	// every type
	Schema string // native (default when empty) | ecs | ocsf
}

// TLS configures a syslog sink's TLS client. The server's certificate is
// always verified: against CAFile when set, else the system's roots.
type TLS struct {
	CAFile string // PEM bundle of the CAs to trust instead of the system's
	// CertFile and KeyFile, both or neither, are the client certificate
	// for mutual TLS.
	CertFile, KeyFile string
	// ServerName is the name the certificate must carry; default: the
	// host part of the address.
	ServerName string
}

// Defaults that are not the zero value.
const (
	DefaultInterval       = time.Second
	MinInterval           = 10 * time.Millisecond // shorter polls would hog a CPU on a busy host
	DefaultFileMode       = fs.FileMode(0o640)
	DefaultSyslogNetwork  = "unix"
	DefaultSyslogAddress  = "/dev/log" // for network unix only
	DefaultSyslogFormat   = "rfc5424"
	DefaultSyslogFacility = 16 // local0
	DefaultSyslogTag      = "connlogd"
	DefaultDestroyBuffer  = 8 << 20
	DefaultQueueSize      = 10000
	MaxQueueSize          = 1 << 20 // about half a GiB of messages: more is a typo
	DefaultDrainTimeout   = 5 * time.Second
	MaxDrainTimeout       = 10 * time.Minute // systemd's stop timeout would kill us first
	MinDestroyBuffer      = 1024             // the kernel's floor is about this; smaller asks are meaningless
)

// Default returns the built-in configuration: a poll every second of TCP
// and UDP over IPv4 and IPv6, every state, events on stdout.
func Default() *Config {
	return &Config{
		Interval:  DefaultInterval,
		Protocols: []snapshot.Proto{snapshot.ProtoTCP, snapshot.ProtoUDP},
		Families:  []snapshot.Family{snapshot.FamilyIPv4, snapshot.FamilyIPv6},
		Sinks:     []Sink{{Type: SinkStdout}},
		Destroy:   Destroy{Enabled: true, Buffer: DefaultDestroyBuffer},

		Attribution: defaultAttribution(),

		Namespaces:      Namespaces{Mode: NamespacesHost},
		NamespaceRescan: DefaultNamespaceRescan,

		Containers: defaultContainers(),
	}
}

// defaultSink returns a sink of type t with its type's defaults; the
// syslog address is left empty because its default depends on the network.
func defaultSink(t SinkType) Sink {
	switch t {
	case SinkFile:
		return Sink{Type: t, Mode: DefaultFileMode}
	case SinkSyslog:
		return Sink{Type: t, Network: DefaultSyslogNetwork, Format: DefaultSyslogFormat,
			Facility: DefaultSyslogFacility, Tag: DefaultSyslogTag}
	}
	return Sink{Type: t}
}

// StateMask returns the states to report as a mask of 1<<state: the one
// owner of that rule (the engine's plans and the differ take it as is).
// With no States it is snapshot.AllStates. Listing syn_recv also sets the bit of
// the kernel's request sockets and close that of bound-inactive sockets,
// which dumps report under those names, so the mask also serves as a
// sock_diag request mask.
func (c *Config) StateMask() uint32 {
	if len(c.States) == 0 {
		return snapshot.AllStates
	}
	var m uint32
	for _, s := range c.States {
		m |= 1 << s
		switch s {
		case snapshot.StateSynRecv:
			m |= 1 << snapshot.StateNewSynRecv
		case snapshot.StateClose:
			m |= 1 << snapshot.StateBoundInactive
		}
	}
	return m
}

// Validate checks a Config built in code by the rules Parse applies. Its
// errors carry no file or line; Parse's do.
func (c *Config) Validate() error {
	if c.Destroy.Buffer < MinDestroyBuffer || c.Destroy.Buffer > 1<<30 {
		return fmt.Errorf("destroy.buffer: %d is not a byte count from %d to %d", c.Destroy.Buffer, MinDestroyBuffer, 1<<30)
	}
	if err := checkInterval(c.Interval); err != nil {
		return fmt.Errorf("interval: %w", err)
	}
	if len(c.Protocols) == 0 {
		return errors.New("protocols: empty list")
	}
	for i, p := range c.Protocols {
		if _, ok := parseProto(p.String()); !ok {
			return fmt.Errorf("protocols[%d]: unknown protocol %d", i, p)
		}
		if j := slices.Index(c.Protocols[:i], p); j >= 0 {
			return fmt.Errorf("protocols[%d]: %s listed twice", i, p)
		}
	}
	if len(c.Families) == 0 {
		return errors.New("families: empty list")
	}
	for i, f := range c.Families {
		if _, ok := parseFamily(f.String()); !ok {
			return fmt.Errorf("families[%d]: unknown family %d", i, f)
		}
		if j := slices.Index(c.Families[:i], f); j >= 0 {
			return fmt.Errorf("families[%d]: %s listed twice", i, f)
		}
	}
	for i, s := range c.States {
		if ps, ok := snapshot.ParseState(s.String()); !ok || ps != s {
			return fmt.Errorf("states[%d]: unknown state %d", i, s)
		}
		if j := slices.Index(c.States[:i], s); j >= 0 {
			return fmt.Errorf("states[%d]: %s listed twice", i, s)
		}
	}
	if len(c.Sinks) == 0 {
		return errors.New("sinks: empty list")
	}
	for i := range c.Sinks {
		if err := c.Sinks[i].validate(); err != nil {
			return fmt.Errorf("sinks[%d]: %w", i, err)
		}
		if j := dupSink(c.Sinks[:i], &c.Sinks[i]); j >= 0 {
			return fmt.Errorf("sinks[%d]: same destination as sinks[%d]", i, j)
		}
	}
	if err := c.Filters.Validate(); err != nil {
		return fmt.Errorf("filters: %w", err)
	}
	if err := checkFlowUpdateInterval(c.FlowUpdateInterval); err != nil {
		return fmt.Errorf("flow_update_interval: %w", err)
	}
	if err := c.Attribution.validate(); err != nil {
		return fmt.Errorf("attribution.%w", err)
	}
	if err := checkListen(c.Metrics.Listen); err != nil {
		return fmt.Errorf("metrics.listen: %w", err)
	}
	if c.StateFile != "" && !filepath.IsAbs(c.StateFile) {
		return fmt.Errorf("state_file: %q is not an absolute path", c.StateFile)
	}
	if err := c.Containers.validate(); err != nil {
		return err
	}
	return nil
}

// validate checks one sink, including that it sets no field of another
// sink type, which would be silently ignored.
func (s *Sink) validate() error {
	other := *s
	other.Line, other.Schema = 0, ""
	if err := checkSchema(s.Schema); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	switch s.Type {
	case SinkStdout:
		other.Type = ""
	case SinkFile:
		if err := checkPath(s.Path); err != nil {
			return fmt.Errorf("path: %w", err)
		}
		if err := checkMode(s.Mode); err != nil {
			return fmt.Errorf("mode: %w", err)
		}
		other.Type, other.Path, other.Mode = "", "", 0
	case SinkSyslog:
		if err := CheckNetwork(s.Network); err != nil {
			return fmt.Errorf("network: %w", err)
		}
		if err := CheckAddress(s.Network, s.Address); err != nil {
			return fmt.Errorf("address: %w", err)
		}
		if err := CheckFormat(s.Format); err != nil {
			return fmt.Errorf("format: %w", err)
		}
		if err := CheckFacility(s.Facility); err != nil {
			return fmt.Errorf("facility: %w", err)
		}
		if err := CheckTag(s.Tag); err != nil {
			return fmt.Errorf("tag: %w", err)
		}
		if err := checkTLS(s.Network, &s.TLS); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		if err := checkQueueSize(s.QueueSize); err != nil {
			return fmt.Errorf("queue_size: %w", err)
		}
		if err := checkDrainTimeout(s.DrainTimeout); err != nil {
			return fmt.Errorf("drain_timeout: %w", err)
		}
		if err := checkSyslogSpool(s.Network, &s.Spool); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		other.Spool = Spool{}
		other.Type, other.Network, other.Address, other.Format, other.Facility, other.Tag = "", "", "", "", 0, ""
		other.TLS, other.QueueSize, other.DrainTimeout = TLS{}, 0, 0
	case SinkOTLP:
		if err := checkOTLP(s); err != nil {
			return err
		}
		other.Type, other.OTLP, other.TLS, other.QueueSize, other.DrainTimeout, other.Spool = "", nil, TLS{}, 0, 0, Spool{}
	default:
		return fmt.Errorf("unknown sink type %q", s.Type)
	}
	if other != (Sink{}) {
		return fmt.Errorf("sets fields that a %s sink does not use", s.Type)
	}
	return nil
}

// dupSink returns the index in prev of a sink writing where s writes, or
// -1: two sinks on one destination would double or interleave events.
func dupSink(prev []Sink, s *Sink) int {
	for i := range prev {
		p := &prev[i]
		// Two sinks on one spool would take each other's events.
		if s.Spool.Dir != "" && filepath.Clean(p.Spool.Dir) == filepath.Clean(s.Spool.Dir) {
			return i
		}
		if p.Type != s.Type {
			continue
		}
		switch s.Type {
		case SinkStdout:
			return i
		case SinkFile:
			if filepath.Clean(p.Path) == filepath.Clean(s.Path) {
				return i
			}
		case SinkSyslog:
			if p.Network == s.Network && p.Address == s.Address {
				return i
			}
		case SinkOTLP:
			if p.OTLP != nil && s.OTLP != nil && p.OTLP.Endpoint == s.OTLP.Endpoint {
				return i
			}
		}
	}
	return -1
}

func checkInterval(d time.Duration) error {
	if d < MinInterval {
		return fmt.Errorf("%v is shorter than the minimum %v", d, MinInterval)
	}
	return nil
}

func checkPath(p string) error {
	if p == "" {
		return errors.New("must not be empty")
	}
	return nil
}

// checkMode accepts 0 (the default, 0640) and what safefile.CheckMode
// accepts, which owns the rule.
func checkMode(m fs.FileMode) error {
	if m == 0 {
		return nil
	}
	return safefile.CheckMode(m)
}

// CheckNetwork is the one rule for a syslog network name.
func CheckNetwork(n string) error {
	switch n {
	case "unix", "udp", "tcp", "tls", "relp", "relp-tls":
		return nil
	}
	return fmt.Errorf("unknown network %q (want unix, udp, tcp, tls, relp or relp-tls)", n)
}

// Schemas.
const (
	SchemaNative = "native"
	SchemaECS    = "ecs"
	SchemaOCSF   = "ocsf"
)

// checkSchema accepts the schema names; "" is the default, native.
func checkSchema(s string) error {
	switch s {
	case "", SchemaNative, SchemaECS, SchemaOCSF:
		return nil
	}
	return fmt.Errorf("unknown schema %q (want native, ecs or ocsf)", s)
}

// checkTLS checks TLS settings against the network they come with.
func checkTLS(network string, t *TLS) error {
	if network != "tls" && network != "relp-tls" {
		if *t != (TLS{}) {
			return fmt.Errorf("set for network %s; TLS settings need network tls or relp-tls", network)
		}
		return nil
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("cert_file and key_file go together (mutual TLS): set both or neither")
	}
	return nil
}

func checkQueueSize(n int) error {
	if n < 0 || n > MaxQueueSize {
		return fmt.Errorf("%d is not an event count from 1 to %d", n, MaxQueueSize)
	}
	return nil
}

func checkDrainTimeout(d time.Duration) error {
	if d < 0 || d > MaxDrainTimeout {
		return fmt.Errorf("%v is not a duration from 1ms to %v", d, MaxDrainTimeout)
	}
	return nil
}

// CheckAddress checks the syslog address for the network: a socket path
// for unix, host:port otherwise (a port name such as "syslog" is allowed
// when the services database knows it).
func CheckAddress(network, addr string) error {
	if addr == "" {
		return errors.New("must not be empty")
	}
	if network == "unix" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			// AddrError repeats the address; say it once, quoted.
			return fmt.Errorf("%q is not host:port: %s", addr, ae.Err)
		}
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if host == "" || port == "" {
		return fmt.Errorf("%q is not host:port: missing host or port", addr)
	}
	if err := checkPort(network, port, false); err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	return nil
}

// checkPort checks that port is a number in range, or a service name
// the services database knows for network (tcp or udp; "" for tcp).
// zeroOK allows 0, which asks a listener for any free port.
func checkPort(network, port string, zeroOK bool) error {
	if n, err := strconv.ParseUint(port, 10, 64); err == nil {
		if n > 65535 || (n == 0 && !zeroOK) {
			lo := 1
			if zeroOK {
				lo = 0
			}
			return fmt.Errorf("port %s is out of range %d-65535", port, lo)
		}
		return nil
	}
	switch network {
	case "udp":
	default:
		network = "tcp"
	}
	if _, err := net.LookupPort(network, port); err != nil {
		return fmt.Errorf("port %q is neither a number nor a known %s service name", port, network)
	}
	return nil
}

// CheckFormat is the one rule for a syslog format name.
func CheckFormat(f string) error {
	switch f {
	case "rfc5424", "rfc3164":
		return nil
	}
	return fmt.Errorf("unknown format %q (want rfc5424 or rfc3164)", f)
}

// CheckFacility is the one rule for a syslog facility number.
func CheckFacility(f int) error {
	if f < 0 || f > 23 {
		return fmt.Errorf("%d is out of range 0-23", f)
	}
	return nil
}

// CheckTag is the one rule for a syslog tag (RFC 5424 APP-NAME, RFC 3164
// TAG): 1 to 48 printable ASCII characters without spaces, and without
// '[', ']' or ':', which end an RFC 3164 TAG ("connlogd[42]: …"): a tag
// holding them would be cut there by receivers.
func CheckTag(t string) error {
	if t == "" || len(t) > 48 {
		return fmt.Errorf("%q must be 1 to 48 characters long", t)
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c < '!' || c > '~' || c == '[' || c == ']' || c == ':' {
			return fmt.Errorf("%q must be printable ASCII without spaces, brackets or colons", t)
		}
	}
	return nil
}

func parseProto(s string) (snapshot.Proto, bool) {
	switch s {
	case "tcp":
		return snapshot.ProtoTCP, true
	case "udp":
		return snapshot.ProtoUDP, true
	}
	return 0, false
}

func parseFamily(s string) (snapshot.Family, bool) {
	switch s {
	case "ipv4":
		return snapshot.FamilyIPv4, true
	case "ipv6":
		return snapshot.FamilyIPv6, true
	}
	return 0, false
}

// parseFacility accepts a facility name or its number.
func parseFacility(s string) (int, bool) {
	names := [...]string{"kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
		"uucp", "cron", "authpriv", "ftp"}
	if i := slices.Index(names[:], s); i >= 0 {
		return i, true
	}
	if rest, ok := strings.CutPrefix(s, "local"); ok && len(rest) == 1 && rest[0] >= '0' && rest[0] <= '7' {
		return 16 + int(rest[0]-'0'), true
	}
	n, err := strconv.Atoi(s)
	if err != nil || CheckFacility(n) != nil {
		return 0, false
	}
	return n, true
}

// parseMode reads an octal permission written with a leading 0 or 0o, so
// that 640 is not silently taken as decimal.
func parseMode(s string) (fs.FileMode, error) {
	digits, ok := strings.CutPrefix(s, "0o")
	if !ok {
		digits, ok = strings.CutPrefix(s, "0")
		if ok && digits == "" {
			digits = "0"
		}
	}
	n, err := strconv.ParseUint(digits, 8, 32)
	if !ok || err != nil {
		return 0, fmt.Errorf("%q is not an octal permission like 0640", s)
	}
	m := fs.FileMode(n)
	if err := checkMode(m); err != nil {
		return 0, err
	}
	return m, nil
}
