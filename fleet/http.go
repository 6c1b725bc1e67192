package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The HTTP API answers from any instance. Closed windows come from a
// read_committed view of the output topic that every instance keeps (all
// partitions, the latest record per key, without the sketch bytes, for the
// windows ending within fleet.retain of the newest); open
// windows come from the local state, so an open window owned by another
// instance is not listed until it closes. No request is forwarded: the
// output topic is the one source every instance shares.

// view is the latest output record per fleet key, for the windows that
// end within fleet.retain of the newest (event time), so it stays bounded.
type view struct {
	mu      sync.Mutex
	windows map[string]Output
	newest  int64 // the latest window end seen
}

// prune forgets windows that ended more than horizon before the newest.
func (v *view) prune(horizon time.Duration) {
	for k, o := range v.windows {
		if o.EndNs < v.newest-int64(horizon) {
			delete(v.windows, k)
		}
	}
}

func (s *Service) viewLoop(ctx context.Context, v *view) error {
	cl, err := kgo.NewClient(s.seeds(), kgo.ConsumeTopics(s.cfg.Topics.Output),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return fmt.Errorf("output view client: %w", err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		v.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			var o Output
			if len(r.Value) == 0 {
				delete(v.windows, string(r.Key))
				return
			}
			if json.Unmarshal(r.Value, &o) != nil {
				return
			}
			if o.Summary != nil {
				o.Summary.Quantiles = nil
			}
			if o.Sketch != nil {
				o.Sketch.HLL, o.Sketch.CountMin = nil, nil
			}
			v.windows[string(r.Key)] = o
			v.newest = max(v.newest, o.EndNs)
		})
		v.prune(s.cfg.Retain)
		v.mu.Unlock()
	}
}

// snapshot merges the output view with the local open windows.
func (s *Service) snapshot() []Output {
	all := map[string]Output{}
	if s.view != nil {
		s.view.mu.Lock()
		maps.Copy(all, s.view.windows)
		s.view.mu.Unlock()
	}
	s.mu.Lock()
	for k, w := range s.windows {
		if w.Closed == "" {
			w.encode()
			o := w.output(s.cfg.GroupBy)
			if o.Summary != nil {
				o.Summary.Quantiles = nil
			}
			if o.Sketch != nil {
				o.Sketch.HLL, o.Sketch.CountMin = nil, nil
			}
			if _, closed := all[k]; !closed {
				all[k] = o
			}
		}
	}
	s.mu.Unlock()
	out := slices.Collect(maps.Values(all))
	slices.SortFunc(out, func(a, b Output) int {
		return cmp.Or(cmp.Compare(b.StartNs, a.StartNs), cmp.Compare(a.Key, b.Key))
	})
	return out
}

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

func (s *Service) handleWindows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	last, err := lastParam(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	meas, field, size, group := q.Get("measurement"), q.Get("field"), q.Get("size"), q.Get("group")
	out := []Output{}
	for _, o := range s.snapshot() {
		sm := o.Summary
		if sm == nil || (meas != "" && sm.Measurement != meas) || (field != "" && sm.Field != field) || !sizeMatches(sm.Window, size) {
			continue
		}
		if group != "" {
			k, v, _ := strings.Cut(group, "=")
			if got, ok := o.Group[k]; !ok || got != v {
				continue
			}
		}
		if out = append(out, o); len(out) == last {
			break
		}
	}
	writeJSON(w, map[string]any{"windows": out})
}

func (s *Service) handleSketch(w http.ResponseWriter, r *http.Request, distinct bool) {
	q := r.URL.Query()
	last, err := lastParam(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	type row struct {
		Group    string     `json:"group"`
		Start    string     `json:"start"`
		End      string     `json:"end"`
		Closed   string     `json:"closed"`
		Gateways []string   `json:"gateways"`
		Readings uint64     `json:"readings"`
		Distinct *uint64    `json:"distinct,omitempty"`
		TopK     []TopKItem `json:"topk,omitempty"`
	}
	out := []row{}
	for _, o := range s.snapshot() {
		sk := o.Sketch
		if sk == nil || (q.Get("measurement") != "" && sk.GroupKey != q.Get("measurement")) || !sizeMatches(":"+sk.Size, q.Get("size")) {
			continue
		}
		if (distinct && sk.Distinct == 0 && sk.TopK != nil) || (!distinct && sk.TopK == nil) {
			continue
		}
		rw := row{Group: sk.Group, Start: o.Start, End: o.End, Closed: o.Closed, Gateways: o.Gateways, Readings: sk.Readings}
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
	writeJSON(w, map[string]any{"windows": out})
}

func (s *Service) handleGateways(w http.ResponseWriter, _ *http.Request) {
	type row struct {
		Gateway       string  `json:"gateway"`
		LastWindowEnd string  `json:"last_window_end"`
		LagSeconds    float64 `json:"lag_seconds"`
		LastSeen      string  `json:"last_seen,omitempty"`
	}
	ends := map[string]int64{}
	for _, o := range s.snapshot() {
		for _, g := range o.Gateways {
			ends[g] = max(ends[g], o.EndNs)
		}
	}
	s.mu.Lock()
	seen := maps.Clone(s.gwSeen)
	s.mu.Unlock()
	for g, v := range seen {
		ends[g] = max(ends[g], v.LastEndNs)
	}
	now := s.now()
	out := []row{}
	for _, g := range slices.Sorted(maps.Keys(ends)) {
		rw := row{Gateway: g, LastWindowEnd: rfc3339(ends[g]), LagSeconds: now.Sub(time.Unix(0, ends[g])).Seconds()}
		if v, ok := seen[g]; ok {
			rw.LastSeen = v.LastSeen.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, rw)
	}
	writeJSON(w, map[string]any{"gateways": out})
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
	} {
		typ := "counter"
		if c.gauge {
			typ = "gauge"
		}
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", c.name, c.help, c.name, typ, c.name, c.v)
	}
}
