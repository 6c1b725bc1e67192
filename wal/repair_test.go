package wal

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// writeLog appends n records of payload(0, i) to a fresh log in dir, one
// per append, and closes it.
func writeLog(t *testing.T, dir string, cfg Config, n int) {
	t.Helper()
	l := mustOpen(t, dir, cfg)
	for i := range n {
		if _, _, err := l.Append(context.Background(), [][]byte{payload(0, i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	des, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(src, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, de.Name()), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func lastSegment(t *testing.T, dir string) segFile {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments: %v %v", segs, err)
	}
	return segs[len(segs)-1]
}

// expectRecords opens dir and checks it holds payload(0, i-1) at every
// index in 1..n except those in lost, which must be counted as corrupt.
func expectRecords(t *testing.T, dir string, n int, lost ...uint64) Stats {
	t.Helper()
	l := mustOpen(t, dir, testConfig(SyncBatch))
	defer l.Close()
	got := readAll(t, l)
	isLost := map[uint64]bool{}
	for _, i := range lost {
		isLost[i] = true
	}
	for i := uint64(1); i <= uint64(n); i++ {
		if isLost[i] {
			if _, ok := got[i]; ok {
				t.Fatalf("record %d should be lost, was read", i)
			}
			continue
		}
		if !bytes.Equal(got[i], payload(0, int(i-1))) {
			t.Fatalf("record %d = %q, want %q", i, got[i], payload(0, int(i-1)))
		}
	}
	if l.LastIndex() != uint64(n) {
		t.Fatalf("last index %d, want %d", l.LastIndex(), n)
	}
	first, _, err := l.Append(context.Background(), [][]byte{[]byte("next")})
	if err != nil || first != uint64(n)+1 {
		t.Fatalf("append after repair got index %d (%v), want %d", first, err, n+1)
	}
	st := l.Stats()
	if st.CorruptRecords != uint64(len(lost)) {
		t.Fatalf("%d corrupt records counted, want %d", st.CorruptRecords, len(lost))
	}
	return st
}

func TestTornTailEveryOffset(t *testing.T) {
	const n = 30
	src := t.TempDir()
	writeLog(t, src, testConfig(SyncBatch), n)
	seg := lastSegment(t, src)
	data, _ := os.ReadFile(seg.path)
	entries, _ := scanSegment(data, seg.base)
	lastStart := entries[len(entries)-1].off
	for cut := lastStart; cut < len(data); cut++ {
		dir := copyDir(t, src)
		if err := os.Truncate(filepath.Join(dir, filepath.Base(seg.path)), int64(cut)); err != nil {
			t.Fatal(err)
		}
		st := expectRecords(t, dir, n-1)
		if want := uint64(cut - lastStart); st.CutBytes != want {
			t.Fatalf("cut at %d: %d bytes counted as cut, want %d", cut, st.CutBytes, want)
		}
	}
}

func TestJunkAfterTail(t *testing.T) {
	const n = 30
	src := t.TempDir()
	writeLog(t, src, testConfig(SyncBatch), n)
	rng := rand.New(rand.NewPCG(3, 4))
	junk := map[string][]byte{
		"one zero":     {0},
		"zeros":        make([]byte, 4096),
		"garbage 7":    randBytes(rng, 7),
		"garbage 5000": randBytes(rng, 5000),
		"frame header": appendFrame(nil, n+1, kindRecord, []byte("never finished"))[:frameHeader+3],
	}
	for name, j := range junk {
		t.Run(name, func(t *testing.T) {
			dir := copyDir(t, src)
			p := lastSegment(t, dir).path
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(j)
			f.Close()
			st := expectRecords(t, dir, n)
			if st.CutBytes != uint64(len(j)) {
				t.Fatalf("cut %d bytes, want %d", st.CutBytes, len(j))
			}
		})
	}
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return b
}

// flip flips one bit of the file at off.
func flip(t *testing.T, path string, off int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[off] ^= 0x10
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestBitRot(t *testing.T) {
	const n = 1200 // several 64 KiB segments
	src := t.TempDir()
	writeLog(t, src, testConfig(SyncNone), n)
	segs, _ := listSegments(src)
	if len(segs) < 3 {
		t.Fatalf("want at least 3 segments, have %d", len(segs))
	}
	// entryAt returns the k-th entry of segment s in dir and its file path.
	entryAt := func(dir string, s, k int) (string, segEntry) {
		p := filepath.Join(dir, filepath.Base(segs[s].path))
		data, _ := os.ReadFile(p)
		entries, _ := scanSegment(data, segs[s].base)
		return p, entries[k]
	}
	t.Run("payload bit in an older segment", func(t *testing.T) {
		dir := copyDir(t, src)
		p, e := entryAt(dir, 0, 5)
		flip(t, p, e.end-3)
		expectRecords(t, dir, n, e.index)
	})
	t.Run("payload bit in the tail segment", func(t *testing.T) {
		dir := copyDir(t, src)
		p, e := entryAt(dir, len(segs)-1, 2)
		flip(t, p, e.end-1)
		expectRecords(t, dir, n, e.index)
	})
	t.Run("index field in an older segment", func(t *testing.T) {
		dir := copyDir(t, src)
		p, e := entryAt(dir, 1, 0)
		flip(t, p, e.frame+5)
		expectRecords(t, dir, n, e.index)
	})
	t.Run("length prefix in an older segment", func(t *testing.T) {
		// tidwall/wal then refuses the whole segment; the reader scans it.
		dir := copyDir(t, src)
		p, e := entryAt(dir, 1, 3)
		data, _ := os.ReadFile(p)
		data[e.off] = 0xff // a length far past the end of the segment
		data[e.frame+8] ^= 0x01
		os.WriteFile(p, data, 0o640)
		expectRecords(t, dir, n, e.index)
	})
	t.Run("length prefix in the tail segment", func(t *testing.T) {
		// tidwall/wal cannot open such a log; repair rewrites the segment
		// with a hole where the record was lost.
		dir := copyDir(t, src)
		p, e := entryAt(dir, len(segs)-1, 2)
		data, _ := os.ReadFile(p)
		data[e.off] = 0xff
		data[e.frame+8] ^= 0x01
		os.WriteFile(p, data, 0o640)
		st := expectRecords(t, dir, n, e.index)
		if st.Holes != 1 {
			t.Fatalf("%d holes, want 1", st.Holes)
		}
	})
}

func TestInterruptedTruncationIsFinished(t *testing.T) {
	src := t.TempDir()
	writeLog(t, src, testConfig(SyncNone), 1200)
	segs, _ := listSegments(src)
	// tidwall/wal's TruncateFront writes NAME.START holding the rest of the
	// segment, then removes older segments and renames it; simulate a crash
	// before the removal.
	data, _ := os.ReadFile(segs[1].path)
	entries, _ := scanSegment(data, segs[1].base)
	e := entries[2]
	start := filepath.Join(src, segmentName(e.index)+".START")
	if err := os.WriteFile(start, data[e.off:], 0o640); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, segmentName(segs[2].base)+".TEMP"), []byte("junk"), 0o640)
	l := mustOpen(t, src, testConfig(SyncBatch))
	defer l.Close()
	if got := l.FirstIndex(); got != e.index {
		t.Fatalf("first index %d, want %d", got, e.index)
	}
	got := readAll(t, l)
	for i := e.index; i <= 1200; i++ {
		if !bytes.Equal(got[i], payload(0, int(i-1))) {
			t.Fatalf("record %d wrong after finishing truncation", i)
		}
	}
	if _, err := os.Stat(filepath.Join(src, segmentName(segs[2].base)+".TEMP")); !os.IsNotExist(err) {
		t.Fatal("temp file left behind")
	}
}

func TestFrameRoundTrip(t *testing.T) {
	for _, p := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte{0xAB}, 70000)} {
		f := appendFrame(nil, 42, kindRecord, p)
		got, err := checkFrame(f, 42)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("round trip of %d bytes: %v", len(p), err)
		}
		if _, err := checkFrame(f, 43); err == nil {
			t.Fatal("frame accepted at the wrong index")
		}
		for i := range f {
			g := bytes.Clone(f)
			g[i] ^= 0x04
			if _, err := checkFrame(g, 42); err == nil {
				t.Fatalf("bit flip at byte %d of %d not detected", i, len(f))
			}
		}
	}
	if _, err := checkFrame(appendFrame(nil, 7, kindHole, nil), 7); err != errHole {
		t.Fatalf("hole frame: %v", err)
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Add(appendFrame(nil, 1, kindRecord, []byte("hello")))
	f.Add(appendFrame(nil, 1<<40, kindHole, nil))
	f.Add([]byte("RW\x01\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, kind, p, err := parseFrame(data)
		if err == nil && !bytes.Equal(appendFrame(nil, idx, kind, p), data) {
			t.Fatalf("frame parsed but does not re-encode to itself")
		}
		entries, end := scanSegment(data, 1)
		if end > len(data) || len(entries) > len(data) {
			t.Fatalf("scan past the input: end %d, %d entries, %d bytes", end, len(entries), len(data))
		}
		for _, fr := range resync(data, 0, 0) {
			if len(fr.frame) > len(data) {
				t.Fatal("resync frame longer than input")
			}
		}
		var buf []byte
		buf = binary.AppendUvarint(buf, uint64(len(data)))
		buf = append(buf, data...)
		if e, end := scanSegment(buf, 5); len(e) != 1 || end != len(buf) {
			t.Fatalf("one framed entry scanned as %d entries, end %d of %d", len(e), end, len(buf))
		}
	})
}
