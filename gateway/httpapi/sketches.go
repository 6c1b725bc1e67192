package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/runnel-iot/runnel/gateway/schema"
	"github.com/runnel-iot/runnel/sketches"
	"github.com/runnel-iot/runnel/windows"
)

// Sketches is what the API reads of the engine's sketches.
type Sketches interface {
	Quantiles(series, field, spec string, qs []float64) ([]float64, bool)
	Samples(series, field string) ([]sketches.Sample, bool)
	Groups(name, key string) (open, closed []windows.GroupSummary)
}

type quantilesResponse struct {
	Series    string             `json:"series"`
	Field     string             `json:"field"`
	Spec      string             `json:"spec"`
	Start     string             `json:"start"`
	End       string             `json:"end"`
	Count     uint64             `json:"count"`
	Quantiles map[string]float64 `json:"quantiles"` // "0.99": value, within 2 % relative error at worst (sketches/FORMAT.md)
}

// handleQuantiles serves GET /api/v1/sketches/quantiles?series=&field=&size=&q=:
// quantiles of the open tumbling window of that size (default the
// smallest), q a comma-separated list in [0, 1] (default 0.5,0.9,0.99).
func (a *API) handleQuantiles(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "series", "field", "size", "q")
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	series, field, size, err := seriesFieldSize(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	qs := []float64{0.5, 0.9, 0.99}
	if s := q.Get("q"); s != "" {
		qs = qs[:0]
		for _, part := range strings.Split(s, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(part), 64)
			if err != nil || v < 0 || v > 1 {
				writeError(w, http.StatusBadRequest, fmt.Errorf("q: %q is not a number from 0 to 1", part))
				return
			}
			qs = append(qs, v)
		}
	}
	open, _, ok := a.Windows.Windows(series, field, "", 0)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no series %q with field %q", series, field))
		return
	}
	var win *windows.WindowSummary
	for i := range open {
		kind, d, ok := specSize(open[i].Spec)
		if ok && kind == "tumbling" && (size == 0 || d == size) && (win == nil || d < mustSize(win.Spec)) {
			win = &open[i]
		}
	}
	if win == nil {
		writeError(w, http.StatusNotFound, fmt.Errorf("no open tumbling window of size %s for %q %q", size, series, field))
		return
	}
	vals, ok := a.Sketches.Quantiles(series, field, win.Spec, qs)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no open %s window for %q %q", win.Spec, series, field))
		return
	}
	resp := quantilesResponse{Series: series, Field: field, Spec: win.Spec, Start: rfc3339(win.StartNs), End: rfc3339(win.EndNs),
		Count: win.Count, Quantiles: map[string]float64{}}
	for i, v := range vals {
		resp.Quantiles[strconv.FormatFloat(qs[i], 'g', -1, 64)] = finite(v)
	}
	writeJSON(w, http.StatusOK, resp)
}

func mustSize(spec string) time.Duration {
	_, d, _ := specSize(spec)
	return d
}

type sampleJSON struct {
	Time   string  `json:"time"`
	TimeNs int64   `json:"time_ns"`
	Value  float64 `json:"value"`
}

// handleSamples serves GET /api/v1/sketches/samples?series=&field=: the
// reservoir sample of raw readings.
func (a *API) handleSamples(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "series", "field")
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	series, field, _, err := seriesFieldSize(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	ss, ok := a.Sketches.Samples(series, field)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no series %q with field %q", series, field))
		return
	}
	out := make([]sampleJSON, len(ss))
	for i, s := range ss {
		out[i] = sampleJSON{Time: rfc3339(s.TimeNs), TimeNs: s.TimeNs, Value: finite(s.Value)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"series": series, "field": field, "samples": out})
}

type groupJSON struct {
	Group    string            `json:"group"`
	Key      string            `json:"key"`
	Start    string            `json:"start"`
	End      string            `json:"end"`
	Open     bool              `json:"open"`
	Readings uint64            `json:"readings"`
	Distinct *uint64           `json:"distinct,omitempty"`
	TopK     []schema.TopKItem `json:"topk,omitempty"`
}

// topKJSON converts heavy hitters to the form of the Kafka sketch records
// (key, count); nil stays nil (omitted).
func topKJSON(items []sketches.Item) []schema.TopKItem {
	if items == nil {
		return nil
	}
	out := make([]schema.TopKItem, len(items))
	for i, it := range items {
		out[i] = schema.TopKItem{Key: it.Key, Count: it.Count}
	}
	return out
}

// groupsHandler serves GET /api/v1/sketches/distinct and /topk
// ?group=&key=: the open and recent closed windows of a group sketch.
func (a *API) groupsHandler(distinct bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := query(r, "group", "key")
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		name, key := q.Get("group"), q.Get("key")
		if name == "" || key == "" {
			writeError(w, http.StatusBadRequest, fmt.Errorf("group and key are required, e.g. ?group=devices_per_measurement&key=env"))
			return
		}
		open, closed := a.Sketches.Groups(name, key)
		if len(open)+len(closed) == 0 {
			writeError(w, http.StatusNotFound, fmt.Errorf("no windows of group %q for key %q", name, key))
			return
		}
		out := make([]groupJSON, 0, len(open)+len(closed))
		for _, g := range append(open, closed...) {
			j := groupJSON{Group: g.Group, Key: g.Key, Start: rfc3339(g.StartNs), End: rfc3339(g.EndNs), Open: g.Open, Readings: g.Readings}
			if distinct {
				d := g.Distinct
				j.Distinct = &d
			} else {
				j.TopK = topKJSON(g.TopK)
			}
			out = append(out, j)
		}
		writeJSON(w, http.StatusOK, map[string]any{"windows": out})
	}
}
