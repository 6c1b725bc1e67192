package forward

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger logs to the test output with -v when RUNNEL_TEST_LOG is set.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("RUNNEL_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var testTopics = []string{"runnel.summaries", "runnel.alerts", "runnel.sketches"}

// newCluster starts kfake on 127.0.0.1 with the three topics, 3 partitions
// each.
func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.SeedTopics(3, testTopics...)}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// testConfig is a config with timeouts short enough for tests.
func testConfig(brokers []string) KafkaConfig {
	c := DefaultKafkaConfig()
	c.Brokers = brokers
	c.ClientID = "runnel-test"
	c.Linger = 5 * time.Millisecond
	c.RequestTimeout = 2 * time.Second
	c.Backoff = Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	return c
}

func openTestOutbox(t testing.TB, dir, kind string, cfg OutboxConfig) *Outbox {
	t.Helper()
	o, err := OpenOutbox(dir, kind, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("open outbox: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

// running is a Forwarder running in the background.
type running struct {
	f      *Forwarder
	cancel context.CancelFunc
	done   chan error
}

func startForwarder(t testing.TB, cfg KafkaConfig, outboxes ...*Outbox) *running {
	t.Helper()
	f, err := New(cfg, outboxes, testLogger(t))
	if err != nil {
		t.Fatalf("new forwarder: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{f: f, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- f.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and waits for it; idempotent.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("Run did not return within 15s of cancel")
	}
}

// waitFor is testutil.WaitFor, naming what it waits for.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	testutil.WaitFor(t, timeout, func() (bool, string) {
		ok, state := cond()
		return ok, what + ": " + state
	})
}

// seqRecord is record number seq of a test stream: key k<seq%keys>, id
// <prefix>-<seq>, a JSON value and a header.
func seqRecord(prefix string, seq, keys int) Record {
	return Record{
		Key:     []byte("k" + strconv.Itoa(seq%keys)),
		Value:   fmt.Appendf(nil, `{"seq":%d,"mean":%g}`, seq, float64(seq)/3),
		Headers: []Header{{Key: "schema", Value: []byte("summary/v1")}},
		ID:      fmt.Sprintf("%s-%07d", prefix, seq),
		Origin:  []byte(strconv.Itoa(seq)),
	}
}

func appendSeq(t testing.TB, o *Outbox, prefix string, from, to, keys, batch int) {
	t.Helper()
	for i := from; i < to; i += batch {
		recs := make([]Record, 0, batch)
		for j := i; j < min(i+batch, to); j++ {
			recs = append(recs, seqRecord(prefix, j, keys))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := o.Append(ctx, recs)
		cancel()
		if err != nil {
			t.Fatalf("append %d-%d: %v", i, i+len(recs)-1, err)
		}
	}
}

// got is one consumed record.
type got struct {
	id        string
	topic     string
	key       string
	value     string
	headers   []kgo.RecordHeader
	partition int32
	offset    int64
}

// consumer reads topics from the start, in the background.
type consumer struct {
	cl   *kgo.Client
	mu   sync.Mutex
	recs []got
	seen map[string]bool // topic/partition/offset: a consumer may re-read after a leader move
	stop context.CancelFunc
	done chan struct{}
}

func startConsumer(t testing.TB, brokers []string, topics ...string) *consumer {
	t.Helper()
	return startConsumerWith(t, brokers, nil, topics...)
}

// startConsumerWith is startConsumer with extra client options (an
// isolation level).
func startConsumerWith(t testing.TB, brokers []string, opts []kgo.Opt, topics ...string) *consumer {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{cl: cl, stop: cancel, done: make(chan struct{}), seen: map[string]bool{}}
	go func() {
		defer close(c.done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				g := got{topic: r.Topic, key: string(r.Key), value: string(r.Value), headers: r.Headers, partition: r.Partition, offset: r.Offset}
				for _, h := range r.Headers {
					if h.Key == IDHeader {
						g.id = string(h.Value)
					}
				}
				c.mu.Lock()
				if k := fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset); !c.seen[k] {
					c.seen[k] = true
					c.recs = append(c.recs, g)
				}
				c.mu.Unlock()
			})
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *consumer) close() {
	c.stop()
	<-c.done
	c.cl.Close()
}

func (c *consumer) snapshot() []got {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]got(nil), c.recs...)
}

// waitIDs waits until every id prefix-<from..to-1> was consumed.
func (c *consumer) waitIDs(t testing.TB, timeout time.Duration, prefix string, from, to int) []got {
	t.Helper()
	var recs []got
	waitFor(t, timeout, fmt.Sprintf("ids %s-%d..%d", prefix, from, to-1), func() (bool, string) {
		recs = c.snapshot()
		missing := missingIDs(recs, prefix, from, to)
		if len(missing) == 0 {
			return true, ""
		}
		return false, fmt.Sprintf("%d consumed, %d missing (first %s)", len(recs), len(missing), missing[0])
	})
	return recs
}

func missingIDs(recs []got, prefix string, from, to int) []string {
	seen := make(map[string]bool, len(recs))
	for _, r := range recs {
		seen[r.id] = true
	}
	var missing []string
	for i := from; i < to; i++ {
		id := fmt.Sprintf("%s-%07d", prefix, i)
		if !seen[id] {
			missing = append(missing, id)
		}
	}
	return missing
}

// checkKeyOrder checks that, per key, the first occurrences of ids appear
// in outbox order (ids carry their sequence number).
func checkKeyOrder(t testing.TB, recs []got) {
	t.Helper()
	sorted := append([]got(nil), recs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].topic != sorted[j].topic {
			return sorted[i].topic < sorted[j].topic
		}
		if sorted[i].partition != sorted[j].partition {
			return sorted[i].partition < sorted[j].partition
		}
		return sorted[i].offset < sorted[j].offset
	})
	partOf := map[string]int32{}
	seen := map[string]bool{}
	last := map[string]int{}
	for _, r := range sorted {
		if r.key == "" {
			continue // keyless: no order promised
		}
		k := r.topic + "/" + r.key
		if p, ok := partOf[k]; ok && p != r.partition {
			t.Fatalf("key %s in partitions %d and %d", k, p, r.partition)
		}
		partOf[k] = r.partition
		if seen[r.id] {
			continue
		}
		seen[r.id] = true
		seq, err := strconv.Atoi(r.id[strings.LastIndexByte(r.id, '-')+1:])
		if err != nil {
			t.Fatalf("id %q: %v", r.id, err)
		}
		if prev, ok := last[k]; ok && seq < prev {
			t.Fatalf("key %s: first occurrence of seq %d after seq %d (partition %d offset %d)", k, seq, prev, r.partition, r.offset)
		}
		last[k] = seq
	}
}

// duplicates returns the ids consumed more than once.
func duplicates(recs []got) map[string]int {
	n := map[string]int{}
	for _, r := range recs {
		n[r.id]++
	}
	d := map[string]int{}
	for id, c := range n {
		if c > 1 {
			d[id] = c
		}
	}
	return d
}

func smallOutbox(policy string) OutboxConfig {
	return OutboxConfig{MaxBytes: 1 * wal.MiB, Policy: policy}
}
