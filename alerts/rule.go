package alerts

import (
	"encoding/binary"
	"maps"
	"math"
	"path"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/runnel-iot/runnel/windows"
)

// ruleKind is how a rule is fed.
type ruleKind uint8

const (
	kindRaw     ruleKind = iota + 1 // raw readings, event time
	kindAgg                         // closed windows, window end time
	kindMissing                     // raw readings as proof of life, processing time
)

// rule is a validated Rule compiled for evaluation. It is immutable once
// built, except for watched (the missing-data states it watches), which
// belongs to the engine and is guarded by its mutex.
type rule struct {
	cfg  Rule // deep copy of the definition, for Rules()
	name string
	fp   uint64 // fingerprint of the definition: equal fp, same behaviour
	kind ruleKind

	meas, field matcher
	tags        []tagMatcher // sorted by key

	agg  func(*windows.WindowSummary) float64
	spec string // canonical window spec

	op                  string
	threshold           float64
	clear               float64 // resolve edge of > >= < <= (threshold when unset)
	hasClear            bool
	low, high           float64
	clearLow, clearHigh float64
	forNs               int64
	severity            string
	labels              map[string]string // nil when empty; never modified
	forSec              float64           // For in seconds, for missing events

	watched list // missing rules: watched, not firing, states by last touch
}

type matcher struct {
	pat  string
	glob bool // else exact; an empty pattern matches anything
}

func newMatcher(p string) matcher {
	return matcher{pat: p, glob: strings.ContainsAny(p, `*?[\`)}
}

func (m matcher) match(s string) bool {
	switch {
	case m.pat == "":
		return true
	case !m.glob:
		return m.pat == s
	}
	ok, _ := path.Match(m.pat, s) // the pattern was validated
	return ok
}

type tagMatcher struct {
	key string
	m   matcher
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}

// compile builds the rules of a validated config.
func compile(rs []Rule) []*rule {
	out := make([]*rule, len(rs))
	for i, r := range rs {
		out[i] = compileRule(r)
	}
	return out
}

func compileRule(r Rule) *rule {
	c := &rule{
		cfg:      cloneRule(r),
		name:     r.Name,
		meas:     newMatcher(r.Match.Measurement),
		field:    newMatcher(r.Match.Field),
		op:       r.Op,
		forNs:    int64(r.For),
		severity: r.Severity,
	}
	if c.severity == "" {
		c.severity = "warning"
	}
	for _, k := range sortedKeys(r.Match.Tags) {
		c.tags = append(c.tags, tagMatcher{key: k, m: newMatcher(r.Match.Tags[k])})
	}
	if len(r.Labels) > 0 {
		c.labels = maps.Clone(r.Labels)
	}
	switch {
	case r.Op == opMissing:
		c.kind = kindMissing
	case r.Value == "" || r.Value == valueReading:
		c.kind = kindRaw
	default:
		c.kind = kindAgg
		c.agg = aggFunc(r.Value)
		c.spec, _, _ = canonicalSpec(r.Window)
	}
	switch {
	case isComparison(r.Op):
		c.threshold = *r.Threshold
		c.clear = c.threshold
		if r.Clear != nil {
			c.clear, c.hasClear = *r.Clear, true
		}
	case r.Op == opOutside:
		c.low, c.high = *r.Low, *r.High
		c.clearLow, c.clearHigh = c.low, c.high
		if r.ClearLow != nil {
			c.clearLow = *r.ClearLow
		}
		if r.ClearHigh != nil {
			c.clearHigh = *r.ClearHigh
		}
	}
	c.forSec = r.For.Seconds()
	c.fp = fingerprint(r)
	return c
}

func cloneRule(r Rule) Rule {
	cp := func(p *float64) *float64 {
		if p == nil {
			return nil
		}
		v := *p
		return &v
	}
	r.Threshold, r.Low, r.High = cp(r.Threshold), cp(r.Low), cp(r.High)
	r.Clear, r.ClearLow, r.ClearHigh = cp(r.Clear), cp(r.ClearLow), cp(r.ClearHigh)
	r.Match.Tags = maps.Clone(r.Match.Tags)
	r.Labels = maps.Clone(r.Labels)
	return r
}

// fingerprint hashes a canonical encoding of the whole definition, with the
// defaults applied (value reading, severity warning, canonical window), so
// spelling a default out does not count as a change.
func fingerprint(r Rule) uint64 {
	var b []byte
	s := func(v string) { b = binary.AppendUvarint(b, uint64(len(v))); b = append(b, v...) }
	f := func(p *float64) {
		if p == nil {
			b = append(b, 0)
			return
		}
		b = append(b, 1)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(*p))
	}
	kv := func(m map[string]string) {
		b = binary.AppendUvarint(b, uint64(len(m)))
		for _, k := range sortedKeys(m) {
			s(k)
			s(m[k])
		}
	}
	s("alerts.rule.v1")
	s(r.Name)
	s(r.Match.Measurement)
	kv(r.Match.Tags)
	s(r.Match.Field)
	value, spec := r.Value, ""
	if value == "" {
		value = valueReading
	}
	if value != valueReading {
		spec, _, _ = canonicalSpec(r.Window)
	}
	s(value)
	s(spec)
	s(r.Op)
	for _, p := range []*float64{r.Threshold, r.Low, r.High, r.Clear, r.ClearLow, r.ClearHigh} {
		f(p)
	}
	b = binary.AppendVarint(b, int64(r.For))
	sev := r.Severity
	if sev == "" {
		sev = "warning"
	}
	s(sev)
	kv(r.Labels)
	return xxhash.Sum64(b)
}

func aggFunc(v string) func(*windows.WindowSummary) float64 {
	switch v {
	case "mean":
		return func(w *windows.WindowSummary) float64 { return w.Mean }
	case "min":
		return func(w *windows.WindowSummary) float64 { return w.Min }
	case "max":
		return func(w *windows.WindowSummary) float64 { return w.Max }
	case "sum":
		return func(w *windows.WindowSummary) float64 { return w.Sum }
	case "count":
		return func(w *windows.WindowSummary) float64 { return float64(w.Count) }
	case "stddev":
		return func(w *windows.WindowSummary) float64 { return w.Stddev }
	case "first":
		return func(w *windows.WindowSummary) float64 { return w.First }
	case "last":
		return func(w *windows.WindowSummary) float64 { return w.Last }
	case "p50":
		return func(w *windows.WindowSummary) float64 { return w.P50 }
	case "p90":
		return func(w *windows.WindowSummary) float64 { return w.P90 }
	case "p99":
		return func(w *windows.WindowSummary) float64 { return w.P99 }
	}
	panic("BUG: validated aggregate " + v + " unknown")
}

// matchSeries reports whether the rule's measurement and tag patterns match
// a parsed series.
func (r *rule) matchSeries(meas string, tags []tag) bool {
	if !r.meas.match(meas) {
		return false
	}
	for _, tm := range r.tags {
		found := false
		for _, t := range tags {
			if t.key == tm.key {
				found = tm.m.match(t.value)
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// fires reports whether v meets the condition, and the edge it crossed.
// v is never NaN here.
func (r *rule) fires(v float64) (bool, float64) {
	switch r.op {
	case opGT:
		return v > r.threshold, r.threshold
	case opGE:
		return v >= r.threshold, r.threshold
	case opLT:
		return v < r.threshold, r.threshold
	case opLE:
		return v <= r.threshold, r.threshold
	case opOutside:
		if v < r.low {
			return true, r.low
		}
		return v > r.high, r.high
	}
	return false, 0
}

// resolves reports whether v ends a firing alert: strictly past the clear
// edge, or, without a clear edge, the condition no longer met.
func (r *rule) resolves(v float64) bool {
	switch r.op {
	case opGT:
		if r.hasClear {
			return v < r.clear
		}
		return v <= r.threshold
	case opGE:
		return v < r.clear
	case opLT:
		if r.hasClear {
			return v > r.clear
		}
		return v >= r.threshold
	case opLE:
		return v > r.clear
	case opOutside:
		return r.clearLow <= v && v <= r.clearHigh
	}
	return false
}
