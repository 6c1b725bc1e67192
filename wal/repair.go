package wal

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// segFile is one segment file of a log directory. tidwall/wal names a
// segment by the index of its first entry, zero-padded to 20 digits.
type segFile struct {
	base  uint64
	path  string
	size  int64
	mtime time.Time
}

func segmentName(index uint64) string { return fmt.Sprintf("%020d", index) }

// listSegments returns the segment files of dir in index order.
func listSegments(dir string) ([]segFile, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list segments in %s: %w", dir, err)
	}
	var segs []segFile
	for _, de := range des {
		name := de.Name()
		if de.IsDir() || len(name) != 20 {
			continue
		}
		base, err := strconv.ParseUint(name, 10, 64)
		if err != nil || base == 0 {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			return nil, fmt.Errorf("stat segment %s: %w", name, err)
		}
		segs = append(segs, segFile{base: base, path: filepath.Join(dir, name), size: fi.Size(), mtime: fi.ModTime()})
	}
	return segs, nil
}

// cleanupDir finishes what a crash interrupted in tidwall/wal's truncation
// (its START and END files, resolved the way tidwall's own load does) and
// removes leftover temp files, so the last segment file is really the last.
func cleanupDir(dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	type ent struct {
		name  string
		index uint64
	}
	var ents []ent
	start, end := -1, -1
	changed := false
	for _, de := range des {
		name := de.Name()
		if de.IsDir() || len(name) < 20 {
			continue
		}
		if strings.HasSuffix(name, ".TEMP") {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("remove temp file %s: %w", name, err)
			}
			changed = true
			continue
		}
		index, err := strconv.ParseUint(name[:20], 10, 64)
		if err != nil || index == 0 {
			continue
		}
		isStart := len(name) == 26 && strings.HasSuffix(name, ".START")
		isEnd := len(name) == 24 && strings.HasSuffix(name, ".END")
		if len(name) != 20 && !isStart && !isEnd {
			continue
		}
		if isStart {
			start = len(ents)
		} else if isEnd && end == -1 {
			end = len(ents)
		}
		ents = append(ents, ent{name, index})
	}
	if start != -1 && end != -1 {
		return fmt.Errorf("log %s holds both a START and an END file: an interrupted truncation cannot be resolved", dir)
	}
	remove := func(name string) error {
		changed = true
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("finish interrupted truncation: %w", err)
		}
		return nil
	}
	rename := func(name string) error {
		changed = true
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, name[:20])); err != nil {
			return fmt.Errorf("finish interrupted truncation: %w", err)
		}
		return nil
	}
	if start != -1 {
		for _, e := range ents[:start] {
			if err := remove(e.name); err != nil {
				return err
			}
		}
		if err := rename(ents[start].name); err != nil {
			return err
		}
	}
	if end != -1 {
		for _, e := range ents[end+1:] {
			if err := remove(e.name); err != nil {
				return err
			}
		}
		for _, e := range ents[:end] {
			if e.index == ents[end].index && len(e.name) == 20 {
				if err := remove(e.name); err != nil {
					return err
				}
			}
		}
		if err := rename(ents[end].name); err != nil {
			return err
		}
	}
	if changed {
		return syncDir(dir)
	}
	return nil
}

// noLimit as repair's keepThrough keeps every whole record.
const noLimit = math.MaxUint64

// repairResult says what repair changed.
type repairResult struct {
	cutBytes        int64 // bytes cut from the end of the last segment
	cutRecords      int   // whole records cut because they were never acknowledged
	holes           int   // records the rewrite replaced with holes
	removedSegments int   // segment files removed because they held only unacknowledged records
}

func (r repairResult) changed() bool {
	return r.cutBytes != 0 || r.holes != 0 || r.removedSegments != 0
}

// repairTail makes the log directory safe for tidwall/wal to open and
// exactly as long as it should be:
//   - segments and records after keepThrough are removed (after a failed
//     write the log must hold exactly what was acknowledged; noLimit keeps
//     everything);
//   - a torn tail (a last record cut short, garbage or zeros after the last
//     whole record) is cut back to the last frame that verifies;
//   - when frames that verify follow the damage (a damaged length prefix
//     misaligns or breaks the framing of everything after it), the segment
//     is rewritten with those frames and hole frames for the records lost
//     in between, so no earlier or later record is lost and indexes stay in
//     place.
//
// A bad frame followed by good ones with intact framing is left alone: the
// reader skips and counts it.
func repairTail(dir string, keepThrough uint64) (repairResult, error) {
	var res repairResult
	if err := cleanupDir(dir); err != nil {
		return res, err
	}
	segs, err := listSegments(dir)
	if err != nil || len(segs) == 0 {
		return res, err
	}
	for len(segs) > 1 && keepThrough != noLimit && segs[len(segs)-1].base > keepThrough+1 {
		if err := os.Remove(segs[len(segs)-1].path); err != nil {
			return res, fmt.Errorf("remove unacknowledged segment: %w", err)
		}
		res.removedSegments++
		segs = segs[:len(segs)-1]
	}
	last := segs[len(segs)-1]
	data, err := os.ReadFile(last.path)
	if err != nil {
		return res, fmt.Errorf("read last segment: %w", err)
	}
	entries, _ := scanSegment(data, last.base)
	keep := 0
	for i, e := range entries {
		if e.ok {
			keep = i + 1
		}
	}
	if keepThrough != noLimit {
		if limit := int64(keepThrough) - int64(last.base) + 1; limit < int64(keep) {
			res.cutRecords = keep - int(max(limit, 0))
			keep = int(max(limit, 0))
		}
	}
	// Frames that verify after the last good entry mean the damage is in
	// the middle (a length prefix that still parses misaligns everything
	// after it), not a torn tail: keep them, with holes for what is lost.
	goodEnd, after := 0, last.base-1
	if keep > 0 {
		goodEnd, after = entries[keep-1].end, entries[keep-1].index
	}
	found := resync(data, goodEnd, after)
	for len(found) > 0 && keepThrough != noLimit && found[len(found)-1].index > keepThrough {
		found = found[:len(found)-1]
	}
	if len(found) > 0 {
		out, holes := rewriteTail(data[:goodEnd], after, found)
		res.holes = holes
		if err := atomicWriteFile(last.path, out); err != nil {
			return res, fmt.Errorf("rewrite damaged segment %s: %w", filepath.Base(last.path), err)
		}
		return res, nil
	}
	size := 0
	if keep > 0 {
		size = entries[keep-1].end
	}
	if size < len(data) {
		res.cutBytes = int64(len(data) - size)
		if err := truncateFile(last.path, int64(size)); err != nil {
			return res, fmt.Errorf("cut torn tail of segment %s: %w", filepath.Base(last.path), err)
		}
	}
	if res.removedSegments > 0 {
		if err := syncDir(dir); err != nil {
			return res, err
		}
	}
	return res, nil
}

// rewriteTail returns prefix followed by the found frames, with hole frames
// for every index between them that no frame was found for.
func rewriteTail(prefix []byte, after uint64, found []foundFrame) ([]byte, int) {
	out := append([]byte(nil), prefix...)
	holes := 0
	next := after + 1
	var frame []byte
	for _, f := range found {
		for ; next < f.index; next++ {
			frame = appendFrame(frame[:0], next, kindHole, nil)
			out = binary.AppendUvarint(out, uint64(len(frame)))
			out = append(out, frame...)
			holes++
		}
		out = binary.AppendUvarint(out, uint64(len(f.frame)))
		out = append(out, f.frame...)
		next = f.index + 1
	}
	return out, holes
}

func truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// atomicWriteFile replaces path with data: temp file, fsync, rename, fsync
// of the directory.
func atomicWriteFile(path string, data []byte) error {
	tmp := path + ".TEMP"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs a directory so that file creations, removals and renames
// in it survive a power cut.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// logRepair reports what repair changed, if anything.
func logRepair(logger *slog.Logger, dir string, r repairResult) {
	if !r.changed() {
		return
	}
	logger.Warn("wal repaired", "dir", dir, "cut_bytes", r.cutBytes, "cut_records", r.cutRecords,
		"holes", r.holes, "removed_segments", r.removedSegments)
}
