package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/runnel-iot/runnel/internal/testutil"
)

// kafkaRecord is one summary consumed back from Kafka.
type kafkaRecord struct {
	id  string
	key string
	at  time.Time // when the test consumed it
}

// consumeSummaries reads runnel.summaries from the start until ctx ends.
func consumeSummaries(ctx context.Context, t *testing.T, addr string, mu *sync.Mutex, out *[]kafkaRecord) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("runnel.summaries"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) {
			var id, schema string
			for _, h := range r.Headers {
				switch h.Key {
				case "runnel-id":
					id = string(h.Value)
				case "runnel-schema":
					schema = string(h.Value)
				}
			}
			if id == "" || schema != "runnel.summary/v1" {
				t.Errorf("summary record without its id or schema headers: %v", r.Headers)
			}
			mu.Lock()
			*out = append(*out, kafkaRecord{id: id, key: string(r.Key), at: now})
			mu.Unlock()
		})
	}
}

// TestForwardThroughCrashes runs the built gateway forwarding to Kafka
// (kfake, in process, on a fixed loopback port) over a fixed stream fed a
// chunk at a time, and SIGKILLs it at random moments at least 10 times.
// At the end every summary an uninterrupted run emits is in Kafka, with
// its key and headers, and every duplicate is of a record first delivered
// just before a kill (at-least-once: what Kafka acknowledged after the
// last persisted position is sent again).
func TestForwardThroughCrashes(t *testing.T) {
	bin, env := binary(t)
	const batches, chunk = 3000, 300
	ref, crashed := t.TempDir(), t.TempDir()
	writeStream(t, ref, 0, batches)
	extra := []string{"RUNNEL_CHECKPOINT_INTERVAL=50ms", "RUNNEL_WINDOWS_IDLE_TIMEOUT=1h", "RUNNEL_WINDOWS_SERIES_TTL=2h"}
	runToReady(t, bin, append(loopbackEnv(env, ref), extra...))
	var want = map[string]string{} // id -> key
	for _, r := range outboxRecords(t, ref) {
		want[r[:32]] = ""
	}
	if len(want) < 100 {
		t.Fatalf("the uninterrupted run emitted only %d summaries", len(want))
	}

	kafka, err := kfake.NewCluster(kfake.Ports(0), kfake.SeedTopics(1, "runnel.summaries", "runnel.alerts", "runnel.sketches"))
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	addr := kafka.ListenAddrs()[0]
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu       sync.Mutex
		got      []kafkaRecord
		consumed sync.WaitGroup
	)
	consumed.Go(func() { consumeSummaries(ctx, t, addr, &mu, &got) })
	defer func() { cancel(); consumed.Wait() }()

	crashEnv := append(loopbackEnv(env, crashed), append(extra, "RUNNEL_KAFKA_BROKERS="+addr, "RUNNEL_KAFKA_LINGER=5ms")...)
	rng := rand.New(rand.NewPCG(7, 7))
	var kills []time.Time
	written := 0
	deadline := time.Now().Add(3 * time.Minute)
	for len(kills) < 10 || written < batches {
		if time.Now().After(deadline) {
			t.Fatalf("only %d kills within 3 minutes", len(kills))
		}
		if written < batches {
			writeStream(t, crashed, written, min(written+chunk, batches))
			written = min(written+chunk, batches)
		}
		p, _ := startGateway(t, []string{bin}, crashEnv)
		timer := time.NewTimer(time.Duration(50+rng.IntN(400)) * time.Millisecond)
		select {
		case <-timer.C:
		case <-p.waited:
		}
		p.kill()
		kills = append(kills, time.Now())
	}

	mu.Lock()
	before := len(got)
	mu.Unlock()
	if before < len(want)/4 {
		t.Fatalf("only %d of %d summaries reached Kafka during the %d crashing runs: the kills did not hit forwarding", before, len(want), len(kills))
	}
	// A last run drains the outbox.
	p, _ := startGateway(t, []string{bin}, crashEnv)
	testutil.WaitFor(t, 60*time.Second, func() (bool, string) {
		mu.Lock()
		have := map[string]bool{}
		for _, r := range got {
			have[r.id] = true
		}
		n := len(got)
		mu.Unlock()
		missing := 0
		for id := range want {
			if !have[id] {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("after %d kills, %d of %d summaries not in Kafka (%d records consumed)", len(kills), missing, len(want), n)
	})
	p.stop()

	mu.Lock()
	defer mu.Unlock()
	first := map[string]kafkaRecord{}
	dups, extra2 := 0, 0
	for _, r := range got {
		if _, ok := want[r.id]; !ok {
			extra2++
			continue
		}
		f, seen := first[r.id]
		if !seen {
			first[r.id] = r
			continue
		}
		dups++
		if f.key != r.key {
			t.Errorf("id %s sent with keys %q and %q", r.id, f.key, r.key)
		}
		// The first copy was consumed shortly before or after a kill.
		near := false
		for _, k := range kills {
			if f.at.After(k.Add(-2*time.Second)) && f.at.Before(k.Add(3*time.Second)) {
				near = true
				break
			}
		}
		if !near {
			t.Errorf("id %s duplicated, but its first copy (consumed %s) was not near any kill", r.id, f.at.Format(time.StampMilli))
		}
	}
	if extra2 > 0 {
		t.Errorf("%d records in Kafka that the uninterrupted run never emitted", extra2)
	}
	if dups >= len(want) {
		t.Errorf("%d duplicates for %d summaries: not at-least-once, at-least-twice", dups, len(want))
	}
	t.Logf("%d kills; %d summaries all in Kafka (%d during the crashing runs); %d duplicates, each near a kill", len(kills), len(want), before, dups)
}
