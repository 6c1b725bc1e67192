// Package httpapi is the gateway's JSON query API, its live stream (SSE)
// and its dashboard. It owns no state: every handler reads through a narrow
// interface of the stage that owns the data (ingest's dead letters and late
// log, the windows engine and its sketches, the alerts engine, the
// gateway's status), so the API can be tested against fakes and real stages
// alike. The gateway owns the HTTP server and mux; Register adds the
// handlers to it.
//
// The dashboard at / is one page and two assets under go:embed (web/): no
// build step, no external requests, about 32 KB. It polls /api/v1/status,
// /api/v1/series and /api/v1/alerts and reads the live stream with fetch()
// so that it can send a bearer token.
//
// Conventions: GET only; JSON responses; errors are JSON {"error": "..."}
// with the fitting status; an unknown query parameter is rejected by name
// (400), so a typo never silently widens a query.
package httpapi

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/runnel-iot/runnel/ingest"
)

// Rejects is what the API reads of the dead-letter log.
type Rejects interface {
	// Recent returns up to limit rejects matching f, newest first.
	Recent(limit int, f ingest.RejectFilter) ([]ingest.Reject, error)
	// Count returns the rejects added since start; Dropped those the log
	// could not keep.
	Count() uint64
	Dropped() uint64
}

// API holds the handlers' dependencies. A nil dependency leaves its
// endpoints out.
type API struct {
	Rejects  Rejects  // the dead-letter log
	Late     Rejects  // the late-readings log (late readings kept as rejects with reason "late")
	Windows  Windows  // the windows engine
	Sketches Sketches // the windows engine's sketches
	Stream   *Hub     // the live stream of closed windows
	Logger   *slog.Logger

	// Alerts is the alerts engine, for GET /api/v1/alerts.
	Alerts Alerts

	// Status is the gateway's health and counters for GET /api/v1/status;
	// it also enables the dashboard at /.
	Status StatusSource
}

// Register adds the API's handlers to mux.
func (a *API) Register(mux *http.ServeMux) {
	if a.Logger == nil {
		a.Logger = slog.New(slog.DiscardHandler)
	}
	if a.Rejects != nil {
		mux.HandleFunc("GET /api/v1/rejects", a.rejectsHandler(a.Rejects, true))
	}
	if a.Late != nil {
		mux.HandleFunc("GET /api/v1/late", a.rejectsHandler(a.Late, false))
	}
	if a.Windows != nil {
		mux.HandleFunc("GET /api/v1/windows", a.handleWindows)
		mux.HandleFunc("GET /api/v1/series", a.handleSeries)
	}
	if a.Alerts != nil {
		mux.HandleFunc("GET /api/v1/alerts", a.handleAlerts)
	}
	if a.Status != nil {
		mux.HandleFunc("GET /api/v1/status", a.handleStatus)
		a.registerDashboard(mux)
	}
	if a.Stream != nil {
		mux.HandleFunc("GET /api/v1/stream", a.handleStream)
	}
	if a.Sketches != nil && a.Windows != nil {
		mux.HandleFunc("GET /api/v1/sketches/quantiles", a.handleQuantiles)
		mux.HandleFunc("GET /api/v1/sketches/samples", a.handleSamples)
		mux.HandleFunc("GET /api/v1/sketches/distinct", a.groupsHandler(true))
		mux.HandleFunc("GET /api/v1/sketches/topk", a.groupsHandler(false))
	}
}

// rejectsResponse is the body of GET /api/v1/rejects.
type rejectsResponse struct {
	Total   uint64          `json:"total"`   // rejects added since start
	Dropped uint64          `json:"dropped"` // rejects the log could not keep
	Rejects []ingest.Reject `json:"rejects"` // newest first
}

// rejectsHandler serves GET /api/v1/rejects?limit=&listener=&reason=&source=&since=
// (since: RFC 3339 time or a duration back from now, like 15m), and the
// same for /api/v1/late, where source is the series and there is no
// listener or reason to filter by.
func (a *API) rejectsHandler(src Rejects, byListener bool) http.HandlerFunc {
	params := []string{"limit", "source", "since"}
	if byListener {
		params = []string{"limit", "listener", "reason", "source", "since"}
	}
	return func(w http.ResponseWriter, r *http.Request) { a.serveRejects(w, r, src, params) }
}

func (a *API) serveRejects(w http.ResponseWriter, r *http.Request, src Rejects, params []string) {
	q, err := query(r, params...)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > ingest.MaxRecentRejects {
			writeError(w, http.StatusBadRequest, fmt.Errorf("limit: %q is not a whole number from 1 to %d", s, ingest.MaxRecentRejects))
			return
		}
	}
	f := ingest.RejectFilter{Listener: q.Get("listener"), Reason: q.Get("reason"), Source: q.Get("source")}
	if f.Listener != "" && f.Listener != "mqtt" && f.Listener != "udp" && f.Listener != "http" {
		writeError(w, http.StatusBadRequest, fmt.Errorf("listener: %q is not one of mqtt, udp, http", f.Listener))
		return
	}
	if s := q.Get("since"); s != "" {
		if f.Since, err = parseSince(s, time.Now()); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
	}
	rej, err := src.Recent(limit, f)
	if err != nil {
		a.Logger.Error("read log", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Errorf("read log: %w", err))
		return
	}
	if rej == nil {
		rej = []ingest.Reject{}
	}
	writeJSON(w, http.StatusOK, rejectsResponse{Total: src.Count(), Dropped: src.Dropped(), Rejects: rej})
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since: %q is neither an RFC 3339 time nor a duration like 15m", s)
	}
	return t, nil
}

// query returns r's query parameters, refusing any not in allowed by name.
func query(r *http.Request, allowed ...string) (url.Values, error) {
	q := r.URL.Query()
	var unknown []string
	for k := range q {
		ok := false
		for _, a := range allowed {
			if k == a {
				ok = true
				break
			}
		}
		if !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("unknown query parameter %s; allowed: %s", strings.Join(unknown, ", "), strings.Join(allowed, ", "))
	}
	return q, nil
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, errorBody{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("BUG: marshal API response: " + err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
