package fleet

import (
	"fmt"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
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

// BenchmarkFleet is end to end on kfake (three brokers, six partitions):
// gateway summaries produced, then timed until every one is merged, with
// one and with two instances. Everything (brokers, instances, producer)
// shares the machine, so the ratio understates real scaling.
func BenchmarkFleet(b *testing.B) {
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			s := newSimSites(6, 3, 200, 4, 24)
			recs := s.records(b)
			summaries := 0
			for _, r := range recs {
				if r.Topic == "runnel.summaries" {
					summaries++
				}
			}
			var total time.Duration
			for b.Loop() {
				c := newCluster(b)
				brokers := c.ListenAddrs()
				var insts []*Service
				for i := range n {
					inst, _ := startInstance(b, brokers, fmt.Sprint("i", i))
					insts = append(insts, inst)
				}
				// Wait for the group to settle before timing.
				testutil.WaitFor(b, 30*time.Second, func() (bool, string) {
					owned := 0
					for _, inst := range insts {
						inst.cbMu.Lock()
						owned += len(inst.owned)
						inst.cbMu.Unlock()
					}
					return owned == 6, fmt.Sprintf("%d of 6 partitions owned", owned)
				})
				fresh := s.records(b)
				start := time.Now()
				produce(b, brokers, fresh)
				testutil.WaitFor(b, 2*time.Minute, func() (bool, string) {
					merged := uint64(0)
					for _, inst := range insts {
						merged += inst.m.merged.Load()
					}
					return merged >= uint64(len(recs)), fmt.Sprintf("merged %d of %d", merged, len(recs))
				})
				total += time.Since(start)
			}
			b.ReportMetric(float64(summaries*b.N)/total.Seconds(), "summaries/s")
			b.ReportMetric(float64(summaries*b.N)/total.Seconds()/float64(n), "summaries/s/instance")
		})
	}
}
