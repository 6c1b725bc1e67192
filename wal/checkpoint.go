package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// A checkpoint is a snapshot of state derived from a log (the windows, their
// sketches and watermarks) together with the index of the last record it
// covers: on start the state is loaded and the log replayed from the next
// index. Checkpoints live in their own directory, one file each, named by
// the index they cover; the newest two are kept, so a checkpoint that turns
// out corrupt falls back to the one before it. FORMAT.md describes the file.

// ErrNoCheckpoint is returned by LoadCheckpoint when no checkpoint verifies.
var ErrNoCheckpoint = errors.New("no valid checkpoint")

const (
	checkpointMagic   = "RNCK"
	checkpointVersion = 1
	checkpointHeader  = 4 + 1 + 8 + 4 + 4
	checkpointSuffix  = ".ckpt"
	checkpointsKept   = 2
)

// Checkpoints is a directory of checkpoints. Its methods are not safe for
// concurrent use: one owner writes and loads.
type Checkpoints struct {
	dir    string
	logger *slog.Logger
}

// OpenCheckpoints opens (creating if needed) a checkpoint directory and
// removes temp files a crash left behind.
func OpenCheckpoints(dir string, logger *slog.Logger) (*Checkpoints, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open checkpoints: %w", err)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open checkpoints: %w", err)
	}
	for _, de := range des {
		if strings.HasSuffix(de.Name(), ".tmp") {
			os.Remove(filepath.Join(dir, de.Name()))
		}
	}
	return &Checkpoints{dir: dir, logger: logger}, nil
}

func checkpointName(index uint64) string {
	return fmt.Sprintf("checkpoint-%020d%s", index, checkpointSuffix)
}

// list returns the indexes of the checkpoint files, newest first.
func (c *Checkpoints) list() ([]uint64, error) {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	var out []uint64
	for _, de := range des {
		name := de.Name()
		if !strings.HasPrefix(name, "checkpoint-") || !strings.HasSuffix(name, checkpointSuffix) {
			continue
		}
		i, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, "checkpoint-"), checkpointSuffix), 10, 64)
		if err == nil {
			out = append(out, i)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a] > out[b] })
	return out, nil
}

// Write stores data as the checkpoint covering index, atomically (temp
// file, fsync, rename, fsync of the directory), then removes all but the
// newest two. It returns the index of the older kept checkpoint (the log
// may be truncated before it), or index itself when it is the only one.
func (c *Checkpoints) Write(index uint64, data []byte) (oldestKept uint64, err error) {
	buf := make([]byte, checkpointHeader, checkpointHeader+len(data))
	copy(buf, checkpointMagic)
	buf[4] = checkpointVersion
	binary.LittleEndian.PutUint64(buf[5:13], index)
	binary.LittleEndian.PutUint32(buf[13:17], uint32(len(data)))
	crc := crc32.Update(0, castagnoli, buf[4:17])
	crc = crc32.Update(crc, castagnoli, data)
	binary.LittleEndian.PutUint32(buf[17:21], crc)
	buf = append(buf, data...)
	path := filepath.Join(c.dir, checkpointName(index))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf, 0o640); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("write checkpoint %d: %w", index, err)
	}
	if err := syncFile(tmp); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("write checkpoint %d: %w", index, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("write checkpoint %d: %w", index, err)
	}
	if err := syncDir(c.dir); err != nil {
		return 0, fmt.Errorf("write checkpoint %d: %w", index, err)
	}
	idx, err := c.list()
	if err != nil {
		return 0, err
	}
	for _, old := range idx[min(len(idx), checkpointsKept):] {
		os.Remove(filepath.Join(c.dir, checkpointName(old)))
	}
	if len(idx) >= checkpointsKept {
		return idx[checkpointsKept-1], nil
	}
	return index, nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Load returns the newest checkpoint that verifies: its index and data. A
// checkpoint that does not verify is logged and skipped (the older one is
// tried); ErrNoCheckpoint means none verifies (or none exists), and the
// owner replays the whole log. fellBack reports that a newer checkpoint
// was skipped.
func (c *Checkpoints) Load() (index uint64, data []byte, fellBack bool, err error) {
	idx, err := c.list()
	if err != nil {
		return 0, nil, false, err
	}
	for _, i := range idx {
		data, err := c.read(i)
		if err == nil {
			return i, data, fellBack, nil
		}
		c.logger.Warn("checkpoint does not verify; trying an older one", "index", i, "err", err)
		fellBack = true
	}
	return 0, nil, fellBack, ErrNoCheckpoint
}

func (c *Checkpoints) read(index uint64) ([]byte, error) {
	buf, err := os.ReadFile(filepath.Join(c.dir, checkpointName(index)))
	if err != nil {
		return nil, err
	}
	if len(buf) < checkpointHeader || string(buf[:4]) != checkpointMagic {
		return nil, errors.New("not a checkpoint (bad magic or short)")
	}
	if buf[4] != checkpointVersion {
		return nil, fmt.Errorf("unknown checkpoint version %d", buf[4])
	}
	if got := binary.LittleEndian.Uint64(buf[5:13]); got != index {
		return nil, fmt.Errorf("file named %d holds index %d", index, got)
	}
	n := binary.LittleEndian.Uint32(buf[13:17])
	if uint64(n) != uint64(len(buf)-checkpointHeader) {
		return nil, fmt.Errorf("length %d, file holds %d", n, len(buf)-checkpointHeader)
	}
	crc := crc32.Update(0, castagnoli, buf[4:17])
	crc = crc32.Update(crc, castagnoli, buf[checkpointHeader:])
	if crc != binary.LittleEndian.Uint32(buf[17:21]) {
		return nil, errors.New("checksum mismatch")
	}
	return buf[checkpointHeader:], nil
}
