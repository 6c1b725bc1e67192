package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"slices"
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

// Kind is a kind of Kafka record the pipeline emits: one outbox, one topic
// and one schema each. Adding a kind is a change to this file (a constant,
// a row of Kinds, a value type and its builder), plus its outbox kind and
// topic in forward.
type Kind int

// The record kinds, in the order of Kinds (and of Config.Outboxes).
const (
	KindSummaries Kind = iota // closed windows
	KindSketches              // closed group windows
	KindAlerts                // alert events
	NumKinds
)

// KindInfo describes a record kind.
type KindInfo struct {
	// Outbox is the outbox kind (forward.Kind*), which also selects the
	// topic (kafka.topics.<outbox>).
	Outbox string
	// Schema is the runnel-schema header and the value's schema field.
	Schema string
	// Key and ID say how the record key and the deterministic id are built.
	Key, ID string

	rules bool                // its outputs depend on the alert rules too (fingerprint)
	of    func(o output) bool // whether an engine output is of this kind
	// build returns its record; origin is copied. scratch is a buffer the
	// caller lends for the encoding (the record does not keep it).
	build func(scratch *[]byte, gw string, o output, origin []byte) forward.Record
}

// output is one output of the engines: a closed window or group window
// (em), or an alert event (ev).
type output struct {
	em *windows.Emission
	ev *alerts.Event
}

// Kinds is the table of record kinds, indexed by Kind.
var Kinds = [NumKinds]KindInfo{
	KindSummaries: {Outbox: forward.KindSummaries, Schema: schemaSummary,
		Key: "gateway|series|field|spec", ID: "gateway, series, field, spec, window start",
		of: func(o output) bool { return o.em != nil && o.em.Kind != windows.KindGroup },
		build: func(sc *[]byte, gw string, o output, origin []byte) forward.Record {
			return summaryRecord(sc, gw, o.em, origin)
		}},
	KindSketches: {Outbox: forward.KindSketches, Schema: schemaSketch,
		Key: "gateway|group|key", ID: "gateway, group, group key, window start",
		of: func(o output) bool { return o.em != nil && o.em.Kind == windows.KindGroup },
		build: func(_ *[]byte, gw string, o output, origin []byte) forward.Record {
			return sketchRecord(gw, o.em.Group, origin)
		}},
	KindAlerts: {Outbox: forward.KindAlerts, Schema: schemaAlert,
		Key: "gateway|rule|series|field", ID: "gateway, alert id, event type", rules: true,
		of:    func(o output) bool { return o.ev != nil },
		build: func(_ *[]byte, _ string, o output, origin []byte) forward.Record { return alertRecord(o.ev, origin) }},
}

// summaryValue is the JSON value of a closed window (schema runnel.summary/v1):
// the record's envelope around the figures the HTTP API shows too.
// appendSummaryValue writes it (without this type); the type documents
// the shape and is what the tests compare that encoding with.
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

// AlertPayload is the JSON of an alert event (schema runnel.alert/v1): the
// value of its Kafka record and the payload of its MQTT message.
func AlertPayload(ev *alerts.Event) []byte {
	b, err := json.Marshal(newAlertValue(ev))
	if err != nil {
		panic("BUG: marshal alert: " + err.Error())
	}
	return b
}

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
	Reason    string            `json:"reason,omitempty"` // a resolved event caused by a reload
}

func newAlertValue(ev *alerts.Event) alertValue {
	return alertValue{
		Schema: schemaAlert, ID: ev.ID, Type: ev.Type, Gateway: ev.Gateway, Rule: ev.Rule,
		Series: ev.Series, Field: ev.Field, Severity: ev.Severity, Labels: ev.Labels, Op: ev.Op,
		Value: ev.Value, Threshold: ev.Threshold, Start: rfc3339(ev.StartNs), At: rfc3339(ev.AtNs),
		StartNs: ev.StartNs, AtNs: ev.AtNs, Reason: ev.Reason,
	}
}

func rfc3339(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

// messageID hashes the parts that identify a message: SHA-256, the first 16
// bytes in hex. Each part is length-prefixed, so no choice of names can
// make two different tuples collide by concatenation. The hashed bytes are
// gathered on the stack when they fit: the id string is the only
// allocation.
func messageID(parts ...string) string {
	var buf [256]byte
	b := buf[:0]
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// recordKey joins key parts with '|', escaping a '|' or a backslash inside
// a part with a backslash, so two different tuples never give the same key (a
// compacted topic would otherwise keep only one of them): series
// "coll,device=x|y" field "z" is coll,device=x\|y|z, series
// "coll,device=x" field "y|z" is coll,device=x|y\|z. Parts without either
// character are written as they are.
func recordKey(parts ...string) []byte {
	n := len(parts) - 1
	for _, p := range parts {
		n += len(p)
	}
	return appendRecordKey(make([]byte, 0, n), parts...)
}

// appendRecordKey appends recordKey(parts...) to b.
func appendRecordKey(b []byte, parts ...string) []byte {
	for i, p := range parts {
		if i > 0 {
			b = append(b, '|')
		}
		for j := 0; j < len(p); j++ {
			if p[j] == '|' || p[j] == '\\' {
				b = append(b, '\\')
			}
			b = append(b, p[j])
		}
	}
	return b
}

// schemaHeaders holds the headers of each schema's records, shared by all
// of them: forward reads a record's headers and never changes them
// (Outbox.Append copies what it stores). Each slice is full, so an append
// to one copies it.
var schemaHeaders = map[string][]forward.Header{}

func init() {
	for _, k := range Kinds {
		schemaHeaders[k.Schema] = slices.Clip([]forward.Header{{Key: "runnel-schema", Value: []byte(k.Schema)}})
	}
}

func record(schema, id string, key []byte, v any, origin []byte) forward.Record {
	value, err := json.Marshal(v)
	if err != nil {
		panic("BUG: marshal record value: " + err.Error())
	}
	return forward.Record{
		Key: key, Value: value, ID: id, Origin: bytes.Clone(origin),
		Headers: schemaHeaders[schema],
	}
}

// summaryRecord is the record of a closed window: key gateway|series|field|spec,
// id (gateway, series, field, spec, window start). Value, key and origin
// are encoded into *scratch and share one allocation of their exact size:
// closing windows come in bursts of thousands, and their records wait for
// the outbox writer in memory.
func summaryRecord(scratch *[]byte, gw string, e *windows.Emission, origin []byte) forward.Record {
	w := &e.Window
	b := appendSummaryValue((*scratch)[:0], gw, e)
	nv := len(b)
	b = appendRecordKey(b, gw, w.Series, w.Field, w.Spec)
	nk := len(b)
	b = append(b, origin...)
	*scratch = b
	one := bytes.Clone(b)
	var ns [20]byte
	id := messageID(gw, w.Series, w.Field, w.Spec, string(strconv.AppendInt(ns[:0], w.StartNs, 10)))
	rec := forward.Record{
		Value: one[:nv:nv], Key: one[nv:nk:nk], ID: id,
		Headers: schemaHeaders[schemaSummary],
	}
	if origin != nil { // a nil origin stays nil (forward stores the difference)
		rec.Origin = one[nk:len(one):len(one)]
	}
	return rec
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
// produced it, its position among that batch's outputs of its kind, and
// the fingerprint of the configuration that produced it (fingerprints):
// uvarint index, uvarint seq, 8 bytes little-endian.
func originPos(p outboxPos, fp uint64) []byte { return appendOriginPos(nil, p, fp) }

// appendOriginPos appends originPos(p, fp) to b.
func appendOriginPos(b []byte, p outboxPos, fp uint64) []byte {
	b = binary.AppendUvarint(b, p.Index)
	b = binary.AppendUvarint(b, uint64(p.Seq))
	return binary.LittleEndian.AppendUint64(b, fp)
}

// decodeOrigin decodes an origin; hasFP is false for one written before
// origins carried a fingerprint (index and seq only).
func decodeOrigin(b []byte) (pos outboxPos, fp uint64, hasFP, ok bool) {
	idx, n := binary.Uvarint(b)
	if n <= 0 {
		return outboxPos{}, 0, false, false
	}
	seq, m := binary.Uvarint(b[n:])
	if m <= 0 {
		return outboxPos{}, 0, false, false
	}
	pos = outboxPos{idx, int(seq)}
	switch rest := b[n+m:]; len(rest) {
	case 0:
		return pos, 0, false, true
	case 8:
		return pos, binary.LittleEndian.Uint64(rest), true, true
	}
	return outboxPos{}, 0, false, false
}
