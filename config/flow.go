package config

import (
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"
)

// MinFlowUpdateInterval is the shortest flow update interval: updates
// more often than every second would multiply the output by the number
// of open connections for no view a SIEM can use.
const MinFlowUpdateInterval = time.Second

// checkFlowUpdateInterval is the one rule for flow_update_interval: 0
// (off) or at least MinFlowUpdateInterval.
func checkFlowUpdateInterval(d time.Duration) error {
	if d != 0 && d < MinFlowUpdateInterval {
		return fmt.Errorf("%v is neither 0 (off) nor at least %v", d, MinFlowUpdateInterval)
	}
	return nil
}

func (p *parser) flowUpdateInterval(n *yaml.Node) (time.Duration, error) {
	const key = "flow_update_interval"
	s, err := p.scalar(n, key)
	if err != nil {
		return 0, err
	}
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, p.errorf(n.Line, key, "%q is not a duration like 5m or 0 (off)", s)
	}
	if err := checkFlowUpdateInterval(d); err != nil {
		return 0, p.errorf(n.Line, key, "%w", err)
	}
	return d, nil
}
