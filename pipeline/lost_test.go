package pipeline

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
)

// newestSegment is the path of the last segment file of the rig's WAL.
func (r *rig) newestSegment() string {
	r.t.Helper()
	ents, err := os.ReadDir(filepath.Join(r.dir, "wal"))
	if err != nil {
		r.t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if len(e.Name()) == 20 {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return filepath.Join(r.dir, "wal", names[len(names)-1])
}

// entryOffsets returns where each entry (uvarint length, frame) of a
// segment file starts.
func entryOffsets(t *testing.T, data []byte) []int {
	var offs []int
	for off := 0; off < len(data); {
		n, k := binary.Uvarint(data[off:])
		if k <= 0 {
			t.Fatalf("bad entry at %d", off)
		}
		offs = append(offs, off)
		off += k + int(n)
	}
	return offs
}

// TestLostTailIndexesNotReused: 50 readings, a clean stop (the final
// checkpoint covers them), then the newest WAL segment loses its tail,
// torn mid-record or cut exactly on a record boundary (which the WAL's
// repair cannot even notice). After a restart, 20 more readings must all
// count: 70, not 67 (their indexes would repeat ones the checkpoint
// covers, and the windows engine would take them for applied). The loss is
// logged and counted, and reading the skipped range again after another
// restart finds nothing corrupt.
func TestLostTailIndexesNotReused(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(t *testing.T, data []byte) int // new length
	}{
		{"torn 150 bytes", func(_ *testing.T, data []byte) int { return len(data) - 150 }},
		{"on a record boundary", func(t *testing.T, data []byte) int {
			offs := entryOffsets(t, data)
			return offs[len(offs)-3]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const s = "env,device=a"
			r := newRig(t)
			r.start()
			base := int64(3600 * 1000)
			var last uint64
			for i := range int64(50) {
				last = r.append(batch(base+i, s, base+i))
			}
			r.waitApplied(last)
			r.stop()
			if got := r.checkpointIndex(); got != last {
				t.Fatalf("checkpoint at %d after a clean stop, want %d", got, last)
			}
			seg := r.newestSegment()
			data, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(seg, int64(tc.cut(t, data))); err != nil {
				t.Fatal(err)
			}

			r.start()
			if n := r.windowCount(s); n != 50 {
				t.Fatalf("window count %d after restart, want the checkpoint's 50", n)
			}
			for i := range int64(20) {
				last = r.append(batch(base+100+i, s, base+100+i))
			}
			r.waitApplied(last)
			if n := r.windowCount(s); n != 70 {
				t.Fatalf("window count %d after 20 more readings, want 70", n)
			}
			lost := r.p.Stats().LostRecords
			if lost == 0 || lost > 3 {
				t.Fatalf("lost records %d, want 1 to 3", lost)
			}
			if logs := r.logs.String(); !strings.Contains(logs, "its tail was lost") {
				t.Fatalf("the loss is not logged:\n%s", logs)
			}
			r.stop()

			// Once more from the start: a fresh engine replays the whole WAL,
			// skip frames included.
			if err := os.RemoveAll(filepath.Join(r.dir, "checkpoints")); err != nil {
				t.Fatal(err)
			}
			r.start()
			r.waitApplied(last)
			want := uint64(70) - lost
			if n := r.windowCount(s); n != want {
				t.Fatalf("window count %d after a full replay, want %d (70 less the %d lost)", n, want, lost)
			}
			if st := r.log.Stats(); st.CorruptRecords != 0 || st.Skipped != 0 {
				t.Fatalf("full replay: %d corrupt records, %d skips in this run: %s", st.CorruptRecords, st.Skipped, fmt.Sprint(st))
			}
		})
	}
}

// TestLostTailBelowOutboxOrigin: with no checkpoint, an outbox's newest
// record alone says how far the WAL went. After its tail is cut below that
// origin, a new window closing must still reach the outbox (its output
// would repeat an origin the outbox holds, and be skipped as emitted),
// while the window the lost readings had closed and emitted is not
// appended again when the replay closes it a second time.
func TestLostTailBelowOutboxOrigin(t *testing.T) {
	const s = "env,device=a"
	base := int64(3600 * 1000)
	r := newRig(t)
	r.start()
	r.append(reading(s, base, 1))
	r.append(reading(s, base+3600, 2)) // closes the first hour: a summary with origin (2, 0)
	r.waitApplied(r.append(reading(s, base+3601, 3)))
	r.stop()
	if n := len(r.boxes[KindSummaries].records()); n != 1 {
		t.Fatalf("%d summaries, want 1", n)
	}
	if err := os.RemoveAll(filepath.Join(r.dir, "checkpoints")); err != nil {
		t.Fatal(err)
	}
	seg := r.newestSegment()
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	offs := entryOffsets(t, data)
	if err := os.Truncate(seg, int64(offs[len(offs)-2])); err != nil { // records 2 and 3 lost
		t.Fatal(err)
	}

	r.start()
	r.append(reading(s, base+7200, 4))                 // closes the first hour again (replayed from index 1): held already
	r.waitApplied(r.append(reading(s, base+10801, 5))) // closes the third hour: new
	// Applied comes before the flush: wait for the outbox. Without the
	// skip, the new summary never comes.
	testutil.WaitFor(t, 5*time.Second, func() (bool, string) {
		n := len(r.boxes[KindSummaries].records())
		return n == 2, fmt.Sprintf("%d summaries, want 2: the new one was taken for one the outbox holds", n)
	})
	recs := r.boxes[KindSummaries].records()
	if recs[0].ID == recs[1].ID {
		t.Fatalf("the first hour's summary was appended again after the lost tail: %s", recs[1].Value)
	}
	if lost := r.p.Stats().LostRecords; lost != 1 {
		t.Fatalf("lost records %d, want 1 (index 2, which the outbox covers)", lost)
	}
}

// TestStopDrainsTheWAL: a stop right after a burst of appends (the
// sources stopped first, so the WAL holds a bounded backlog) applies the
// backlog before the final checkpoint, so the checkpoint covers every
// acknowledged record and a tail lost afterwards cannot take any.
func TestStopDrainsTheWAL(t *testing.T) {
	r := newRig(t)
	r.start()
	base := int64(3600 * 1000)
	var last uint64
	for i := range int64(2000) {
		last = r.append(batch(base+i, fmt.Sprintf("env,device=d%d", i%50), base+i))
	}
	r.stop() // at once: the pipeline is still applying
	if got := r.checkpointIndex(); got != last {
		t.Fatalf("final checkpoint covers %d, the WAL holds %d acknowledged records", got, last)
	}
}
