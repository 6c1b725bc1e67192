package pipeline

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReplayAddsNoLateReadingTwice: late readings applied after the last
// checkpoint are in the late log already when a crash makes the pipeline
// replay them; the replay must not add them again (it did, on every
// replay), and a late reading after the restart is still added.
func TestReplayAddsNoLateReadingTwice(t *testing.T) {
	const s = "env,device=a"
	base := int64(3600 * 1000)
	r := newRig(t)
	r.start()
	r.waitApplied(r.append(batch(base+100, s, base+100)))
	r.stop()
	ckdir := filepath.Join(r.dir, "checkpoints")
	saved := filepath.Join(t.TempDir(), "saved")
	if err := os.CopyFS(saved, os.DirFS(ckdir)); err != nil {
		t.Fatal(err)
	}

	r.start()
	r.append(batch(base+101, s, base+10, base+20)) // two late readings in one batch
	r.waitApplied(r.append(batch(base+102, s, base+30, base+102)))
	if n := r.late.count(); n != 3 {
		t.Fatalf("late log holds %d readings, want 3", n)
	}
	r.stop()
	// A crash before the checkpoint that covers them: the previous one is
	// the newest on disk again.
	if err := os.RemoveAll(ckdir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(ckdir, os.DirFS(saved)); err != nil {
		t.Fatal(err)
	}

	r.start()
	last := r.log.LastIndex()
	r.waitApplied(last)
	if n := r.late.count(); n != 3 {
		t.Fatalf("late log holds %d readings after the replay, want still 3", n)
	}
	r.waitApplied(r.append(batch(base+103, s, base+40)))
	if n := r.late.count(); n != 4 {
		t.Fatalf("late log holds %d readings after one more late reading, want 4", n)
	}
}
