package alerts

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func fp(v float64) *float64 { return &v }

// The example rules the gateway ships, as an operator writes them.
const examplesYAML = `
max_states: 10000
recent: 200
rules:
  - name: heart_rate_out_of_range
    match: {measurement: biosignal, field: hr}
    op: outside
    low: 40
    high: 140
    for: 10s
    severity: critical
    labels: {unit: bpm, team: ward-3}
  - name: spo2_low
    match: {field: spo2}
    op: "<"
    threshold: 90
    clear: 92
    for: 15s
    severity: critical
  - name: ecg_lead_off
    match: {field: ecg}
    op: missing
    for: 5s
    severity: warning
  - name: vibration_rms_high
    match: {field: rms}
    value: mean
    window: tumbling:1m
    op: ">"
    threshold: 7.1
    clear: 6.0
    severity: warning
  - name: bearing_temperature_high
    match: {measurement: machine, tags: {sensor: "bearing*"}, field: temp}
    op: ">"
    threshold: 85
    clear: 80
    for: 30s
    severity: critical
`

func TestExamplesValidate(t *testing.T) {
	cfg := DefaultConfig()
	if err := yaml.Unmarshal([]byte(examplesYAML), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("examples do not validate:\n%v", err)
	}
	if len(cfg.Rules) != 5 {
		t.Fatalf("%d rules", len(cfg.Rules))
	}
	hr := cfg.Rules[0]
	if hr.For != 10*time.Second || *hr.Low != 40 || *hr.High != 140 || hr.Labels["unit"] != "bpm" {
		t.Fatalf("heart rate rule decoded as %+v", hr)
	}
	if got := cfg.Specs(); !slices.Equal(got, []string{"tumbling:1m"}) {
		t.Fatalf("Specs = %q", got)
	}
	e, err := New(cfg, "gw")
	if err != nil {
		t.Fatal(err)
	}
	// Each example fires on the input it is meant for.
	var evs []Event
	evs = e.Apply(1, batch(0, rd("biosignal,device=p1", "hr", 150, 0), rd("biosignal,device=p1", "hr", 151, 10),
		rd("vitals,device=p1", "spo2", 88, 0), rd("vitals,device=p1", "spo2", 89, 15),
		rd("ecg,device=p1", "ecg", 0.1, 0),
		rd("machine,device=m1,sensor=bearing2", "temp", 90, 0), rd("machine,device=m1,sensor=bearing2", "temp", 90, 30)),
		[]windowsEmission{emission("machine,device=m1", "rms", "tumbling:1m", 60, func(w *wsum) { w.Mean = 7.5 })}, evs)
	evs = e.Apply(2, batch(sec(6)), nil, evs)
	var fired []string
	for _, ev := range evs {
		fired = append(fired, ev.Type+" "+ev.Rule)
	}
	want := []string{"firing heart_rate_out_of_range", "firing spo2_low", "firing bearing_temperature_high", "firing vibration_rms_high", "firing ecg_lead_off"}
	if !slices.Equal(fired, want) {
		t.Fatalf("events %q, want %q", fired, want)
	}
}

func TestDefaultConfigValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.MaxStates != 10000 || c.Recent != 200 {
		t.Fatalf("defaults %+v", c)
	}
}

// base is a valid rule each validation case alters.
func base() Rule {
	return Rule{Name: "r", Match: Match{Field: "temp"}, Op: ">", Threshold: fp(10)}
}

func TestValidateErrors(t *testing.T) {
	type tc struct {
		name  string
		cfg   func(c *Config)
		wants []string // every message, in order
	}
	rule := func(f func(r *Rule)) func(c *Config) {
		return func(c *Config) {
			r := base()
			f(&r)
			c.Rules = []Rule{base(), r}
		}
	}
	cases := []tc{
		{"max states", func(c *Config) { c.MaxStates = 0 }, []string{"max_states: 0 is out of range 1 to 1000000"}},
		{"recent", func(c *Config) { c.Recent = -1 }, []string{"recent: -1 is out of range 0 to 10000"}},
		{"too many rules", func(c *Config) {
			for i := range maxRules + 1 {
				r := base()
				r.Name = fmt.Sprintf("r%d", i)
				c.Rules = append(c.Rules, r)
			}
		}, []string{"rules: 1001 rules, at most 1000 allowed (a new series is matched against every rule)"}},
		{"name empty", rule(func(r *Rule) { r.Name = "" }), []string{`rules[1].name: "" is not a name: want 1 to 64 of A-Z, a-z, 0-9, _, . and -`}},
		{"name chars", rule(func(r *Rule) { r.Name = "a/b" }), []string{`rules[1].name: "a/b" is not a name: want 1 to 64 of A-Z, a-z, 0-9, _, . and -`}},
		{"name long", rule(func(r *Rule) { r.Name = strings.Repeat("a", 65) }), []string{`rules[1].name: "` + strings.Repeat("a", 65) + `" is not a name: want 1 to 64 of A-Z, a-z, 0-9, _, . and -`}},
		{"name dup", rule(func(r *Rule) {}), []string{`rules[1].name: "r" repeats rules[0]`}},
		{"measurement glob", rule(func(r *Rule) { r.Name = "b"; r.Match.Measurement = "[a" }), []string{`rules[1].match.measurement: "[a" is not a valid glob (path.Match syntax): syntax error in pattern`}},
		{"field glob", rule(func(r *Rule) { r.Name = "b"; r.Match.Field = `x\` }), []string{`rules[1].match.field: "x\\" is not a valid glob (path.Match syntax): syntax error in pattern`}},
		{"tag glob", rule(func(r *Rule) { r.Name = "b"; r.Match.Tags = map[string]string{"site": "a[", "": "x"} }), []string{
			`rules[1].match.tags: empty tag key`,
			`rules[1].match.tags.site: "a[" is not a valid glob (path.Match syntax): syntax error in pattern`}},
		{"pattern long", rule(func(r *Rule) { r.Name = "b"; r.Match.Field = strings.Repeat("x", 257) }), []string{`rules[1].match.field: pattern of 257 bytes, at most 256 allowed`}},
		{"op missing", rule(func(r *Rule) { r.Name = "b"; r.Op = "" }), []string{`rules[1].op: required: one of >, >=, <, <=, outside, missing`}},
		{"op bad", rule(func(r *Rule) { r.Name = "b"; r.Op = "=>" }), []string{`rules[1].op: "=>" is not one of >, >=, <, <=, outside, missing`}},
		{"value bad", rule(func(r *Rule) { r.Name = "b"; r.Value = "median"; r.Window = "tumbling:1m" }), []string{`rules[1].value: "median" is not reading or one of mean, min, max, sum, count, stddev, first, last, p50, p90, p99`}},
		{"window required", rule(func(r *Rule) { r.Name = "b"; r.Value = "mean" }), []string{`rules[1].window: required for value mean: a window spec such as tumbling:1m or sliding:5m/10s`}},
		{"window on reading", rule(func(r *Rule) { r.Name = "b"; r.Window = "tumbling:1m" }), []string{`rules[1].window: "tumbling:1m" is set but value is reading (a window applies to aggregates only)`}},
		{"window bad", rule(func(r *Rule) { r.Name = "b"; r.Value = "max"; r.Window = "hopping:1m" }), []string{`rules[1].window: "hopping:1m" is not a window spec: want tumbling:<duration> or sliding:<size>/<slide>`}},
		{"window bad duration", rule(func(r *Rule) { r.Name = "b"; r.Value = "max"; r.Window = "tumbling:-1m" }), []string{`rules[1].window: "tumbling:-1m" is not a window spec: want tumbling:<duration> or sliding:<size>/<slide>`}},
		{"window sliding multiple", rule(func(r *Rule) { r.Name = "b"; r.Value = "max"; r.Window = "sliding:5m/7s" }), []string{`rules[1].window: "sliding:5m/7s": size 5m0s is not a multiple of the slide 7s`}},
		{"quantile sliding", rule(func(r *Rule) { r.Name = "b"; r.Value = "p99"; r.Window = "sliding:300s/10s" }), []string{`rules[1].value: p99 needs a tumbling window: sliding windows (sliding:5m/10s) keep no quantiles`}},
		{"threshold required", rule(func(r *Rule) { r.Name = "b"; r.Threshold = nil }), []string{`rules[1].threshold: required for op >`}},
		{"threshold nan", rule(func(r *Rule) { r.Name = "b"; r.Threshold = fp(nan()) }), []string{`rules[1].threshold: NaN is not a finite number`}},
		{"band on comparison", rule(func(r *Rule) { r.Name = "b"; r.Low, r.ClearHigh = fp(1), fp(2) }), []string{
			`rules[1].low: set for op >, which uses threshold and clear`,
			`rules[1].clear_high: set for op >, which uses threshold and clear`}},
		{"clear above for >", rule(func(r *Rule) { r.Name = "b"; r.Threshold, r.Clear = fp(140), fp(150) }), []string{`rules[1].clear: 150 must be at most the threshold 140 for op >`}},
		{"clear above for >=", rule(func(r *Rule) { r.Name = "b"; r.Op = ">="; r.Threshold, r.Clear = fp(1.5), fp(1.6) }), []string{`rules[1].clear: 1.6 must be at most the threshold 1.5 for op >=`}},
		{"clear below for <", rule(func(r *Rule) { r.Name = "b"; r.Op = "<"; r.Threshold, r.Clear = fp(90), fp(88) }), []string{`rules[1].clear: 88 must be at least the threshold 90 for op <`}},
		{"clear below for <=", rule(func(r *Rule) { r.Name = "b"; r.Op = "<="; r.Threshold, r.Clear = fp(90), fp(-1) }), []string{`rules[1].clear: -1 must be at least the threshold 90 for op <=`}},
		{"outside needs band", rule(func(r *Rule) { r.Name = "b"; r.Op = "outside"; r.Threshold = nil }), []string{
			`rules[1].low: required for op outside`, `rules[1].high: required for op outside`}},
		{"outside threshold", rule(func(r *Rule) { r.Name = "b"; r.Op = "outside"; r.Low, r.High, r.Clear = fp(1), fp(2), fp(1.5) }), []string{
			`rules[1].threshold: set for op outside, which uses low, high, clear_low and clear_high`,
			`rules[1].clear: set for op outside, which uses low, high, clear_low and clear_high`}},
		{"low not below high", rule(func(r *Rule) { r.Name = "b"; r.Op = "outside"; r.Threshold = nil; r.Low, r.High = fp(140), fp(40) }), []string{`rules[1].high: 40 must be greater than low 140`}},
		{"low equals high", rule(func(r *Rule) { r.Name = "b"; r.Op = "outside"; r.Threshold = nil; r.Low, r.High = fp(5), fp(5) }), []string{`rules[1].high: 5 must be greater than low 5`}},
		{"clear band outside", rule(func(r *Rule) {
			r.Name = "b"
			r.Op = "outside"
			r.Threshold = nil
			r.Low, r.High, r.ClearLow, r.ClearHigh = fp(40), fp(140), fp(35), fp(150)
		}), []string{
			`rules[1].clear_low: 35 must be within low 40 and high 140`,
			`rules[1].clear_high: 150 must be within low 40 and high 140`}},
		{"clear band inverted", rule(func(r *Rule) {
			r.Name = "b"
			r.Op = "outside"
			r.Threshold = nil
			r.Low, r.High, r.ClearLow, r.ClearHigh = fp(40), fp(140), fp(100), fp(60)
		}), []string{`rules[1].clear_high: 60 must be at least clear_low 100`}},
		{"missing takes nothing", rule(func(r *Rule) { r.Name = "b"; r.Op = "missing"; r.For = time.Second; r.Clear = fp(1) }), []string{
			`rules[1].threshold: set for op missing, which takes no threshold`,
			`rules[1].clear: set for op missing, which takes no threshold`}},
		{"missing needs for", rule(func(r *Rule) { r.Name = "b"; r.Op = "missing"; r.Threshold = nil }), []string{`rules[1].for: required for op missing: the silence that fires, e.g. 30s`}},
		{"missing aggregate", rule(func(r *Rule) {
			r.Name = "b"
			r.Op = "missing"
			r.Threshold = nil
			r.For = time.Second
			r.Value, r.Window = "mean", "tumbling:1m"
		}), []string{`rules[1].value: mean is set but op missing watches raw readings (leave value empty or reading)`}},
		{"for negative", rule(func(r *Rule) { r.Name = "b"; r.For = -time.Second }), []string{`rules[1].for: -1s must not be negative`}},
		{"severity", rule(func(r *Rule) { r.Name = "b"; r.Severity = "fatal" }), []string{`rules[1].severity: "fatal" is not info, warning or critical`}},
		{"labels", rule(func(r *Rule) { r.Name = "b"; r.Labels = map[string]string{"": "x", "k": strings.Repeat("v", 300)} }), []string{
			`rules[1].labels: empty label key`, `rules[1].labels.k: label of 1+300 bytes, at most 256 each`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.cfg(&cfg)
			err := cfg.Validate()
			got := messages(t, err)
			if !slices.Equal(got, c.wants) {
				t.Fatalf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(c.wants, "\n  "))
			}
			if _, err := New(cfg, "gw"); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

// messages unpacks a joined validation error, checking each is a
// *ConfigError whose ConfigKey prefixes its message.
func messages(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var out []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *ConfigError
		if !errors.As(e, &ce) {
			t.Fatalf("%T is not a *ConfigError: %v", e, e)
		}
		if !strings.HasPrefix(e.Error(), ce.ConfigKey()+": ") {
			t.Fatalf("%q does not start with its key %q", e.Error(), ce.ConfigKey())
		}
		out = append(out, e.Error())
	}
	return out
}

func TestValidateReportsAllAtOnce(t *testing.T) {
	cfg := Config{MaxStates: -1, Recent: 1 << 20, Rules: []Rule{
		{Name: "a b", Op: "?", Severity: "x"},
		{Name: "a b", Op: "outside", Low: fp(2), High: fp(1)},
	}}
	got := messages(t, cfg.Validate())
	want := []string{
		"max_states: -1 is out of range 1 to 1000000",
		"recent: 1048576 is out of range 0 to 10000",
		`rules[0].name: "a b" is not a name: want 1 to 64 of A-Z, a-z, 0-9, _, . and -`,
		`rules[0].op: "?" is not one of >, >=, <, <=, outside, missing`,
		`rules[0].severity: "x" is not info, warning or critical`,
		`rules[1].name: "a b" repeats rules[0]`,
		`rules[1].name: "a b" is not a name: want 1 to 64 of A-Z, a-z, 0-9, _, . and -`,
		`rules[1].high: 1 must be greater than low 2`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestValidAccepted(t *testing.T) {
	for _, r := range []Rule{
		{Name: "gt", Op: ">", Threshold: fp(1), Clear: fp(1)},
		{Name: "ge", Op: ">=", Threshold: fp(1), Clear: fp(0)},
		{Name: "lt", Op: "<", Threshold: fp(1), Clear: fp(1)},
		{Name: "le", Op: "<=", Threshold: fp(-1), Clear: fp(2), Value: "reading"},
		{Name: "band", Op: "outside", Low: fp(1), High: fp(2), ClearLow: fp(1), ClearHigh: fp(2)},
		{Name: "band.half", Op: "outside", Low: fp(1), High: fp(2), ClearLow: fp(1.5)},
		{Name: "miss-1", Op: "missing", For: time.Second, Value: "reading", Match: Match{Measurement: "m*", Tags: map[string]string{"site": "p[0-9]"}}},
		{Name: "agg_p99", Op: ">", Threshold: fp(1), Value: "p99", Window: "tumbling:60s"},
		{Name: "agg_sliding", Op: "<", Threshold: fp(1), Value: "count", Window: "sliding:5m/10s", Severity: "info"},
	} {
		cfg := DefaultConfig()
		cfg.Rules = []Rule{r}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", r.Name, err)
		}
	}
}

func TestSpecsCanonical(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rules = []Rule{
		{Name: "a", Op: ">", Threshold: fp(1), Value: "mean", Window: "tumbling:60s"},
		{Name: "b", Op: ">", Threshold: fp(1), Value: "max", Window: "tumbling:1m"},
		{Name: "c", Op: ">", Threshold: fp(1), Value: "sum", Window: "sliding:300s/10000ms"},
		{Name: "d", Op: ">", Threshold: fp(1)},
		{Name: "e", Op: ">", Threshold: fp(1), Value: "min", Window: "tumbling:1h30m"},
		{Name: "f", Op: ">", Threshold: fp(1), Value: "min", Window: "tumbling:500ms"},
		{Name: "g", Op: ">", Threshold: fp(1), Value: "min", Window: "nonsense"},
	}
	want := []string{"tumbling:1m", "sliding:5m/10s", "tumbling:1h30m", "tumbling:500ms"}
	if got := cfg.Specs(); !slices.Equal(got, want) {
		t.Fatalf("Specs = %q, want %q", got, want)
	}
}

// FuzzConfig: any YAML section validates or fails with ConfigErrors, and
// whatever validates builds an engine that runs.
func FuzzConfig(f *testing.F) {
	f.Add(examplesYAML)
	f.Add("rules: [{name: a, op: outside, low: 1, high: 2, clear_low: 1.5, value: p99, window: \"sliding:1m/7s\"}]")
	f.Add("rules: [{name: a, op: missing, for: 1s, match: {tags: {k: \"[\"}}}]")
	f.Fuzz(func(t *testing.T, text string) {
		cfg := DefaultConfig()
		if yaml.Unmarshal([]byte(text), &cfg) != nil {
			return
		}
		err := cfg.Validate()
		if err != nil {
			messages(t, err)
			return
		}
		e, err := New(cfg, "gw")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range randomSteps(2, 10) {
			e.Apply(s.index, s.b, s.closed, nil)
		}
		_ = cfg.Specs()
	})
}
