package fleet

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
)

// BenchmarkMerge is the merge step alone: decode a runnel.summary/v1
// value (with its quantile sketch) and fold it into a fleet window.
func BenchmarkMerge(b *testing.B) {
	s := newSim(5, 3, 100, 1)
	recs := s.records(b)
	var ins []input
	var vals [][]byte
	for _, r := range recs {
		if r.Topic != "runnel.summaries" {
			continue
		}
		in, err := decodeInput(r.Value, []string{"site"})
		if err != nil {
			b.Fatal(err)
		}
		ins, vals = append(ins, in), append(vals, r.Value)
	}
	b.ReportAllocs()
	b.ResetTimer()
	w := newWindow(&ins[0], 0, testEpoch)
	for i := 0; b.Loop(); i++ {
		in, err := decodeInput(vals[i%len(vals)], []string{"site"})
		if err != nil {
			b.Fatal(err)
		}
		in.key = w.Key // fold every summary into one window
		if err := w.merge(&in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "summaries/s")
}

// BenchmarkFleet is end to end on kfake (three brokers, six partitions),
// one and two instances in the same run: per iteration, for each count, a
// fresh cluster and instances, a warm-up batch merged (so both stages'
// groups have settled), then the gateway records produced and timed until
// every one is merged. It reports summaries merged per second with one
// instance, with two, per instance with two, and the scaling ratio
// (two / one). Everything (brokers, instances, producer, each instance's
// query view) shares the machine, so on a small one the ratio shows the
// CPU limit, not the design's scaling.
func BenchmarkFleet(b *testing.B) {
	// 12,000 summaries: enough that a run measures throughput, not the
	// few transaction round trips of its latency.
	s := newSimSites(6, 3, 1000, 4, 24)
	summaries := 0
	for _, r := range s.records(b) {
		if r.Topic == "runnel.summaries" {
			summaries++
		}
	}
	var took [3]time.Duration // by instance count
	for b.Loop() {
		for _, n := range []int{1, 2} {
			took[n] += fleetRun(b, s, n)
		}
	}
	rate := func(n int) float64 { return float64(summaries*b.N) / took[n].Seconds() }
	b.ReportMetric(rate(1), "summaries/s/1-instance")
	b.ReportMetric(rate(2), "summaries/s/2-instances")
	b.ReportMetric(rate(2)/2, "summaries/s/instance-of-2")
	b.ReportMetric(rate(2)/rate(1), "scaling-ratio")
	b.Logf("%d summaries x %d: one instance %.0f/s, two %.0f/s (%.0f/s each), ratio %.2f on %d CPUs",
		summaries, b.N, rate(1), rate(2), rate(2)/2, rate(2)/rate(1), runtime.NumCPU())
}

// fleetRun times one end-to-end run of s's records through n instances.
func fleetRun(b *testing.B, s *sim, n int) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(6, "runnel.summaries", "runnel.sketches"),
		kfake.GroupMinSessionTimeout(500*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	var insts []*Service
	var stops []func()
	for i := range n {
		inst, stop := startInstance(b, brokers, fmt.Sprint("i", i))
		insts, stops = append(insts, inst), append(stops, stop)
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	merged := func() uint64 {
		m := uint64(0)
		for _, inst := range insts {
			m += inst.m.merged.Load()
		}
		return m
	}
	testutil.WaitFor(b, 30*time.Second, func() (bool, string) {
		owned := 0
		for _, inst := range insts {
			owned += len(ownedParts(inst))
		}
		return owned == 6, fmt.Sprintf("%d of 6 partitions owned", owned)
	})
	// Warm-up: older windows (ids differ), merged before the clock starts.
	warm := *s
	warm.base -= 100 * simWindow
	warm.readings = s.readings[:len(s.readings)/20]
	wrecs := warm.records(b)
	produce(b, brokers, wrecs)
	testutil.WaitFor(b, 2*time.Minute, func() (bool, string) {
		return merged() >= uint64(len(wrecs)), fmt.Sprintf("warm-up: merged %d of %d", merged(), len(wrecs))
	})
	base := merged()
	recs := s.records(b)
	b.StartTimer()
	start := time.Now()
	produce(b, brokers, recs)
	testutil.WaitFor(b, 5*time.Minute, func() (bool, string) {
		return merged()-base >= uint64(len(recs)), fmt.Sprintf("merged %d of %d", merged()-base, len(recs))
	})
	took := time.Since(start)
	b.StopTimer()
	return took
}
