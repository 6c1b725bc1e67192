package forward

import (
	"context"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
)

// summaryRecord is a realistic closed-window summary as the gateway emits
// it: about 250 bytes of JSON, keyed by gateway, series, field and window.
func summaryRecord(i int) Record {
	dev, field := i%500, [...]string{"temp", "hum", "pressure", "vibration_rms"}[i%4]
	start := int64(1700000000000) + int64(i/2000)*60000
	series := fmt.Sprintf("env,device=pi-%04d,site=plant%d", dev, dev%3)
	mean := 20 + float64(i%97)/10
	value := fmt.Appendf(nil, `{"gateway":"gw-0042","series":%q,"field":%q,"window":"1m","start":%d,"end":%d,"count":60,"sum":%.3f,"mean":%.3f,"stddev":%.4f,"min":%.2f,"max":%.2f,"p50":%.3f,"p99":%.3f}`,
		series, field, start, start+60000, mean*60, mean, 0.1234+float64(i%13)/100, mean-0.8, mean+0.9, mean+0.02, mean+0.85)
	return Record{
		Key:     []byte("gw-0042|" + series + "|" + field + "|1m"),
		Value:   value,
		ID:      fmt.Sprintf("gw-0042/%s/%s/1m/%d", series, field, start),
		Headers: []Header{{Key: "schema", Value: []byte("runnel.summary/v1")}},
	}
}

func avgValue(n int) int {
	total := 0
	for i := range n {
		total += len(summaryRecord(i).Value)
	}
	return total / n
}

func benchConfig(c *kfake.Cluster) KafkaConfig {
	cfg := DefaultKafkaConfig()
	cfg.Brokers = c.ListenAddrs()
	cfg.ClientID = "runnel-bench"
	return cfg
}

func appendSummaries(b *testing.B, o *Outbox, from, to, batch int) {
	for i := from; i < to; i += batch {
		recs := make([]Record, 0, batch)
		for j := i; j < min(i+batch, to); j++ {
			recs = append(recs, summaryRecord(j))
		}
		if err := o.Append(context.Background(), recs); err != nil {
			b.Fatal(err)
		}
	}
}

func waitAcked(b *testing.B, o *Outbox, n uint64, timeout time.Duration) {
	b.Helper()
	testutil.WaitFor(b, timeout, func() (bool, string) {
		st := o.Stats()
		return st.AckedIndex >= n, fmt.Sprintf("outbox drained to %d: %+v", n, st)
	})
}

func reportWire(b *testing.B, f *Forwarder, n int, d time.Duration) {
	st := f.Status()
	b.ReportMetric(float64(n)/d.Seconds(), "records/s")
	if st.WireRecords > 0 {
		b.ReportMetric(float64(st.WireBytes)/float64(st.WireRecords), "wire-B/record")
		b.ReportMetric(float64(st.RawBytes)/float64(st.WireRecords), "raw-B/record")
	}
}

// BenchmarkForwardSteady appends b.N summaries in batches of 100 while
// they are forwarded to kfake (zstd), and measures until the last is
// acknowledged.
func BenchmarkForwardSteady(b *testing.B) {
	c := newCluster(b, kfake.BlackholeProduce())
	cfg := benchConfig(c)
	o := openTestOutbox(b, b.TempDir(), KindSummaries, OutboxConfig{MaxBytes: 512 * wal.MiB})
	r := startForwarder(b, cfg, o)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	appendSummaries(b, o, 0, b.N, 100)
	waitAcked(b, o, uint64(b.N), 5*time.Minute)
	d := time.Since(start)
	b.StopTimer()
	reportWire(b, r.f, b.N, d)
	// Each position write is two fsyncs (file, directory): flash wear.
	b.ReportMetric(2*float64(o.Stats().AckWrites)/d.Seconds(), "ack-fsyncs/s")
}

// BenchmarkBacklogDrain1M drains a backlog of 1,000,000 summaries (an
// outage of about a day for a small site) to kfake with zstd. Run with
// -benchtime=1x; it is never part of go test.
func BenchmarkBacklogDrain1M(b *testing.B) {
	const n = 1_000_000
	for b.Loop() {
		b.StopTimer()
		c := newCluster(b, kfake.BlackholeProduce())
		cfg := benchConfig(c)
		o := openTestOutbox(b, b.TempDir(), KindSummaries, OutboxConfig{MaxBytes: 1 * wal.GiB})
		t0 := time.Now()
		appendSummaries(b, o, 0, n, 1000)
		s := o.Stats()
		b.Logf("backlog: %d records (values %d B on average), %d bytes on disk (%.0f B/entry), appended in %s",
			s.LastIndex, avgValue(1000), s.Bytes, float64(s.Bytes)/n, time.Since(t0))
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		b.StartTimer()
		start := time.Now()
		r := startForwarder(b, cfg, o)
		var peak uint64
		for deadline := time.Now().Add(10 * time.Minute); o.Stats().AckedIndex < n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("not drained: %+v", o.Stats())
			}
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		d := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(peak-min(peak, base))/(1<<20), "peak-heap-MiB")
		reportWire(b, r.f, n, d)
		r.stop(b)
		b.StartTimer()
	}
}

// BenchmarkForwardDelivery compares exactly_once with at_least_once in
// the same run: b.N summaries of 10,000 series (keys), appended in
// batches of 100 while forwarded to kfake (one broker, in process, so the
// CPU figure includes the broker's share), measured until the last is
// committed. Reports summaries/s and CPU µs per summary (user+system of
// the whole process).
func BenchmarkForwardDelivery(b *testing.B) {
	for _, mode := range []string{DeliveryAtLeastOnce, DeliveryExactlyOnce} {
		b.Run(mode, func(b *testing.B) {
			c := newCluster(b)
			cfg := benchConfig(c)
			cfg.Delivery = mode
			o := openTestOutbox(b, b.TempDir(), KindSummaries, OutboxConfig{MaxBytes: 512 * wal.MiB})
			r := startForwarder(b, cfg, o)
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i += 100 {
				recs := make([]Record, 0, 100)
				for j := i; j < min(i+100, b.N); j++ {
					rec := summaryRecord(j)
					series := fmt.Sprintf("gw-0042|env,device=pi-%05d|temp|1m", j%10000)
					rec.Key, rec.ID = []byte(series), fmt.Sprintf("%s/%d", series, j)
					recs = append(recs, rec)
				}
				if err := o.Append(context.Background(), recs); err != nil {
					b.Fatal(err)
				}
			}
			waitAcked(b, o, uint64(b.N), 5*time.Minute)
			d := time.Since(start)
			b.StopTimer()
			cpu := cpuTime() - cpu0
			b.ReportMetric(float64(b.N)/d.Seconds(), "summaries/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/summary")
			if st := r.f.Status(); st.TxnCommitted > 0 {
				b.ReportMetric(float64(st.TxnRecords)/float64(st.TxnCommitted), "records/txn")
			}
		})
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDrainDelivery drains a backlog of b.N summaries of 10,000
// series in each delivery mode, in the same run: the forwarding cost
// alone, without the appends (kfake in process: its CPU is included).
func BenchmarkDrainDelivery(b *testing.B) {
	for _, mode := range []string{DeliveryAtLeastOnce, DeliveryExactlyOnce} {
		b.Run(mode, func(b *testing.B) {
			c := newCluster(b)
			cfg := benchConfig(c)
			cfg.Delivery = mode
			o := openTestOutbox(b, b.TempDir(), KindSummaries, OutboxConfig{MaxBytes: 1 * wal.GiB})
			for i := 0; i < b.N; i += 1000 {
				recs := make([]Record, 0, 1000)
				for j := i; j < min(i+1000, b.N); j++ {
					rec := summaryRecord(j)
					series := fmt.Sprintf("gw-0042|env,device=pi-%05d|temp|1m", j%10000)
					rec.Key, rec.ID = []byte(series), fmt.Sprintf("%s/%d", series, j)
					recs = append(recs, rec)
				}
				if err := o.Append(context.Background(), recs); err != nil {
					b.Fatal(err)
				}
			}
			runtime.GC()
			cpu0 := cpuTime()
			b.ResetTimer()
			start := time.Now()
			r := startForwarder(b, cfg, o)
			waitAcked(b, o, uint64(b.N), 5*time.Minute)
			d := time.Since(start)
			b.StopTimer()
			cpu := cpuTime() - cpu0
			b.ReportMetric(float64(b.N)/d.Seconds(), "summaries/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/summary")
			if st := r.f.Status(); st.TxnCommitted > 0 {
				b.ReportMetric(float64(st.TxnRecords)/float64(st.TxnCommitted), "records/txn")
			}
		})
	}
}
