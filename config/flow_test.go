package config

import (
	"strings"
	"testing"
	"time"
)

func TestFlowUpdateInterval(t *testing.T) {
	if d := Default().FlowUpdateInterval; d != 0 {
		t.Errorf("default %v, want 0 (off)", d)
	}
	c, err := Parse([]byte("interval: 1s\n"), "c.yaml")
	if err != nil || c.FlowUpdateInterval != 0 {
		t.Fatalf("absent key: %v %v", c, err)
	}
	for in, want := range map[string]time.Duration{"0": 0, "0s": 0, "1s": time.Second, "5m": 5 * time.Minute} {
		c, err := Parse([]byte("flow_update_interval: "+in+"\n"), "c.yaml")
		if err != nil || c.FlowUpdateInterval != want {
			t.Errorf("%s: %v %v, want %v", in, c.FlowUpdateInterval, err, want)
			continue
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: Validate: %v", in, err)
		}
	}
	for in, msg := range map[string]string{
		"500ms": "flow_update_interval: 500ms is neither 0 (off) nor at least 1s",
		"-1s":   "flow_update_interval: -1s is neither 0 (off) nor at least 1s",
		"often": `flow_update_interval: "often" is not a duration like 5m or 0 (off)`,
		"[1s]":  "flow_update_interval",
	} {
		_, err := Parse([]byte("\nflow_update_interval: "+in+"\n"), "c.yaml")
		if err == nil || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), "c.yaml:2") {
			t.Errorf("%s: %v, want line 2 and %q", in, err, msg)
		}
	}
	c = Default()
	c.FlowUpdateInterval = 10 * time.Millisecond
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "flow_update_interval") {
		t.Errorf("Validate of 10ms: %v", err)
	}
}
