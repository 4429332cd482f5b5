package main

import (
	"strings"
	"testing"
)

func TestStanza(t *testing.T) {
	mit := "MIT License\n\nCopyright (c) 2016 Someone\n\nPermission is hereby granted, free of charge, to any person\n"
	bsd := "Copyright 2009 The Go Authors.\n\nRedistribution and use ...\n   * Neither the name of Google Inc. nor the names of its\n"
	apache := "\n                                 Apache License\n                           Version 2.0, January 2004\n\n   TERMS AND CONDITIONS FOR USE\n"
	for _, c := range []struct {
		name, text, license string
		fullText            bool
	}{
		{"MIT", mit, "Expat", true},
		{"BSD-3", bsd, "BSD-3-clause", true},
		{"Apache", apache, "Apache-2.0", false},
		{"both", mit + "\n### Apache License ###\nLicensed under the Apache License, Version 2.0\n" + apache, "Expat and Apache-2.0", false},
	} {
		got := stanza(c.text)
		if !strings.Contains(got, "\nLicense: "+c.license+"\n") {
			t.Errorf("%s: no License: %s in\n%s", c.name, c.license, got)
		}
		if strings.Contains(got, "TERMS AND CONDITIONS") {
			t.Errorf("%s: the Apache text is copied (Debian asks for a pointer to common-licenses):\n%s", c.name, got)
		}
		if c.fullText && !strings.Contains(got, " Copyright") {
			t.Errorf("%s: the license text is not included:\n%s", c.name, got)
		}
		if strings.Contains(got, "\n\n") {
			t.Errorf("%s: an empty line inside a stanza:\n%q", c.name, got)
		}
	}
	if got := stanza(mit); !strings.HasPrefix(got, "Copyright: Copyright (c) 2016 Someone\n") {
		t.Errorf("copyright line not picked: %q", got)
	}
}

func TestEscapePath(t *testing.T) {
	if got := escapePath("github.com/BurntSushi/toml"); got != "github.com/!burnt!sushi/toml" {
		t.Errorf("escapePath = %q", got)
	}
}
