// Command copyright writes the packages' copyright file (Debian's
// machine-readable format): connlogd's own terms, then each module
// statically linked into the binary and the Go standard library, with
// their license texts. The module list is read from the binary's build
// information and the texts from the module cache, so the file follows
// go.mod without anyone keeping a list. Apache-2.0 texts are referred to
// in /usr/share/common-licenses, as Debian asks, instead of copied.
package main

import (
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"
)

func main() {
	bin := flag.String("bin", "", "the connlogd binary")
	root := flag.String("root", ".", "connlogd's source tree (for its LICENSE, when there is one)")
	out := flag.String("out", "", "the file to write")
	flag.Parse()
	if *bin == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "copyright: -bin and -out are required")
		os.Exit(2)
	}
	text, err := generate(*bin, *root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "copyright:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "copyright:", err)
		os.Exit(1)
	}
}

func generate(bin, root string) (string, error) {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "", fmt.Errorf("read build info: %w", err)
	}
	modcache, err := goEnv("GOMODCACHE")
	if err != nil {
		return "", err
	}
	goroot, err := goEnv("GOROOT")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n")
	b.WriteString("Upstream-Name: connlogd\nSource: https://github.com/connlogd/connlogd\n\n")

	own, err := ownLicense(root)
	if err != nil {
		return "", err
	}
	b.WriteString("Files: *\nCopyright: the connlogd authors\n" + own)

	goLicense, err := os.ReadFile(filepath.Join(goroot, "LICENSE"))
	if err != nil {
		return "", fmt.Errorf("the Go standard library's license: %w", err)
	}
	b.WriteString("\nFiles: Go standard library " + bi.GoVersion + " (linked into /usr/sbin/connlogd)\n")
	b.WriteString(stanza(string(goLicense)))

	for _, dep := range bi.Deps {
		m := dep
		if m.Replace != nil {
			m = m.Replace
		}
		dir := filepath.Join(modcache, escapePath(m.Path)+"@"+m.Version)
		text, err := licenseText(dir)
		if err != nil {
			return "", fmt.Errorf("module %s@%s: %w", m.Path, m.Version, err)
		}
		fmt.Fprintf(&b, "\nFiles: Go module %s %s (linked into /usr/sbin/connlogd)\n", m.Path, m.Version)
		b.WriteString(stanza(text))
		// Apache-2.0 asks that a NOTICE file travel with the work.
		if notice, err := os.ReadFile(filepath.Join(dir, "NOTICE")); err == nil {
			b.WriteString("Comment: The module's NOTICE file:\n" + indent(string(notice)))
		}
	}
	return b.String(), nil
}

// ownLicense is connlogd's License field, from a LICENSE file at the top
// of the source tree. The sources carry none yet: the field says so
// rather than guess.
func ownLicense(root string) (string, error) {
	text, err := licenseText(root)
	if errors.Is(err, errNoLicense) {
		return "License: NOASSERTION\n The connlogd sources do not state a license yet.\n", nil
	}
	if err != nil {
		return "", err
	}
	return stanza(text), nil
}

var errNoLicense = errors.New("no license file")

// licenseText reads the license file at the top of a module.
func licenseText(dir string) (string, error) {
	for _, name := range []string{"LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING", "LICENSE-MIT"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil {
			return string(b), nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
	}
	return "", errNoLicense
}

var (
	apacheRE = regexp.MustCompile(`(?s)Apache License.{0,40}Version 2\.0`)
	mitRE    = regexp.MustCompile(`(?i)permission is hereby granted, free of charge`)
	bsd3RE   = regexp.MustCompile(`(?i)neither the name of`)
	bsd2RE   = regexp.MustCompile(`(?i)redistributions in binary form must reproduce`)
	// A notice: "Copyright (c) 2016 …", "Copyright © 2012 …", "Copyright 2009 …".
	copyrightRE = regexp.MustCompile(`(?i)^copyright\s+(\(c\)|©|[0-9])`)
)

// stanza is the Copyright and License fields for a license text: the
// copyright lines it holds, its short name, and the text itself (or, for
// Apache-2.0, a pointer to Debian's copy).
func stanza(text string) string {
	var copyrights []string
	for _, l := range strings.Split(text, "\n") {
		t := strings.TrimSpace(l)
		if copyrightRE.MatchString(t) {
			copyrights = append(copyrights, t)
		}
	}
	if len(copyrights) == 0 {
		copyrights = []string{"the module's authors (no notice in its license file)"}
	}
	var b strings.Builder
	b.WriteString("Copyright: " + strings.Join(copyrights, "\n ") + "\n")
	const apacheRef = " On Debian systems, the complete text of the Apache License 2.0 is in\n /usr/share/common-licenses/Apache-2.0.\n"
	switch loc := apacheRE.FindStringIndex(text); {
	case loc != nil && mitRE.MatchString(text[:loc[0]]):
		// Both (go.yaml.in/yaml/v3): the MIT part as it is, then the
		// pointer in place of the Apache text.
		cut := strings.LastIndex(text[:loc[0]], "\n") + 1
		b.WriteString("License: Expat and Apache-2.0\n" + indent(text[:cut]) + " .\n" + apacheRef)
		return b.String()
	case loc != nil:
		b.WriteString("License: Apache-2.0\n" + apacheRef)
		return b.String()
	case mitRE.MatchString(text):
		b.WriteString("License: Expat\n")
	case bsd3RE.MatchString(text):
		b.WriteString("License: BSD-3-clause\n")
	case bsd2RE.MatchString(text):
		b.WriteString("License: BSD-2-clause\n")
	default:
		b.WriteString("License: other\n")
	}
	b.WriteString(indent(text))
	return b.String()
}

// indent formats a text as a field's continuation lines: each line
// indented by one space, empty lines as " .".
func indent(text string) string {
	var b strings.Builder
	text = strings.Trim(text, "\n")
	for _, l := range strings.Split(strings.TrimRightFunc(text, unicode.IsSpace), "\n") {
		l = strings.TrimRightFunc(strings.ReplaceAll(l, "\t", "    "), unicode.IsSpace)
		if l == "" {
			b.WriteString(" .\n")
			continue
		}
		b.WriteString(" " + l + "\n")
	}
	return b.String()
}

// escapePath is the module cache's spelling of a module path: each
// upper-case letter as "!" and its lower case.
func escapePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if unicode.IsUpper(r) {
			b.WriteByte('!')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

func goEnv(name string) (string, error) {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", name, err)
	}
	return strings.TrimSpace(string(out)), nil
}
