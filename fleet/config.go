package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the fleet service's configuration: the file's top-level
// `fleet:` key (configs/fleet.yaml is the annotated default). The
// top-level key lets `runnel check` tell a fleet config from a gateway's.
type Config struct {
	Fleet FleetConfig `yaml:"fleet"`
}

// FleetConfig holds the fleet keys.
type FleetConfig struct {
	// Instance names this instance in the group and in its transactional
	// ids; unique per running instance. Empty: the hostname and the pid.
	Instance string `yaml:"instance"`
	// Brokers are the Kafka seed brokers.
	Brokers []string `yaml:"brokers"`
	// Group is the consumer group prefix: <group>.rekey and <group>.merge.
	Group string `yaml:"group"`
	// Topics names the topics read and written.
	Topics TopicsConfig `yaml:"topics"`
	// Partitions is used when the fleet creates its own topics.
	Partitions int `yaml:"partitions"`
	// GroupBy lists the series tags that split a fleet window (e.g. site).
	GroupBy []string `yaml:"group_by"`
	// Grace closes a fleet window this long after its first record even
	// if some gateway of the previous window has not reported.
	Grace time.Duration `yaml:"grace"`
	// Retain keeps a closed window's state this long for late corrections.
	Retain time.Duration `yaml:"retain"`
	// HTTP is the query API's listen address; empty disables it.
	HTTP string `yaml:"http"`
	// SessionTimeout is the consumer group session timeout: how soon a
	// crashed instance's partitions move to the others.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// TransactionTimeout aborts a crashed instance's open transaction; its
	// partitions' read_committed readers wait at most this long.
	TransactionTimeout time.Duration `yaml:"transaction_timeout"`
}

// TopicsConfig names the Kafka topics.
type TopicsConfig struct {
	Summaries   string `yaml:"summaries"`
	Sketches    string `yaml:"sketches"`
	Repartition string `yaml:"repartition"`
	Changelog   string `yaml:"changelog"`
	Output      string `yaml:"output"`
}

// DefaultConfig is the configuration with no file and no environment.
func DefaultConfig() Config {
	return Config{Fleet: FleetConfig{
		Brokers: []string{"127.0.0.1:9092"},
		Group:   "runnel-fleet",
		Topics: TopicsConfig{
			Summaries: "runnel.summaries", Sketches: "runnel.sketches",
			Repartition: "runnel.fleet.repartition", Changelog: "runnel.fleet.changelog",
			Output: "runnel.fleet",
		},
		Partitions: 6,
		Grace:      2 * time.Minute,
		Retain:     time.Hour,
		HTTP:       "127.0.0.1:8090",

		SessionTimeout:     45 * time.Second,
		TransactionTimeout: time.Minute,
	}}
}

// IsConfig reports whether data is a fleet config: a YAML mapping whose
// keys include `fleet`. `runnel check` uses it to pick the loader.
func IsConfig(data []byte) bool {
	var top map[string]yaml.Node
	if err := yaml.Unmarshal(data, &top); err != nil {
		return false
	}
	_, ok := top["fleet"]
	return ok
}

// Load reads the fleet config at path (none when path is ""), applies the
// RUNNEL_FLEET_* environment variables and validates the result. Unknown
// keys are errors, reported as FILE:LINE: message, all at once.
func Load(path string) (Config, error) {
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return Config{}, fmt.Errorf("read fleet config %s: %w", path, err)
		}
	}
	return loadBytes(path, data, os.Environ())
}

var yamlLine = regexp.MustCompile(`^\s*(?:yaml: )?line (\d+): (.*)$`)

func loadBytes(name string, data []byte, environ []string) (Config, error) {
	cfg := DefaultConfig()
	var errs []error
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			errs = append(errs, yamlErrors(name, err)...)
		}
	}
	errs = append(errs, applyEnv(&cfg.Fleet, environ)...)
	errs = append(errs, cfg.validate()...)
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	if cfg.Fleet.Instance == "" {
		h, _ := os.Hostname()
		cfg.Fleet.Instance = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	return cfg, nil
}

// yamlErrors turns yaml.v3's errors ("line 3: field x not found in type
// fleet.FleetConfig") into FILE:LINE: lines.
func yamlErrors(name string, err error) []error {
	var te *yaml.TypeError
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make([]error, 0, len(msgs))
	for _, m := range msgs {
		if g := yamlLine.FindStringSubmatch(m); g != nil {
			m = strings.Replace(g[2], "in type fleet.", "in ", 1)
			out = append(out, fmt.Errorf("%s:%s: %s", name, g[1], m))
			continue
		}
		out = append(out, fmt.Errorf("%s: %s", name, m))
	}
	return out
}

// EnvVars lists the environment overrides, name and key.
var EnvVars = [][2]string{
	{"RUNNEL_FLEET_INSTANCE", "fleet.instance"},
	{"RUNNEL_FLEET_BROKERS", "fleet.brokers"},
	{"RUNNEL_FLEET_GROUP", "fleet.group"},
	{"RUNNEL_FLEET_PARTITIONS", "fleet.partitions"},
	{"RUNNEL_FLEET_GROUP_BY", "fleet.group_by"},
	{"RUNNEL_FLEET_GRACE", "fleet.grace"},
	{"RUNNEL_FLEET_RETAIN", "fleet.retain"},
	{"RUNNEL_FLEET_HTTP", "fleet.http"},
	{"RUNNEL_FLEET_SESSION_TIMEOUT", "fleet.session_timeout"},
	{"RUNNEL_FLEET_TRANSACTION_TIMEOUT", "fleet.transaction_timeout"},
}

// applyEnv applies RUNNEL_FLEET_* variables; an unknown one is an error so
// a typo cannot go unnoticed.
func applyEnv(f *FleetConfig, environ []string) []error {
	var errs []error
	for _, kv := range environ {
		name, val, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "RUNNEL_FLEET_") {
			continue
		}
		bad := func(err error) { errs = append(errs, fmt.Errorf("env %s: %w", name, err)) }
		switch name {
		case "RUNNEL_FLEET_INSTANCE":
			f.Instance = val
		case "RUNNEL_FLEET_BROKERS":
			f.Brokers = splitList(val)
		case "RUNNEL_FLEET_GROUP":
			f.Group = val
		case "RUNNEL_FLEET_PARTITIONS":
			n, err := strconv.Atoi(val)
			if err != nil {
				bad(err)
			}
			f.Partitions = n
		case "RUNNEL_FLEET_GROUP_BY":
			f.GroupBy = splitList(val)
		case "RUNNEL_FLEET_GRACE", "RUNNEL_FLEET_RETAIN", "RUNNEL_FLEET_SESSION_TIMEOUT", "RUNNEL_FLEET_TRANSACTION_TIMEOUT":
			d, err := time.ParseDuration(val)
			if err != nil {
				bad(err)
			}
			*map[string]*time.Duration{"RUNNEL_FLEET_GRACE": &f.Grace, "RUNNEL_FLEET_RETAIN": &f.Retain,
				"RUNNEL_FLEET_SESSION_TIMEOUT": &f.SessionTimeout, "RUNNEL_FLEET_TRANSACTION_TIMEOUT": &f.TransactionTimeout}[name] = d
		case "RUNNEL_FLEET_HTTP":
			f.HTTP = val
		default:
			bad(errors.New("names no fleet config key"))
		}
	}
	return errs
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c Config) validate() []error {
	f := c.Fleet
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("fleet.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if len(f.Brokers) == 0 {
		bad("brokers", "at least one broker is required")
	}
	if f.Group == "" {
		bad("group", "must not be empty")
	}
	t := f.Topics
	names := map[string]string{"summaries": t.Summaries, "sketches": t.Sketches,
		"repartition": t.Repartition, "changelog": t.Changelog, "output": t.Output}
	seen := map[string]string{}
	for _, k := range []string{"summaries", "sketches", "repartition", "changelog", "output"} {
		v := names[k]
		if v == "" {
			bad("topics."+k, "must not be empty")
			continue
		}
		if o, dup := seen[v]; dup {
			bad("topics."+k, "%q is also topics.%s", v, o)
		}
		seen[v] = k
	}
	if f.Partitions < 1 || f.Partitions > 1024 {
		bad("partitions", "%d is not in 1..1024", f.Partitions)
	}
	for _, tag := range f.GroupBy {
		if tag == "" || tag == "device" || tag == "gateway" {
			bad("group_by", "%q: a fleet window is never split by gateway or device", tag)
		}
	}
	if f.Grace <= 0 {
		bad("grace", "%s must be positive", f.Grace)
	}
	if f.SessionTimeout < 500*time.Millisecond || f.SessionTimeout > 30*time.Minute {
		bad("session_timeout", "%s is not in 500ms..30m", f.SessionTimeout)
	}
	if f.TransactionTimeout < time.Second || f.TransactionTimeout > 15*time.Minute {
		bad("transaction_timeout", "%s is not in 1s..15m (the broker's transaction.max.timeout.ms)", f.TransactionTimeout)
	}
	if f.Retain < f.Grace {
		bad("retain", "%s must be at least grace (%s)", f.Retain, f.Grace)
	}
	return errs
}
