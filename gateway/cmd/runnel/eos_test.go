package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
)

// tortureLong is read before TestMain clears the RUNNEL_* variables.
var tortureLong = os.Getenv("RUNNEL_TORTURE") == "long"

// keyedID is one outbox record: its id and Kafka key.
type keyedID struct{ id, key string }

// outboxKeyed reads the records of one outbox kind still on disk, in
// order; none when the outbox does not exist.
func outboxKeyed(t *testing.T, dataDir, kind string) []keyedID {
	t.Helper()
	dir := filepath.Join(dataDir, "outbox", kind, "log")
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	l, err := wal.Open(dir, wal.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var out []keyedID
	r := l.NewReader(1)
	for r.Next() {
		rec, _, err := forward.DecodeRecord(r.Record())
		if err != nil {
			t.Fatalf("outbox %s record %d: %v", kind, r.Index(), err)
		}
		out = append(out, keyedID{rec.ID, string(rec.Key)})
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// topicRecord is one record consumed back from Kafka.
type topicRecord struct {
	topic, id, key string
}

// consumeAll reads the three topics from the start, with the isolation
// level given, until ctx ends; a record re-read at the same offset (after
// a leader move) is kept once.
func consumeAll(ctx context.Context, t *testing.T, addrs []string, committed bool, mu *sync.Mutex, out *[]topicRecord) {
	opts := []kgo.Opt{kgo.SeedBrokers(addrs...), kgo.ConsumeTopics("runnel.summaries", "runnel.alerts", "runnel.sketches"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200 * time.Millisecond)}
	if committed {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	seen := map[string]bool{}
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			k := fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)
			if seen[k] {
				return
			}
			seen[k] = true
			var id string
			for _, h := range r.Headers {
				if h.Key == forward.IDHeader {
					id = string(h.Value)
				}
			}
			mu.Lock()
			*out = append(*out, topicRecord{topic: r.Topic, id: id, key: string(r.Key)})
			mu.Unlock()
		})
	}
}

// tortureResult is what a crash run left in Kafka.
type tortureResult struct {
	kills, want, consumed, duplicates, missing, outOfOrder int
	beforeDrain                                            int // records consumed during the crashing runs
	pause                                                  time.Duration
}

// runForwardTorture feeds a fixed stream to the built gateway forwarding to
// a 3-broker kfake in the given delivery mode, SIGKILLs it at least 20
// times at random moments and pauses the brokers (no answers) once in the
// middle, then lets a last run drain the outboxes; it counts, against an
// uninterrupted reference run, what a consumer (read_committed in
// exactly_once mode) got.
func runForwardTorture(t *testing.T, mode string) tortureResult {
	bin, env := binary(t)
	const batches, chunk = 3000, 150
	ref, crashed := t.TempDir(), t.TempDir()
	writeStream(t, ref, 0, batches)
	extra := []string{"RUNNEL_CHECKPOINT_INTERVAL=50ms", "RUNNEL_WINDOWS_IDLE_TIMEOUT=1h", "RUNNEL_WINDOWS_SERIES_TTL=2h"}
	runToReady(t, bin, append(loopbackEnv(env, ref), extra...))
	want := outboxKeyed(t, ref, forward.KindSummaries)
	if len(want) < 100 {
		t.Fatalf("the uninterrupted run emitted only %d summaries", len(want))
	}
	refPos := map[string]int{}
	for i, r := range want {
		refPos[r.id] = i
	}

	kafka, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, "runnel.summaries", "runnel.alerts", "runnel.sketches"))
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	var paused atomic.Bool
	kafka.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		kafka.KeepControl()
		return nil, nil, paused.Load() // no answer while paused
	})
	addrs := kafka.ListenAddrs()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu       sync.Mutex
		got      []topicRecord
		consumed sync.WaitGroup
	)
	consumed.Go(func() { consumeAll(ctx, t, addrs, mode == forward.DeliveryExactlyOnce, &mu, &got) })
	defer func() { cancel(); consumed.Wait() }()

	pause := 5 * time.Second
	if tortureLong {
		pause = 30 * time.Second
	}
	crashEnv := append(loopbackEnv(env, crashed), append(extra, "RUNNEL_KAFKA_BROKERS="+strings.Join(addrs, ","),
		"RUNNEL_KAFKA_LINGER=5ms", "RUNNEL_KAFKA_REQUEST_TIMEOUT=2s", "RUNNEL_KAFKA_BACKOFF_MAX=1s", "RUNNEL_KAFKA_DELIVERY="+mode)...)
	rng := rand.New(rand.NewPCG(7, 7))
	res := tortureResult{want: len(want), pause: pause}
	written := 0
	deadline := time.Now().Add(3*time.Minute + pause)
	// Kills 0-9 with Kafka up, then the brokers stop answering (kills go
	// on during the pause), then at least 10 more kills with Kafka back.
	var pauseEnd time.Time
	afterPause := 0
	for res.kills < 20 || written < batches || pauseEnd.IsZero() || time.Now().Before(pauseEnd) || afterPause < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d kills within the time bound", res.kills)
		}
		if written < batches {
			writeStream(t, crashed, written, min(written+chunk, batches))
			written = min(written+chunk, batches)
		}
		switch {
		case res.kills == 10 && pauseEnd.IsZero():
			paused.Store(true)
			pauseEnd = time.Now().Add(pause)
		case !pauseEnd.IsZero() && time.Now().After(pauseEnd):
			paused.Store(false)
			afterPause++
		}
		p, _ := startGateway(t, []string{bin}, crashEnv)
		timer := time.NewTimer(time.Duration(100+rng.IntN(900)) * time.Millisecond)
		select {
		case <-timer.C:
		case <-p.waited:
		}
		p.kill()
		res.kills++
	}
	paused.Store(false)
	mu.Lock()
	res.beforeDrain = len(got)
	mu.Unlock()
	if res.beforeDrain < len(want)/4 {
		t.Fatalf("only %d of %d summaries reached Kafka during the %d crashing runs: the kills did not hit forwarding", res.beforeDrain, len(want), res.kills)
	}

	// A last run drains the outboxes.
	p, _ := startGateway(t, []string{bin}, crashEnv)
	testutil.WaitFor(t, 90*time.Second, func() (bool, string) {
		mu.Lock()
		have := map[string]bool{}
		for _, r := range got {
			have[r.id] = true
		}
		n := len(got)
		mu.Unlock()
		missing := 0
		for _, w := range want {
			if !have[w.id] {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("after %d kills, %d of %d summaries not in Kafka (%d records consumed)", res.kills, missing, len(want), n)
	})
	p.stop()

	mu.Lock()
	defer mu.Unlock()
	res.consumed = len(got)
	count := map[string]int{}
	last := map[string]int{} // topic/key -> reference position of the last first-seen summary
	for _, r := range got {
		count[r.topic+"/"+r.id]++
		if r.topic != "runnel.summaries" || count[r.topic+"/"+r.id] > 1 {
			continue
		}
		pos, ok := refPos[r.id]
		if !ok {
			t.Errorf("summary %s in Kafka was never emitted by the uninterrupted run", r.id)
			continue
		}
		k := r.topic + "/" + r.key
		if prev, ok := last[k]; ok && pos < prev {
			res.outOfOrder++
		}
		last[k] = pos
	}
	for _, n := range count {
		if n > 1 {
			res.duplicates += n - 1
		}
	}
	for _, w := range want {
		if count["runnel.summaries/"+w.id] == 0 {
			res.missing++
		}
	}
	return res
}

// TestForwardExactlyOnceThroughCrashes: with kafka.delivery exactly_once,
// 20+ SIGKILLs of the built gateway at random moments and a pause of the
// brokers (5s; 30s with RUNNEL_TORTURE=long) leave every summary in Kafka
// exactly once for a read_committed consumer of the three topics, in
// per-key order.
func TestForwardExactlyOnceThroughCrashes(t *testing.T) {
	res := runForwardTorture(t, forward.DeliveryExactlyOnce)
	t.Logf("exactly_once: %d kills, %s pause; %d summaries expected, %d records consumed (read_committed; %d during the crashing runs); %d duplicates, %d missing, %d out of order",
		res.kills, res.pause, res.want, res.consumed, res.beforeDrain, res.duplicates, res.missing, res.outOfOrder)
	if res.duplicates != 0 || res.missing != 0 || res.outOfOrder != 0 {
		t.Errorf("not exactly once: %d duplicates, %d missing, %d out of order", res.duplicates, res.missing, res.outOfOrder)
	}
}

// TestForwardAtLeastOnceThroughCrashesDuplicates is the same run in
// at_least_once mode, for comparison: nothing missing, and the duplicates
// it leaves are reported.
func TestForwardAtLeastOnceThroughCrashesDuplicates(t *testing.T) {
	res := runForwardTorture(t, forward.DeliveryAtLeastOnce)
	t.Logf("at_least_once: %d kills, %s pause; %d summaries expected, %d records consumed (%d during the crashing runs); %d duplicates, %d missing, %d out of order (first copies)",
		res.kills, res.pause, res.want, res.consumed, res.beforeDrain, res.duplicates, res.missing, res.outOfOrder)
	if res.missing != 0 {
		t.Errorf("%d summaries missing", res.missing)
	}
}
