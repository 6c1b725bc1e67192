package gateway

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// TestTickWhenSilent runs the silence ticker on a real WAL in a synctest
// bubble (fake time): it must append a tick at the end of every silent
// interval. Its own tick used to count as activity at the next interval,
// so silence was ticked only every other interval and an idle device's
// windows closed up to 1.5 × idle_timeout late (still open at 85 s with
// 1 m).
func TestTickWhenSilent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, err := wal.Open(t.TempDir(), wal.DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			tickWhenSilent(ctx, log, time.Second)
		}()
		// at waits until fake time start+d, every goroutine of the bubble
		// (the ticker, the WAL writer) settled, and reports the last index.
		start := time.Now()
		at := func(d time.Duration) uint64 {
			time.Sleep(time.Until(start.Add(d)))
			synctest.Wait()
			return log.LastIndex()
		}
		// Ten silent seconds: ten ticks.
		if n := at(10*time.Second + time.Millisecond); n != 10 {
			t.Fatalf("%d ticks in 10 silent seconds, want 10", n)
		}
		// A reading at 10.5 s: the interval that ends at 11 s was not
		// silent; ticks resume at 12 s.
		rec := wal.AppendBatch(nil, &wal.Batch{IngestNs: time.Now().UnixNano(), Readings: []wal.Reading{{Series: "env,device=a", Field: "temp", Value: 1, TimeNs: 1}}})
		if n := at(10500 * time.Millisecond); n != 10 {
			t.Fatalf("index %d before the append, want 10", n)
		}
		if _, last, err := log.Append(ctx, [][]byte{rec}); err != nil || last != 11 {
			t.Fatalf("append: index %d, %v", last, err)
		}
		if n := at(11*time.Second + time.Millisecond); n != 11 {
			t.Fatalf("index %d at 11 s, want 11: a tick after an interval with a reading", n)
		}
		if n := at(15*time.Second + time.Millisecond); n != 15 {
			t.Fatalf("index %d at 15 s, want 15: a tick at each of 12, 13, 14, 15 s", n)
		}
		cancel()
		<-done
	})
}
