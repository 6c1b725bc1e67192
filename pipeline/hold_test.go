package pipeline

import (
	"fmt"
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
