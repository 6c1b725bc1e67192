package sketches_test

import (
	"fmt"

	"github.com/runnel-iot/runnel/sketches"
)

// A fleet consumer decodes the quantile sketches of several gateways'
// windows and merges them; the result is the sketch of all their readings.
func ExampleQuantile_Merge() {
	var blobs [][]byte // as received in runnel.summaries "quantiles"
	for gw := range 4 {
		q := sketches.NewQuantile()
		for i := range 250 {
			q.Add(16.8 + 0.6*float64(gw*250+i)/1000) // 16.8 .. 17.4
		}
		b, _ := q.MarshalBinary()
		blobs = append(blobs, b)
	}
	fleet := sketches.NewQuantile()
	for _, b := range blobs {
		var q sketches.Quantile
		if err := q.UnmarshalBinary(b); err != nil {
			fmt.Println(err)
			return
		}
		if err := fleet.Merge(&q); err != nil {
			fmt.Println(err)
			return
		}
	}
	fmt.Printf("count %d, level %d, ±%.4f%%\n", fleet.Count(), fleet.Level(), 100*fleet.RelativeError())
	fmt.Printf("p50 %.3f p90 %.3f p99 %.3f\n", fleet.Quantile(0.5), fleet.Quantile(0.9), fleet.Quantile(0.99))
	// Output:
	// count 1000, level 0, ±0.0078%
	// p50 17.100 p90 17.339 p99 17.393
}
