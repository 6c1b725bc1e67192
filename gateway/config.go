package gateway

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/runnel-iot/runnel/alerts"
	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/ingest"
	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
)

// Config is the whole gateway configuration: one section per stage, each
// with its own DefaultConfig and Validate. The yaml tag of a field is the
// section's name in the config file, the first part of every key path
// (`wal.sync`) and of every environment variable (`RUNNEL_WAL_SYNC`).
//
// To add a stage, add its section here with a yaml tag and set its defaults
// in DefaultConfig. Its Validate method is found by reflection (see
// Config.Validate); loading, environment overrides and error positions
// follow from the yaml tags with no further code.
type Config struct {
	Gateway     GatewayConfig           `yaml:"gateway"`
	Log         LogConfig               `yaml:"log"`
	Security    SecurityConfig          `yaml:"security"`
	WAL         wal.Config              `yaml:"wal"`
	HTTP        HTTPConfig              `yaml:"http"`
	MQTT        ingest.BrokerConfig     `yaml:"mqtt"`
	UDP         ingest.UDPConfig        `yaml:"udp"`
	HTTPWrite   ingest.HTTPWriteConfig  `yaml:"http_write"`
	DeadLetters ingest.DeadLetterConfig `yaml:"dead_letters"`
	Windows     windows.Config          `yaml:"windows"`
	Checkpoint  CheckpointConfig        `yaml:"checkpoint"`
	Alerts      alerts.Config           `yaml:"alerts"`
	Kafka       forward.KafkaConfig     `yaml:"kafka"`
}

// GatewayConfig is the `gateway` section: the gateway's identity, where it
// keeps its data and how long it may take to stop.
type GatewayConfig struct {
	// ID names the gateway in everything it emits (Kafka keys, MQTT alert
	// topics). Empty means resolved by Load: the contents of
	// /etc/machine-id, else the hostname.
	ID string `yaml:"id"`
	// DataDir holds the WAL, the dead-letter and late logs, the checkpoints
	// and the forward outboxes.
	DataDir string `yaml:"data_dir"`
	// ShutdownTimeout bounds the whole graceful shutdown: stop accepting,
	// drain, flush and close the WAL.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MemoryLimit is the Go runtime's soft memory limit; 0: automatic,
	// following the live heap (see memlimit.go for the trade-off).
	MemoryLimit wal.ByteSize `yaml:"memory_limit"`
}

// LogConfig is the `log` section.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text (logfmt-like, for people) or json (for collectors).
	Format string `yaml:"format"`
}

// HTTPConfig is the `http` section: the one HTTP server the gateway owns.
type HTTPConfig struct {
	// Addr is the listen address, host:port; port 0 picks a free port.
	Addr string `yaml:"addr"`
	// Tokens, when set, are required (Authorization: Bearer <t> or Token
	// <t>) on every endpoint but /healthz and /readyz, which stay open for
	// probes, and /api/v2/write, which has its own (http_write.tokens).
	Tokens []string `yaml:"tokens"`
	// TokensFile names a file of more tokens, one per line (for systemd
	// credentials; see secrets.go).
	TokensFile string `yaml:"tokens_file"`
	// TLSCertFile and TLSKeyFile, set together, serve HTTPS.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// Pprof serves Go's profiler at /debug/pprof/ (behind the tokens).
	Pprof bool `yaml:"pprof"`
	// MaxStreamClients bounds the live-stream (SSE) clients at once; each
	// holds a buffer of streamClientBuffer events. Past it: 503.
	MaxStreamClients int `yaml:"max_stream_clients"`
}

// streamClientBuffer is the events one live-stream client may fall behind
// by before it is dropped (it reconnects): small, so that many clients
// cost little (about 128 × 300 bytes each at most).
const streamClientBuffer = 128

// DefaultConfig returns the configuration `runnel run` uses with no config
// file and no environment. Gateway.ID is left empty: Load resolves it from
// the machine, so DefaultConfig alone does not validate.
func DefaultConfig() Config {
	return Config{
		Gateway: GatewayConfig{
			DataDir:         "./data",
			ShutdownTimeout: 30 * time.Second,
		},
		Log: LogConfig{
			Level:  "info",
			Format: "text",
		},
		WAL: wal.DefaultConfig(),
		HTTP: HTTPConfig{
			Addr:             ":8080",
			MaxStreamClients: 64,
		},
		MQTT:        ingest.DefaultBrokerConfig(),
		UDP:         ingest.DefaultUDPConfig(),
		HTTPWrite:   ingest.DefaultHTTPWriteConfig(),
		DeadLetters: ingest.DefaultDeadLetterConfig(),
		Windows:     windows.DefaultConfig(),
		Checkpoint:  CheckpointConfig{Interval: 30 * time.Second},
		Alerts:      alerts.DefaultConfig(),
		Kafka:       forward.DefaultKafkaConfig(),
	}
}

// ConfigError is one configuration problem. Validate methods fill only Key
// (relative to their section) and Msg; Config.Validate makes Key a full key
// path; Load adds where the value came from: File and Line, or Env.
type ConfigError struct {
	File string // config file, empty when the value did not come from one
	Line int    // 1-based line in File, 0 when unknown
	Env  string // environment variable that set the value, if any
	Key  string // key path, `wal.sync`; empty for problems of the whole file
	Msg  string // what is wrong and what is allowed
}

// Error formats the problem as `FILE:LINE: key: msg`, `env NAME: key: msg`
// or `key: msg`, whichever source is known.
func (e *ConfigError) Error() string {
	var b strings.Builder
	switch {
	case e.Env != "":
		b.WriteString("env " + e.Env + ": ")
	case e.File != "" && e.Line > 0:
		b.WriteString(e.File + ":" + strconv.Itoa(e.Line) + ": ")
	case e.File != "":
		b.WriteString(e.File + ": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ConfigKey returns the key path of the problem.
func (e *ConfigError) ConfigKey() string { return e.Key }

// keyedError is what Config.Validate needs from a section's errors: the key
// the problem is about, relative to the section. wal.ConfigError and
// ConfigError both satisfy it.
type keyedError interface {
	error
	ConfigKey() string
}

// validator is the method every config section has.
type validator interface {
	Validate() error
}

// Validate reports every invalid setting at once, joined with errors.Join;
// each is a *ConfigError whose Key is the full key path. It calls Validate
// on every section, so a new section is validated as soon as it is added.
func (c Config) Validate() error {
	var errs []error
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		name := yamlName(v.Type().Field(i))
		sec, ok := v.Field(i).Interface().(validator)
		if !ok {
			panic("BUG: config section " + name + " has no Validate method")
		}
		for _, err := range flatten(sec.Validate()) {
			errs = append(errs, prefixError(name, err))
		}
	}
	errs = append(errs, c.crossCheck()...)
	errs = append(errs, c.credentialErrors()...)
	return errors.Join(errs...)
}

// crossCheck validates what spans sections: an alert rule over a window
// aggregate needs that window in the windows config.
func (c Config) crossCheck() []error {
	var errs []error
	have := c.Windows.SpecNames()
	for i, r := range c.Alerts.Rules {
		if r.Window == "" || r.Value == "" || r.Value == "reading" {
			continue
		}
		spec, err := alerts.CanonicalWindow(r.Window)
		if err != nil || slices.Contains(have, spec) {
			continue // a bad spec is the alerts section's to report
		}
		errs = append(errs, &ConfigError{Key: fmt.Sprintf("alerts.rules[%d].window", i),
			Msg: fmt.Sprintf("%s is not a configured window (windows: %s)", r.Window, strings.Join(have, ", "))})
	}
	return errs
}

// flatten splits an errors.Join tree into its leaves.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// prefixError turns a section's error into a *ConfigError with a full key
// path. An error without a key is about the section as a whole.
func prefixError(section string, err error) *ConfigError {
	var ke keyedError
	if !errors.As(err, &ke) {
		return &ConfigError{Key: section, Msg: err.Error()}
	}
	key := section
	if k := ke.ConfigKey(); k != "" {
		key += "." + k
	}
	// A section's error reads "key: msg" (the key relative to the section);
	// keep the message only, as the full key is written separately.
	msg := strings.TrimPrefix(err.Error(), ke.ConfigKey()+": ")
	return &ConfigError{Key: key, Msg: msg}
}

// sectionErrors collects a section's problems; keys are relative.
type sectionErrors []error

func (s *sectionErrors) add(key, format string, args ...any) {
	*s = append(*s, &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (s sectionErrors) join() error { return errors.Join(s...) }

// Bounds of the gateway section.
const (
	maxIDLen = 64
	// A shutdown under a second cannot flush a WAL group on an SD card;
	// one over ten minutes outlasts every supervisor's kill timeout.
	minShutdownTimeout = time.Second
	maxShutdownTimeout = 10 * time.Minute
)

const idAllowed = "1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-' (it names the gateway in Kafka keys and MQTT topics)"

// Validate reports every invalid setting of the gateway section.
func (c GatewayConfig) Validate() error {
	var errs sectionErrors
	switch {
	case c.ID == "":
		errs.add("id", "must be set: use %s", idAllowed)
	case !validID(c.ID):
		errs.add("id", "%q is not a valid id: use %s", c.ID, idAllowed)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		errs.add("data_dir", "must not be empty: it is the directory that holds the WAL")
	}
	if c.MemoryLimit != 0 && (c.MemoryLimit < 16*wal.MiB || c.MemoryLimit > 64*wal.GiB) {
		errs.add("memory_limit", "%s is out of range 16MiB to 64GiB (0: automatic)", c.MemoryLimit)
	}
	if c.ShutdownTimeout < minShutdownTimeout || c.ShutdownTimeout > maxShutdownTimeout {
		errs.add("shutdown_timeout", "%s is out of range 1s to 10m (too short cannot flush the WAL; too long outlasts supervisors' kill timeouts)", c.ShutdownTimeout)
	}
	return errs.join()
}

func validID(id string) bool {
	if len(id) < 1 || len(id) > maxIDLen {
		return false
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}

var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
)

// Validate reports every invalid setting of the log section.
func (c LogConfig) Validate() error {
	var errs sectionErrors
	if !contains(logLevels, c.Level) {
		errs.add("level", "%q is not one of %s", c.Level, strings.Join(logLevels, ", "))
	}
	if !contains(logFormats, c.Format) {
		errs.add("format", "%q is not one of %s", c.Format, strings.Join(logFormats, ", "))
	}
	return errs.join()
}

// Validate reports every invalid setting of the http section.
func (c HTTPConfig) Validate() error {
	var errs sectionErrors
	if _, port, err := net.SplitHostPort(c.Addr); err != nil || !validPort(port) {
		errs.add("addr", "%q is not a host:port address: want host:port like \":8080\" or \"127.0.0.1:8080\", port 0 to 65535", c.Addr)
	}
	for i, t := range c.Tokens {
		if len(t) < 8 || strings.ContainsAny(t, " \t\r\n") {
			errs.add(fmt.Sprintf("tokens[%d]", i), "must be at least 8 characters without white space (the value is not shown)")
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs.add("tls_cert_file", "tls_cert_file and tls_key_file must be set together")
	}
	if c.MaxStreamClients < 1 || c.MaxStreamClients > 10000 {
		errs.add("max_stream_clients", "%d is out of range 1 to 10000", c.MaxStreamClients)
	}
	return errs.join()
}

func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n <= 65535
}

func contains(set []string, s string) bool {
	for _, x := range set {
		if x == s {
			return true
		}
	}
	return false
}
