package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/connlogd/connlogd/safefile"
	"github.com/connlogd/connlogd/snapshot"
)

// Error is a configuration error at a line of a file.
type Error struct {
	File string
	Line int // 1-based
	Err  error
}

// Error returns "<file>:<line>: <message>" on one line: daemons log it as
// one record and editors jump to file:line.
func (e *Error) Error() string {
	msg := fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
	msg = strings.ReplaceAll(msg, "\r", `\r`)
	return strings.ReplaceAll(msg, "\n", `\n`)
}

func (e *Error) Unwrap() error { return e.Err }

// MaxFileSize bounds a configuration file: a real one is a few KiB, and
// reading /dev/zero or a runaway file must stop quickly.
const MaxFileSize = 1 << 20

// Load reads and parses the file at path, a regular file or a pipe of
// at most MaxFileSize bytes (a device such as /dev/zero is refused). A
// missing file gives an error that matches fs.ErrNotExist, so callers
// can fall back to Default.
func Load(path string) (*Config, error) {
	data, err := safefile.ReadFile(path, MaxFileSize)
	if err != nil {
		return nil, err // the error already names the file
	}
	return Parse(data, path)
}

// Parse parses a configuration file's contents; name is the file name
// used in errors. Absent keys take the values of Default. Every error is
// an *Error whose message names the setting, with 0-based indexes into
// lists, as in "sinks[1].mode: …".
func Parse(data []byte, name string) (*Config, error) {
	p := parser{name: name}
	if line, err := checkText(data); err != nil {
		return nil, p.errorf(line, "", "%w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, p.errorf(1, "", "empty configuration")
		}
		return nil, p.syntaxError(data, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, p.errorf(next.Line, "", "a second YAML document is not allowed")
	case !errors.Is(err, io.EOF):
		return nil, p.syntaxError(data, err)
	}
	return p.config(&doc)
}

// checkText rejects what yaml.v3 would reject without a line number:
// bytes that are not UTF-8 and characters YAML forbids.
func checkText(data []byte) (line int, err error) {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return lineAt(data, i), fmt.Errorf("invalid UTF-8 byte %#02x", data[i])
		case r == '\t', r == '\n', r == '\r', r >= 0x20 && r <= 0x7e, r == 0x85,
			r >= 0xa0 && r <= 0xd7ff, r >= 0xe000 && r <= 0xfffd, r >= 0x10000:
		default:
			return lineAt(data, i), fmt.Errorf("character %U is not allowed in YAML", r)
		}
		i += size
	}
	return 0, nil
}

// lineAt returns the line of byte offset off, counting line breaks as
// YAML does (CRLF, CR, LF, NEL, LS, PS), so that it agrees with the
// parser's node lines.
func lineAt(data []byte, off int) int {
	line := 1
	for i := 0; i < off; {
		r, size := utf8.DecodeRune(data[i:])
		switch r {
		case '\n', 0x85, 0x2028, 0x2029:
			line++
		case '\r':
			if i+1 >= len(data) || data[i+1] != '\n' {
				line++
			}
		}
		i += size
	}
	return line
}

// syntaxError turns a yaml.v3 parse error into an *Error with the right
// line. yaml.v3 writes "yaml: line N: problem", with N 1-based for
// scanner problems but 0-based for parser problems, and no line at all
// when N would be 0.
func (p *parser) syntaxError(data []byte, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, problem, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil && n > 0 {
				line, msg = n, problem
			}
		}
		if parserProblem(msg) {
			line++
		}
	} else if anchor, ok := strings.CutPrefix(msg, "unknown anchor '"); ok {
		line = aliasLine(data, strings.TrimSuffix(anchor, "' referenced"))
	}
	return p.errorf(line, "", "invalid YAML: %s", msg)
}

// parserProblem reports whether msg is one of the problems yaml.v3's
// parser (not its scanner) reports, whose line numbers are 0-based.
func parserProblem(msg string) bool {
	switch msg {
	case "did not find expected ',' or ']'",
		"did not find expected ',' or '}'",
		"did not find expected '-' indicator",
		"did not find expected <document start>",
		"did not find expected <stream-start>",
		"did not find expected key",
		"did not find expected node content",
		"found duplicate %TAG directive",
		"found duplicate %YAML directive",
		"found incompatible YAML document",
		"found undefined tag handle":
		return true
	}
	return false
}

// aliasLine returns the line of the first "*name" in data, or 1: yaml.v3
// gives no line for an alias to an unknown anchor.
func aliasLine(data []byte, name string) int {
	alias := []byte("*" + name)
	for off := 0; ; {
		i := bytes.Index(data[off:], alias)
		if i < 0 {
			return 1
		}
		end := off + i + len(alias)
		if end == len(data) || bytes.IndexByte([]byte(" \t\r\n,]}"), data[end]) >= 0 {
			return lineAt(data, off+i)
		}
		off = end
	}
}

// parser walks the document's nodes itself rather than decoding into a
// struct, so that every error carries the line of the offending node.
type parser struct {
	name string
}

// errorf returns an *Error at line; a non-empty path (such as
// "sinks[1].mode") prefixes the message.
func (p *parser) errorf(line int, path, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if path != "" {
		err = fmt.Errorf("%s: %w", path, err)
	}
	return &Error{File: p.name, Line: line, Err: err}
}

// deref follows an alias to its anchored node. An anchored node is never
// itself an alias, so one step is enough. The walk below only descends
// into known keys, to a fixed depth, so aliases cannot make it loop or
// blow up.
func deref(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "single value"
	}
	return "YAML node"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// fields calls fn for each key of mapping n in order, after rejecting
// keys that are not plain names and keys given twice.
func (p *parser) fields(n *yaml.Node, path string, fn func(key string, k, v *yaml.Node) error) error {
	first := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return p.errorf(k.Line, path, "a key must be a name, not a %s", kindName(k))
		}
		if line, dup := first[k.Value]; dup {
			return p.errorf(k.Line, path, "duplicate key %q (first at line %d)", k.Value, line)
		}
		first[k.Value] = k.Line
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

// scalar returns the text of a single value.
func (p *parser) scalar(n *yaml.Node, path string) (string, error) {
	switch {
	case n.Kind != yaml.ScalarNode:
		return "", p.errorf(n.Line, path, "want a single value, not a %s", kindName(n))
	case isNull(n):
		return "", p.errorf(n.Line, path, "missing value")
	case n.Style&yaml.TaggedStyle != 0 && n.ShortTag() != "!!str":
		// Tags such as !env would suggest a feature that does not exist.
		return "", p.errorf(n.Line, path, "YAML tag %s is not supported", n.Tag)
	}
	return n.Value, nil
}

// list returns the items of sequence n, aliases followed. An empty list
// is an error whose message ends with hint.
func (p *parser) list(n *yaml.Node, path, hint string) ([]*yaml.Node, error) {
	switch {
	case isNull(n):
		return nil, p.errorf(n.Line, path, "missing value")
	case n.Kind != yaml.SequenceNode:
		return nil, p.errorf(n.Line, path, "want a list, not a %s", kindName(n))
	case len(n.Content) == 0:
		return nil, p.errorf(n.Line, path, "empty list; %s", hint)
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, it := range n.Content {
		items[i] = deref(it)
	}
	return items, nil
}

// names parses a list of distinct names with lookup; what names one item
// ("protocol") and want lists the valid names for messages.
func names[T comparable](p *parser, n *yaml.Node, path, hint, what, want string, lookup func(string) (T, bool)) ([]T, error) {
	items, err := p.list(n, path, hint)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(items))
	for i, it := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		s, err := p.scalar(it, ipath)
		if err != nil {
			return nil, err
		}
		v, ok := lookup(s)
		if !ok {
			return nil, p.errorf(it.Line, ipath, "unknown %s %q (want %s)", what, s, want)
		}
		if slices.Contains(out, v) {
			return nil, p.errorf(it.Line, ipath, "%q listed twice", s)
		}
		out = append(out, v)
	}
	return out, nil
}

func (p *parser) config(doc *yaml.Node) (*Config, error) {
	if len(doc.Content) == 0 || isNull(deref(doc.Content[0])) {
		return nil, p.errorf(max(doc.Line, 1), "", "empty configuration")
	}
	root := deref(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		return nil, p.errorf(root.Line, "", "want a mapping of settings such as \"interval: 1s\", not a %s", kindName(root))
	}
	c := Default()
	err := p.fields(root, "", func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "interval":
			c.Interval, err = p.interval(v)
		case "protocols":
			c.Protocols, err = names(p, v, key, "leave the key out for tcp and udp",
				"protocol", "tcp or udp", parseProto)
		case "families":
			c.Families, err = names(p, v, key, "leave the key out for ipv4 and ipv6",
				"family", "ipv4 or ipv6", parseFamily)
		case "states":
			c.States, err = names(p, v, key, "leave the key out to report all states",
				"state", "one of "+strings.Join(snapshot.StateNames(), ", "), snapshot.ParseState)
			if len(c.States) == len(snapshot.StateNames()) {
				c.States = nil // every state: the same as no filter
			}
		case "sinks":
			c.Sinks, err = p.sinks(v)
		case "destroy":
			c.Destroy, err = p.destroy(v)
		case "filters":
			c.Filters, err = p.filters(v)
		case "attribution":
			c.Attribution, err = p.attribution(v)
		case "namespaces", "namespace_rescan", "metrics", "state_file":
			err = p.daemonKey(c, key, v)
		case "containers":
			c.Containers, err = p.containers(v)
		case "flow_update_interval":
			c.FlowUpdateInterval, err = p.flowUpdateInterval(v)
		default:
			err = p.errorf(k.Line, "", "unknown key %q (want interval, protocols, families, states, sinks, destroy, filters, attribution, namespaces, namespace_rescan, metrics, state_file, containers or flow_update_interval)", key)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (p *parser) destroy(n *yaml.Node) (Destroy, error) {
	d := Default().Destroy
	if n.Kind != yaml.MappingNode {
		return d, p.errorf(n.Line, "destroy", "want a mapping with enabled and buffer, not a %s", kindName(n))
	}
	err := p.fields(n, "destroy", func(key string, k, v *yaml.Node) error {
		s, err := p.scalar(v, "destroy."+key)
		if err != nil {
			return err
		}
		switch key {
		case "enabled":
			switch s {
			case "true":
				d.Enabled = true
			case "false":
				d.Enabled = false
			default:
				return p.errorf(v.Line, "destroy.enabled", "%q is not true or false", s)
			}
		case "buffer":
			b, err := strconv.Atoi(s)
			if err != nil || b < MinDestroyBuffer || b > 1<<30 {
				return p.errorf(v.Line, "destroy.buffer", "%q is not a byte count from %d to %d", s, MinDestroyBuffer, 1<<30)
			}
			d.Buffer = b
		default:
			return p.errorf(k.Line, "destroy", "unknown key %q (want enabled or buffer)", key)
		}
		return nil
	})
	return d, err
}

func (p *parser) interval(n *yaml.Node) (time.Duration, error) {
	s, err := p.scalar(n, "interval")
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		// time's message repeats the value; give one that says what to write.
		return 0, p.errorf(n.Line, "interval", "%q is not a duration like 1s or 200ms", s)
	}
	if err := checkInterval(d); err != nil {
		return 0, p.errorf(n.Line, "interval", "%w", err)
	}
	return d, nil
}

func (p *parser) sinks(n *yaml.Node) ([]Sink, error) {
	items, err := p.list(n, "sinks", "at least one sink is needed")
	if err != nil {
		return nil, err
	}
	out := make([]Sink, 0, len(items))
	for i, it := range items {
		path := fmt.Sprintf("sinks[%d]", i)
		s, err := p.sink(it, path)
		if err != nil {
			return nil, err
		}
		if j := dupSink(out, &s); j >= 0 {
			// n.Content[i], not it: an alias's own line.
			return nil, p.errorf(n.Content[i].Line, path, "same destination as sinks[%d]", j)
		}
		out = append(out, s)
	}
	return out, nil
}

// sinkKeys lists the keys a sink of type t takes.
func sinkKeys(t SinkType) []string {
	switch t {
	case SinkFile:
		return []string{"type", "path", "mode", "schema"}
	case SinkSyslog:
		return []string{"type", "network", "address", "format", "facility", "tag", "tls", "queue_size", "drain_timeout", "spool", "schema"}
	case SinkOTLP:
		return []string{"type", "endpoint", "compression", "headers", "tls", "queue_size", "drain_timeout", "spool", "schema"}
	}
	return []string{"type", "schema"}
}

func (p *parser) sink(n *yaml.Node, path string) (Sink, error) {
	switch {
	case isNull(n):
		return Sink{}, p.errorf(n.Line, path, "empty sink; want a mapping with a type key")
	case n.Kind != yaml.MappingNode:
		return Sink{}, p.errorf(n.Line, path, "want a mapping with a type key, not a %s", kindName(n))
	}
	// The type decides which keys are allowed, so it is read first.
	var typ *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := deref(n.Content[i]); k.Kind == yaml.ScalarNode && k.Value == "type" {
			typ = deref(n.Content[i+1])
			break
		}
	}
	if typ == nil {
		return Sink{}, p.errorf(n.Line, path, "missing key \"type\" (stdout, file, syslog or otlp)")
	}
	name, err := p.scalar(typ, path+".type")
	if err != nil {
		return Sink{}, err
	}
	t := SinkType(name)
	switch t {
	case SinkStdout, SinkFile, SinkSyslog, SinkOTLP:
	default:
		return Sink{}, p.errorf(typ.Line, path+".type", "unknown sink type %q (want stdout, file, syslog or otlp)", name)
	}

	s := defaultSink(t)
	s.Line = n.Line
	var pathNode, addrNode, tlsNode *yaml.Node
	err = p.fields(n, path, func(key string, k, v *yaml.Node) error {
		if key == "type" {
			return nil
		}
		if !slices.Contains(sinkKeys(t), key) {
			for _, other := range []SinkType{SinkFile, SinkSyslog, SinkOTLP} {
				if slices.Contains(sinkKeys(other), key) {
					return p.errorf(k.Line, path, "key %q is for %s sinks, not %s", key, other, t)
				}
			}
			return p.errorf(k.Line, path, "unknown key %q (a %s sink takes %s)", key, t, strings.Join(sinkKeys(t), ", "))
		}
		kpath := path + "." + key
		if key == "tls" {
			tlsNode = k
			s.TLS, err = p.tls(v, kpath)
			return err
		}
		if key == "headers" {
			h, err := p.headers(v, kpath)
			s.otlp().Headers = h
			return err
		}
		if key == "spool" {
			s.Spool, err = p.spool(v, kpath)
			return err
		}
		val, err := p.scalar(v, kpath)
		if err != nil {
			return err
		}
		switch key {
		case "path":
			s.Path, pathNode, err = val, v, checkPath(val)
		case "mode":
			s.Mode, err = parseMode(val)
		case "network":
			s.Network, err = val, CheckNetwork(val)
		case "address":
			s.Address, addrNode = val, v // checked below: it depends on the network
		case "format":
			s.Format, err = val, CheckFormat(val)
		case "facility":
			var ok bool
			if s.Facility, ok = parseFacility(val); !ok {
				err = fmt.Errorf("unknown facility %q (want a name such as daemon or local0, or a number 0-23)", val)
			}
		case "tag":
			s.Tag, err = val, CheckTag(val)
		case "schema":
			s.Schema, err = val, checkSchema(val)
		case "endpoint":
			s.otlp().Endpoint, err = val, checkEndpoint(val)
		case "compression":
			s.otlp().Compression, err = val, checkCompression(val)
		case "queue_size":
			n, cerr := strconv.Atoi(val)
			if cerr != nil || n < 1 || n > MaxQueueSize {
				err = fmt.Errorf("%q is not an event count from 1 to %d", val, MaxQueueSize)
			}
			s.QueueSize = n
		case "drain_timeout":
			d, cerr := time.ParseDuration(val)
			if cerr != nil || d <= 0 {
				// 0 would read as "the default"; say what is allowed.
				err = fmt.Errorf("%q is not a duration from 1ms to %v, like 5s", val, MaxDrainTimeout)
			} else {
				err = checkDrainTimeout(d)
			}
			s.DrainTimeout = d
		}
		if err != nil {
			return p.errorf(v.Line, kpath, "%w", err)
		}
		return nil
	})
	if err != nil {
		return Sink{}, err
	}

	switch t {
	case SinkFile:
		if pathNode == nil {
			return Sink{}, p.errorf(n.Line, path, "missing key \"path\" (a file sink needs one)")
		}
	case SinkSyslog:
		switch {
		case addrNode != nil:
			if err := CheckAddress(s.Network, s.Address); err != nil {
				return Sink{}, p.errorf(addrNode.Line, path+".address", "%w", err)
			}
		case s.Network == "unix":
			s.Address = DefaultSyslogAddress
		default:
			return Sink{}, p.errorf(n.Line, path, "missing key \"address\" (network %s needs host:port)", s.Network)
		}
		if tlsNode != nil && s.Network != "tls" && s.Network != "relp-tls" {
			return Sink{}, p.errorf(tlsNode.Line, path+".tls", "TLS settings need network tls or relp-tls, not %s", s.Network)
		}
		if err := checkSyslogSpool(s.Network, &s.Spool); err != nil {
			return Sink{}, p.errorf(n.Line, path+".spool", "%w", err)
		}
	case SinkOTLP:
		if s.OTLP == nil || s.OTLP.Endpoint == "" {
			return Sink{}, p.errorf(n.Line, path, "missing key \"endpoint\" (an otlp sink needs one, like http://127.0.0.1:4318)")
		}
		if err := checkOTLP(&s); err != nil {
			return Sink{}, p.errorf(n.Line, path, "%w", err)
		}
	}
	return s, nil
}

// tls parses a syslog sink's tls mapping.
func (p *parser) tls(n *yaml.Node, path string) (TLS, error) {
	var t TLS
	if n.Kind != yaml.MappingNode {
		return t, p.errorf(n.Line, path, "want a mapping with ca_file, cert_file, key_file, server_name, not a %s", kindName(n))
	}
	var certNode, keyNode *yaml.Node
	err := p.fields(n, path, func(key string, k, v *yaml.Node) error {
		kpath := path + "." + key
		val, err := p.scalar(v, kpath)
		if err != nil {
			return err
		}
		if val == "" {
			return p.errorf(v.Line, kpath, "must not be empty")
		}
		switch key {
		case "ca_file":
			t.CAFile = val
		case "cert_file":
			t.CertFile, certNode = val, v
		case "key_file":
			t.KeyFile, keyNode = val, v
		case "server_name":
			t.ServerName = val
		default:
			return p.errorf(k.Line, path, "unknown key %q (want ca_file, cert_file, key_file or server_name)", key)
		}
		return nil
	})
	if err != nil {
		return t, err
	}
	switch {
	case certNode != nil && keyNode == nil:
		return t, p.errorf(certNode.Line, path, "cert_file without key_file (mutual TLS needs both)")
	case keyNode != nil && certNode == nil:
		return t, p.errorf(keyNode.Line, path, "key_file without cert_file (mutual TLS needs both)")
	}
	return t, nil
}
