package main

import (
	"strings"
	"testing"
)

const sampleUsage = `Usage: connlogd [-config FILE] [-once]

connlogd logs things.

Options:
  -config string
    	configuration file
  -once
    	print the table
    	and exit

Signals:
  SIGHUP
    	reload
Documentation:
  connlogd(8), connlogd.yaml(5)
  https://example.net/connlogd
`

func TestParseUsage(t *testing.T) {
	u, err := parseUsage(sampleUsage)
	if err != nil {
		t.Fatal(err)
	}
	if u.synopsis != "connlogd [-config FILE] [-once]" {
		t.Errorf("synopsis %q", u.synopsis)
	}
	want := []entry{{"-config string", "configuration file"}, {"-once", "print the table and exit"}}
	if got := u.blocks["Options"]; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("options %q, want %q", got, want)
	}
	if got := u.blocks["Documentation"]; len(got) != 2 || got[1].term != "https://example.net/connlogd" {
		t.Errorf("documentation %q", got)
	}
	if _, err := parseUsage("Options:\n    \torphan text\n"); err == nil {
		t.Error("a description before any term was accepted")
	}
	if _, err := parseUsage("Options:\n  -x\n"); err == nil {
		t.Error("usage without a Usage: line was accepted")
	}
}

func TestSynopsis(t *testing.T) {
	got := synopsis("connlogd [-config FILE] [-once]")
	// The brackets escaped, so that markdown does not read a link.
	want := `**connlogd** \[**-config** *FILE*\] \[**-once**\]`
	if got != want {
		t.Errorf("synopsis: %s, want %s", got, want)
	}
}

func TestTablesToLists(t *testing.T) {
	md := "Before.\n\n| key | default | meaning |\n|---|---|---|\n| `a` | `1` | one `x\\|y` |\n| b | 2 | two |\n\nAfter."
	got := tablesToLists(md)
	want := "Before.\n\n`a`\n: default: `1`; one `x|y`\n\nb\n: default: 2; two\n\n\nAfter."
	if got != want {
		t.Errorf("tablesToLists:\n%s\nwant:\n%s", got, want)
	}
}

func TestForManLinks(t *testing.T) {
	for in, want := range map[string]string{
		"[docs/events.md](docs/events.md)":           "*/usr/share/doc/connlogd/events.md*",
		"see [the filters](docs/filters.md#x)":       "see the filters (*/usr/share/doc/connlogd/filters.md*)",
		"[config.example.yaml](config.example.yaml)": "*/etc/connlogd/config.yaml*",
		"[bench/](bench/)":                           "bench/",
		"[site](https://example.net/a)":              "[site](https://example.net/a)",
	} {
		if got := forMan(in); got != want {
			t.Errorf("forMan(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReadmeSection(t *testing.T) {
	readme := "# connlogd\n\nIntro.\n\n## Output\n\nJSON.\n\n### Detail\n\nMore.\n\n## Next\n\nOther.\n"
	got, err := readmeSection(readme, "Output")
	if err != nil || got != "JSON.\n\n### Detail\n\nMore." {
		t.Errorf("section %q, %v", got, err)
	}
	if intro, err := readmeIntro(readme); err != nil || intro != "Intro." {
		t.Errorf("intro %q, %v", intro, err)
	}
	if _, err := readmeSection(readme, "Privileges"); err == nil || !strings.Contains(err.Error(), "no section") {
		t.Errorf("a missing section: %v", err)
	}
}
