package spool

import (
	"bytes"
	"testing"
	"time"
)

// BenchmarkAppend measures one append of a 400-byte record (a typical
// event with the otlp sink's header): as the sinks use it (write(2) per
// record, fsync by a timer: not in the loop), with an fsync every 64
// records (a poll's batch), and with an fsync per record.
func BenchmarkAppend(b *testing.B) {
	rec := bytes.Repeat([]byte{'e'}, 400)
	for _, bc := range []struct {
		name  string
		every int
	}{{"fsync_timer", 0}, {"fsync_every_64", 64}, {"fsync_every_record", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := Open(b.TempDir(), 1<<30)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.SetBytes(int64(len(rec) + HeaderSize))
			now := time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Append(rec, now); err != nil {
					b.Fatal(err)
				}
				if bc.every > 0 && i%bc.every == bc.every-1 {
					if err := s.Sync(); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkReadAck measures reading and acknowledging records in
// batches of 2048, as a sender does.
func BenchmarkReadAck(b *testing.B) {
	s, err := Open(b.TempDir(), 1<<30)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rec := bytes.Repeat([]byte{'e'}, 400)
	now := time.Now()
	b.SetBytes(int64(len(rec) + HeaderSize))
	b.ResetTimer()
	for i := 0; i < b.N; i += 2048 {
		b.StopTimer()
		for range 2048 {
			s.Append(rec, now)
		}
		b.StartTimer()
		c, _, _, err := s.Read(2048, 2<<20, func([]byte) {})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Ack(c); err != nil {
			b.Fatal(err)
		}
	}
}
