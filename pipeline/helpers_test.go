package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/alerts"
	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
)

// fakeOutbox is an in-memory outbox whose appends fail while fail returns
// an error.
type fakeOutbox struct {
	kind string
	mu   sync.Mutex
	recs []forward.Record
	fail func() error
	errs int
	// maxBytes is the largest append so far (recordSize of its records).
	maxBytes int
}

func (f *fakeOutbox) Append(_ context.Context, recs []forward.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		if err := f.fail(); err != nil {
			f.errs++
			return err
		}
	}
	size := 0
	for i := range recs {
		size += recordSize(&recs[i])
	}
	f.maxBytes = max(f.maxBytes, size)
	for _, r := range recs {
		r.Origin = append([]byte(nil), r.Origin...)
		f.recs = append(f.recs, r)
	}
	return nil
}

func (f *fakeOutbox) Last() (forward.Record, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.recs) == 0 {
		return forward.Record{}, false, nil
	}
	return f.recs[len(f.recs)-1], true, nil
}

func (f *fakeOutbox) Recent(fn func(forward.Record) bool) error {
	recs := f.records()
	for i := len(recs) - 1; i >= 0; i-- {
		if !fn(recs[i]) {
			break
		}
	}
	return nil
}

func (f *fakeOutbox) Kind() string { return f.kind }

func (f *fakeOutbox) setFail(fn func() error) {
	f.mu.Lock()
	f.fail = fn
	f.mu.Unlock()
}

func (f *fakeOutbox) records() []forward.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]forward.Record(nil), f.recs...)
}

// rig is a pipeline over a real WAL and real checkpoints in a directory,
// with fake outboxes that survive a restart of the pipeline.
type rig struct {
	t      testing.TB
	dir    string
	walCfg wal.Config
	win    windows.Config
	al     alerts.Config
	every  time.Duration
	boxes  [NumKinds]*fakeOutbox
	late   *lateRecorder
	logs   *testutil.SyncBuffer
	wrap   func(Log) Log // the Log the pipeline sees, if set
	wrapCk func(Checkpoints) Checkpoints
	onEmit func(windows.Emission) // OnEmit, if set

	alertsMu  sync.Mutex
	published []alerts.Event // OnAlert, across restarts

	log    *wal.Log
	p      *Pipeline
	cancel context.CancelFunc
	done   chan error
}

// lateRecorder is an in-memory late log that survives a restart.
type lateRecorder struct {
	mu   sync.Mutex
	seen []wal.Reading
	last outboxPos
}

func (l *lateRecorder) Late(index uint64, seq int, r wal.Reading, _ int64) {
	l.mu.Lock()
	l.seen = append(l.seen, r)
	l.last = outboxPos{index, seq}
	l.mu.Unlock()
}

func (l *lateRecorder) LastOrigin() (uint64, int, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last.Index, l.last.Seq, len(l.seen) > 0, nil
}

func (l *lateRecorder) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{t: t, dir: t.TempDir(), walCfg: wal.DefaultConfig(), win: windows.DefaultConfig(),
		al: alerts.DefaultConfig(), every: time.Hour, late: &lateRecorder{}, logs: &testutil.SyncBuffer{}}
	r.win.Tumbling = []time.Duration{time.Hour}
	r.win.Sliding = nil
	r.win.Groups = nil
	r.win.AllowedLateness = 0
	for k := range NumKinds {
		r.boxes[k] = &fakeOutbox{kind: Kinds[k].Outbox}
	}
	return r
}

// start opens the WAL and checkpoints and runs a pipeline over them.
func (r *rig) start() {
	r.t.Helper()
	var err error
	r.log, err = wal.Open(filepath.Join(r.dir, "wal"), r.walCfg, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	ckpts, err := wal.OpenCheckpoints(filepath.Join(r.dir, "checkpoints"), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	var lg Log = FromWAL(r.log)
	if r.wrap != nil {
		lg = r.wrap(lg)
	}
	var ck Checkpoints = FromCheckpoints(ckpts)
	if r.wrapCk != nil {
		ck = r.wrapCk(ck)
	}
	c := Config{Windows: r.win, Alerts: r.al, GatewayID: "gw", Interval: r.every, Log: lg,
		Checkpoints: ck, Late: r.late, Logger: slog.New(slog.NewTextHandler(r.logs, nil))}
	for k := range NumKinds {
		c.Outboxes[k], c.Quotas[k] = r.boxes[k], 64<<20
	}
	r.p, err = New(context.Background(), c)
	if err != nil {
		r.t.Fatal(err)
	}
	r.p.OnEmit = r.onEmit
	r.p.OnAlert = func(ev alerts.Event) {
		r.alertsMu.Lock()
		r.published = append(r.published, ev)
		r.alertsMu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.p.Run(ctx) }()
	r.t.Cleanup(func() { r.stop() })
}

// stop ends Run (the final checkpoint) and closes the WAL.
func (r *rig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		r.t.Errorf("Run did not return 30s after cancel")
	}
	if err := r.log.Close(); err != nil {
		r.t.Errorf("close wal: %v", err)
	}
}

// batch is the WAL record of readings of series s, field v, at the given
// event times (seconds), ingested at ingestS.
func batch(ingestS int64, s string, ts ...int64) []byte {
	b := wal.Batch{IngestNs: ingestS * 1e9}
	for i, t := range ts {
		b.Readings = append(b.Readings, wal.Reading{Series: s, Field: "v", Value: float64(i + 1), TimeNs: t * 1e9})
	}
	return wal.AppendBatch(nil, &b)
}

func (r *rig) append(recs ...[]byte) uint64 {
	r.t.Helper()
	_, last, err := r.log.Append(context.Background(), recs)
	if err != nil {
		r.t.Fatal(err)
	}
	return last
}

// waitApplied waits until the windows applied index.
func (r *rig) waitApplied(index uint64) {
	r.t.Helper()
	testutil.WaitFor(r.t, 20*time.Second, func() (bool, string) {
		a := r.p.Windows().AppliedIndex()
		return a >= index, fmt.Sprintf("applied %d, want %d", a, index)
	})
}

// checkpointIndex is the index the newest checkpoint on disk covers (0: none).
func (r *rig) checkpointIndex() uint64 {
	r.t.Helper()
	ck, err := wal.OpenCheckpoints(filepath.Join(r.dir, "checkpoints"), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	idx, _, _, err := ck.Load()
	if errors.Is(err, wal.ErrNoCheckpoint) {
		return 0
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return idx
}

// windowCount sums the counts of the open and closed windows of series s,
// field v.
func (r *rig) windowCount(s string) uint64 {
	open, closed, _ := r.p.Windows().Windows(s, "v", "", 0)
	var n uint64
	for _, w := range append(open, closed...) {
		n += w.Count
	}
	return n
}

// onAlerts returns the events OnAlert received so far.
func (r *rig) onAlerts() []alerts.Event {
	r.alertsMu.Lock()
	defer r.alertsMu.Unlock()
	return append([]alerts.Event(nil), r.published...)
}

// reading is the WAL record of one reading of series s, field v.
func reading(s string, tsS int64, v float64) []byte {
	return wal.AppendBatch(nil, &wal.Batch{IngestNs: tsS * 1e9, Readings: []wal.Reading{{Series: s, Field: "v", Value: v, TimeNs: tsS * 1e9}}})
}

// alertValues decodes the alerts outbox.
func (r *rig) alertValues() []alertValue {
	r.t.Helper()
	var out []alertValue
	for _, rec := range r.boxes[KindAlerts].records() {
		var v alertValue
		if err := json.Unmarshal(rec.Value, &v); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}
