package wal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
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
