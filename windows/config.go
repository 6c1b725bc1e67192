package windows

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/runnel-iot/runnel/sketches"
	"github.com/runnel-iot/runnel/wal"
)

// Config is the `windows` section of the gateway config.
type Config struct {
	// Tumbling lists the tumbling window sizes kept per series and field.
	Tumbling []time.Duration `yaml:"tumbling"`
	// Sliding lists the sliding (hopping) windows kept per series and field.
	Sliding []SlidingSpec `yaml:"sliding"`
	// AllowedLateness is subtracted from a device's largest event time to
	// give its watermark.
	AllowedLateness time.Duration `yaml:"allowed_lateness"`
	// IdleTimeout is the processing time after a device's last reading at
	// which its windows are closed without waiting for its watermark.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// SeriesTTL is the processing time after a series' last applied reading
	// at which all its state is evicted.
	SeriesTTL time.Duration `yaml:"series_ttl"`
	// MemoryBudget bounds window and sketch state; past it new series go to
	// the overflow series.
	MemoryBudget wal.ByteSize `yaml:"memory_budget"`
	// ClosedHistory is how many closed summaries are kept per series, field
	// and window spec (and per group key) for queries.
	ClosedHistory int `yaml:"closed_history"`
	// ReservoirSize is the number of raw samples kept per series and field.
	ReservoirSize int `yaml:"reservoir_size"`
	// Groups are the cross-device group sketches.
	Groups []GroupSpec `yaml:"groups"`
}

// SlidingSpec is one sliding window: windows of Size starting at every
// multiple of Slide. Size must be a multiple of Slide.
type SlidingSpec struct {
	Size  time.Duration `yaml:"size"`
	Slide time.Duration `yaml:"slide"`
}

// GroupSpec is one group sketch over tumbling windows of Size.
type GroupSpec struct {
	// Name identifies the group in output and queries.
	Name string `yaml:"name"`
	// By is "measurement" or "tag:<key>": the group key of a reading's
	// series. A series without that tag is in no window of the group.
	// Several, comma-separated ("measurement,tag:site"; measurement
	// first), key a window per combination, written as a series key:
	// env,site=plant1 (',', '=', ' ' and '\' escaped with '\'), so the
	// fleet can merge the group's sketches per fleet.group_by tag.
	By string `yaml:"by"`
	// Size is the tumbling window size.
	Size time.Duration `yaml:"size"`
	// Distinct is "device", "series", "tag:<key>" or "": the attribute whose
	// distinct values an HLL counts per group window.
	Distinct string `yaml:"distinct"`
	// TopK is "device", "series", "tag:<key>" or "": the attribute whose
	// heaviest values (by readings) a Count-Min top-k tracks.
	TopK string `yaml:"topk"`
	// K is the top-k size, 1..sketches.TopKCapacity when TopK is set.
	K int `yaml:"k"`
}

// DefaultConfig returns the defaults: tumbling 10s, 1m and 5m, sliding 5m
// every 10s, 5s of allowed lateness, 1m idle timeout, 1h series TTL, 64 MiB,
// 30 closed summaries, 32 samples, and two groups per measurement over 1m
// windows: distinct devices and the top 10 devices by readings.
func DefaultConfig() Config {
	return Config{
		Tumbling:        []time.Duration{10 * time.Second, time.Minute, 5 * time.Minute},
		Sliding:         []SlidingSpec{{Size: 5 * time.Minute, Slide: 10 * time.Second}},
		AllowedLateness: 5 * time.Second,
		IdleTimeout:     time.Minute,
		SeriesTTL:       time.Hour,
		MemoryBudget:    64 * wal.MiB,
		ClosedHistory:   10,
		ReservoirSize:   32,
		Groups: []GroupSpec{
			{Name: "devices_per_measurement", By: "measurement", Size: time.Minute, Distinct: "device"},
			{Name: "top_devices", By: "measurement", Size: time.Minute, TopK: "device", K: 10},
		},
	}
}

// ConfigError is one invalid setting. Key is the setting's path relative to
// the windows section (`tumbling[1]`, `groups[0].by`).
type ConfigError struct {
	Key string
	Msg string
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Msg }

// ConfigKey returns the key path of the problem, relative to the section.
func (e *ConfigError) ConfigKey() string { return e.Key }

// Bounds, each with its reason.
const (
	minWindow     = time.Millisecond // finer windows are noise at device clock precision
	maxWindow     = 7 * 24 * time.Hour
	maxSpecs      = 16   // each spec costs a window (and its sketch) per series and field
	maxPanes      = 4096 // panes per sliding window: an emission merges them all
	maxLateness   = 24 * time.Hour
	minIdle       = time.Second // idle checks run once per second of processing time
	maxIdle       = 7 * 24 * time.Hour
	minBudget     = wal.MiB // the overflow series and one group window must fit
	maxBudget     = 1 << 40
	maxHistory    = 1000
	maxReservoir  = 4096
	maxGroups     = 16
	maxGroupNameN = 64
)

// Validate reports every invalid setting at once, joined with errors.Join;
// each is a *ConfigError.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if n := len(c.Tumbling) + len(c.Sliding); n > maxSpecs {
		bad("tumbling", "%d tumbling and sliding windows, at most %d allowed (each costs state per series and field)", n, maxSpecs)
	}
	for i, d := range c.Tumbling {
		if d < minWindow || d > maxWindow {
			bad(fmt.Sprintf("tumbling[%d]", i), "%s is out of range %s to %s", d, minWindow, maxWindow)
		}
		for j := range i {
			if c.Tumbling[j] == d {
				bad(fmt.Sprintf("tumbling[%d]", i), "%s repeats tumbling[%d]", d, j)
				break
			}
		}
	}
	for i, s := range c.Sliding {
		key := fmt.Sprintf("sliding[%d]", i)
		okSlide := s.Slide >= minWindow && s.Slide <= maxWindow
		if !okSlide {
			bad(key+".slide", "%s is out of range %s to %s", s.Slide, minWindow, maxWindow)
		}
		if s.Size < minWindow || s.Size > maxWindow {
			bad(key+".size", "%s is out of range %s to %s", s.Size, minWindow, maxWindow)
		} else if okSlide {
			switch {
			case s.Size%s.Slide != 0:
				bad(key+".size", "%s is not a multiple of the slide %s", s.Size, s.Slide)
			case s.Size/s.Slide > maxPanes:
				bad(key+".size", "%s holds %d panes of %s, at most %d allowed (an emission merges every pane)", s.Size, s.Size/s.Slide, s.Slide, maxPanes)
			}
		}
		for j := range i {
			if c.Sliding[j] == s {
				bad(key, "%s/%s repeats sliding[%d]", s.Size, s.Slide, j)
				break
			}
		}
	}
	if c.AllowedLateness < 0 || c.AllowedLateness > maxLateness {
		bad("allowed_lateness", "%s is out of range 0 to %s", c.AllowedLateness, maxLateness)
	}
	if c.IdleTimeout < minIdle || c.IdleTimeout > maxIdle {
		bad("idle_timeout", "%s is out of range %s to %s (idle checks run once per second of processing time)", c.IdleTimeout, minIdle, maxIdle)
	}
	if c.SeriesTTL <= c.IdleTimeout || c.SeriesTTL > 10*maxIdle {
		bad("series_ttl", "%s must be longer than idle_timeout (%s) and at most %s: a series is evicted only after its device went idle", c.SeriesTTL, c.IdleTimeout, 10*maxIdle)
	}
	if c.MemoryBudget < minBudget || c.MemoryBudget > maxBudget {
		bad("memory_budget", "%s is out of range %s to %s", c.MemoryBudget, minBudget, wal.ByteSize(maxBudget))
	}
	if c.ClosedHistory < 0 || c.ClosedHistory > maxHistory {
		bad("closed_history", "%d is out of range 0 to %d", c.ClosedHistory, maxHistory)
	}
	if c.ReservoirSize < 1 || c.ReservoirSize > maxReservoir {
		bad("reservoir_size", "%d is out of range 1 to %d", c.ReservoirSize, maxReservoir)
	}
	if len(c.Groups) > maxGroups {
		bad("groups", "%d groups, at most %d allowed", len(c.Groups), maxGroups)
	}
	for i, g := range c.Groups {
		c.validateGroup(i, g, bad)
	}
	return errors.Join(errs...)
}

func (c Config) validateGroup(i int, g GroupSpec, bad func(key, format string, args ...any)) {
	key := fmt.Sprintf("groups[%d]", i)
	if !validName(g.Name) {
		bad(key+".name", "%q is not a name: want 1 to %d of a-z, 0-9, _ and -", g.Name, maxGroupNameN)
	}
	for j := range i {
		if c.Groups[j].Name == g.Name {
			bad(key+".name", "%q repeats groups[%d]", g.Name, j)
			break
		}
	}
	if _, ok := parseBy(g.By); !ok {
		bad(key+".by", "%q is not measurement or tag:<key>, or several comma-separated (measurement first, no repeats)", g.By)
	}
	if g.Size < minWindow || g.Size > maxWindow {
		bad(key+".size", "%s is out of range %s to %s", g.Size, minWindow, maxWindow)
	}
	if _, ok := parseAttr(g.Distinct, true); !ok || g.Distinct == "measurement" {
		bad(key+".distinct", "%q is not device, series, tag:<key> or empty", g.Distinct)
	}
	if _, ok := parseAttr(g.TopK, true); !ok || g.TopK == "measurement" {
		bad(key+".topk", "%q is not device, series, tag:<key> or empty", g.TopK)
	}
	switch {
	case g.TopK != "" && (g.K < 1 || g.K > sketches.TopKCapacity):
		bad(key+".k", "%d is out of range 1 to %d (the fleet top-k capacity)", g.K, sketches.TopKCapacity)
	case g.TopK == "" && g.K != 0:
		bad(key+".k", "%d is set without topk", g.K)
	}
}

func validName(s string) bool {
	if s == "" || len(s) > maxGroupNameN {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// attrKind says which part of a series an attribute takes.
type attrKind uint8

const (
	attrNone attrKind = iota
	attrMeasurement
	attrDevice
	attrSeries
	attrTag
	attrMulti // several: a series-key-like group key
)

type attr struct {
	kind  attrKind
	tag   string
	parts []attr // attrMulti: measurement and tags, in key order
}

// parseBy parses a group's by: "measurement", "tag:<key>", or several of
// them comma-separated, measurement (if any) first, none repeated.
func parseBy(s string) (attr, bool) {
	if !strings.Contains(s, ",") {
		a, ok := parseAttr(s, false)
		return a, ok && (a.kind == attrMeasurement || a.kind == attrTag)
	}
	var m attr
	m.kind = attrMulti
	for i, e := range strings.Split(s, ",") {
		a, ok := parseAttr(strings.TrimSpace(e), false)
		switch {
		case !ok, a.kind == attrMeasurement && i > 0, a.kind != attrMeasurement && a.kind != attrTag,
			slices.ContainsFunc(m.parts, func(o attr) bool { return o.kind == a.kind && o.tag == a.tag }):
			return attr{}, false
		}
		m.parts = append(m.parts, a)
	}
	return m, true
}

// parseAttr parses "measurement", "device", "series" or "tag:<key>"; ""
// is attrNone when allowEmpty.
func parseAttr(s string, allowEmpty bool) (attr, bool) {
	switch {
	case s == "":
		return attr{}, allowEmpty
	case s == "measurement":
		return attr{kind: attrMeasurement}, true
	case s == "device":
		return attr{kind: attrDevice}, true
	case s == "series":
		return attr{kind: attrSeries}, true
	case strings.HasPrefix(s, "tag:") && len(s) > len("tag:"):
		return attr{kind: attrTag, tag: s[len("tag:"):]}, true
	}
	return attr{}, false
}

// specName is the stable text of a window spec: "tumbling:1m",
// "sliding:5m/10s".
// TumblingName is a tumbling window spec's name, as WindowSummary.Spec
// spells it ("tumbling:1m").
func TumblingName(d time.Duration) string { return "tumbling:" + shortDur(d) }

// SlidingName is a sliding window spec's name ("sliding:5m/10s").
func SlidingName(s SlidingSpec) string {
	return "sliding:" + shortDur(s.Size) + "/" + shortDur(s.Slide)
}

// shortDur writes d without zero trailing units: 1m, 1h30m, 10s, 500ms.
func shortDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// SpecNames returns the names of the configured window specs, as
// WindowSummary.Spec spells them ("tumbling:1m", "sliding:5m/10s"), in
// config order.
func (c Config) SpecNames() []string {
	var out []string
	for _, d := range c.Tumbling {
		out = append(out, TumblingName(d))
	}
	for _, s := range c.Sliding {
		out = append(out, SlidingName(s))
	}
	return out
}
