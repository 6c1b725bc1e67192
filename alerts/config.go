package alerts

import (
	"errors"
	"fmt"
	"math"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/runnel-iot/runnel/windows"
)

// Config is the `alerts` section of the gateway config.
type Config struct {
	// Rules are the alert rules, evaluated in this order.
	Rules []Rule `yaml:"rules"`
	// RulesFile names an optional YAML file holding more `rules:`; the
	// gateway loads it and appends its rules before New or Reload.
	RulesFile string `yaml:"rules_file"`
	// MaxStates bounds the (rule, series, field) states kept in memory.
	MaxStates int `yaml:"max_states"`
	// Recent is how many events are kept for the API (Engine.Recent).
	Recent int `yaml:"recent"`
}

// Rule is one alert rule: which readings it watches (Match), which value
// it judges (Value, Window), the condition (Op with its thresholds), how
// long the condition must hold (For), and what an event carries (Severity,
// Labels).
type Rule struct {
	// Name identifies the rule in events and MQTT topics:
	// [A-Za-z0-9_.-]{1,64}, unique.
	Name  string `yaml:"name"`
	Match Match  `yaml:"match"`
	// Value is "reading" (or empty): the raw reading; or an aggregate of a
	// closed window: mean, min, max, sum, count, stddev, first, last, p50,
	// p90, p99 (quantiles on tumbling windows only).
	Value string `yaml:"value"`
	// Window is the window spec of an aggregate, as the windows package
	// names it in its emissions: "tumbling:1m", "sliding:5m/10s".
	Window string `yaml:"window"`
	// Op is ">", ">=", "<", "<=", "outside" (value < low or value > high) or
	// "missing" (no reading for For).
	Op        string   `yaml:"op"`
	Threshold *float64 `yaml:"threshold"`
	Low       *float64 `yaml:"low"`
	High      *float64 `yaml:"high"`
	// Clear is the hysteresis of > >= < <=: a firing alert resolves only
	// once the value is strictly past it (below it for > and >=, above it
	// for < and <=). Unset: it resolves as soon as the condition is false.
	Clear *float64 `yaml:"clear"`
	// ClearLow and ClearHigh are the hysteresis of outside: a firing alert
	// resolves only once clear_low <= value <= clear_high. Each defaults to
	// low and high.
	ClearLow  *float64 `yaml:"clear_low"`
	ClearHigh *float64 `yaml:"clear_high"`
	// For is how long (in event time) the condition must hold before the
	// alert fires; 0 fires on the first reading that meets it. For op
	// missing it is the silence (in processing time) that fires.
	For time.Duration `yaml:"for"`
	// Severity is info, warning (the default) or critical.
	Severity string            `yaml:"severity"`
	Labels   map[string]string `yaml:"labels"`
}

// Match selects the readings of a rule. Every pattern is an exact string
// or a glob in path.Match syntax (`*`, `?`, `[a-z]`, `\` escapes); as in
// path.Match, `*` and `?` do not match a '/'.
type Match struct {
	// Measurement of the series; empty matches any.
	Measurement string `yaml:"measurement"`
	// Tags must each be present in the series with a matching value.
	Tags map[string]string `yaml:"tags"`
	// Field of the reading; empty matches any.
	Field string `yaml:"field"`
}

// DefaultConfig returns no rules, 10000 states and 200 recent events.
func DefaultConfig() Config {
	return Config{MaxStates: 10000, Recent: 200}
}

// ConfigError is one invalid setting. Key is the setting's path relative to
// the alerts section (`rules[2].clear`, `rules[0].match.tags.site`).
type ConfigError struct {
	Key string
	Msg string
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Msg }

// ConfigKey returns the key path of the problem, relative to the section.
func (e *ConfigError) ConfigKey() string { return e.Key }

// Bounds, each with its reason.
const (
	maxRules     = 1000      // a new series is matched against every rule once
	maxStates    = 1_000_000 // a state is a few hundred bytes: ~300 MB is past any edge gateway
	maxRecent    = 10000     // the API answers them all in one response
	maxNameLen   = 64        // the name is an MQTT topic level and a Kafka header
	maxPatternN  = 256       // patterns are matched per new series
	maxLabels    = 32        // labels are copied into every event
	maxLabelSize = 256
)

// Ops and values.
const (
	opGT      = ">"
	opGE      = ">="
	opLT      = "<"
	opLE      = "<="
	opOutside = "outside"
	opMissing = "missing"

	valueReading = "reading"
)

var aggregates = []string{"mean", "min", "max", "sum", "count", "stddev", "first", "last", "p50", "p90", "p99"}

func isComparison(op string) bool { return op == opGT || op == opGE || op == opLT || op == opLE }

// Validate reports every invalid setting at once, joined with errors.Join;
// each is a *ConfigError.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if len(c.Rules) > maxRules {
		bad("rules", "%d rules, at most %d allowed (a new series is matched against every rule)", len(c.Rules), maxRules)
	}
	if c.MaxStates < 1 || c.MaxStates > maxStates {
		bad("max_states", "%d is out of range 1 to %d", c.MaxStates, maxStates)
	}
	if c.Recent < 0 || c.Recent > maxRecent {
		bad("recent", "%d is out of range 0 to %d", c.Recent, maxRecent)
	}
	seen := make(map[string]int, len(c.Rules))
	for i, r := range c.Rules {
		key := fmt.Sprintf("rules[%d]", i)
		if j, dup := seen[r.Name]; dup && r.Name != "" {
			bad(key+".name", "%q repeats rules[%d]", r.Name, j)
		} else {
			seen[r.Name] = i
		}
		validateRule(key, r, bad)
	}
	return errors.Join(errs...)
}

func validName(s string) bool {
	if len(s) < 1 || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// fmtF writes a threshold the way it was most likely written in YAML.
func fmtF(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func validatePattern(key, p string, bad func(key, format string, args ...any)) {
	if len(p) > maxPatternN {
		bad(key, "pattern of %d bytes, at most %d allowed", len(p), maxPatternN)
		return
	}
	// path.Match checks the whole pattern's syntax even when it does not
	// match, so matching the empty string validates it.
	if _, err := path.Match(p, ""); err != nil {
		bad(key, "%q is not a valid glob (path.Match syntax): %v", p, err)
	}
}

func validateRule(key string, r Rule, bad func(key, format string, args ...any)) {
	if !validName(r.Name) {
		bad(key+".name", "%q is not a name: want 1 to %d of A-Z, a-z, 0-9, _, . and -", r.Name, maxNameLen)
	}

	validatePattern(key+".match.measurement", r.Match.Measurement, bad)
	validatePattern(key+".match.field", r.Match.Field, bad)
	for _, k := range sortedKeys(r.Match.Tags) {
		if k == "" {
			bad(key+".match.tags", "empty tag key")
			continue
		}
		validatePattern(key+".match.tags."+k, r.Match.Tags[k], bad)
	}

	op := r.Op
	switch {
	case isComparison(op), op == opOutside, op == opMissing:
	case op == "":
		bad(key+".op", "required: one of >, >=, <, <=, outside, missing")
	default:
		bad(key+".op", "%q is not one of >, >=, <, <=, outside, missing", op)
	}

	// Value and window.
	value := r.Value
	agg := value != "" && value != valueReading
	switch {
	case agg && !isAggregate(value):
		bad(key+".value", "%q is not reading or one of %s", value, strings.Join(aggregates, ", "))
	case agg && op == opMissing:
		bad(key+".value", "%s is set but op missing watches raw readings (leave value empty or reading)", value)
	case agg && r.Window == "":
		bad(key+".window", "required for value %s: a window spec such as tumbling:1m or sliding:5m/10s", value)
	case agg:
		spec, kind, err := canonicalSpec(r.Window)
		switch {
		case err != nil:
			bad(key+".window", "%v", err)
		case kind == "sliding" && strings.HasPrefix(value, "p"):
			bad(key+".value", "%s needs a tumbling window: sliding windows (%s) keep no quantiles", value, spec)
		}
	case r.Window != "":
		bad(key+".window", "%q is set but value is reading (a window applies to aggregates only)", r.Window)
	}

	// Thresholds: each op takes exactly its own.
	finite := func(k string, p *float64) bool {
		if p != nil && (math.IsNaN(*p) || math.IsInf(*p, 0)) {
			bad(key+"."+k, "%s is not a finite number", fmtF(*p))
			return false
		}
		return p != nil
	}
	hasT, hasLow, hasHigh := finite("threshold", r.Threshold), finite("low", r.Low), finite("high", r.High)
	hasClear, hasCL, hasCH := finite("clear", r.Clear), finite("clear_low", r.ClearLow), finite("clear_high", r.ClearHigh)
	uses := map[string]string{opOutside: "low and high", opMissing: "none"}
	unexpected := func(k string, set bool) {
		if !set {
			return
		}
		u, ok := uses[op]
		switch {
		case isComparison(op):
			u = "threshold and clear"
		case !ok:
			return // the op is already reported
		case op == opOutside:
			u = "low, high, clear_low and clear_high"
		}
		if u == "none" {
			bad(key+"."+k, "set for op %s, which takes no threshold", op)
		} else {
			bad(key+"."+k, "set for op %s, which uses %s", op, u)
		}
	}
	switch {
	case isComparison(op):
		unexpected("low", r.Low != nil)
		unexpected("high", r.High != nil)
		unexpected("clear_low", r.ClearLow != nil)
		unexpected("clear_high", r.ClearHigh != nil)
		if r.Threshold == nil {
			bad(key+".threshold", "required for op %s", op)
		}
		if hasT && hasClear {
			t, c := *r.Threshold, *r.Clear
			if (op == opGT || op == opGE) && c > t {
				bad(key+".clear", "%s must be at most the threshold %s for op %s", fmtF(c), fmtF(t), op)
			}
			if (op == opLT || op == opLE) && c < t {
				bad(key+".clear", "%s must be at least the threshold %s for op %s", fmtF(c), fmtF(t), op)
			}
		}
	case op == opOutside:
		unexpected("threshold", r.Threshold != nil)
		unexpected("clear", r.Clear != nil)
		if r.Low == nil {
			bad(key+".low", "required for op outside")
		}
		if r.High == nil {
			bad(key+".high", "required for op outside")
		}
		if hasLow && hasHigh {
			lo, hi := *r.Low, *r.High
			if lo >= hi {
				bad(key+".high", "%s must be greater than low %s", fmtF(hi), fmtF(lo))
				break
			}
			cl, ch := lo, hi
			if hasCL {
				cl = *r.ClearLow
				if cl < lo || cl > hi {
					bad(key+".clear_low", "%s must be within low %s and high %s", fmtF(cl), fmtF(lo), fmtF(hi))
				}
			}
			if hasCH {
				ch = *r.ClearHigh
				if ch < lo || ch > hi {
					bad(key+".clear_high", "%s must be within low %s and high %s", fmtF(ch), fmtF(lo), fmtF(hi))
				}
			}
			if hasCL && hasCH && cl > ch {
				bad(key+".clear_high", "%s must be at least clear_low %s", fmtF(ch), fmtF(cl))
			}
		}
	case op == opMissing:
		unexpected("threshold", r.Threshold != nil)
		unexpected("low", r.Low != nil)
		unexpected("high", r.High != nil)
		unexpected("clear", r.Clear != nil)
		unexpected("clear_low", r.ClearLow != nil)
		unexpected("clear_high", r.ClearHigh != nil)
	}

	switch {
	case r.For < 0:
		bad(key+".for", "%s must not be negative", r.For)
	case op == opMissing && r.For == 0:
		bad(key+".for", "required for op missing: the silence that fires, e.g. 30s")
	}

	switch r.Severity {
	case "", "info", "warning", "critical":
	default:
		bad(key+".severity", "%q is not info, warning or critical", r.Severity)
	}

	if len(r.Labels) > maxLabels {
		bad(key+".labels", "%d labels, at most %d allowed (they are copied into every event)", len(r.Labels), maxLabels)
	}
	for _, k := range sortedKeys(r.Labels) {
		switch {
		case k == "":
			bad(key+".labels", "empty label key")
		case len(k) > maxLabelSize || len(r.Labels[k]) > maxLabelSize:
			bad(key+".labels."+k, "label of %d+%d bytes, at most %d each", len(k), len(r.Labels[k]), maxLabelSize)
		}
	}
}

func isAggregate(v string) bool {
	for _, a := range aggregates {
		if a == v {
			return true
		}
	}
	return false
}

// canonicalSpec parses a window spec and writes it as the windows package
// names its specs in emissions ("tumbling:1m", "sliding:5m/10s"), so
// "tumbling:60s" in a rule still matches the windows' "tumbling:1m".
func canonicalSpec(s string) (spec, kind string, err error) {
	kind, rest, ok := strings.Cut(s, ":")
	bad := fmt.Errorf("%q is not a window spec: want tumbling:<duration> or sliding:<size>/<slide>", s)
	if !ok {
		return "", "", bad
	}
	switch kind {
	case "tumbling":
		d, err := time.ParseDuration(rest)
		if err != nil || d <= 0 {
			return "", "", bad
		}
		return windows.TumblingName(d), kind, nil
	case "sliding":
		a, b, ok := strings.Cut(rest, "/")
		if !ok {
			return "", "", bad
		}
		size, err1 := time.ParseDuration(a)
		slide, err2 := time.ParseDuration(b)
		if err1 != nil || err2 != nil || size <= 0 || slide <= 0 {
			return "", "", bad
		}
		if size%slide != 0 {
			return "", "", fmt.Errorf("%q: size %s is not a multiple of the slide %s", s, size, slide)
		}
		return windows.SlidingName(windows.SlidingSpec{Size: size, Slide: slide}), kind, nil
	}
	return "", "", bad
}

// CanonicalWindow writes a rule's window spec as the windows package names
// its specs ("tumbling:60s" is "tumbling:1m"), or returns why it is none.
func CanonicalWindow(s string) (string, error) {
	spec, _, err := canonicalSpec(s)
	return spec, err
}

// Specs returns the window specs the rules refer to, in canonical form and
// first-use order, so the gateway can check that the windows config keeps
// each of them. Invalid specs are left out (Validate reports them).
func (c Config) Specs() []string {
	var out []string
	for _, r := range c.Rules {
		if r.Value == "" || r.Value == valueReading || r.Window == "" {
			continue
		}
		spec, _, err := canonicalSpec(r.Window)
		if err != nil {
			continue
		}
		dup := false
		for _, s := range out {
			dup = dup || s == spec
		}
		if !dup {
			out = append(out, spec)
		}
	}
	return out
}
