package windows

import (
	"slices"
	"testing"

	"github.com/runnel-iot/runnel/ingest"
)

// FuzzSeriesKeyRoundTrip: parseSeriesKey gives back the measurement and
// tags ingest wrote the key from, backslashes and separators included.
func FuzzSeriesKeyRoundTrip(f *testing.F) {
	f.Add("env", "device", "pi-042", "site", "plant 1")
	f.Add("a,b c", "k=1", `v\,=`, "x y", "z,")
	f.Add(`m\`, `k\`, `v\`, `\\`, `a\\,`)
	f.Add(`m\=`, `\k`, `\=`, `a\b`, `\ `)
	f.Fuzz(func(t *testing.T, m, k1, v1, k2, v2 string) {
		if slices.Contains([]string{m, k1, v1, k2, v2}, "") || k1 == k2 {
			return
		}
		key := string(ingest.AppendSeriesKey(nil, m, []ingest.Tag{{Key: k1, Value: v1}, {Key: k2, Value: v2}}))
		p := parseSeriesKey(key)
		want := [][2]string{{k1, v1}, {k2, v2}}
		if k2 < k1 {
			want[0], want[1] = want[1], want[0]
		}
		if p.meas != m || !slices.Equal(p.tags, want) {
			t.Fatalf("key %q: got %q %q, want %q %q", key, p.meas, p.tags, m, want)
		}
	})
}
