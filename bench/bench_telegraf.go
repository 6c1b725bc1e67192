package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	firmwaresim "github.com/runnel-iot/runnel/firmware-sim"
)

// The telegraf phase runs the mixed workload through the peer the issue
// compares against: the same QoS 1 load published to mosquitto, consumed
// by Telegraf (inputs.mqtt_consumer, JSON with the event time from "ts",
// the device from the topic), 10 s basicstats windows, outputs.kafka to
// kfake. Telegraf acknowledges a message before it is stored anywhere and
// mosquitto keeps its queue in memory: the comparison is of CPU for the
// same stream, not of guarantees. It runs only when make bench is given
// both binaries (make telegraf builds one from the Go module proxy; the
// mosquitto Debian package has the other).

const telegrafTopic = "telegraf.summaries"

// telegrafConfig is Telegraf's config for the phase: %s are mosquitto's
// and kfake's addresses. Aggregation keeps late metrics (grace): a
// consumer behind its broker sees readings older than the period, which
// Runnel's windows count as well.
const telegrafConfig = `[agent]
  interval = "10s"
  round_interval = true
  flush_interval = "1s"
  metric_batch_size = 10000
  metric_buffer_limit = 1000000
  omit_hostname = true

[[inputs.mqtt_consumer]]
  servers = ["tcp://%s"]
  topics = ["telemetry/+/env"]
  qos = 1
  client_id = "telegraf-bench"
  max_undelivered_messages = 1000
  data_format = "json"
  json_time_key = "ts"
  json_time_format = "unix_ms"
  name_override = "env"
  [[inputs.mqtt_consumer.topic_parsing]]
    topic = "telemetry/+/env"
    tags = "_/device/_"

[[aggregators.basicstats]]
  period = "10s"
  grace = "1h"
  drop_original = true
  stats = ["count", "min", "max", "mean", "stdev", "sum"]

[[outputs.kafka]]
  brokers = ["%s"]
  topic = "` + telegrafTopic + `"
  data_format = "json"
`

// mosquittoConfig: one loopback listener (%s: its port), an unbounded
// in-memory queue and window for the consumer, so nothing is dropped
// while Telegraf is behind.
const mosquittoConfig = `listener %s 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 1000
log_dest stdout
`

func (b *bench) phaseTelegraf(ctx context.Context, r *PhaseResult) error {
	if b.o.Telegraf == "" || b.o.Mosquitto == "" {
		r.Note = "skipped: needs -telegraf and -mosquitto (make telegraf builds the first; apt install mosquitto)"
		r.Skipped = true
		return nil
	}
	r.Note = "the mqtt-qos1 load to mosquitto; Telegraf consumes it (QoS 1), 10s basicstats windows, outputs.kafka to kfake; " +
		"CPU per message consumed, Telegraf alone and with mosquitto, over the whole run (load and drain)"
	k, err := firmwaresim.StartKafka(firmwaresim.KafkaOptions{Addr: "127.0.0.1:0", Topics: append([]string{telegrafTopic}, firmwaresim.DefaultKafkaTopics...)})
	if err != nil {
		return err
	}
	defer k.Close()
	counter, err := startTelegrafCounter(k.Addr())
	if err != nil {
		return err
	}
	defer counter.close()
	dir := b.targetDir(r.Name, "telegraf")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	mconf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(mconf, fmt.Appendf(nil, mosquittoConfig, port), 0o644); err != nil {
		return err
	}
	mq, err := startChild("mosquitto", b.o.Mosquitto, dir, []string{"-c", mconf}, nil)
	if err != nil {
		return err
	}
	defer mq.stop()
	if err := waitAccepting(ctx, mq, addr); err != nil {
		return err
	}
	tconf := filepath.Join(dir, "telegraf.conf")
	if err := os.WriteFile(tconf, fmt.Appendf(nil, telegrafConfig, addr, k.Addr()), 0o644); err != nil {
		return err
	}
	tg, err := startChild("telegraf", b.o.Telegraf, dir, []string{"--config", tconf}, nil)
	if err != nil {
		return err
	}
	return withChild(tg, nil, func(tg *child) error {
		if err := waitLog(ctx, tg, "Connected [tcp://", 30*time.Second); err != nil {
			return err
		}
		t0, err := tg.usage()
		if err != nil {
			return err
		}
		m0, err := mq.usage()
		if err != nil {
			return err
		}
		l, err := startMQTTLoad(ctx, b.mqttConfig(addr, 1))
		if err != nil {
			return err
		}
		sp, err := b.sustain(ctx, tg, l, nil)
		l.finish()
		if err != nil {
			return err
		}
		acked := l.acked.Load()
		// The drain: Telegraf goes on consuming mosquitto's backlog; done
		// when every acknowledged message is counted, or when the count
		// has not moved for two windows (10 s each) and a flush.
		consumed, err := counter.waitSettled(ctx, tg, uint64(acked), 25*time.Second, 3*time.Minute)
		if err != nil {
			return err
		}
		t1, err := tg.usage()
		if err != nil {
			return err
		}
		m1, err := mq.usage()
		if err != nil {
			return err
		}
		r.DurationS = sp.dur.Seconds()
		r.set("published_acked_per_s", sp.perS(float64(sp.acked)))
		r.set("acked_total", float64(acked))
		r.set("consumed_total", float64(consumed))
		tcpu := t1.cpuS - t0.cpuS
		r.set("cpu_s_per_100k_msgs", tcpu/float64(consumed)*1e5)
		r.set("with_mosquitto_cpu_s_per_100k_msgs", (tcpu+m1.cpuS-m0.cpuS)/float64(consumed)*1e5)
		r.set("peak_rss_mib", mib(t1.hwmBytes))
		r.set("mosquitto_peak_rss_mib", mib(m1.hwmBytes))
		if consumed > 0 {
			b.telegrafCPUPer100k = tcpu / float64(consumed) * 1e5
		}
		return nil
	})
}

// telegrafCounter sums the count of the basicstats records Telegraf
// writes to Kafka: the messages it consumed and aggregated.
type telegrafCounter struct {
	cl      *kgo.Client
	stop    context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	count   uint64
	changed time.Time
}

func startTelegrafCounter(addr string) (*telegrafCounter, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(telegrafTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("telegraf summary consumer: %w", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	c := &telegrafCounter{cl: cl, stop: stop, done: make(chan struct{}), changed: time.Now()}
	go func() {
		defer close(c.done)
		for ctx.Err() == nil {
			c.cl.PollFetches(ctx).EachRecord(c.add)
		}
	}()
	return c, nil
}

func (c *telegrafCounter) add(r *kgo.Record) {
	var v struct {
		Fields map[string]float64 `json:"fields"`
	}
	if json.Unmarshal(r.Value, &v) != nil {
		return
	}
	n, ok := v.Fields["temp_count"]
	if !ok || n <= 0 || math.IsNaN(n) {
		return
	}
	c.mu.Lock()
	c.count += uint64(n)
	c.changed = time.Now()
	c.mu.Unlock()
}

func (c *telegrafCounter) get() (uint64, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count, c.changed
}

// waitSettled waits until the count reaches want, or has not moved for
// quiet, at most limit; it fails if t exits.
func (c *telegrafCounter) waitSettled(ctx context.Context, t *child, want uint64, quiet, limit time.Duration) (uint64, error) {
	deadline := time.Now().Add(limit)
	for {
		n, changed := c.get()
		if n >= want || time.Since(changed) > quiet || time.Now().After(deadline) {
			return n, nil
		}
		if err := pause(ctx, t, 200*time.Millisecond); err != nil { // poll interval
			return n, err
		}
	}
}

func (c *telegrafCounter) close() {
	c.stop()
	<-c.done
	c.cl.Close()
}

// waitLog waits until c's log holds s.
func waitLog(ctx context.Context, c *child, s string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if data, err := os.ReadFile(c.logPath); err == nil && bytes.Contains(data, []byte(s)) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %q in its log within %v (log: %s)", c.name, s, limit, c.logPath)
		}
		if err := pause(ctx, c, 100*time.Millisecond); err != nil { // poll interval
			return err
		}
	}
}
