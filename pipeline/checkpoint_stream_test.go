package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/alerts"
	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
)

// ckSpy wraps the pipeline's checkpoints: it counts what the pipeline
// does with them, injects failures, and can run a hook after a commit.
type ckSpy struct {
	Checkpoints
	creates, aborts, commits atomic.Int64
	failCreate, failWrite    atomic.Bool
	failCommit               atomic.Bool
	mu                       sync.Mutex
	afterCommit              func(index uint64) // on the commit goroutine
}

var errInjected = errors.New("injected storage error")

func (s *ckSpy) Create(index uint64) (CheckpointWriter, error) {
	s.creates.Add(1)
	if s.failCreate.Load() {
		return nil, errInjected
	}
	w, err := s.Checkpoints.Create(index)
	if err != nil {
		return nil, err
	}
	return &spyWriter{CheckpointWriter: w, s: s, index: index}, nil
}

type spyWriter struct {
	CheckpointWriter
	s     *ckSpy
	index uint64
}

func (w *spyWriter) Write(p []byte) (int, error) {
	if w.s.failWrite.Load() {
		return 0, errInjected
	}
	return w.CheckpointWriter.Write(p)
}

func (w *spyWriter) Commit() (uint64, error) {
	if w.s.failCommit.Load() {
		w.CheckpointWriter.Abort()
		return 0, errInjected
	}
	oldest, err := w.CheckpointWriter.Commit()
	if err == nil {
		w.s.commits.Add(1)
		w.s.mu.Lock()
		hook := w.s.afterCommit
		w.s.mu.Unlock()
		if hook != nil {
			hook(w.index)
		}
	}
	return oldest, err
}

func (w *spyWriter) Abort() {
	w.s.aborts.Add(1)
	w.CheckpointWriter.Abort()
}

// streamRecords returns n WAL records of 20 readings each over 500 series
// × 2 fields of 100 devices, event time going on by 100 ms a record, so
// windows close and devices go idle along the way.
func streamRecords(n int) [][]byte {
	var recs [][]byte
	k := 0
	for i := range n {
		ts := int64(1_000_000_000+i*100) * 1e6
		b := wal.Batch{IngestNs: ts}
		for range 20 {
			s := k % 500
			b.Readings = append(b.Readings, wal.Reading{Series: fmt.Sprintf("env%d,device=d%03d", s%5, s/5),
				Field: []string{"temp", "hum"}[k/500%2], Value: float64(k%97) + 0.5, TimeNs: ts})
			k++
		}
		recs = append(recs, wal.AppendBatch(nil, &b))
	}
	return recs
}

// TestStreamedCheckpointRestoresExactly: a checkpoint streamed while
// batches keep being applied holds, byte for byte, the windows state an
// engine fed the same records has at the checkpoint's index. A crash right
// after it (the checkpoint directory as it was then), a restart and the
// replay give the same windows state and the same window outputs as the
// uninterrupted run.
func TestStreamedCheckpointRestoresExactly(t *testing.T) {
	recs := streamRecords(4000)
	r := newRig(t)
	r.win = windows.DefaultConfig()
	r.walCfg.Sync = wal.SyncNone // the checkpoint's sync barrier still fsyncs
	r.every = 5 * time.Millisecond
	spy := &ckSpy{}
	r.wrapCk = func(c Checkpoints) Checkpoints { spy.Checkpoints = c; return spy }
	ckdir := filepath.Join(r.dir, "checkpoints")
	saved := filepath.Join(t.TempDir(), "saved")
	var snapped atomic.Uint64 // the index of the checkpoint saved as a crash would leave it
	r.start()
	spy.mu.Lock()
	spy.afterCommit = func(index uint64) {
		// A checkpoint of the whole state (every pair exists after 50
		// records) begun at index and committed after more batches were
		// applied: one taken while the stream went on.
		if snapped.Load() != 0 || index < 500 || r.p.Windows().AppliedIndex() < index+5 {
			return
		}
		if err := os.CopyFS(saved, os.DirFS(ckdir)); err != nil {
			t.Errorf("save the checkpoints: %v", err)
		}
		snapped.Store(index)
	}
	spy.mu.Unlock()
	var last uint64
	n := 0
	for ; n < len(recs) && (snapped.Load() == 0 || n < int(snapped.Load())+300); n++ {
		last = r.append(recs[n])
		if n%5 == 4 {
			r.waitApplied(last)
		}
	}
	r.waitApplied(last)
	r.stop()
	idx := snapped.Load()
	if idx == 0 {
		t.Fatalf("no checkpoint spanned applied batches in %d records (%d checkpoints)", n, spy.commits.Load())
	}
	recs = recs[:n]

	// Byte for byte: the checkpoint's windows state is the state at idx.
	ck, err := wal.OpenCheckpoints(saved, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, data, _, err := ck.Load()
	if err != nil || got != idx {
		t.Fatalf("saved checkpoint: index %d, %v; want %d", got, err, idx)
	}
	w, _, _, err := decodeState(data)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := windows.New(r.win)
	if err != nil {
		t.Fatal(err)
	}
	var dec wal.BatchDecoder
	var b wal.Batch
	var out []windows.Emission
	apply := func(i int) {
		if err := dec.Decode(recs[i], &b); err != nil {
			t.Fatal(err)
		}
		out = ref.Apply(uint64(i+1), &b, out[:0])
	}
	for i := range int(idx) {
		apply(i)
	}
	want, err := ref.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w, want) {
		t.Fatalf("streamed checkpoint at %d: windows state of %d bytes differs from the engine's at %d (%d bytes)", idx, len(w), idx, len(want))
	}
	// The uninterrupted run's outputs after idx.
	var wantOut []string
	for i := int(idx); i < n; i++ {
		apply(i)
		for _, e := range out {
			wantOut = append(wantOut, emissionJSON(t, e))
		}
	}

	// The crash: the checkpoints as they were right after idx's commit,
	// outboxes that hold nothing after it. The replay must give the rest.
	if err := os.RemoveAll(ckdir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(ckdir, os.DirFS(saved)); err != nil {
		t.Fatal(err)
	}
	for k := range NumKinds {
		r.boxes[k] = &fakeOutbox{kind: Kinds[k].Outbox}
	}
	var mu sync.Mutex
	var gotOut []string
	r.onEmit = func(e windows.Emission) {
		mu.Lock()
		gotOut = append(gotOut, emissionJSON(t, e))
		mu.Unlock()
	}
	r.every = time.Hour
	spy.mu.Lock()
	spy.afterCommit = nil
	spy.mu.Unlock()
	r.start()
	r.waitApplied(uint64(n))
	testutil.WaitFor(t, 20*time.Second, func() (bool, string) { return r.p.Replayed(), "replayed" })
	after, err := r.p.Windows().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	final, _ := ref.MarshalBinary()
	if !bytes.Equal(after, final) {
		t.Fatal("windows state after restore and replay differs from the uninterrupted run's")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(gotOut) != len(wantOut) {
		t.Fatalf("replay emitted %d window outputs, the uninterrupted run %d after index %d", len(gotOut), len(wantOut), idx)
	}
	for i := range gotOut {
		if gotOut[i] != wantOut[i] {
			t.Fatalf("output %d differs:\n got %s\nwant %s", i, gotOut[i], wantOut[i])
		}
	}
	if len(wantOut) == 0 {
		t.Fatal("no window output after the checkpoint: the test proves nothing")
	}
	t.Logf("checkpoint at %d of %d records, %d bytes; %d outputs replayed", idx, n, len(data), len(gotOut))
}

func emissionJSON(t *testing.T, e windows.Emission) string {
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// driven is a pipeline whose stream the test drives by hand (no Run):
// the same methods the stream calls, in an order the test chooses.
func driven(t testing.TB, r *rig, spy *ckSpy) *Pipeline {
	t.Helper()
	var err error
	r.log, err = wal.Open(filepath.Join(r.dir, "wal"), r.walCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.log.Close() })
	ckpts, err := wal.OpenCheckpoints(filepath.Join(r.dir, "checkpoints"), nil)
	if err != nil {
		t.Fatal(err)
	}
	spy.Checkpoints = FromCheckpoints(ckpts)
	c := Config{Windows: r.win, Alerts: r.al, GatewayID: "gw", Interval: time.Hour, Log: FromWAL(r.log),
		Checkpoints: spy, Logger: slog.New(slog.NewTextHandler(r.logs, nil))}
	for k := range NumKinds {
		c.Outboxes[k], c.Quotas[k] = r.boxes[k], 64<<20
	}
	p, err := New(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	p.startWriter(context.Background()) // as Run does
	t.Cleanup(p.stopWriter)
	return p
}

// applyAll applies recs to p as the stream does, from index from.
func applyAll(t *testing.T, p *Pipeline, from uint64, recs [][]byte) {
	t.Helper()
	var dec wal.BatchDecoder
	var b wal.Batch
	for i, rec := range recs {
		if err := dec.Decode(rec, &b); err != nil {
			t.Fatal(err)
		}
		out := p.engine.Apply(from+uint64(i), &b, nil)
		p.queue(out, p.alerts.Apply(from+uint64(i), &b, out, nil))
	}
}

// tmpFiles lists the temp files in the checkpoint directory.
func tmpFiles(t *testing.T, r *rig) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(r.dir, "checkpoints", "*.tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestStreamedCheckpointErrors: a checkpoint whose file cannot be
// created, written or committed (a full disk) is abandoned whole: the
// windows checkpoint and the file aborted, no temp file left, the error
// logged, the previous checkpoint standing and nothing counted; the next
// one (the next interval) succeeds once the error clears.
func TestStreamedCheckpointErrors(t *testing.T) {
	for _, fault := range []string{"create", "write", "commit"} {
		t.Run(fault, func(t *testing.T) {
			r := newRig(t)
			spy := &ckSpy{}
			p := driven(t, r, spy)
			ctx := context.Background()
			recs := streamRecords(50)
			for _, rec := range recs {
				r.append(rec)
			}
			applyAll(t, p, 1, recs)
			map[string]*atomic.Bool{"create": &spy.failCreate, "write": &spy.failWrite, "commit": &spy.failCommit}[fault].Store(true)
			p.checkpoint(ctx)
			for p.ck != nil {
				p.stepCheckpoint(ctx)
			}
			p.waitCommit()
			if p.ck != nil || p.commits != nil || p.Stats().Checkpoints != 0 || p.lastCkpt != 0 {
				t.Fatalf("after a failed %s: in flight %v, committing %v, %d checkpoints, last %d", fault, p.ck != nil, p.commits != nil, p.Stats().Checkpoints, p.lastCkpt)
			}
			if tmp := tmpFiles(t, r); len(tmp) != 0 {
				t.Fatalf("temp files left: %v", tmp)
			}
			if fault == "write" && spy.aborts.Load() == 0 {
				t.Fatal("the checkpoint file was not aborted")
			}
			if !strings.Contains(r.logs.String(), "checkpoint failed; the previous one stands") {
				t.Fatalf("failure not logged: %s", r.logs.String())
			}
			if got := r.checkpointIndex(); got != 0 {
				t.Fatalf("a checkpoint at %d exists after the failure", got)
			}
			// The error clears: the next interval writes one (the windows
			// engine was released: it begins again).
			spy.failCreate.Store(false)
			spy.failWrite.Store(false)
			spy.failCommit.Store(false)
			p.checkpoint(ctx)
			if p.ck == nil {
				t.Fatal("no checkpoint began after the error cleared")
			}
			for p.ck != nil {
				p.stepCheckpoint(ctx)
			}
			p.waitCommit()
			if got := r.checkpointIndex(); got != 50 || p.Stats().Checkpoints != 1 {
				t.Fatalf("after the error cleared: checkpoint at %d (%d written), want 50", got, p.Stats().Checkpoints)
			}
		})
	}
}

// TestReloadDuringStreamedCheckpoint: a reload while a checkpoint is being
// streamed aborts it (it holds the alerts state from before the reload)
// and writes one at once that covers the reload: its rules are the new
// ones. The next checkpoints are streamed as usual.
func TestReloadDuringStreamedCheckpoint(t *testing.T) {
	r := newRig(t)
	r.al.Rules = []alerts.Rule{hot(50)}
	spy := &ckSpy{}
	p := driven(t, r, spy)
	ctx := context.Background()
	recs := streamRecords(200)
	for _, rec := range recs {
		r.append(rec)
	}
	applyAll(t, p, 1, recs[:100])
	p.checkpoint(ctx)
	p.stepCheckpoint(ctx)
	if p.ck == nil {
		t.Fatal("no checkpoint in flight")
	}
	applyAll(t, p, 101, recs[100:])
	cfg := r.al
	cfg.Rules = []alerts.Rule{hot(70)}
	if err := p.reload(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if p.ck != nil || p.commits != nil {
		t.Fatal("a checkpoint is still in flight after the reload")
	}
	if spy.aborts.Load() != 1 || p.Stats().Checkpoints != 1 {
		t.Fatalf("%d aborted, %d written; want the one in flight aborted and one written", spy.aborts.Load(), p.Stats().Checkpoints)
	}
	ck, err := wal.OpenCheckpoints(filepath.Join(r.dir, "checkpoints"), nil)
	if err != nil {
		t.Fatal(err)
	}
	idx, data, _, err := ck.Load()
	if err != nil || idx != 200 {
		t.Fatalf("checkpoint after the reload: index %d, %v; want 200", idx, err)
	}
	_, _, rules, err := decodeState(data)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeAlertsConfig(rules); err != nil || fingerprintAlerts(got) != fingerprintAlerts(cfg) {
		t.Fatalf("checkpoint's rules %+v (%v), want the reloaded ones", got, err)
	}
	if tmp := tmpFiles(t, r); len(tmp) != 0 {
		t.Fatalf("temp files left: %v", tmp)
	}
	// Streamed again on the next interval.
	r.append(reading("env,device=z", 1_000_100, 1))
	applyAll(t, p, 201, [][]byte{reading("env,device=z", 1_000_100, 1)})
	p.checkpoint(ctx)
	if p.ck == nil {
		t.Fatal("no checkpoint began after the reload's")
	}
	p.endCheckpoints()
}
