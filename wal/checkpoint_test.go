package wal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/runnel-iot/runnel/internal/testutil"
)

func TestCheckpoints(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenCheckpoints(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := c.Load(); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("empty dir: %v, want ErrNoCheckpoint", err)
	}
	for _, i := range []uint64{10, 20, 30} {
		oldest, err := c.Write(i, bytes.Repeat([]byte{byte(i)}, 1000))
		if err != nil {
			t.Fatal(err)
		}
		if want := max(i-10, 10); oldest != want {
			t.Fatalf("after writing %d the oldest kept is %d, want %d", i, oldest, want)
		}
	}
	idx, _ := c.list()
	if len(idx) != 2 || idx[0] != 30 || idx[1] != 20 {
		t.Fatalf("kept %v, want [30 20]", idx)
	}
	i, data, fell, err := c.Load()
	if err != nil || i != 30 || fell || !bytes.Equal(data, bytes.Repeat([]byte{30}, 1000)) {
		t.Fatalf("load: %d %v %v", i, fell, err)
	}
	// A flipped bit in the newest falls back to the older one.
	p := filepath.Join(dir, checkpointName(30))
	b, _ := os.ReadFile(p)
	b[len(b)-5] ^= 1
	os.WriteFile(p, b, 0o640)
	i, data, fell, err = c.Load()
	if err != nil || i != 20 || !fell || data[0] != 20 {
		t.Fatalf("fallback: %d %v %v", i, fell, err)
	}
	// Both corrupt: no checkpoint, the owner replays everything.
	p = filepath.Join(dir, checkpointName(20))
	os.WriteFile(p, []byte("RNCK"), 0o640)
	if _, _, fell, err := c.Load(); !errors.Is(err, ErrNoCheckpoint) || !fell {
		t.Fatalf("both corrupt: %v %v", fell, err)
	}
	// A temp file left by a crash is removed at open.
	os.WriteFile(filepath.Join(dir, checkpointName(40)+".tmp"), []byte("partial"), 0o640)
	if _, err := OpenCheckpoints(dir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, checkpointName(40)+".tmp")); !os.IsNotExist(err) {
		t.Fatal("temp checkpoint left behind")
	}
}

// TestCheckpointWriter: a checkpoint written in pieces (Create, Write,
// Commit) is the same file Write makes, and loads; an aborted one leaves
// nothing.
func TestCheckpointWriter(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenCheckpoints(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 600<<10) // more than one read-back buffer
	for i := range data {
		data[i] = byte(i * 7)
	}
	if _, err := c.Write(5, data); err != nil {
		t.Fatal(err)
	}
	whole, _ := os.ReadFile(filepath.Join(dir, checkpointName(5)))
	w, err := c.Create(6)
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1000+len(rest)%4096)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if oldest, err := w.Commit(); err != nil || oldest != 5 {
		t.Fatalf("commit = %d %v, want 5", oldest, err)
	}
	streamed, _ := os.ReadFile(filepath.Join(dir, checkpointName(6)))
	if !bytes.Equal(streamed[checkpointHeader:], whole[checkpointHeader:]) || !bytes.Equal(streamed[13:17], whole[13:17]) {
		t.Fatal("streamed checkpoint differs from the whole one")
	}
	i, got, _, err := c.Load()
	if err != nil || i != 6 || !bytes.Equal(got, data) {
		t.Fatalf("load = %d %v", i, err)
	}
	w, err = c.Create(7)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data[:100])
	w.Abort()
	if _, err := w.Commit(); err == nil {
		t.Error("commit after abort succeeded")
	}
	if i, _, _, _ := c.Load(); i != 6 {
		t.Errorf("after an aborted checkpoint the newest is %d, want 6", i)
	}
	assertNoTemp(t, dir)
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		if filepath.Ext(de.Name()) == ".tmp" {
			t.Errorf("temp file %s left behind", de.Name())
		}
	}
}

// TestCheckpointFullDisk: on a full disk a checkpoint write (whole or in
// pieces) fails with the error, leaves no temp file and the kept
// checkpoints loadable; once space returns the same write succeeds: the
// caller just retries (issue 14, problem 3).
func TestCheckpointFullDisk(t *testing.T) {
	dir := testutil.Tmpfs(t, 1<<20)
	c, err := OpenCheckpoints(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	small := bytes.Repeat([]byte{1}, 1000)
	if _, err := c.Write(1, small); err != nil {
		t.Fatal(err)
	}
	filler := testutil.Fill(t, dir)
	big := bytes.Repeat([]byte{2}, 64<<10)
	if _, err := c.Write(2, big); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Write on a full disk = %v, want ENOSPC", err)
	}
	if w, err := c.Create(3); err == nil {
		_, werr := w.Write(big)
		if _, err := w.Commit(); !errors.Is(err, syscall.ENOSPC) || !errors.Is(werr, syscall.ENOSPC) {
			t.Errorf("streamed checkpoint on a full disk: write %v, commit %v, want ENOSPC", werr, err)
		}
	} else if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Create on a full disk = %v, want ENOSPC", err)
	}
	assertNoTemp(t, dir)
	if i, data, _, err := c.Load(); err != nil || i != 1 || !bytes.Equal(data, small) {
		t.Fatalf("load after failed writes = %d %v, want the first checkpoint", i, err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(2, big); err != nil {
		t.Fatalf("Write once space returned: %v", err)
	}
	if i, data, _, err := c.Load(); err != nil || i != 2 || !bytes.Equal(data, big) {
		t.Fatalf("load = %d %v, want the retried checkpoint", i, err)
	}
}
