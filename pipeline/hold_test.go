package pipeline

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
)

// faultLog is a Log whose readers fail while fail is set.
type faultLog struct {
	Log
	fail *atomic.Bool
}

func (f faultLog) NewReader(from uint64) Reader {
	return &faultReader{Reader: f.Log.NewReader(from), fail: f.fail}
}

type faultReader struct {
	Reader
	fail *atomic.Bool
	err  error
}

func (r *faultReader) Next() bool {
	if r.fail.Load() {
		r.err = fmt.Errorf("read segment: %w", syscall.EIO)
		return false
	}
	return r.Reader.Next()
}

func (r *faultReader) Err() error {
	if r.err != nil {
		return r.err
	}
	return r.Reader.Err()
}

// TestStorageErrorsHoldThePipeline: an outbox append that fails (a full
// disk) or a WAL read that fails does not stop the pipeline: it holds,
// Health says why, and once the error clears it resumes on its own and
// emits everything. (Before, Run returned the error, which stopped the
// whole gateway, again on every restart while the disk stayed full.)
func TestStorageErrorsHoldThePipeline(t *testing.T) {
	const s = "env,device=a"
	base := int64(3600 * 1000)
	for _, tc := range []struct {
		name   string
		reason string
		setup  func(r *rig, fail *atomic.Bool)
	}{
		{"outbox append", "summaries outbox", func(r *rig, fail *atomic.Bool) {
			r.boxes[KindSummaries].setFail(func() error {
				if fail.Load() {
					return fmt.Errorf("write outbox segment: %w", syscall.ENOSPC)
				}
				return nil
			})
		}},
		{"wal read", "read the wal", func(r *rig, fail *atomic.Bool) {
			r.wrap = func(l Log) Log { return faultLog{Log: l, fail: fail} }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			var fail atomic.Bool
			tc.setup(r, &fail)
			r.start()
			// The first window closes when the second reading's watermark
			// passes its end.
			r.append(batch(base, s, base))
			r.waitApplied(1)
			fail.Store(true)
			last := r.append(batch(base+3600, s, base+3600))
			testutil.WaitFor(t, 20*time.Second, func() (bool, string) {
				ok, reason := r.p.Health()
				return !ok && strings.Contains(reason, tc.reason), fmt.Sprintf("health %v %q", ok, reason)
			})
			// Held, not stopped: more readings are accepted by the WAL meanwhile.
			for i := range int64(5) {
				last = r.append(batch(base+3601+i, s, base+3601+i))
			}
			select {
			case err := <-r.done:
				r.cancel = nil
				t.Fatalf("Run returned while held: %v", err)
			default:
			}
			fail.Store(false)
			r.waitApplied(last)
			testutil.WaitFor(t, 20*time.Second, func() (bool, string) {
				ok, reason := r.p.Health()
				n := len(r.boxes[KindSummaries].records())
				return ok && n == 1, fmt.Sprintf("health %v %q, %d summaries", ok, reason, n)
			})
			if n := r.windowCount(s); n != 7 {
				t.Fatalf("window count %d, want 7", n)
			}
			if r.p.Stats().StorageErrors == 0 {
				t.Fatal("no storage error counted")
			}
			r.stop()
		})
	}
}

// skipFailLog is a Log whose SkipTo fails while fails > 0.
type skipFailLog struct {
	Log
	fails *atomic.Int32
}

func (l skipFailLog) SkipTo(ctx context.Context, index uint64) (uint64, error) {
	if l.fails.Add(-1) >= 0 {
		return 0, fmt.Errorf("write skip frames: %w", syscall.ENOSPC)
	}
	return l.Log.SkipTo(ctx, index)
}

// TestStartWaitsOutAFullDisk: a restart that must skip a lost WAL tail on
// a full disk waits, retrying, instead of failing (which made the gateway
// exit, again at every restart).
func TestStartWaitsOutAFullDisk(t *testing.T) {
	const s = "env,device=a"
	r := newRig(t)
	r.start()
	var last uint64
	for i := range int64(10) {
		last = r.append(batch(3600*1000+i, s, 3600*1000+i))
	}
	r.waitApplied(last)
	r.stop()
	seg := r.newestSegment()
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	offs := entryOffsets(t, data)
	if err := os.Truncate(seg, int64(offs[len(offs)-2])); err != nil {
		t.Fatal(err)
	}
	var fails atomic.Int32
	fails.Store(2)
	r.wrap = func(l Log) Log { return skipFailLog{Log: l, fails: &fails} }
	r.start()
	st := r.p.Stats()
	if st.StorageErrors != 2 || st.LostRecords != 2 {
		t.Fatalf("after start: %d storage errors, %d lost records; want 2 and 2", st.StorageErrors, st.LostRecords)
	}
	if ok, reason := r.p.Health(); !ok {
		t.Fatalf("still held after start: %s", reason)
	}
	r.waitApplied(r.append(batch(3600*1000+20, s, 3600*1000+20)))
	if n := r.windowCount(s); n != 11 {
		t.Fatalf("window count %d, want 11", n)
	}
}
