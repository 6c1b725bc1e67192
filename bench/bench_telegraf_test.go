package bench

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The counter sums temp_count of Telegraf's JSON serializer records and
// ignores anything else on the topic.
func TestTelegrafCounterSumsCounts(t *testing.T) {
	c := &telegrafCounter{}
	for _, v := range []string{
		`{"fields":{"temp_count":1200,"temp_max":34.9,"temp_mean":25.1},"name":"env","tags":{"device":"dev-0001"},"timestamp":1764720000}`,
		`{"fields":{"temp_count":34},"name":"env","tags":{"device":"dev-0002"},"timestamp":1764720010}`,
		`{"fields":{"temp_max":3},"name":"env","tags":{},"timestamp":1}`, // no count
		`not json`,
	} {
		c.add(&kgo.Record{Value: []byte(v)})
	}
	if n, _ := c.get(); n != 1234 {
		t.Fatalf("counted %d, want 1234", n)
	}
}
