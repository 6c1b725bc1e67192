package fleet

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Handler is the fleet HTTP API.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/fleet/windows", s.handleWindows)
	mux.HandleFunc("GET /api/v1/fleet/distinct", func(w http.ResponseWriter, r *http.Request) { s.handleSketch(w, r, true) })
	mux.HandleFunc("GET /api/v1/fleet/topk", func(w http.ResponseWriter, r *http.Request) { s.handleSketch(w, r, false) })
	mux.HandleFunc("GET /api/v1/fleet/gateways", s.handleGateways)
	mux.HandleFunc("GET /metrics", s.handleMetrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		s.cbMu.Lock()
		pending := len(s.pending)
		s.cbMu.Unlock()
		if !s.ready.Load() || pending > 0 {
			http.Error(w, fmt.Sprintf("not ready: joined=%v partitions_restoring=%d", s.ready.Load(), pending), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func lastParam(r *http.Request) (int, error) {
	q := r.URL.Query().Get("last")
	if q == "" {
		return 10, nil
	}
	n, err := strconv.Atoi(q)
	if err != nil || n < 1 || n > 10000 {
		return 0, fmt.Errorf("last=%q: want 1..10000", q)
	}
	return n, nil
}

// sizeMatches accepts a window spec ("tumbling:1m") or its size ("1m").
func sizeMatches(spec, size string) bool {
	if size == "" || spec == size {
		return true
	}
	_, rest, _ := strings.Cut(spec, ":")
	sz, _, _ := strings.Cut(rest, "/")
	if a, err := time.ParseDuration(sz); err == nil {
		if b, err := time.ParseDuration(size); err == nil {
			return a == b
		}
	}
	return false
}

// keyParts splits a fleet key into its parts (the last is the start) when
// it is of kind ("s" summary, "k" sketch).
func keyParts(key, kind string) ([]string, bool) {
	if !strings.HasPrefix(key, kind+"|") {
		return nil, false
	}
	p := splitKey(key)
	return p, len(p) >= 5
}

// answer writes a list answer; partial marks one given before the view
// caught up (some committed windows may be missing).
func answer(w http.ResponseWriter, name string, list any, partial bool) {
	v := map[string]any{name: list, "partial": partial}
	if partial {
		v["partial_reason"] = "this instance's view of the fleet topics is still catching up"
	}
	writeJSON(w, v)
}

func (s *Service) handleWindows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	last, err := lastParam(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	meas, field, size, group := q.Get("measurement"), q.Get("field"), q.Get("size"), q.Get("group")
	all, partial := s.snapshot(func(k string) bool {
		p, ok := keyParts(k, "s")
		return ok && (meas == "" || p[1] == meas) && (field == "" || p[2] == field) && sizeMatches(p[3], size) &&
			(group == "" || slices.Contains(p[4:len(p)-1], group))
	})
	out := all[:min(last, len(all))]
	if out == nil {
		out = []Output{}
	}
	answer(w, "windows", out, partial)
}

func (s *Service) handleSketch(w http.ResponseWriter, r *http.Request, distinct bool) {
	q := r.URL.Query()
	last, err := lastParam(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	type row struct {
		Group    string            `json:"group"`
		Tags     map[string]string `json:"tags,omitempty"`
		Start    string            `json:"start"`
		End      string            `json:"end"`
		Closed   string            `json:"closed"`
		Gateways []string          `json:"gateways"`
		Readings uint64            `json:"readings"`
		Distinct *uint64           `json:"distinct,omitempty"`
		TopK     []TopKItem        `json:"topk,omitempty"`
	}
	meas, size, group := q.Get("measurement"), q.Get("size"), q.Get("group")
	all, partial := s.snapshot(func(k string) bool {
		p, ok := keyParts(k, "k")
		return ok && (meas == "" || p[2] == meas) && sizeMatches(":"+p[3], size) &&
			(group == "" || slices.Contains(p[4:len(p)-1], group))
	})
	out := []row{}
	for _, o := range all {
		sk := o.Sketch
		if sk == nil || (distinct && sk.Distinct == 0 && sk.TopK != nil) || (!distinct && sk.TopK == nil) {
			continue
		}
		rw := row{Group: sk.Group, Tags: o.Group, Start: o.Start, End: o.End, Closed: o.Closed, Gateways: o.Gateways, Readings: sk.Readings}
		if distinct {
			d := sk.Distinct
			rw.Distinct = &d
		} else {
			rw.TopK = sk.TopK
		}
		if out = append(out, rw); len(out) == last {
			break
		}
	}
	answer(w, "windows", out, partial)
}

// handleGateways lists every gateway of the view's windows with its
// latest window end; last_seen is when this instance last merged one of
// its records (empty when it merged none).
func (s *Service) handleGateways(w http.ResponseWriter, _ *http.Request) {
	type row struct {
		Gateway       string  `json:"gateway"`
		LastWindowEnd string  `json:"last_window_end"`
		LagSeconds    float64 `json:"lag_seconds"`
		LastSeen      string  `json:"last_seen,omitempty"`
	}
	ends := s.gatewayEnds()
	partial := !s.view.caughtUp.Load()
	s.mu.Lock()
	seen := maps.Clone(s.gwSeen)
	s.mu.Unlock()
	now := s.now()
	out := []row{}
	for _, g := range slices.Sorted(maps.Keys(ends)) {
		rw := row{Gateway: g, LastWindowEnd: rfc3339(ends[g]), LagSeconds: now.Sub(time.Unix(0, ends[g])).Seconds()}
		if v, ok := seen[g]; ok {
			rw.LastSeen = v.LastSeen.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, rw)
	}
	answer(w, "gateways", out, partial)
}

func (s *Service) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	s.cbMu.Lock()
	owned := len(s.owned)
	s.cbMu.Unlock()
	s.mu.Lock()
	open := 0
	for _, x := range s.windows {
		if x.Closed == "" {
			open++
		}
	}
	s.mu.Unlock()
	s.view.mu.Lock()
	viewOpen := len(s.view.open)
	s.view.mu.Unlock()
	viewCaught := uint64(0)
	if s.view.caughtUp.Load() {
		viewCaught = 1
	}
	m := &s.m
	for _, c := range []struct {
		name, help string
		v          uint64
		gauge      bool
	}{
		{"runnel_fleet_rekeyed_total", "gateway records re-keyed to the repartition topic", m.rekeyed.Load(), false},
		{"runnel_fleet_invalid_total", "records dropped: not a valid summary or sketch", m.invalid.Load(), false},
		{"runnel_fleet_duplicates_total", "records dropped by runnel-id", m.duplicates.Load(), false},
		{"runnel_fleet_merged_total", "records merged into fleet windows", m.merged.Load(), false},
		{"runnel_fleet_windows_closed_complete_total", "windows closed with every gateway of the previous window", m.closedComplete.Load(), false},
		{"runnel_fleet_windows_closed_grace_total", "windows closed by fleet.grace", m.closedGrace.Load(), false},
		{"runnel_fleet_late_corrections_total", "late records merged into a closed window (corrected record)", m.lateCorrections.Load(), false},
		{"runnel_fleet_too_late_total", "records for windows past fleet.retain, dropped", m.tooLate.Load(), false},
		{"runnel_fleet_windows_expired_total", "closed windows forgotten after fleet.retain", m.expired.Load(), false},
		{"runnel_fleet_restores_total", "state restores from the changelog", m.restores.Load(), false},
		{"runnel_fleet_restored_records_total", "changelog records read by restores", m.restoredRecords.Load(), false},
		{"runnel_fleet_aborts_total", "transactions aborted (rebalance, fencing, errors)", m.aborts.Load(), false},
		{"runnel_fleet_committed_records_total", "repartitioned records whose merge transaction committed", m.committed.Load(), false},
		{"runnel_fleet_outputs_total", "fleet window records committed to the output topic", m.outputs.Load(), false},
		{"runnel_fleet_open_windows", "open fleet windows owned here", uint64(open), true},
		{"runnel_fleet_owned_partitions", "repartition partitions owned here", uint64(owned), true},
		{"runnel_fleet_view_open_windows", "open fleet windows (of every instance) in this instance's query view", uint64(viewOpen), true},
		{"runnel_fleet_view_caught_up", "1 once the query view has read the output and changelog topics to their ends of its start", viewCaught, true},
	} {
		typ := "counter"
		if c.gauge {
			typ = "gauge"
		}
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", c.name, c.help, c.name, typ, c.name, c.v)
	}
}
