package httpapi

import (
	"fmt"
	"net/http"
)

// StatusSource is what the API reads to answer GET /api/v1/status: a
// snapshot of the gateway's health and counters. The gateway implements it
// from the counters its stages already keep; httpapi holds none of them.
// Status must be safe for concurrent use and cheap enough to call on every
// dashboard poll (a few per second at most per client).
type StatusSource interface {
	Status() Status
}

// Status is the body of GET /api/v1/status. Counters only grow while the
// process runs (they restart from zero with it); clients derive rates from
// two snapshots, using TimeNs, the time the snapshot was taken on the
// gateway, so a slow network does not distort them.
type Status struct {
	GatewayID     string  `json:"gateway_id"`
	Version       string  `json:"version"`
	TimeNs        int64   `json:"time_ns"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Ready         bool    `json:"ready"`
	Reason        string  `json:"reason,omitempty"` // why not ready

	Ingest     IngestStatus     `json:"ingest"`
	WAL        WALStatus        `json:"wal"`
	Windows    WindowsStatus    `json:"windows"`
	Checkpoint CheckpointStatus `json:"checkpoint"`

	// AlertsActive is the number of firing alerts; 0 until alert rules
	// exist.
	AlertsActive int `json:"alerts_active"`
	// Forward is the Kafka forwarder's state; nil (omitted) while
	// forwarding is off or not built.
	Forward *ForwardStatus `json:"forward,omitempty"`
}

// ByListener splits a counter by the listener the payload came in on.
type ByListener struct {
	MQTT  uint64 `json:"mqtt"`
	UDP   uint64 `json:"udp"`
	HTTP  uint64 `json:"http"`
	Total uint64 `json:"total"`
}

// IngestStatus counts readings at the door.
type IngestStatus struct {
	// Readings stored durably in the WAL.
	Readings ByListener `json:"readings"`
	// Rejected lines, objects, fields or samples (bad input), all reasons.
	Rejected ByListener `json:"rejected"`
	// Dropped readings that decoded but were not stored (WAL busy, too
	// large, append failed).
	Dropped ByListener `json:"dropped"`
	// Late readings: older than their device's watermark, kept in the late
	// log, not in any window.
	Late uint64 `json:"late"`
	// DeadLetters is the number of rejected payloads sent to the
	// dead-letter log.
	DeadLetters uint64 `json:"dead_letters"`
	// MQTTClients is the number of connected MQTT clients.
	MQTTClients int `json:"mqtt_clients"`
}

// WALStatus describes the readings WAL.
type WALStatus struct {
	Appends   uint64 `json:"appends"`    // acknowledged appends
	Records   uint64 `json:"records"`    // acknowledged records
	Bytes     uint64 `json:"bytes"`      // acknowledged payload bytes
	DiskBytes int64  `json:"disk_bytes"` // bytes in segment files now
	Segments  int    `json:"segments"`
	LastIndex uint64 `json:"last_index"`
	// LagRecords is how far the windows trail the WAL (replay or backlog).
	LagRecords uint64 `json:"lag_records"`
}

// WindowsStatus describes the windows engine and its memory budget.
type WindowsStatus struct {
	Series           int    `json:"series"`
	Pairs            int    `json:"pairs"`   // series and field pairs
	Devices          int    `json:"devices"` // devices with a watermark
	OverflowReadings uint64 `json:"overflow_readings"`
	OverflowSeries   uint64 `json:"overflow_series"` // estimate
	Evictions        uint64 `json:"evictions"`
	MemoryBytes      int64  `json:"memory_bytes"`
	BudgetBytes      int64  `json:"budget_bytes"`

	// Discards: readings applied nowhere (event time beyond ±2^62 ns) and
	// readings too late for their group's window.
	BadTimeReadings   uint64 `json:"bad_time_readings"`
	GroupLateReadings uint64 `json:"group_late_readings"`
}

// CheckpointStatus describes the last checkpoint of the windows state.
type CheckpointStatus struct {
	Count uint64 `json:"count"` // written by this process
	// AgeSeconds since the last one; -1 when this process wrote none yet.
	AgeSeconds float64 `json:"age_seconds"`
}

// ForwardStatus is the forwarder's state, for when forwarding exists.
type ForwardStatus struct {
	Enabled        bool   `json:"enabled"`
	PendingRecords uint64 `json:"pending_records"` // in the outbox, not yet acknowledged by Kafka
	SentRecords    uint64 `json:"sent_records"`
	Errors         uint64 `json:"errors"`
	LastError      string `json:"last_error,omitempty"`
}

// handleStatus serves GET /api/v1/status. It is never cached: it is a
// live snapshot.
func (a *API) handleStatus(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" {
		writeError(w, http.StatusBadRequest, fmt.Errorf("unknown query %q: /api/v1/status takes no parameters", r.URL.RawQuery))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, a.Status.Status())
}
