package forward

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// The outbox kinds the gateway opens, one outbox each. Each kind has its
// own topic (Topics) and its own disk quota (OutboxConfigs).
const (
	KindSummaries = "summaries"
	KindAlerts    = "alerts"
	KindSketches  = "sketches"
)

// Full-outbox policies.
const (
	// PolicyDropOldest makes room for a new append by removing the oldest
	// unsent entries, whole segments at a time; they are counted
	// (OutboxStats.Dropped) and logged. Append never waits for Kafka.
	PolicyDropOldest = "drop_oldest"
	// PolicyBlock makes Append wait (honouring its ctx) until Kafka has
	// acknowledged enough for the new entries to fit: the caller's pipeline
	// stalls instead of losing data. With forwarding off it waits forever.
	PolicyBlock = "block"
)

// OutboxConfig is the `kafka.outbox.<kind>` section: the disk quota of one
// outbox and what happens when it is full.
type OutboxConfig struct {
	// MaxBytes bounds the outbox's segment files on disk. Acknowledged
	// entries leave the disk (whole segments) within about a second (once
	// their position is persisted; sooner while a block append waits).
	MaxBytes wal.ByteSize `yaml:"max_bytes"`
	// Policy is drop_oldest (the default, also when empty) or block.
	Policy string `yaml:"policy"`
}

// OutboxConfigs holds the quota of each outbox kind.
type OutboxConfigs struct {
	Summaries OutboxConfig `yaml:"summaries"`
	Alerts    OutboxConfig `yaml:"alerts"`
	Sketches  OutboxConfig `yaml:"sketches"`
}

// For returns the config of an outbox kind.
func (c OutboxConfigs) For(kind string) (OutboxConfig, bool) {
	switch kind {
	case KindSummaries:
		return c.Summaries, true
	case KindAlerts:
		return c.Alerts, true
	case KindSketches:
		return c.Sketches, true
	}
	return OutboxConfig{}, false
}

// Topics names the Kafka topic of each outbox kind. A Record with its own
// Topic overrides it.
type Topics struct {
	Summaries string `yaml:"summaries"`
	Alerts    string `yaml:"alerts"`
	Sketches  string `yaml:"sketches"`
}

// For returns the topic of an outbox kind.
func (t Topics) For(kind string) (string, bool) {
	switch kind {
	case KindSummaries:
		return t.Summaries, true
	case KindAlerts:
		return t.Alerts, true
	case KindSketches:
		return t.Sketches, true
	}
	return "", false
}

// Backoff is the wait between delivery attempts after a failure:
// exponential from Initial, capped at Max, with full jitter (a uniform
// random wait between 0 and the cap), so a fleet of gateways that lost the
// same cluster does not reconnect in lockstep.
type Backoff struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
}

// TLSConfig is the `kafka.tls` section.
type TLSConfig struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`   // PEM; empty: the system roots
	CertFile           string `yaml:"cert_file"` // PEM client certificate, with key_file
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"` // empty: the broker's host name
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// SASLConfig is the `kafka.sasl` section.
type SASLConfig struct {
	Mechanism string `yaml:"mechanism"` // "", PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
	// PasswordFile is a file holding the password (its contents without
	// the final newline), instead of password: with systemd,
	// LoadCredential= and RUNNEL_KAFKA_SASL_PASSWORD_FILE=%d/kafka-password.
	// The gateway's config loader reads it into Password.
	PasswordFile string `yaml:"password_file"`
}

// SASL mechanisms.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

var compressions = []string{"zstd", "lz4", "snappy", "gzip", "none"}

// Delivery guarantees (`kafka.delivery`).
const (
	// DeliveryAtLeastOnce: idempotent producer, the outbox position kept
	// on local disk only; a crash or failed attempt sends records again.
	DeliveryAtLeastOnce = "at_least_once"
	// DeliveryExactlyOnce: each outbox is sent by a transactional producer
	// whose transactions carry the records and the outbox position they
	// advance to (PositionsTopic); read_committed consumers see every
	// record once. See the package documentation.
	DeliveryExactlyOnce = "exactly_once"
)

// KafkaConfig is the `kafka` section: the producer and the outboxes.
type KafkaConfig struct {
	// Brokers are the seed brokers, host:port. Empty turns forwarding off
	// (the outboxes still fill, within their quotas).
	Brokers []string `yaml:"brokers"`
	// ClientID names the producer to the brokers (their logs, quotas); the
	// gateway sets its gateway id when this is empty.
	ClientID string `yaml:"client_id"`
	Topics   Topics `yaml:"topics"`
	// Compression is zstd, lz4, snappy, gzip or none.
	Compression string `yaml:"compression"`
	// Linger is how long a partition's batch waits for more records.
	Linger time.Duration `yaml:"linger"`
	// BatchMaxBytes bounds one record batch before compression (kgo's
	// ProducerBatchMaxBytes, Kafka's max.message.bytes). A record larger
	// than it can never be sent: it is dropped and counted.
	BatchMaxBytes wal.ByteSize `yaml:"batch_max_bytes"`
	// RequestTimeout bounds one delivery attempt of a record: from the
	// moment it is handed to the producer until Kafka acknowledges it. Past
	// it the attempt fails (even when the broker went silent) and the
	// record is sent again after a backoff.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	Backoff        Backoff       `yaml:"backoff"`
	TLS            TLSConfig     `yaml:"tls"`
	SASL           SASLConfig    `yaml:"sasl"`
	Outbox         OutboxConfigs `yaml:"outbox"`
	// Delivery is at_least_once (the default, also when empty) or
	// exactly_once.
	Delivery string `yaml:"delivery"`
	// PositionsTopic holds, in exactly_once mode, the outbox position each
	// transaction committed, keyed by client id and outbox kind; created
	// (compacted, one partition) when missing.
	PositionsTopic string `yaml:"positions_topic"`
}

// DefaultKafkaConfig returns the defaults: forwarding off until brokers are
// set, topics runnel.summaries, runnel.alerts and runnel.sketches, zstd,
// 50 ms linger, 1 MiB batches, 30 s per attempt, backoff 500 ms to 30 s,
// outboxes of 64 MiB (summaries, sketches) and 128 MiB (alerts, kept
// longest), all drop_oldest.
func DefaultKafkaConfig() KafkaConfig {
	return KafkaConfig{
		Topics:         Topics{Summaries: "runnel.summaries", Alerts: "runnel.alerts", Sketches: "runnel.sketches"},
		Compression:    "zstd",
		Linger:         50 * time.Millisecond,
		BatchMaxBytes:  1 * wal.MiB,
		RequestTimeout: 30 * time.Second,
		Backoff:        Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second},
		Delivery:       DeliveryAtLeastOnce,
		PositionsTopic: "runnel.positions",
		Outbox: OutboxConfigs{
			Summaries: OutboxConfig{MaxBytes: 64 * wal.MiB, Policy: PolicyDropOldest},
			Alerts:    OutboxConfig{MaxBytes: 128 * wal.MiB, Policy: PolicyDropOldest},
			Sketches:  OutboxConfig{MaxBytes: 64 * wal.MiB, Policy: PolicyDropOldest},
		},
	}
}

// ConfigError is one invalid setting. Key is the setting's path relative to
// the `kafka` section (`sasl.mechanism`, `outbox.alerts.max_bytes`), so the
// gateway can point at the line that set it.
type ConfigError struct {
	Key string
	Msg string
}

func (e *ConfigError) Error() string     { return e.Key + ": " + e.Msg }
func (e *ConfigError) ConfigKey() string { return e.Key }

type configErrors []error

func (e *configErrors) add(key, format string, args ...any) {
	*e = append(*e, &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Bounds of an outbox quota. The lower bound keeps the quota at least 16
// segments of the smallest size the log allows (64 KiB), so dropping or
// releasing one segment is a small step; the upper one is a sanity bound.
const (
	minOutboxBytes = 1 * wal.MiB
	maxOutboxBytes = 1 << 40
)

// Validate reports every invalid setting at once, joined with errors.Join;
// each is a *ConfigError.
func (c OutboxConfig) Validate() error {
	var errs configErrors
	c.validate("", &errs)
	return errors.Join(errs...)
}

func (c OutboxConfig) validate(prefix string, errs *configErrors) {
	if c.MaxBytes < minOutboxBytes || c.MaxBytes > maxOutboxBytes {
		errs.add(prefix+"max_bytes", "%s is out of range %s to 1TiB (the outbox drops or releases whole segments of up to 1MiB)", c.MaxBytes, wal.ByteSize(minOutboxBytes))
	}
	switch c.Policy {
	case "", PolicyDropOldest, PolicyBlock:
	default:
		errs.add(prefix+"policy", "%q is not one of %s, %s", c.Policy, PolicyDropOldest, PolicyBlock)
	}
}

// Validate reports every invalid setting at once, joined with errors.Join;
// each is a *ConfigError. It does no I/O: New reads the TLS files.
func (c KafkaConfig) Validate() error {
	var errs configErrors
	for i, b := range c.Brokers {
		if err := checkHostPort(b); err != nil {
			errs.add(fmt.Sprintf("brokers[%d]", i), "%q: %v", b, err)
		}
	}
	// kgo refuses client ids over 256 bytes (its request header limit).
	if len(c.ClientID) > 256 {
		errs.add("client_id", "%d bytes is longer than 256", len(c.ClientID))
	}
	for _, t := range []struct{ key, name string }{
		{"topics.summaries", c.Topics.Summaries}, {"topics.alerts", c.Topics.Alerts}, {"topics.sketches", c.Topics.Sketches},
	} {
		if err := checkTopic(t.name); err != nil {
			errs.add(t.key, "%q: %v", t.name, err)
		}
	}
	if !contains(compressions, c.Compression) {
		errs.add("compression", "%q is not one of %s", c.Compression, strings.Join(compressions, ", "))
	}
	// Bounds, each with its reason.
	if c.Linger < 0 || c.Linger > 10*time.Second {
		errs.add("linger", "%s is out of range 0 to 10s (every record waits up to this long)", c.Linger)
	}
	if c.BatchMaxBytes < 16*wal.KiB || c.BatchMaxBytes > 64*wal.MiB {
		errs.add("batch_max_bytes", "%s is out of range 16KiB to 64MiB (records larger than a batch are dropped; records in flight are held in memory)", c.BatchMaxBytes)
	}
	if c.RequestTimeout < 100*time.Millisecond || c.RequestTimeout > 10*time.Minute {
		errs.add("request_timeout", "%s is out of range 100ms to 10m (kgo's produce timeout floor; a silent broker holds records this long)", c.RequestTimeout)
	}
	if c.Backoff.Initial < time.Millisecond || c.Backoff.Initial > time.Minute {
		errs.add("backoff.initial", "%s is out of range 1ms to 1m", c.Backoff.Initial)
	}
	if c.Backoff.Max < c.Backoff.Initial || c.Backoff.Max > time.Hour {
		errs.add("backoff.max", "%s is out of range: from backoff.initial (%s) to 1h", c.Backoff.Max, c.Backoff.Initial)
	}
	switch c.Delivery {
	case "", DeliveryAtLeastOnce, DeliveryExactlyOnce:
	default:
		errs.add("delivery", "%q is not one of %s, %s", c.Delivery, DeliveryAtLeastOnce, DeliveryExactlyOnce)
	}
	if c.Delivery == DeliveryExactlyOnce {
		if err := checkTopic(c.PositionsTopic); err != nil {
			errs.add("positions_topic", "%q: %v", c.PositionsTopic, err)
		}
	}
	c.TLS.validate(&errs)
	c.SASL.validate(&errs)
	c.Outbox.Summaries.validate("outbox.summaries.", &errs)
	c.Outbox.Alerts.validate("outbox.alerts.", &errs)
	c.Outbox.Sketches.validate("outbox.sketches.", &errs)
	return errors.Join(errs...)
}

func (t TLSConfig) validate(errs *configErrors) {
	if !t.Enabled {
		for _, f := range []struct{ key, v string }{{"tls.ca_file", t.CAFile}, {"tls.cert_file", t.CertFile}, {"tls.key_file", t.KeyFile}, {"tls.server_name", t.ServerName}} {
			if f.v != "" {
				errs.add(f.key, "is set but tls.enabled is false: set tls.enabled: true, or remove it")
			}
		}
		if t.InsecureSkipVerify {
			errs.add("tls.insecure_skip_verify", "is set but tls.enabled is false")
		}
		return
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs.add("tls.cert_file", "cert_file and key_file go together: set both for a client certificate, or neither")
	}
}

func (s SASLConfig) validate(errs *configErrors) {
	switch s.Mechanism {
	case "":
		if s.Username != "" || s.Password != "" {
			errs.add("sasl.mechanism", "is empty but a username or password is set: choose %s, %s or %s", SASLPlain, SASLScramSHA256, SASLScramSHA512)
		}
		return
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
	default:
		errs.add("sasl.mechanism", "%q is not one of %s, %s, %s (or empty for none)", s.Mechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512)
	}
	if s.Username == "" {
		errs.add("sasl.username", "is empty; mechanism %s needs one", s.Mechanism)
	}
	if s.Password == "" {
		errs.add("sasl.password", "is empty; mechanism %s needs one (password or password_file)", s.Mechanism)
	}
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port")
	}
	if host == "" {
		return errors.New("empty host")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q is not 1 to 65535", port)
	}
	return nil
}

// checkTopic applies Kafka's topic name rules (Topic.validate in Kafka's
// common/internals/Topic.java): 1 to 249 characters of [a-zA-Z0-9._-], not
// "." or "..".
func checkTopic(t string) error {
	if t == "" {
		return errors.New("empty topic name")
	}
	if len(t) > 249 {
		return fmt.Errorf("%d characters is longer than Kafka's 249", len(t))
	}
	if t == "." || t == ".." {
		return errors.New(`"." and ".." are not topic names`)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("character %q at %d is not allowed (only a-z, A-Z, 0-9, '.', '_', '-')", c, i)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
