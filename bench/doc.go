// Package bench holds the polling benchmarks of connlogd: what one poll
// of a large socket table costs the daemon, measured against a minimal
// sock_diag dump of the same tables in the same run. The benchmarks need
// a namespace full of sockets; see README.md, mkns.sh and run.sh.
package bench
