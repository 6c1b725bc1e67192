package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Every record the log stores is wrapped in a frame before tidwall/wal sees
// it, because tidwall's own entry format (uvarint length, data) has no magic
// and no checksum. The frame layout (all integers little-endian; FORMAT.md
// has the full description):
//
//	offset size field
//	0      2    magic "RW"
//	2      1    version (1)
//	3      1    kind: 0 record, 1 hole (stands in for a record lost to corruption),
//	            2 skip (an index passed over on purpose, Log.SkipTo)
//	4      8    index of the record in the log
//	12     4    payload length
//	16     4    CRC32C of bytes [2,16) and the payload
//	20     n    payload
//
// The index makes a frame self-describing: after a damaged length prefix the
// scanner can find the following frames by their magic and checksum and still
// know where in the log they belong.
const (
	frameMagic0   = 'R'
	frameMagic1   = 'W'
	frameVersion  = 1
	frameHeader   = 20
	kindRecord    = 0
	kindHole      = 1
	kindSkip      = 2
	maxFrameBytes = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorruptFrame marks a frame that fails verification; the reader skips
// such records and counts them.
var errCorruptFrame = errors.New("corrupt frame")

// errHole marks a hole frame written by repair in place of a lost record.
var errHole = errors.New("record lost to corruption (hole)")

// errSkip marks a skip frame written by SkipTo: an index with no record,
// passed over on purpose; readers skip it silently.
var errSkip = errors.New("index skipped")

// appendFrame appends the frame of payload at index to dst.
func appendFrame(dst []byte, index uint64, kind byte, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeader)...)
	dst = append(dst, payload...)
	putFrameHeader(dst[start:], index, kind)
	return dst
}

// putFrameHeader fills the header of frame, whose payload already follows
// the header room.
func putFrameHeader(frame []byte, index uint64, kind byte) {
	frame[0], frame[1], frame[2], frame[3] = frameMagic0, frameMagic1, frameVersion, kind
	binary.LittleEndian.PutUint64(frame[4:12], index)
	binary.LittleEndian.PutUint32(frame[12:16], uint32(len(frame)-frameHeader))
	crc := crc32.Update(0, castagnoli, frame[2:16])
	crc = crc32.Update(crc, castagnoli, frame[frameHeader:])
	binary.LittleEndian.PutUint32(frame[16:20], crc)
}

// parseFrame verifies a whole frame and returns its index, kind and payload
// (aliasing data). It fails unless data is exactly one valid frame.
func parseFrame(data []byte) (index uint64, kind byte, payload []byte, err error) {
	if len(data) < frameHeader {
		return 0, 0, nil, fmt.Errorf("%w: %d bytes, shorter than a header", errCorruptFrame, len(data))
	}
	if data[0] != frameMagic0 || data[1] != frameMagic1 {
		return 0, 0, nil, fmt.Errorf("%w: bad magic %#x%02x", errCorruptFrame, data[0], data[1])
	}
	if data[2] != frameVersion {
		return 0, 0, nil, fmt.Errorf("%w: unknown version %d", errCorruptFrame, data[2])
	}
	n := binary.LittleEndian.Uint32(data[12:16])
	if uint64(n) != uint64(len(data)-frameHeader) {
		return 0, 0, nil, fmt.Errorf("%w: length field %d, frame holds %d", errCorruptFrame, n, len(data)-frameHeader)
	}
	crc := crc32.Update(0, castagnoli, data[2:16])
	crc = crc32.Update(crc, castagnoli, data[frameHeader:])
	if crc != binary.LittleEndian.Uint32(data[16:20]) {
		return 0, 0, nil, fmt.Errorf("%w: checksum mismatch", errCorruptFrame)
	}
	kind = data[3]
	if kind != kindRecord && kind != kindHole && kind != kindSkip {
		return 0, 0, nil, fmt.Errorf("%w: unknown kind %d", errCorruptFrame, kind)
	}
	return binary.LittleEndian.Uint64(data[4:12]), kind, data[frameHeader:], nil
}

// checkFrame verifies the frame stored at index and returns its payload.
func checkFrame(data []byte, index uint64) ([]byte, error) {
	got, kind, payload, err := parseFrame(data)
	if err != nil {
		return nil, err
	}
	if got != index {
		return nil, fmt.Errorf("%w: frame says index %d", errCorruptFrame, got)
	}
	switch kind {
	case kindHole:
		return nil, errHole
	case kindSkip:
		return nil, errSkip
	}
	return payload, nil
}

// segEntry is one tidwall entry found in a segment file.
type segEntry struct {
	off, end int    // byte range of the entry, length prefix included
	frame    int    // where the frame starts, after the length prefix
	index    uint64 // index of the entry (segment base + position)
	ok       bool   // the frame verified
}

// scanSegment walks tidwall's entry framing (uvarint length, data) over a
// segment file whose first entry has index base, verifying each frame. It
// returns the entries it could delimit and the offset where the framing
// ended: len(data) when the whole file parsed, less when a length prefix was
// damaged or ran past the end.
func scanSegment(data []byte, base uint64) (entries []segEntry, framingEnd int) {
	off := 0
	for off < len(data) {
		size, n := binary.Uvarint(data[off:])
		if n <= 0 || size > uint64(len(data)-off-n) {
			break
		}
		end := off + n + int(size)
		idx := base + uint64(len(entries))
		_, err := checkFrame(data[off+n:end], idx)
		entries = append(entries, segEntry{off: off, end: end, frame: off + n, index: idx, ok: err == nil || errors.Is(err, errHole) || errors.Is(err, errSkip)})
		off = end
	}
	return entries, off
}

// foundFrame is a verified frame found by resynchronising on the magic.
type foundFrame struct {
	index uint64
	kind  byte
	frame []byte // the whole frame, aliasing the scanned data
}

// resync scans data byte by byte for frames that verify, as after a damaged
// length prefix. Indexes must increase; anything else is noise. Frames may
// not start before from.
func resync(data []byte, from int, after uint64) []foundFrame {
	var out []foundFrame
	for p := from; p+frameHeader <= len(data); p++ {
		if data[p] != frameMagic0 || data[p+1] != frameMagic1 || data[p+2] != frameVersion {
			continue
		}
		n := binary.LittleEndian.Uint32(data[p+12 : p+16])
		if uint64(n) > uint64(len(data)-p-frameHeader) {
			continue
		}
		frame := data[p : p+frameHeader+int(n)]
		idx, kind, _, err := parseFrame(frame)
		if err != nil || idx <= after {
			continue
		}
		out = append(out, foundFrame{index: idx, kind: kind, frame: frame})
		after = idx
		p += len(frame) - 1
	}
	return out
}
