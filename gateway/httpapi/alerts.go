package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/runnel-iot/runnel/alerts"
)

// Alerts is what the API reads of the alerts engine.
type Alerts interface {
	// Active returns the pending and firing alerts.
	Active() []alerts.Alert
	// Recent returns up to limit events, newest first.
	Recent(limit int) []alerts.Event
	Stats() alerts.Stats
}

// alertsResponse is the body of GET /api/v1/alerts.
type alertsResponse struct {
	Active []alertJSON `json:"active"` // pending and firing, by rule then series
	Recent []eventJSON `json:"recent"` // firing and resolved events, newest first
	Stats  struct {
		Firing   int    `json:"firing"`
		Pending  int    `json:"pending"`
		Fired    uint64 `json:"fired"`
		Resolved uint64 `json:"resolved"`
		Overflow uint64 `json:"overflow"`
	} `json:"stats"`
}

type alertJSON struct {
	alerts.Alert
	Start string `json:"start"` // RFC 3339 of StartNs
}

type eventJSON struct {
	alerts.Event
	Index uint64 `json:"wal_index,omitempty"` // internal: hidden
	Seq   int    `json:"seq,omitempty"`
	Start string `json:"start"`
	At    string `json:"at"`
}

// handleAlerts serves GET /api/v1/alerts?rule=&series=&state=&severity=&limit=:
// the active alerts (state pending or firing) and the recent events
// (limit, default 50), filtered by rule name, series prefix and severity.
func (a *API) handleAlerts(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "rule", "series", "state", "severity", "limit")
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	limit := 50
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 0 || limit > 1000 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("limit: %q is not a whole number from 0 to 1000", s))
			return
		}
	}
	state := q.Get("state")
	if state != "" && state != "pending" && state != "firing" {
		writeError(w, http.StatusBadRequest, fmt.Errorf("state: %q is not one of pending, firing", state))
		return
	}
	sev := q.Get("severity")
	if sev != "" && sev != "info" && sev != "warning" && sev != "critical" {
		writeError(w, http.StatusBadRequest, fmt.Errorf("severity: %q is not one of info, warning, critical", sev))
		return
	}
	rule, prefix := q.Get("rule"), q.Get("series")
	match := func(r, series, severity string) bool {
		return (rule == "" || r == rule) && strings.HasPrefix(series, prefix) && (sev == "" || severity == sev)
	}
	resp := alertsResponse{Active: []alertJSON{}, Recent: []eventJSON{}}
	for _, al := range a.Alerts.Active() {
		if match(al.Rule, al.Series, al.Severity) && (state == "" || al.State == state) {
			resp.Active = append(resp.Active, alertJSON{al, rfc3339(al.StartNs)})
		}
	}
	if limit > 0 {
		for _, ev := range a.Alerts.Recent(0) {
			if match(ev.Rule, ev.Series, ev.Severity) {
				resp.Recent = append(resp.Recent, eventJSON{Event: ev, Start: rfc3339(ev.StartNs), At: rfc3339(ev.AtNs)})
				if len(resp.Recent) == limit {
					break
				}
			}
		}
	}
	st := a.Alerts.Stats()
	resp.Stats.Firing, resp.Stats.Pending, resp.Stats.Fired, resp.Stats.Resolved, resp.Stats.Overflow = st.Firing, st.Pending, st.Fired, st.Resolved, st.Overflow
	writeJSON(w, http.StatusOK, resp)
}

// PublishAlert sends an alert event to the stream as `event: alert`, its
// data the JSON payload given (the one the MQTT alert topic carries).
func (h *Hub) PublishAlert(ev alerts.Event, payload json.RawMessage) {
	h.Publish(Event{Type: "alert", Series: ev.Series, Field: ev.Field, Kind: "alert", Data: payload})
}
