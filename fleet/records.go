package fleet

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/runnel-iot/runnel/internal/serieskey"
)

// The gateway's records, decoded by their documented JSON Schemas
// (gateway/schema/summary.schema.json and sketch.schema.json). The fleet
// declares its own structs so it depends on the format, not on the
// gateway's code.
const (
	schemaSummary = "runnel.summary/v1"
	schemaSketch  = "runnel.sketch/v1"
	schemaFleet   = "runnel.fleet/v1"
)

// summaryIn is a runnel.summary/v1 value.
type summaryIn struct {
	Schema    string  `json:"schema"`
	Gateway   string  `json:"gateway"`
	Series    string  `json:"series"`
	Field     string  `json:"field"`
	Window    string  `json:"window"`
	StartNs   int64   `json:"start_ns"`
	EndNs     int64   `json:"end_ns"`
	Count     uint64  `json:"count"`
	Sum       float64 `json:"sum"`
	Min       float64 `json:"min"`
	Max       float64 `json:"max"`
	Mean      float64 `json:"mean"`
	Stddev    float64 `json:"stddev"`
	Quantiles []byte  `json:"quantiles,omitempty"`
}

// sketchIn is a runnel.sketch/v1 value.
type sketchIn struct {
	Schema   string `json:"schema"`
	Gateway  string `json:"gateway"`
	Group    string `json:"group"`
	Key      string `json:"key"`
	StartNs  int64  `json:"start_ns"`
	EndNs    int64  `json:"end_ns"`
	Readings uint64 `json:"readings"`
	HLL      []byte `json:"hll,omitempty"`
	CountMin []byte `json:"countmin,omitempty"`
}

// input is one decoded gateway record with its fleet key.
type input struct {
	key     string // fleet key (escaped parts, see fleetKey)
	lineage string // fleet key without the window start: the "previous window" relation
	gateway string
	summary *summaryIn
	sketch  *sketchIn
}

var errSchema = errors.New("not a runnel.summary/v1 or runnel.sketch/v1 value")

// decodeInput decodes a gateway record value and derives its fleet key;
// groupBy names the series tags that split fleet windows.
func decodeInput(value []byte, groupBy []string) (input, error) {
	var head struct {
		Schema string `json:"schema"`
	}
	if err := json.Unmarshal(value, &head); err != nil {
		return input{}, fmt.Errorf("decode gateway record: %w", err)
	}
	switch head.Schema {
	case schemaSummary:
		var s summaryIn
		if err := json.Unmarshal(value, &s); err != nil {
			return input{}, fmt.Errorf("decode %s: %w", head.Schema, err)
		}
		if s.Gateway == "" || s.Series == "" || s.Field == "" || s.Window == "" || s.EndNs <= s.StartNs {
			return input{}, fmt.Errorf("decode %s: gateway, series, field, window and a window span are required", head.Schema)
		}
		meas, tags, err := parseSeries(s.Series)
		if err != nil {
			return input{}, fmt.Errorf("decode %s series %q: %w", head.Schema, s.Series, err)
		}
		parts := []string{"s", meas, s.Field, s.Window}
		for _, t := range groupBy {
			parts = append(parts, t+"="+tags[t])
		}
		lin := joinKey(parts...)
		return input{key: lin + "|" + strconv.FormatInt(s.StartNs, 10), lineage: lin, gateway: s.Gateway, summary: &s}, nil
	case schemaSketch:
		var s sketchIn
		if err := json.Unmarshal(value, &s); err != nil {
			return input{}, fmt.Errorf("decode %s: %w", head.Schema, err)
		}
		if s.Gateway == "" || s.Group == "" || s.EndNs <= s.StartNs {
			return input{}, fmt.Errorf("decode %s: gateway, group and a window span are required", head.Schema)
		}
		key, tags := groupKeyParts(s.Key)
		parts := []string{"k", s.Group, key, time.Duration(s.EndNs - s.StartNs).String()}
		for _, t := range groupBy {
			parts = append(parts, t+"="+tags[t])
		}
		lin := joinKey(parts...)
		return input{key: lin + "|" + strconv.FormatInt(s.StartNs, 10), lineage: lin, gateway: s.Gateway, sketch: &s}, nil
	}
	return input{}, fmt.Errorf("decode gateway record schema %q: %w", head.Schema, errSchema)
}

// groupKeyParts splits a gateway group key. A key of a group by several
// attributes is written as a series key, "env,site=plant1" (windows
// GroupSpec.By): the part without '=' is the measurement, the others are
// tags, all unescaped. Any other key (no unescaped '=') is returned whole,
// without tags.
func groupKeyParts(k string) (string, map[string]string) {
	if _, _, ok := cutUnescaped(k, '='); !ok {
		return k, nil
	}
	var key string
	tags := map[string]string{}
	for _, p := range serieskey.Split(k, ',') {
		t, v, ok := cutUnescaped(p, '=')
		if !ok {
			key = unescape(p)
			continue
		}
		tags[unescape(t)] = unescape(v)
	}
	return key, tags
}

// joinKey joins key parts with '|', escaping '\' and '|' in each part with
// a backslash, so no two part lists give the same key.
func joinKey(parts ...string) string {
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('|')
		}
		for j := 0; j < len(p); j++ {
			if p[j] == '|' || p[j] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(p[j])
		}
	}
	return b.String()
}

// splitKey undoes joinKey.
func splitKey(k string) []string {
	var out []string
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		switch {
		case k[i] == '\\' && i+1 < len(k):
			i++
			b.WriteByte(k[i])
		case k[i] == '|':
			out = append(out, b.String())
			b.Reset()
		default:
			b.WriteByte(k[i])
		}
	}
	return append(out, b.String())
}

// parseSeries splits a series key, measurement,tag=value,... with line
// protocol escaping (backslash before ',', '=' and ' '), into its
// measurement and tags.
func parseSeries(s string) (string, map[string]string, error) {
	var parts []string
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			b.WriteByte(s[i])
			i++
			b.WriteByte(s[i])
		case s[i] == ',':
			parts = append(parts, b.String())
			b.Reset()
		default:
			b.WriteByte(s[i])
		}
	}
	parts = append(parts, b.String())
	tags := make(map[string]string, len(parts)-1)
	for _, p := range parts[1:] {
		k, v, ok := cutUnescaped(p, '=')
		if !ok || k == "" {
			return "", nil, fmt.Errorf("tag %q is not key=value", p)
		}
		tags[unescape(k)] = unescape(v)
	}
	if parts[0] == "" {
		return "", nil, errors.New("empty measurement")
	}
	return unescape(parts[0]), tags, nil
}

func cutUnescaped(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// messageID is the gateway's id scheme: SHA-256 of the length-prefixed
// parts, the first 16 bytes in hex.
func messageID(parts ...string) string {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, p := range parts {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
