//go:build race

package sink

// The race detector makes sync.Pool drop items, so zap's pooled buffers
// allocate: allocation counts mean nothing under -race.
const raceEnabled = true
