package fleet

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/runnel-iot/runnel/sketches"
)

// windowState is one fleet window's merged state: what the changelog holds
// (JSON, sketches in their binary encodings) and what a restore rebuilds.
type windowState struct {
	Key     string `json:"key"`
	Lineage string `json:"lineage"`
	Kind    string `json:"kind"` // summary or sketch
	StartNs int64  `json:"start_ns"`
	EndNs   int64  `json:"end_ns"`

	// Summary windows: merged moments (Chan et al.: count, mean, M2).
	Count uint64  `json:"count,omitempty"`
	Sum   float64 `json:"sum,omitempty"`
	Min   float64 `json:"min,omitempty"`
	Max   float64 `json:"max,omitempty"`
	Mean  float64 `json:"mean,omitempty"`
	M2    float64 `json:"m2,omitempty"`
	QBin  []byte  `json:"quantiles,omitempty"`

	// Sketch windows.
	Readings uint64 `json:"readings,omitempty"`
	HLLBin   []byte `json:"hll,omitempty"`
	TopKBin  []byte `json:"countmin,omitempty"`

	// Gateways counts the records each gateway contributed.
	Gateways map[string]int `json:"gateways"`
	// IDs are the runnel-id of every record merged: the de-duplication
	// set. The changelog holds each as its own record (idKey), so a
	// window's state record stays small however many records it merges.
	IDs         map[string]struct{} `json:"-"`
	FirstSeenNs int64               `json:"first_seen_ns"`    // wall clock, for grace
	Closed      string              `json:"closed,omitempty"` // "", complete, grace
	ClosedAtNs  int64               `json:"closed_at_ns,omitempty"`
	Revision    int                 `json:"revision"`
	Late        int                 `json:"late"`

	q    *sketches.Quantile
	hll  *sketches.HLL
	topk *sketches.TopK
	part int32 // the repartition (and changelog) partition
}

// lineageState remembers, per fleet window lineage (key without start),
// the gateways of the latest closed window: the completeness rule.
type lineageState struct {
	Lineage  string         `json:"lineage"`
	StartNs  int64          `json:"start_ns"`
	Gateways map[string]int `json:"gateways"`
}

// changelogValue is a changelog record's value: exactly one field is set.
type changelogValue struct {
	Window  *windowState  `json:"window,omitempty"`
	Lineage *lineageState `json:"lineage,omitempty"`
}

func newWindow(in *input, part int32, now time.Time) *windowState {
	w := &windowState{Key: in.key, Lineage: in.lineage, Gateways: map[string]int{},
		IDs: map[string]struct{}{}, FirstSeenNs: now.UnixNano(), part: part}
	if in.summary != nil {
		w.Kind, w.StartNs, w.EndNs = "summary", in.summary.StartNs, in.summary.EndNs
	} else {
		w.Kind, w.StartNs, w.EndNs = "sketch", in.sketch.StartNs, in.sketch.EndNs
	}
	return w
}

// merge folds one gateway record into the window.
func (w *windowState) merge(in *input) error {
	if s := in.summary; s != nil {
		if len(s.Quantiles) > 0 {
			var q sketches.Quantile
			if err := q.UnmarshalBinary(s.Quantiles); err != nil {
				return fmt.Errorf("merge %s quantiles: %w", in.key, err)
			}
			if w.q == nil {
				w.q = &q
			} else if err := w.q.Merge(&q); err != nil {
				return fmt.Errorf("merge %s quantiles: %w", in.key, err)
			}
		}
		if s.Count > 0 {
			m2 := 0.0
			if s.Count > 1 {
				m2 = s.Stddev * s.Stddev * float64(s.Count-1)
			}
			if w.Count == 0 {
				w.Min, w.Max = s.Min, s.Max
			} else {
				w.Min, w.Max = math.Min(w.Min, s.Min), math.Max(w.Max, s.Max)
			}
			// Chan, Golub and LeVeque's pairwise update of mean and M2.
			na, nb := float64(w.Count), float64(s.Count)
			n := na + nb
			d := s.Mean - w.Mean
			w.Mean += d * nb / n
			w.M2 += m2 + d*d*na*nb/n
			w.Count += s.Count
			w.Sum += s.Sum
		}
	}
	if s := in.sketch; s != nil {
		w.Readings += s.Readings
		if len(s.HLL) > 0 {
			var h sketches.HLL
			if err := h.UnmarshalBinary(s.HLL); err != nil {
				return fmt.Errorf("merge %s hll: %w", in.key, err)
			}
			if w.hll == nil {
				w.hll = &h
			} else if err := w.hll.Merge(&h); err != nil {
				return fmt.Errorf("merge %s hll: %w", in.key, err)
			}
		}
		if len(s.CountMin) > 0 {
			var t sketches.TopK
			if err := t.UnmarshalBinary(s.CountMin); err != nil {
				return fmt.Errorf("merge %s top-k: %w", in.key, err)
			}
			if w.topk == nil {
				w.topk = &t
			} else if err := w.topk.Merge(&t); err != nil {
				return fmt.Errorf("merge %s top-k: %w", in.key, err)
			}
		}
	}
	w.Gateways[in.gateway]++
	return nil
}

// stddev is the merged sample standard deviation (n-1), as the gateway's.
func (w *windowState) stddev() float64 {
	if w.Count < 2 {
		return 0
	}
	return math.Sqrt(w.M2 / float64(w.Count-1))
}

// encode serializes the sketches into the state's byte fields.
func (w *windowState) encode() {
	w.QBin, w.HLLBin, w.TopKBin = nil, nil, nil
	if w.q != nil {
		w.QBin, _ = w.q.MarshalBinary()
	}
	if w.hll != nil {
		w.HLLBin, _ = w.hll.MarshalBinary()
	}
	if w.topk != nil {
		w.TopKBin, _ = w.topk.MarshalBinary()
	}
}

// decode rebuilds the in-memory sketches after a changelog restore.
func (w *windowState) decode(part int32) error {
	w.part = part
	if w.IDs == nil {
		w.IDs = map[string]struct{}{}
	}
	if w.Gateways == nil {
		w.Gateways = map[string]int{}
	}
	if len(w.QBin) > 0 {
		w.q = new(sketches.Quantile)
		if err := w.q.UnmarshalBinary(w.QBin); err != nil {
			return fmt.Errorf("restore %s quantiles: %w", w.Key, err)
		}
	}
	if len(w.HLLBin) > 0 {
		w.hll = new(sketches.HLL)
		if err := w.hll.UnmarshalBinary(w.HLLBin); err != nil {
			return fmt.Errorf("restore %s hll: %w", w.Key, err)
		}
	}
	if len(w.TopKBin) > 0 {
		w.topk = new(sketches.TopK)
		if err := w.topk.UnmarshalBinary(w.TopKBin); err != nil {
			return fmt.Errorf("restore %s top-k: %w", w.Key, err)
		}
	}
	return nil
}

// complete reports whether every gateway of the lineage's latest closed
// window has contributed at least as many records to w.
func (w *windowState) complete(l *lineageState) bool {
	if l == nil || l.StartNs >= w.StartNs || len(l.Gateways) == 0 {
		return false
	}
	for g, n := range l.Gateways {
		if w.Gateways[g] < n {
			return false
		}
	}
	return true
}

// Output is a runnel.fleet/v1 value: one fleet window (schema in
// fleet/schema/fleet.schema.json).
type Output struct {
	Schema   string            `json:"schema"`
	Key      string            `json:"key"`
	Kind     string            `json:"kind"`
	Group    map[string]string `json:"group,omitempty"`
	Start    string            `json:"start"`
	End      string            `json:"end"`
	StartNs  int64             `json:"start_ns"`
	EndNs    int64             `json:"end_ns"`
	Gateways []string          `json:"gateways"`
	Records  int               `json:"records"`
	Closed   string            `json:"closed"`
	Revision int               `json:"revision"`
	Late     int               `json:"late"`
	Summary  *SummaryOut       `json:"summary,omitempty"`
	Sketch   *SketchOut        `json:"sketch,omitempty"`
}

// SummaryOut is the merged figures of a summary fleet window.
type SummaryOut struct {
	Measurement string  `json:"measurement"`
	Field       string  `json:"field"`
	Window      string  `json:"window"`
	Count       uint64  `json:"count"`
	Sum         float64 `json:"sum"`
	Min         float64 `json:"min"`
	Max         float64 `json:"max"`
	Mean        float64 `json:"mean"`
	Stddev      float64 `json:"stddev"`
	P50         float64 `json:"p50,omitempty"`
	P90         float64 `json:"p90,omitempty"`
	P99         float64 `json:"p99,omitempty"`
	Quantiles   []byte  `json:"quantiles,omitempty"`
}

// SketchOut is the merged sketches of a group fleet window.
type SketchOut struct {
	Group    string     `json:"group"`
	GroupKey string     `json:"group_key"`
	Size     string     `json:"size"`
	Readings uint64     `json:"readings"`
	Distinct uint64     `json:"distinct"`
	TopK     []TopKItem `json:"topk,omitempty"`
	HLL      []byte     `json:"hll,omitempty"`
	CountMin []byte     `json:"countmin,omitempty"`
}

// TopKItem is a heavy hitter.
type TopKItem struct {
	Key   string `json:"key"`
	Count uint64 `json:"count"`
}

func rfc3339(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

// output renders the window as its runnel.fleet/v1 value; groupBy names
// the group-by tags in key order. w must be encoded.
func (w *windowState) output(groupBy []string) Output {
	o := Output{Schema: schemaFleet, Key: w.Key, Kind: w.Kind, Start: rfc3339(w.StartNs), End: rfc3339(w.EndNs),
		StartNs: w.StartNs, EndNs: w.EndNs, Gateways: slices.Sorted(maps.Keys(w.Gateways)),
		Closed: w.Closed, Revision: w.Revision, Late: w.Late}
	for _, n := range w.Gateways {
		o.Records += n
	}
	parts := splitKey(w.Key)
	if w.Kind == "summary" && len(parts) >= 5 {
		s := &SummaryOut{Measurement: parts[1], Field: parts[2], Window: parts[3], Count: w.Count, Sum: w.Sum,
			Min: w.Min, Max: w.Max, Mean: w.Mean, Stddev: w.stddev(), Quantiles: w.QBin}
		if w.q != nil && w.q.Count() > 0 {
			s.P50, s.P90, s.P99 = w.q.Quantile(0.5), w.q.Quantile(0.9), w.q.Quantile(0.99)
		}
		o.Summary = s
	}
	for i, t := range groupBy {
		if len(parts) >= 5 && 4+i < len(parts)-1 {
			if o.Group == nil {
				o.Group = map[string]string{}
			}
			_, v, _ := cutUnescaped(parts[4+i], '=')
			o.Group[t] = v
		}
	}
	if w.Kind == "sketch" && len(parts) >= 5 {
		s := &SketchOut{Group: parts[1], GroupKey: parts[2], Size: parts[3], Readings: w.Readings,
			HLL: w.HLLBin, CountMin: w.TopKBin}
		if w.hll != nil {
			s.Distinct = w.hll.Estimate()
		}
		if w.topk != nil {
			for _, it := range w.topk.Top() {
				s.TopK = append(s.TopK, TopKItem{Key: it.Key, Count: it.Count})
			}
		}
		o.Sketch = s
	}
	return o
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("BUG: marshal fleet value: " + err.Error())
	}
	return b
}

// sortedWindows returns ws ordered by start, then key: earlier windows
// close first, so a later one sees their lineage.
func sortedWindows(ws map[string]*windowState) []*windowState {
	out := slices.Collect(maps.Values(ws))
	slices.SortFunc(out, func(a, b *windowState) int {
		return cmp.Or(cmp.Compare(a.StartNs, b.StartNs), cmp.Compare(a.Key, b.Key))
	})
	return out
}
