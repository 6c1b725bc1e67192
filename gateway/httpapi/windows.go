package httpapi

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/runnel-iot/runnel/gateway/schema"
	"github.com/runnel-iot/runnel/windows"
)

// Windows is what the API reads of the windows engine.
type Windows interface {
	Windows(series, field, spec string, last int) (open, closed []windows.WindowSummary, ok bool)
	Series(f windows.SeriesFilter, offset, limit int) ([]windows.SeriesInfo, int)
}

// windowJSON is one window in API responses: the API's envelope around
// the figures the Kafka summary record carries too (schema.Window).
type windowJSON struct {
	Spec     string `json:"spec"` // tumbling:1m, sliding:5m/10s
	Open     bool   `json:"open"`
	ClosedBy string `json:"closed_by,omitempty"` // watermark, idle, evicted
	schema.Window
}

func toWindowJSON(w windows.WindowSummary) windowJSON {
	return windowJSON{Spec: w.Spec, Open: w.Open, ClosedBy: w.Closed, Window: schema.NewWindow(&w)}
}

// finite keeps JSON encodable: a NaN or infinity (possible in a sum of
// huge values) becomes 0.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

func rfc3339(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

// windowsResponse is the body of GET /api/v1/windows.
type windowsResponse struct {
	Series  string       `json:"series"`
	Field   string       `json:"field"`
	Windows []windowJSON `json:"windows"` // open windows first (oldest first), then closed ones, newest first
}

// seriesFieldSize reads the required series and field and the optional
// size (0 when absent) of a query.
func seriesFieldSize(q url.Values) (series, field string, size time.Duration, err error) {
	series, field = q.Get("series"), q.Get("field")
	if series == "" || field == "" {
		return "", "", 0, fmt.Errorf("series and field are required, e.g. ?series=env,device=pi-042&field=temp")
	}
	if s := q.Get("size"); s != "" {
		if size, err = time.ParseDuration(s); err != nil || size <= 0 {
			return "", "", 0, fmt.Errorf("size: %q is not a duration like 10s, 1m, 5m", s)
		}
	}
	return series, field, size, nil
}

// specSize returns the window size a spec names ("tumbling:1m" → 1m,
// "sliding:5m/10s" → 5m).
func specSize(spec string) (kind string, size time.Duration, ok bool) {
	kind, rest, found := strings.Cut(spec, ":")
	if !found {
		return "", 0, false
	}
	s, _, _ := strings.Cut(rest, "/")
	d, err := time.ParseDuration(s)
	return kind, d, err == nil
}

// handleWindows serves GET /api/v1/windows?series=&field=&size=&kind=&last=:
// the open and recent closed windows of one series and field; size
// narrows to windows of that size (tumbling or sliding, or kind to choose),
// last bounds the closed windows of each window spec (kind and size) that
// remains (default 10, 0 for all the engine keeps).
func (a *API) handleWindows(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "series", "field", "size", "kind", "last")
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	series, field, size, err := seriesFieldSize(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	kind := q.Get("kind")
	if kind != "" && kind != "tumbling" && kind != "sliding" {
		writeError(w, http.StatusBadRequest, fmt.Errorf("kind: %q is not one of tumbling, sliding", kind))
		return
	}
	last := 10
	if s := q.Get("last"); s != "" {
		if last, err = strconv.Atoi(s); err != nil || last < 0 || last > 1000 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("last: %q is not a whole number from 0 to 1000", s))
			return
		}
	}
	// All closed windows are asked for, and last applied per spec after
	// the filters: a last applied across specs first would keep only the
	// newest ends, those of the largest windows, and a smaller size would
	// find none once its device went idle (no window left open).
	open, closed, ok := a.Windows.Windows(series, field, "", 0)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no series %q with field %q (see GET /api/v1/series)", series, field))
		return
	}
	match := func(ws windows.WindowSummary) bool {
		k, d, ok := specSize(ws.Spec)
		return ok && (size == 0 || d == size) && (kind == "" || k == kind)
	}
	resp := windowsResponse{Series: series, Field: field, Windows: []windowJSON{}}
	for _, ws := range open {
		if match(ws) {
			ws.Open = true
			resp.Windows = append(resp.Windows, toWindowJSON(ws))
		}
	}
	kept := map[string]int{} // closed windows kept per spec
	for _, ws := range closed {
		if match(ws) && (last == 0 || kept[ws.Spec] < last) {
			kept[ws.Spec]++
			resp.Windows = append(resp.Windows, toWindowJSON(ws))
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// seriesResponse is the body of GET /api/v1/series.
type seriesResponse struct {
	Total  int          `json:"total"`
	Offset int          `json:"offset"`
	Series []seriesJSON `json:"series"`
}

type seriesJSON struct {
	Series    string   `json:"series"`
	Fields    []string `json:"fields"`
	Readings  uint64   `json:"readings"`
	LastEvent string   `json:"last_event,omitempty"`
}

// handleSeries serves GET /api/v1/series?measurement=&tag=k=v&prefix=&offset=&limit=.
func (a *API) handleSeries(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "measurement", "tag", "prefix", "offset", "limit")
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	f := windows.SeriesFilter{Measurement: q.Get("measurement"), Prefix: q.Get("prefix")}
	for _, t := range q["tag"] {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			writeError(w, http.StatusBadRequest, fmt.Errorf("tag: %q is not key=value", t))
			return
		}
		if f.Tags == nil {
			f.Tags = map[string]string{}
		}
		f.Tags[k] = v
	}
	offset, limit := 0, 100
	for name, p := range map[string]*int{"offset": &offset, "limit": &limit} {
		if s := q.Get(name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || (name == "limit" && (n < 1 || n > 1000)) {
				writeError(w, http.StatusBadRequest, fmt.Errorf("%s: %q is not a whole number in range (limit 1 to 1000, offset from 0)", name, s))
				return
			}
			*p = n
		}
	}
	items, total := a.Windows.Series(f, offset, limit)
	resp := seriesResponse{Total: total, Offset: offset, Series: make([]seriesJSON, 0, len(items))}
	for _, it := range items {
		sj := seriesJSON{Series: it.Series, Fields: it.Fields, Readings: it.Readings}
		if it.LastEventNs != 0 {
			sj.LastEvent = rfc3339(it.LastEventNs)
		}
		resp.Series = append(resp.Series, sj)
	}
	writeJSON(w, http.StatusOK, resp)
}
