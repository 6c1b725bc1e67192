package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math"
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
//
// A failed write (a full disk) returns the error and leaves the kept
// checkpoints as they were, with no temp file behind: the caller retries
// later. data is written as is, not copied.
func (c *Checkpoints) Write(index uint64, data []byte) (oldestKept uint64, err error) {
	hdr := checkpointHead(index, uint32(len(data)))
	crc := crc32.Update(0, castagnoli, hdr[4:17])
	crc = crc32.Update(crc, castagnoli, data)
	binary.LittleEndian.PutUint32(hdr[17:21], crc)
	w, err := c.Create(index)
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return 0, err
	}
	if _, err := w.f.WriteAt(hdr[:], 0); err != nil {
		w.Abort()
		return 0, fmt.Errorf("write checkpoint %d: %w", index, err)
	}
	w.crcDone = true
	return w.Commit()
}

func checkpointHead(index uint64, n uint32) [checkpointHeader]byte {
	var hdr [checkpointHeader]byte
	copy(hdr[:], checkpointMagic)
	hdr[4] = checkpointVersion
	binary.LittleEndian.PutUint64(hdr[5:13], index)
	binary.LittleEndian.PutUint32(hdr[13:17], n)
	return hdr
}

// CheckpointWriter writes one checkpoint whose data is produced in pieces
// (a windows checkpoint streamed while the stream goes on): Create, Write
// the data, then Commit (or Abort). The file is the same as Write makes
// (FORMAT.md): its header, which holds the data's length and checksum, is
// filled in at Commit.
type CheckpointWriter struct {
	c       *Checkpoints
	index   uint64
	path    string
	f       *os.File
	n       int64
	err     error
	crcDone bool // Write filled in the header itself
}

// Create starts the checkpoint covering index in a temp file. The
// checkpoint replaces nothing until Commit.
func (c *Checkpoints) Create(index uint64) (*CheckpointWriter, error) {
	path := filepath.Join(c.dir, checkpointName(index))
	f, err := os.OpenFile(path+".tmp", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return nil, fmt.Errorf("write checkpoint %d: %w", index, err)
	}
	w := &CheckpointWriter{c: c, index: index, path: path, f: f}
	var hdr [checkpointHeader]byte // filled in at Commit
	if _, err := f.Write(hdr[:]); err != nil {
		w.Abort()
		return nil, fmt.Errorf("write checkpoint %d: %w", index, err)
	}
	return w, nil
}

// Write appends p to the checkpoint's data. After an error every later
// Write and Commit fail with it (the checkpoint is abandoned, the kept
// ones stand). It does not sync: Commit does.
func (w *CheckpointWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.Write(p)
	w.n += int64(n)
	if err == nil && w.n > math.MaxUint32 {
		err = errors.New("checkpoint larger than 4 GiB")
	}
	if err != nil {
		w.err = fmt.Errorf("write checkpoint %d: %w", w.index, err)
		return n, w.err
	}
	return n, nil
}

// Commit fills in the header (reading the data back for its checksum),
// fsyncs the file, renames it into place, fsyncs the directory and removes
// all but the newest two checkpoints; see Checkpoints.Write for the result.
// It blocks for two fsyncs of the whole file: call it off any hot path. On
// error nothing of the checkpoint is left and the kept ones stand.
func (w *CheckpointWriter) Commit() (oldestKept uint64, err error) {
	if w.err != nil {
		w.Abort()
		return 0, w.err
	}
	if !w.crcDone {
		if err := w.fillHead(); err != nil {
			w.Abort()
			return 0, fmt.Errorf("write checkpoint %d: %w", w.index, err)
		}
	}
	err = w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.f = nil
	if err == nil {
		err = os.Rename(w.path+".tmp", w.path)
	}
	if err != nil {
		w.Abort()
		return 0, fmt.Errorf("write checkpoint %d: %w", w.index, err)
	}
	c := w.c
	if err := syncDir(c.dir); err != nil {
		return 0, fmt.Errorf("write checkpoint %d: %w", w.index, err)
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
	return w.index, nil
}

// fillHead computes the checksum over the header and the data as written
// and writes the header.
func (w *CheckpointWriter) fillHead() error {
	hdr := checkpointHead(w.index, uint32(w.n))
	crc := crc32.Update(0, castagnoli, hdr[4:17])
	buf := make([]byte, 256<<10)
	for off := int64(0); off < w.n; {
		k, err := w.f.ReadAt(buf[:min(int64(len(buf)), w.n-off)], checkpointHeader+off)
		crc = crc32.Update(crc, castagnoli, buf[:k])
		off += int64(k)
		if err != nil && off < w.n {
			return err
		}
	}
	binary.LittleEndian.PutUint32(hdr[17:21], crc)
	_, err := w.f.WriteAt(hdr[:], 0)
	return err
}

// Abort abandons the checkpoint and removes its temp file. Idempotent.
func (w *CheckpointWriter) Abort() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	os.Remove(w.path + ".tmp")
	if w.err == nil {
		w.err = fmt.Errorf("write checkpoint %d: aborted", w.index)
	}
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
