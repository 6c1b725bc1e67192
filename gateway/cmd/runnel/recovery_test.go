package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/wal"
)

// writeStream appends batches [from, to) of a fixed stream to a data dir's
// readings WAL: 40 devices, event times out of order by up to 3 s, fixed
// ingest stamps; batch i is the same whatever chunks it is written in, so
// every run of the gateway over the same batches must compute the same
// windows.
func writeStream(t *testing.T, dataDir string, from, to int) {
	t.Helper()
	l, err := wal.Open(filepath.Join(dataDir, "wal"), wal.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	base := int64(1_700_000_000_000_000_000)
	var enc wal.BatchEncoder
	var recs [][]byte
	for i := from; i < to; i++ {
		rng := rand.New(rand.NewPCG(42, uint64(i)))
		b := wal.Batch{IngestNs: base + int64(i)*50_000_000}
		for k := range 200 {
			dev := (i*7 + k) % 40
			jitter := int64(rng.IntN(3000)) * int64(time.Millisecond)
			b.Readings = append(b.Readings, wal.Reading{
				Series: fmt.Sprintf("env,device=dev-%02d,site=s%d", dev, dev%4),
				Field:  []string{"temp", "hum"}[k%2],
				Value:  float64(rng.IntN(1000)) / 10,
				TimeNs: b.IngestNs - jitter,
			})
		}
		recs = append(recs, enc.Append(nil, &b))
		if len(recs) == 50 || i == to-1 {
			if _, _, err := l.Append(t.Context(), recs); err != nil {
				t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
}

// outboxRecords returns the summaries outbox, one JSON record per string.
func outboxRecords(t *testing.T, dataDir string) []string {
	t.Helper()
	l, err := wal.Open(filepath.Join(dataDir, "outbox", "summaries", "log"), wal.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var out []string
	r := l.NewReader(1)
	for r.Next() {
		rec, _, err := forward.DecodeRecord(r.Record())
		if err != nil {
			t.Fatalf("outbox record %d: %v", r.Index(), err)
		}
		out = append(out, rec.ID+" "+string(rec.Value))
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// newestCheckpoint returns the newest checkpoint's data.
func newestCheckpoint(t *testing.T, dataDir string) (uint64, []byte) {
	t.Helper()
	c, err := wal.OpenCheckpoints(filepath.Join(dataDir, "checkpoints"), nil)
	if err != nil {
		t.Fatal(err)
	}
	i, data, _, err := c.Load()
	if err != nil {
		t.Fatal(err)
	}
	return i, data
}

// ckptIndex returns the index the newest valid checkpoint covers.
func ckptIndex(dataDir string) (uint64, []byte, bool, error) {
	c, err := wal.OpenCheckpoints(filepath.Join(dataDir, "checkpoints"), nil)
	if err != nil {
		return 0, nil, false, err
	}
	return c.Load()
}

// runToReady runs the gateway over dataDir until it has replayed the WAL,
// then stops it cleanly, and returns how long the replay took from start.
func runToReady(t *testing.T, bin string, env []string) time.Duration {
	t.Helper()
	start := time.Now()
	p, _ := startGateway(t, []string{bin}, env)
	p.waitLog("wal replay done")
	took := time.Since(start)
	p.stop()
	return took
}

// TestRecoveryIsExact SIGKILLs the gateway at random moments while it
// computes windows over a fixed stream, at least 20 times, restarting it
// each time: the closed windows it emitted over the whole run, and its
// final state, equal those of an uninterrupted run over the same stream.
func TestRecoveryIsExact(t *testing.T) {
	bin, env := binary(t)
	const batches, chunk = 8000, 400 // 1,600,000 readings, fed 80,000 at a time
	ref, crashed := t.TempDir(), t.TempDir()
	writeStream(t, ref, 0, batches)
	extra := []string{"RUNNEL_CHECKPOINT_INTERVAL=20ms", "RUNNEL_WINDOWS_IDLE_TIMEOUT=1h", "RUNNEL_WINDOWS_SERIES_TTL=2h"}

	runToReady(t, bin, append(loopbackEnv(env, ref), extra...))
	want := outboxRecords(t, ref)
	if len(want) < 100 {
		t.Fatalf("the uninterrupted run emitted only %d windows", len(want))
	}

	// The crashed run gets the same stream a chunk at a time: while the
	// gateway is down the next chunk lands in its WAL, and the restart must
	// recover, then is killed at a random moment while it processes it.
	rng := rand.New(rand.NewPCG(9, 9))
	crashEnv := append(loopbackEnv(env, crashed), extra...)
	kills, midway, written := 0, 0, 0
	deadline := time.Now().Add(3 * time.Minute)
	for kills < 20 || written < batches {
		if time.Now().After(deadline) {
			t.Fatalf("only %d kills within 3 minutes", kills)
		}
		if written < batches {
			writeStream(t, crashed, written, min(written+chunk, batches))
			written = min(written+chunk, batches)
		}
		// Started means recovered from the checkpoint; the chunk is being
		// processed now.
		p, _ := startGateway(t, []string{bin}, crashEnv)
		timer := time.NewTimer(time.Duration(rng.IntN(60)) * time.Millisecond)
		select {
		case <-timer.C:
		case <-p.waited:
		}
		p.kill()
		kills++
		if i, _, _, err := ckptIndex(crashed); err == nil && i > 0 && i < uint64(written) {
			midway++ // killed before it caught up: the restart recovers mid-stream
		}
	}
	if midway < 5 {
		t.Fatalf("only %d of %d kills landed before the gateway caught up; the test is not exercising recovery", midway, kills)
	}
	runToReady(t, bin, crashEnv)
	got := outboxRecords(t, crashed)

	seen := map[string]int{}
	for _, r := range got {
		seen[r]++
	}
	for r, n := range seen {
		if n > 1 {
			t.Fatalf("window emitted %d times after crashes: %s", n, r)
		}
	}
	if len(got) != len(want) || !sameSet(got, want) {
		t.Fatalf("after %d crashes the outbox holds %d windows, the uninterrupted run %d\nmissing: %v\nextra: %v",
			kills, len(got), len(want), diff(want, got, 3), diff(got, want, 3))
	}
	wi, wd := newestCheckpoint(t, ref)
	gi, gd := newestCheckpoint(t, crashed)
	if wi != gi || !bytes.Equal(wd, gd) {
		t.Fatalf("final state differs: checkpoint at %d (%d bytes) vs uninterrupted %d (%d bytes)", gi, len(gd), wi, len(wd))
	}
	t.Logf("%d kills (%d part-way through the stream); %d windows emitted, none lost, none repeated; final state identical (%d bytes at index %d)", kills, midway, len(got), len(gd), gi)
}

func sameSet(a, b []string) bool {
	x, y := append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	return strings.Join(x, "\n") == strings.Join(y, "\n")
}

// diff returns up to n records of a that b lacks.
func diff(a, b []string, n int) []string {
	in := map[string]bool{}
	for _, s := range b {
		in[s] = true
	}
	var out []string
	for _, s := range a {
		if !in[s] && len(out) < n {
			out = append(out, s)
		}
	}
	return out
}
