// Package nsbench holds the per-namespace benchmarks of connlogd: what a
// poll of one network namespace with few or no sockets costs, when every
// TCP dump walks the host-wide established hash. See README.md, run.sh
// (which also measures the daemon at 1, 10 and 100 namespaces) and
// nsfill.
package nsbench
