package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/runnel-iot/runnel/forward"
)

// TestReadyzSilentUplink: when Kafka goes silent (connections open, no
// answers: a paused broker) /readyz says the uplink is down within 10s,
// not after the 30s request timeout, and ok again once Kafka answers; the
// probe metrics count it (issue 14, problem 4).
func TestReadyzSilentUplink(t *testing.T) {
	c, err := kfake.NewCluster(kfake.SeedTopics(1, "runnel.summaries", "runnel.alerts", "runnel.sketches"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := testConfig(t)
	cfg.Kafka.Brokers = c.ListenAddrs() // request_timeout stays at its default, 30s
	g := runGateway(t, cfg)
	client := &http.Client{Timeout: 5 * time.Second}
	readyz := func() (int, string) {
		code, body, err := get(client, "http://"+g.Addr()+"/readyz")
		return code, fmt.Sprint(strings.TrimSpace(body), err)
	}
	waitFor(t, 15*time.Second, func() (bool, string) {
		code, body := readyz()
		return code == http.StatusOK && strings.Contains(body, `"uplink":"ok"`), fmt.Sprint(code, body)
	})

	var silent atomic.Bool
	c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return nil, nil, silent.Load() // handled without an answer while silent
	})
	silent.Store(true)
	start := time.Now()
	waitFor(t, 15*time.Second, func() (bool, string) {
		code, body := readyz()
		return code == http.StatusOK && strings.Contains(body, `"uplink":"down: probe: `), fmt.Sprint(code, body)
	})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("silent Kafka reported down after %s, want within 10s", d)
	}
	_, metrics, _ := get(client, "http://"+g.Addr()+"/metrics")
	if !strings.Contains(metrics, "runnel_forward_up 0\n") || strings.Contains(metrics, "runnel_forward_probe_failures_total 0\n") {
		t.Errorf("metrics while silent: want runnel_forward_up 0 and probe failures counted")
	}
	silent.Store(false)
	waitFor(t, 15*time.Second, func() (bool, string) {
		code, body := readyz()
		return code == http.StatusOK && strings.Contains(body, `"uplink":"ok"`), fmt.Sprint(code, body)
	})
}

// TestReadyzFenced: in exactly_once mode, a second producer with this
// gateway's transactional id (a second gateway process with the same id)
// fences it; /readyz then reports not ready with the reason, and the
// transaction metrics count it (issue 18).
func TestReadyzFenced(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(1, "runnel.summaries", "runnel.alerts", "runnel.sketches"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := testConfig(t)
	cfg.Kafka.Brokers = c.ListenAddrs()
	cfg.Kafka.Delivery = forward.DeliveryExactlyOnce
	g := runGateway(t, cfg)
	client := &http.Client{Timeout: 5 * time.Second}
	var sums *forward.Outbox
	for _, o := range g.outboxes {
		if o.Kind() == forward.KindSummaries {
			sums = o
		}
	}
	add := func(id string) {
		rec := forward.Record{Key: []byte("k"), Value: []byte(`{}`), ID: id}
		if err := sums.Append(context.Background(), []forward.Record{rec}); err != nil {
			t.Fatal(err)
		}
	}
	add("test-gw/one")
	waitFor(t, 15*time.Second, func() (bool, string) {
		_, m, _ := get(client, "http://"+g.Addr()+"/metrics")
		return strings.Contains(m, `runnel_forward_committed_position{kind="summaries"} 1`+"\n"), m
	})

	other, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.TransactionalID("runnel-test-gw-summaries"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, _, err := other.ProducerID(context.Background()); err != nil {
		t.Fatal(err)
	}
	add("test-gw/two")
	waitFor(t, 15*time.Second, func() (bool, string) {
		code, body, err := get(client, "http://"+g.Addr()+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "fenced"), fmt.Sprint(code, body, err)
	})
	_, m, _ := get(client, "http://"+g.Addr()+"/metrics")
	if !strings.Contains(m, "runnel_forward_transactions_fenced_total 1\n") || !strings.Contains(m, "runnel_forward_transactions_committed_total 1\n") {
		t.Errorf("metrics after fencing: want 1 committed, 1 fenced:\n%s", m)
	}
}
