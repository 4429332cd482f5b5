// Command mangen writes the markdown of connlogd's manual pages,
// connlogd(8) and connlogd.yaml(5), which go-md2man then turns into roff.
// Nothing in them is written twice: every part is taken from the document
// that owns it, so the pages cannot drift from the docs.
//
//	connlogd(8)       NAME       the package's one-line description (below)
//	                  SYNOPSIS   the first line of `connlogd -h`
//	                  DESCRIPTION README.md, the text before its first section
//	                  OPTIONS, FILES, SIGNALS, SEE ALSO   the blocks of `connlogd -h`
//	                  OUTPUT, PRIVILEGES   README.md, sections "Output", "Privileges"
//	connlogd.yaml(5)  DESCRIPTION README.md, section "Configuration"
//	                  DEFAULTS   config.example.yaml, verbatim (it is the
//	                             packaged /etc/connlogd/config.yaml)
//
// A section that is missing from its source is an error, not an empty
// part of a page. packaging/packaging_test.go renders the pages with man
// and checks that the text of each source is in them.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// docDir is where the packages install README.md and docs/*.md.
const docDir = "/usr/share/doc/connlogd/"

func main() {
	readme := flag.String("readme", "README.md", "the README")
	config := flag.String("config", "config.example.yaml", "the example configuration, shipped as /etc/connlogd/config.yaml")
	usage := flag.String("usage", "", "the output of connlogd -h")
	version := flag.String("version", "", "connlogd's version, for the pages' footer")
	date := flag.String("date", "", "the pages' date (YYYY-MM-DD)")
	out := flag.String("out", ".", "directory for connlogd.8.md and connlogd.yaml.5.md")
	flag.Parse()
	if *usage == "" || *version == "" || *date == "" {
		fmt.Fprintln(os.Stderr, "mangen: -usage, -version and -date are required")
		os.Exit(2)
	}
	if err := run(*readme, *config, *usage, *version, *date, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		os.Exit(1)
	}
}

func run(readmePath, configPath, usagePath, version, date, out string) error {
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		return err
	}
	cfg, err := os.ReadFile(configPath)
	if err != nil {
		return err
	}
	usage, err := os.ReadFile(usagePath)
	if err != nil {
		return err
	}
	src := sources{readme: string(readme), config: string(cfg), usage: string(usage)}
	page8, err := src.connlogd8(version, date)
	if err != nil {
		return fmt.Errorf("connlogd(8): %w", err)
	}
	page5, err := src.connlogdYAML5(version, date)
	if err != nil {
		return fmt.Errorf("connlogd.yaml(5): %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, "connlogd.8.md"), []byte(page8), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "connlogd.yaml.5.md"), []byte(page5), 0o644)
}

type sources struct {
	readme, config, usage string
}

// Summary is the NAME line of connlogd(8); the packages' description
// (packaging/nfpm.yaml) says the same.
const Summary = "log every TCP and UDP socket change from netlink sock_diag"

func (s sources) connlogd8(version, date string) (string, error) {
	u, err := parseUsage(s.usage)
	if err != nil {
		return "", err
	}
	intro, err := readmeIntro(s.readme)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	title(&b, "connlogd", "8", date, version, "System Manager's Manual")
	fmt.Fprintf(&b, "# NAME\nconnlogd - %s\n\n", Summary)
	fmt.Fprintf(&b, "# SYNOPSIS\n%s\n\n", synopsis(u.synopsis))
	fmt.Fprintf(&b, "# DESCRIPTION\n%s\n\n", forMan(intro))
	for _, sec := range []struct{ heading, block string }{
		{"OPTIONS", "Options"},
		{"FILES", "Files"},
		{"SIGNALS", "Signals"},
	} {
		entries, ok := u.blocks[sec.block]
		if !ok {
			return "", fmt.Errorf("connlogd -h has no %q block", sec.block)
		}
		fmt.Fprintf(&b, "# %s\n", sec.heading)
		for _, e := range entries {
			term := e.term
			if sec.block == "Options" {
				term = optionTerm(term)
			} else {
				term = "**" + escape(term) + "**"
			}
			fmt.Fprintf(&b, "%s\n: %s\n\n", term, escape(e.text))
		}
	}
	for _, name := range []string{"Output", "Privileges"} {
		body, err := readmeSection(s.readme, name)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "# %s\n%s\n\n", strings.ToUpper(name), forMan(body))
	}
	b.WriteString("# CONFIGURATION\nSee **connlogd.yaml**(5).\n\n")
	docs, ok := u.blocks["Documentation"]
	if !ok {
		return "", errors.New("connlogd -h has no \"Documentation\" block")
	}
	b.WriteString("# SEE ALSO\n")
	for _, e := range docs {
		b.WriteString(seeAlso(e.term) + "\n\n")
	}
	return b.String(), nil
}

func (s sources) connlogdYAML5(version, date string) (string, error) {
	body, err := readmeSection(s.readme, "Configuration")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	title(&b, "connlogd.yaml", "5", date, version, "File Formats Manual")
	b.WriteString("# NAME\nconnlogd.yaml - connlogd configuration file\n\n")
	b.WriteString("# SYNOPSIS\n*/etc/connlogd/config.yaml*\n\n")
	fmt.Fprintf(&b, "# DESCRIPTION\n%s\n\n", forMan(body))
	b.WriteString("# DEFAULTS\nThe packaged */etc/connlogd/config.yaml*, which explains every key and holds its default:\n\n")
	b.WriteString("```\n" + strings.TrimRight(s.config, "\n") + "\n```\n\n")
	b.WriteString("# SEE ALSO\n**connlogd**(8), " + docDir + "filters.md, " + docDir + "events.md\n")
	return b.String(), nil
}

// title writes the setext heading go-md2man turns into the .TH line.
func title(b *strings.Builder, name, section, date, version, manual string) {
	line := fmt.Sprintf("%s %s %q %q %q", name, section, date, "connlogd "+version, manual)
	b.WriteString(line + "\n" + strings.Repeat("=", len(line)) + "\n\n")
}

// usageText is `connlogd -h` split into its parts: the synopsis line and
// the blocks that start with a "Heading:" line.
type usageText struct {
	synopsis string
	blocks   map[string][]entry
}

// entry is one item of a block: a term on a line indented by two spaces,
// and its description on the following lines indented further.
type entry struct {
	term, text string
}

var headingRE = regexp.MustCompile(`^([A-Z][A-Za-z ]*):$`)

func parseUsage(s string) (usageText, error) {
	u := usageText{blocks: map[string][]entry{}}
	block := ""
	for _, line := range strings.Split(s, "\n") {
		switch {
		case strings.HasPrefix(line, "Usage: "):
			u.synopsis = strings.TrimPrefix(line, "Usage: ")
		case headingRE.MatchString(line):
			block = headingRE.FindStringSubmatch(line)[1]
			u.blocks[block] = nil
		case block == "" || strings.TrimSpace(line) == "":
		case strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") && line[2] != '\t':
			u.blocks[block] = append(u.blocks[block], entry{term: strings.TrimSpace(line)})
		default:
			es := u.blocks[block]
			if len(es) == 0 {
				return u, fmt.Errorf("connlogd -h: %q: a description before any term", line)
			}
			e := &es[len(es)-1]
			e.text = strings.TrimSpace(e.text + " " + strings.TrimSpace(line))
		}
	}
	if u.synopsis == "" {
		return u, errors.New("connlogd -h has no Usage: line")
	}
	return u, nil
}

// synopsis formats "connlogd [-config FILE] [-once]" with the command and
// flags in bold and their arguments in italics.
func synopsis(s string) string {
	words := strings.Fields(s)
	for i, w := range words {
		core := strings.Trim(w, "[]")
		pre, post := w[:strings.Index(w, core)], w[strings.Index(w, core)+len(core):]
		switch {
		case i == 0 || strings.HasPrefix(core, "-"):
			core = "**" + escape(core) + "**"
		default:
			core = "*" + escape(core) + "*"
		}
		words[i] = escape(pre) + core + escape(post)
	}
	return strings.Join(words, " ")
}

// optionTerm formats "-config string" as the flag in bold, its argument
// in italics.
func optionTerm(t string) string {
	name, arg, ok := strings.Cut(t, " ")
	s := "**" + escape(name) + "**"
	if ok {
		s += " *" + escape(arg) + "*"
	}
	return s
}

// seeAlso formats "connlogd(8), connlogd.yaml(5)" as manual references.
func seeAlso(t string) string {
	return manRefRE.ReplaceAllString(escape(t), "**$1**($2)")
}

var manRefRE = regexp.MustCompile(`([a-z][a-z0-9.]*)\(([1-8])\)`)

// escape keeps markdown from reading the usage text's characters as
// emphasis, links or code.
func escape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune("\\`*_[]<>#", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// readmeIntro is the README's text between its title and first section.
func readmeIntro(readme string) (string, error) {
	lines := strings.Split(readme, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "# ") && start < 0 {
			start = i + 1
			continue
		}
		if strings.HasPrefix(l, "## ") && start >= 0 {
			return strings.TrimSpace(strings.Join(lines[start:i], "\n")), nil
		}
	}
	return "", errors.New("README.md: no title followed by a section")
}

// readmeSection is the body of the README's "## name" section, up to the
// next section of the same or a higher level.
func readmeSection(readme, name string) (string, error) {
	lines := strings.Split(readme, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != "## "+name {
			continue
		}
		end := len(lines)
		for j := i + 1; j < len(lines); j++ {
			if strings.HasPrefix(lines[j], "## ") || strings.HasPrefix(lines[j], "# ") {
				end = j
				break
			}
		}
		body := strings.TrimSpace(strings.Join(lines[i+1:end], "\n"))
		if body == "" {
			return "", fmt.Errorf("README.md: section %q is empty", name)
		}
		return body, nil
	}
	return "", fmt.Errorf("README.md: no section %q", name)
}

// tablesToLists rewrites the markdown tables of md as definition lists: a
// table as wide as the README's is wider than a terminal's 80 columns,
// which tbl can only overflow. The first column is the term; the others
// follow as "header: value", the last one as it is.
func tablesToLists(md string) string {
	lines := strings.Split(md, "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		if !isRow(lines[i]) || i+1 >= len(lines) || !tableSepRE.MatchString(lines[i+1]) {
			out = append(out, lines[i])
			continue
		}
		header := cells(lines[i])
		i += 2
		for ; i < len(lines) && isRow(lines[i]); i++ {
			row := cells(lines[i])
			var parts []string
			for c := 1; c < len(row) && c < len(header); c++ {
				if c < len(header)-1 {
					parts = append(parts, header[c]+": "+row[c])
				} else {
					parts = append(parts, row[c])
				}
			}
			out = append(out, row[0], ": "+strings.Join(parts, "; "), "")
		}
		i--
	}
	return strings.Join(out, "\n")
}

var tableSepRE = regexp.MustCompile(`^\|(\s*:?-+:?\s*\|)+\s*$`)

func isRow(l string) bool {
	l = strings.TrimSpace(l)
	return strings.HasPrefix(l, "|") && strings.HasSuffix(l, "|")
}

// cells splits a table row at the bars that are not escaped (\|).
func cells(row string) []string {
	row = strings.TrimSpace(row)
	row = row[1 : len(row)-1]
	var out []string
	var cur strings.Builder
	for i := 0; i < len(row); i++ {
		switch {
		case row[i] == '\\' && i+1 < len(row) && row[i+1] == '|':
			cur.WriteByte('|')
			i++
		case row[i] == '|':
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(row[i])
		}
	}
	return append(out, strings.TrimSpace(cur.String()))
}

var linkRE = regexp.MustCompile(`\[([^\]]+)\]\(([^)\s]+)\)`)

// forMan turns tables into lists (tablesToLists) and rewrites the README's links to files of the repository as
// the places the packages install them: docs go to /usr/share/doc, the
// example configuration is /etc/connlogd/config.yaml, the systemd files
// are named by their installed paths, and other files keep their text.
func forMan(md string) string {
	md = tablesToLists(md)
	return linkRE.ReplaceAllStringFunc(md, func(m string) string {
		sub := linkRE.FindStringSubmatch(m)
		text, dest := sub[1], sub[2]
		if strings.Contains(dest, "://") {
			return m
		}
		file, _, _ := strings.Cut(dest, "#")
		switch {
		case file == "config.example.yaml":
			return "*/etc/connlogd/config.yaml*"
		case file == "systemd/connlogd.service":
			return "the unit *connlogd.service*"
		case file == "systemd/connlogd.logrotate":
			return "*/etc/logrotate.d/connlogd*"
		case strings.HasSuffix(file, ".md") && !strings.Contains(path.Dir(file), "bench"):
			installed := "*" + docDir + path.Base(file) + "*"
			if strings.Trim(text, "`") == file {
				return installed
			}
			return text + " (" + installed + ")"
		}
		return text
	})
}
