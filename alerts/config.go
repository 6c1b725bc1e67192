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
	c := ruleCheck{key: key, r: r, bad: bad}
	if !validName(r.Name) {
		bad(key+".name", "%q is not a name: want 1 to %d of A-Z, a-z, 0-9, _, . and -", r.Name, maxNameLen)
	}
	c.match()
	c.op()
	c.value()
	c.thresholds()
	switch {
	case r.For < 0:
		bad(key+".for", "%s must not be negative", r.For)
	case r.Op == opMissing && r.For == 0:
		bad(key+".for", "required for op missing: the silence that fires, e.g. 30s")
	}
	switch r.Severity {
	case "", "info", "warning", "critical":
	default:
		bad(key+".severity", "%q is not info, warning or critical", r.Severity)
	}
	c.labels()
}

// ruleCheck validates one rule, reporting each problem to bad under the
// rule's key; its methods take the rule's parts in the order the problems
// are reported.
type ruleCheck struct {
	key string
	r   Rule
	bad func(key, format string, args ...any)
}

func (c ruleCheck) match() {
	validatePattern(c.key+".match.measurement", c.r.Match.Measurement, c.bad)
	validatePattern(c.key+".match.field", c.r.Match.Field, c.bad)
	for _, k := range sortedKeys(c.r.Match.Tags) {
		if k == "" {
			c.bad(c.key+".match.tags", "empty tag key")
			continue
		}
		validatePattern(c.key+".match.tags."+k, c.r.Match.Tags[k], c.bad)
	}
}

func (c ruleCheck) op() {
	switch op := c.r.Op; {
	case isComparison(op), op == opOutside, op == opMissing:
	case op == "":
		c.bad(c.key+".op", "required: one of >, >=, <, <=, outside, missing")
	default:
		c.bad(c.key+".op", "%q is not one of >, >=, <, <=, outside, missing", op)
	}
}

// value checks the value (reading or an aggregate) and its window.
func (c ruleCheck) value() {
	key, r, value := c.key, c.r, c.r.Value
	agg := value != "" && value != valueReading
	switch {
	case agg && !isAggregate(value):
		c.bad(key+".value", "%q is not reading or one of %s", value, strings.Join(aggregates, ", "))
	case agg && r.Op == opMissing:
		c.bad(key+".value", "%s is set but op missing watches raw readings (leave value empty or reading)", value)
	case agg && r.Window == "":
		c.bad(key+".window", "required for value %s: a window spec such as tumbling:1m or sliding:5m/10s", value)
	case agg:
		spec, kind, err := canonicalSpec(r.Window)
		switch {
		case err != nil:
			c.bad(key+".window", "%v", err)
		case kind == "sliding" && strings.HasPrefix(value, "p"):
			c.bad(key+".value", "%s needs a tumbling window: sliding windows (%s) keep no quantiles", value, spec)
		}
	case r.Window != "":
		c.bad(key+".window", "%q is set but value is reading (a window applies to aggregates only)", r.Window)
	}
}

// thresholds checks that each op has exactly its own thresholds, finite
// and in order.
func (c ruleCheck) thresholds() {
	r, op := c.r, c.r.Op
	hasT, hasLow, hasHigh := c.finite("threshold", r.Threshold), c.finite("low", r.Low), c.finite("high", r.High)
	hasClear, hasCL, hasCH := c.finite("clear", r.Clear), c.finite("clear_low", r.ClearLow), c.finite("clear_high", r.ClearHigh)
	switch {
	case isComparison(op):
		c.unexpected("low", r.Low != nil)
		c.unexpected("high", r.High != nil)
		c.unexpected("clear_low", r.ClearLow != nil)
		c.unexpected("clear_high", r.ClearHigh != nil)
		if r.Threshold == nil {
			c.bad(c.key+".threshold", "required for op %s", op)
		}
		if hasT && hasClear {
			t, cl := *r.Threshold, *r.Clear
			if (op == opGT || op == opGE) && cl > t {
				c.bad(c.key+".clear", "%s must be at most the threshold %s for op %s", fmtF(cl), fmtF(t), op)
			}
			if (op == opLT || op == opLE) && cl < t {
				c.bad(c.key+".clear", "%s must be at least the threshold %s for op %s", fmtF(cl), fmtF(t), op)
			}
		}
	case op == opOutside:
		c.unexpected("threshold", r.Threshold != nil)
		c.unexpected("clear", r.Clear != nil)
		if r.Low == nil {
			c.bad(c.key+".low", "required for op outside")
		}
		if r.High == nil {
			c.bad(c.key+".high", "required for op outside")
		}
		if hasLow && hasHigh {
			c.outsideBand(hasCL, hasCH)
		}
	case op == opMissing:
		c.unexpected("threshold", r.Threshold != nil)
		c.unexpected("low", r.Low != nil)
		c.unexpected("high", r.High != nil)
		c.unexpected("clear", r.Clear != nil)
		c.unexpected("clear_low", r.ClearLow != nil)
		c.unexpected("clear_high", r.ClearHigh != nil)
	}
}

// outsideBand checks low < high and that clear_low and clear_high, when
// set, lie within them in order.
func (c ruleCheck) outsideBand(hasCL, hasCH bool) {
	lo, hi := *c.r.Low, *c.r.High
	if lo >= hi {
		c.bad(c.key+".high", "%s must be greater than low %s", fmtF(hi), fmtF(lo))
		return
	}
	cl, ch := lo, hi
	if hasCL {
		cl = *c.r.ClearLow
		if cl < lo || cl > hi {
			c.bad(c.key+".clear_low", "%s must be within low %s and high %s", fmtF(cl), fmtF(lo), fmtF(hi))
		}
	}
	if hasCH {
		ch = *c.r.ClearHigh
		if ch < lo || ch > hi {
			c.bad(c.key+".clear_high", "%s must be within low %s and high %s", fmtF(ch), fmtF(lo), fmtF(hi))
		}
	}
	if hasCL && hasCH && cl > ch {
		c.bad(c.key+".clear_high", "%s must be at least clear_low %s", fmtF(ch), fmtF(cl))
	}
}

// finite reports whether threshold k is set, reporting it when it is NaN
// or infinite (then false).
func (c ruleCheck) finite(k string, p *float64) bool {
	if p != nil && (math.IsNaN(*p) || math.IsInf(*p, 0)) {
		c.bad(c.key+"."+k, "%s is not a finite number", fmtF(*p))
		return false
	}
	return p != nil
}

// unexpected reports threshold k, set for an op that does not use it.
func (c ruleCheck) unexpected(k string, set bool) {
	if !set {
		return
	}
	op := c.r.Op
	var uses string
	switch {
	case isComparison(op):
		uses = "threshold and clear"
	case op == opOutside:
		uses = "low, high, clear_low and clear_high"
	case op == opMissing:
		c.bad(c.key+"."+k, "set for op %s, which takes no threshold", op)
		return
	default:
		return // the op is already reported
	}
	c.bad(c.key+"."+k, "set for op %s, which uses %s", op, uses)
}

func (c ruleCheck) labels() {
	if len(c.r.Labels) > maxLabels {
		c.bad(c.key+".labels", "%d labels, at most %d allowed (they are copied into every event)", len(c.r.Labels), maxLabels)
	}
	for _, k := range sortedKeys(c.r.Labels) {
		switch v := c.r.Labels[k]; {
		case k == "":
			c.bad(c.key+".labels", "empty label key")
		case len(k) > maxLabelSize || len(v) > maxLabelSize:
			c.bad(c.key+".labels."+k, "label of %d+%d bytes, at most %d each", len(k), len(v), maxLabelSize)
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
