package gateway

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	"github.com/runnel-iot/runnel/alerts"
	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/gateway/schema"
	"github.com/runnel-iot/runnel/windows"
)

// This file turns what the stages emit (closed windows, closed group
// windows, alert events) into forward records: the Kafka key, the JSON
// value of the documented schema (gateway/schema/*.json, README "Kafka
// records") and the deterministic message id. forward stores and sends
// them without knowing what they are.

// Schema versions, sent in the runnel-schema header and in each value.
const (
	schemaSummary = "runnel.summary/v1"
	schemaAlert   = "runnel.alert/v1"
	schemaSketch  = "runnel.sketch/v1"
)

// Record kinds: one outbox and one topic each.
const (
	kindSummaries = "summaries"
	kindAlerts    = "alerts"
	kindSketches  = "sketches"
)

// summaryValue is the JSON value of a closed window (schema runnel.summary/v1):
// the record's envelope around the figures the HTTP API shows too.
type summaryValue struct {
	Schema  string `json:"schema"`
	Gateway string `json:"gateway"`
	Series  string `json:"series"`
	Field   string `json:"field"`
	Spec    string `json:"window"` // "tumbling:1m", "sliding:5m/10s"
	schema.Window
	// Quantiles is the window's quantile sketch (sketches.Quantile
	// MarshalBinary, base64 in JSON; tumbling windows only), mergeable
	// across gateways.
	Quantiles []byte `json:"quantiles,omitempty"`
	Closed    string `json:"closed"` // watermark, idle, evicted
}

// sketchValue is the JSON value of a closed group window (schema
// runnel.sketch/v1): the serialized sketches, base64 in JSON, mergeable
// across gateways (formats in sketches/codec.go).
type sketchValue struct {
	Schema   string          `json:"schema"`
	Gateway  string          `json:"gateway"`
	Group    string          `json:"group"`
	Key      string          `json:"key"`
	Start    string          `json:"start"`
	End      string          `json:"end"`
	StartNs  int64           `json:"start_ns"`
	EndNs    int64           `json:"end_ns"`
	Readings uint64          `json:"readings"`
	Distinct uint64          `json:"distinct"`
	TopK     []topKItemValue `json:"topk,omitempty"`
	HLL      []byte          `json:"hll,omitempty"`      // sketches.HLL MarshalBinary
	CountMin []byte          `json:"countmin,omitempty"` // sketches.TopK MarshalBinary (ends with its Count-Min sketch)
}

// topKItemValue is a heavy hitter, {key, count}, as in the HTTP API.
type topKItemValue = schema.TopKItem

// alertValue is the JSON value of an alert event (schema runnel.alert/v1),
// also the payload of its MQTT message.
type alertValue struct {
	Schema    string            `json:"schema"`
	ID        string            `json:"id"`   // the same for an alert's firing and resolved events
	Type      string            `json:"type"` // firing or resolved
	Gateway   string            `json:"gateway"`
	Rule      string            `json:"rule"`
	Series    string            `json:"series"`
	Field     string            `json:"field"`
	Severity  string            `json:"severity"`
	Labels    map[string]string `json:"labels,omitempty"`
	Op        string            `json:"op"`
	Value     float64           `json:"value"`
	Threshold float64           `json:"threshold"`
	Start     string            `json:"start"` // when the condition began
	At        string            `json:"at"`    // when this event happened
	StartNs   int64             `json:"start_ns"`
	AtNs      int64             `json:"at_ns"`
}

func newAlertValue(ev *alerts.Event) alertValue {
	return alertValue{
		Schema: schemaAlert, ID: ev.ID, Type: ev.Type, Gateway: ev.Gateway, Rule: ev.Rule,
		Series: ev.Series, Field: ev.Field, Severity: ev.Severity, Labels: ev.Labels, Op: ev.Op,
		Value: ev.Value, Threshold: ev.Threshold, Start: rfc3339(ev.StartNs), At: rfc3339(ev.AtNs),
		StartNs: ev.StartNs, AtNs: ev.AtNs,
	}
}

func rfc3339(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

// messageID hashes the parts that identify a message: SHA-256, the first 16
// bytes in hex. Each part is length-prefixed, so no choice of names can
// make two different tuples collide by concatenation.
func messageID(parts ...string) string {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, p := range parts {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// recordKey joins key parts with '|' (series keys may hold '|' too; the key
// only has to be stable per window kind, series and gateway, which it is).
func recordKey(parts ...string) []byte {
	n := len(parts) - 1
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			b = append(b, '|')
		}
		b = append(b, p...)
	}
	return b
}

func record(schema, id string, key []byte, v any, origin []byte) forward.Record {
	value, err := json.Marshal(v)
	if err != nil {
		panic("BUG: marshal record value: " + err.Error())
	}
	return forward.Record{
		Key: key, Value: value, ID: id, Origin: origin,
		Headers: []forward.Header{{Key: "runnel-schema", Value: []byte(schema)}},
	}
}

// summaryRecord is the record of a closed window: key gateway|series|field|spec,
// id (gateway, series, field, spec, window start).
func summaryRecord(gw string, e *windows.Emission, origin []byte) forward.Record {
	w := &e.Window
	v := summaryValue{
		Schema: schemaSummary, Gateway: gw, Series: w.Series, Field: w.Field, Spec: w.Spec,
		Window: schema.NewWindow(w), Closed: w.Closed,
	}
	if e.Kind == windows.KindTumbling {
		v.Quantiles = w.Quantiles
	}
	id := messageID(gw, w.Series, w.Field, w.Spec, strconv.FormatInt(w.StartNs, 10))
	return record(schemaSummary, id, recordKey(gw, w.Series, w.Field, w.Spec), v, origin)
}

// sketchRecord is the record of a closed group window: key gateway|group|key,
// id (gateway, group, group key, window start).
func sketchRecord(gw string, g *windows.GroupSummary, origin []byte) forward.Record {
	v := sketchValue{
		Schema: schemaSketch, Gateway: gw, Group: g.Group, Key: g.Key,
		Start: rfc3339(g.StartNs), End: rfc3339(g.EndNs), StartNs: g.StartNs, EndNs: g.EndNs,
		Readings: g.Readings, Distinct: g.Distinct, HLL: g.HLL, CountMin: g.CountMin,
	}
	for _, it := range g.TopK {
		v.TopK = append(v.TopK, topKItemValue{Key: it.Key, Count: it.Count})
	}
	id := messageID(gw, g.Group, g.Key, strconv.FormatInt(g.StartNs, 10))
	return record(schemaSketch, id, recordKey(gw, g.Group, g.Key), v, origin)
}

// alertRecord is the record of an alert event: key gateway|rule|series|field
// (a compacted topic keeps each alert target's latest state), id (gateway,
// alert id, event type).
func alertRecord(ev *alerts.Event, origin []byte) forward.Record {
	v := newAlertValue(ev)
	id := messageID(ev.Gateway, ev.ID, ev.Type)
	return record(schemaAlert, id, recordKey(ev.Gateway, ev.Rule, ev.Series, ev.Field), v, origin)
}

// originPos encodes an outbox record's origin: the WAL index whose batch
// produced it and its position among that batch's outputs of its kind.
func originPos(p outboxPos) []byte {
	b := binary.AppendUvarint(nil, p.Index)
	return binary.AppendUvarint(b, uint64(p.Seq))
}

func decodeOrigin(b []byte) (outboxPos, bool) {
	idx, n := binary.Uvarint(b)
	if n <= 0 {
		return outboxPos{}, false
	}
	seq, m := binary.Uvarint(b[n:])
	if m <= 0 || n+m != len(b) {
		return outboxPos{}, false
	}
	return outboxPos{idx, int(seq)}, true
}
