package forward

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

func TestDefaultKafkaConfigIsValid(t *testing.T) {
	c := DefaultKafkaConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Brokers = []string{"kafka-1:9092", "[::1]:9093"}
	c.TLS = TLSConfig{Enabled: true, CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"}
	c.SASL = SASLConfig{Mechanism: SASLScramSHA512, Username: "u", Password: "p"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if o, ok := c.Outbox.For(KindAlerts); !ok || o.MaxBytes != 128*wal.MiB {
		t.Errorf("alerts outbox default: %+v", o)
	}
}

func TestKafkaConfigValidate(t *testing.T) {
	f := func(name string, mod func(*KafkaConfig), keys ...string) {
		t.Run(name, func(t *testing.T) {
			c := DefaultKafkaConfig()
			mod(&c)
			err := c.Validate()
			var got []string
			for _, e := range unjoin(err) {
				var ce *ConfigError
				if !errors.As(e, &ce) {
					t.Fatalf("%v is not a ConfigError", e)
				}
				got = append(got, ce.ConfigKey())
			}
			slices.Sort(got)
			slices.Sort(keys)
			if !slices.Equal(got, keys) {
				t.Fatalf("keys %v, want %v (err: %v)", got, keys, err)
			}
		})
	}
	f("broker without port", func(c *KafkaConfig) { c.Brokers = []string{"ok:1", "kafka"} }, "brokers[1]")
	f("broker bad port", func(c *KafkaConfig) { c.Brokers = []string{"kafka:99999", ":9092"} }, "brokers[0]", "brokers[1]")
	f("topics", func(c *KafkaConfig) { c.Topics = Topics{Summaries: "", Alerts: "a/b", Sketches: ".."} },
		"topics.summaries", "topics.alerts", "topics.sketches")
	f("compression", func(c *KafkaConfig) { c.Compression = "brotli" }, "compression")
	f("bounds", func(c *KafkaConfig) {
		c.Linger = -1
		c.BatchMaxBytes = 1024
		c.RequestTimeout = time.Millisecond
		c.Backoff = Backoff{Initial: 0, Max: 2 * time.Hour}
	}, "linger", "batch_max_bytes", "request_timeout", "backoff.initial", "backoff.max")
	f("backoff max below initial", func(c *KafkaConfig) { c.Backoff = Backoff{Initial: time.Second, Max: time.Millisecond} }, "backoff.max")
	f("tls files without tls", func(c *KafkaConfig) { c.TLS = TLSConfig{CAFile: "x", InsecureSkipVerify: true} }, "tls.ca_file", "tls.insecure_skip_verify")
	f("tls cert without key", func(c *KafkaConfig) { c.TLS = TLSConfig{Enabled: true, CertFile: "x"} }, "tls.cert_file")
	f("sasl unknown", func(c *KafkaConfig) { c.SASL = SASLConfig{Mechanism: "GSSAPI", Username: "u", Password: "p"} }, "sasl.mechanism")
	f("sasl no credentials", func(c *KafkaConfig) { c.SASL = SASLConfig{Mechanism: SASLPlain} }, "sasl.username", "sasl.password")
	f("sasl credentials without mechanism", func(c *KafkaConfig) { c.SASL = SASLConfig{Username: "u"} }, "sasl.mechanism")
	f("outboxes", func(c *KafkaConfig) {
		c.Outbox.Alerts.MaxBytes = 1000
		c.Outbox.Sketches.Policy = "spill"
	}, "outbox.alerts.max_bytes", "outbox.sketches.policy")
	f("delivery", func(c *KafkaConfig) { c.Delivery = "at_most_once" }, "delivery")
	f("positions topic", func(c *KafkaConfig) {
		c.Delivery = DeliveryExactlyOnce
		c.PositionsTopic = "a b"
	}, "positions_topic")
	f("positions topic unused", func(c *KafkaConfig) { c.PositionsTopic = "" })
	f("client id", func(c *KafkaConfig) { c.ClientID = string(make([]byte, 300)) }, "client_id")
}

func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second}
	ceiling := func(n int) time.Duration {
		var got time.Duration
		backoffDelay(b, n, func(n int64) int64 { got = time.Duration(n - 1); return n - 1 })
		return got
	}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, 500 * time.Millisecond}, {2, time.Second}, {3, 2 * time.Second}, {7, 30 * time.Second}, {1000, 30 * time.Second}} {
		if got := ceiling(tc.n); got != tc.want {
			t.Errorf("ceiling after %d failures: %s, want %s", tc.n, got, tc.want)
		}
	}
	for range 1000 {
		if d := backoffDelay(b, 3, randInt64N); d < 0 || d > 2*time.Second {
			t.Fatalf("delay %s outside [0, 2s]", d)
		}
	}
	if d := backoffDelay(b, 3, func(int64) int64 { return 0 }); d != 0 {
		t.Errorf("full jitter may wait 0, got %s", d)
	}
}
