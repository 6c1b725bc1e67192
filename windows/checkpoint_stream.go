package windows

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
	"github.com/runnel-iot/runnel/internal/binc"
)

// ErrCheckpointInProgress is returned by BeginCheckpoint while another
// checkpoint of the engine is still in progress (not finished or aborted).
var ErrCheckpointInProgress = errors.New("windows checkpoint already in progress")

// Series saved before a change (see Checkpoint) go into slabs of
// sideSlabBytes, filled in turn: a growing single buffer would copy
// everything saved so far on each growth, a stall of its own. An engine
// keeps keepSlabs slabs between checkpoints; the rest go, so the memory
// outside the budget stays small.
const (
	sideSlabBytes = 256 << 10
	keepSlabs     = 4
	keepBufBytes  = 1 << 20
)

// Checkpoint is a checkpoint of an Engine in progress: the engine's state
// as of the index AppliedIndex had at BeginCheckpoint, in exactly the bytes
// MarshalBinary would have given then (CHECKPOINT.md), produced in chunks
// by Next while Apply goes on between them.
//
// Why incremental, copy-on-write per series: encoding the whole state at
// once stalls the stream (about 60 ms for 10,000 pairs on a small machine,
// windows and alerts waiting meanwhile), and a snapshot copy of the state
// costs as much memory as the state. Instead BeginCheckpoint encodes only
// what is small (the scalars, the devices and the group windows) and fixes
// the list of series; Next encodes series in key order, a chunk at a time.
// Before Apply changes a series this checkpoint has not reached yet (a
// reading, a window closing, an idle close, an eviction), the engine
// encodes that series first, as it still is, into a side buffer that Next
// copies out in its turn. Each series is thus encoded once, as of the
// checkpoint's index, whatever Apply does meanwhile; new series are not
// part of it. The work per call is bounded by the chunk size (Next) or by
// the series one batch touches (Apply), and the memory by the checkpoint's
// size (the side buffer holds at most every series once).
//
// A Checkpoint is used by one goroutine, the one that calls Apply; its
// methods take the engine's write lock.
type Checkpoint struct {
	e      *Engine
	gen    uint64
	index  uint64
	series []*series // as of Begin, sorted by key
	pos    int       // next series to write
	head   []byte    // everything before the series
	tail   []byte    // the group windows, after the series
	side   [][]byte  // slabs of series saved before Apply changed them
	out    enc       // the chunk Next returns
	h      xxhash.Digest
	phase  int
	size   int64
	err    error
}

const (
	phaseHead = iota
	phaseSeries
	phaseTail
	phaseDone
)

// BeginCheckpoint starts a checkpoint of the state as of the current
// AppliedIndex. It encodes the engine's scalars, devices and group windows
// at once (small next to the series) and returns; Next produces the bytes.
// Finish it (Next until io.EOF) or Abort it before beginning another:
// meanwhile BeginCheckpoint returns ErrCheckpointInProgress. Takes the
// write lock.
func (e *Engine) BeginCheckpoint() (*Checkpoint, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ckpt != nil {
		return nil, ErrCheckpointInProgress
	}
	e.ckptGen++
	c := &Checkpoint{e: e, gen: e.ckptGen, index: e.applied}
	// The API's sorted cache: no sort while the set of series is unchanged.
	c.series = append(e.ckptSeries[:0], e.sortedSeries()...)
	w := &enc{Enc: binc.Enc{B: e.ckptHead[:0]}}
	if err := e.marshalHead(w, len(c.series)); err != nil {
		return nil, err
	}
	c.head = w.B
	w = &enc{Enc: binc.Enc{B: e.ckptTail[:0]}}
	if err := e.marshalGroups(w); err != nil {
		return nil, err
	}
	c.tail = w.B
	c.side = e.ckptSide[:0]
	c.out.B = e.ckptOut[:0]
	c.h.Reset()
	e.ckpt = c
	return c, nil
}

// Index is the WAL index the checkpoint covers.
func (c *Checkpoint) Index() uint64 { return c.index }

// Size is the number of bytes Next returned so far.
func (c *Checkpoint) Size() int64 { return c.size }

// Next returns the next chunk of the checkpoint: about maxBytes (at least
// one series; the first chunk is the head whole), or io.EOF once every
// byte was returned, the last chunk ending with the checksum. The chunk is
// owned by the Checkpoint and valid until the next call of Next or
// BeginCheckpoint; Apply does not change it. Takes the write lock.
func (c *Checkpoint) Next(maxBytes int) ([]byte, error) {
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if c.err != nil {
		return nil, c.err
	}
	var chunk []byte
	switch c.phase {
	case phaseHead:
		chunk = c.head
		c.phase = phaseSeries
	case phaseSeries:
		c.out.B = c.out.B[:0]
		for c.pos < len(c.series) && len(c.out.B) < maxBytes {
			s := c.series[c.pos]
			c.series[c.pos] = nil
			c.pos++
			if s.ckptGen == c.gen { // saved before Apply changed it
				c.out.B = append(c.out.B, c.side[s.ckptSlab][s.ckptOff:s.ckptEnd]...)
				continue
			}
			s.ckptGen = c.gen
			if err := e.marshalSeries(&c.out, s); err != nil {
				return nil, c.fail(err)
			}
		}
		if c.pos == len(c.series) {
			c.phase = phaseTail
		}
		chunk = c.out.B
	case phaseTail:
		_, _ = c.h.Write(c.tail)
		c.tail = binary.LittleEndian.AppendUint64(c.tail, c.h.Sum64())
		c.size += int64(len(c.tail))
		c.phase = phaseDone
		c.release()
		return c.tail, nil
	default:
		return nil, io.EOF
	}
	_, _ = c.h.Write(chunk)
	c.size += int64(len(chunk))
	return chunk, nil
}

// Abort ends the checkpoint unfinished; the engine can begin another.
// Idempotent. Takes the write lock.
func (c *Checkpoint) Abort() {
	c.e.mu.Lock()
	defer c.e.mu.Unlock()
	if c.phase != phaseDone {
		c.phase = phaseDone
		c.err = errors.New("windows checkpoint aborted")
		c.release()
	}
}

func (c *Checkpoint) fail(err error) error {
	c.err = fmt.Errorf("windows checkpoint: %w", err)
	c.phase = phaseDone
	c.release()
	return c.err
}

// release detaches the checkpoint from the engine and hands its buffers
// back for the next one (the side buffer only when small). e.mu held.
func (c *Checkpoint) release() {
	e := c.e
	if e.ckpt != c {
		return
	}
	e.ckpt = nil
	clear(c.series)
	e.ckptSeries = c.series[:0]
	// The head (every device) and the tail (every group window) are kept
	// for the next checkpoint only when small: with many devices they are
	// megabytes that would stay on the heap between checkpoints.
	e.ckptHead, e.ckptTail, e.ckptOut = keepBuf(c.head), keepBuf(c.tail), keepBuf(c.out.B)
	// Keep a few slabs (emptied) for the next checkpoint.
	keep := e.ckptSlabs[:0]
	for _, sl := range c.side {
		if len(keep) < keepSlabs && cap(sl) == sideSlabBytes {
			keep = append(keep, sl[:0])
		}
	}
	clear(c.side)
	e.ckptSlabs, e.ckptSide = keep, c.side[:0]
	c.series, c.side = nil, nil
}

// keepBuf is b emptied, to be reused, or nil when over keepBufBytes.
func keepBuf(b []byte) []byte {
	if cap(b) > keepBufBytes {
		return nil
	}
	return b[:0]
}

// preserve encodes s into the side buffer of the checkpoint in progress
// before Apply changes it, unless that checkpoint already has it or s is
// newer than it. Called with e.mu held, before any change to s or its
// pairs.
func (e *Engine) preserve(s *series) {
	c := e.ckpt
	if c == nil || s.ckptGen == c.gen {
		return
	}
	s.ckptGen = c.gen
	// Encoded into a reused scratch buffer, then copied into the current
	// slab, or a new one when it does not fit: no slab ever grows.
	w := &e.ckptEnc
	w.B = w.B[:0]
	if err := e.marshalSeries(w, s); err != nil {
		c.fail(err)
		return
	}
	n := len(c.side)
	if n == 0 || cap(c.side[n-1])-len(c.side[n-1]) < len(w.B) {
		c.side = append(c.side, e.newSlab(len(w.B)))
		n++
	}
	sl := c.side[n-1]
	s.ckptSlab, s.ckptOff = n-1, len(sl)
	c.side[n-1] = append(sl, w.B...)
	s.ckptEnd = len(c.side[n-1])
}

// newSlab returns an empty slab with room for at least n bytes, reusing
// a kept one when it is large enough.
func (e *Engine) newSlab(n int) []byte {
	if n <= sideSlabBytes {
		if k := len(e.ckptSlabs); k > 0 {
			sl := e.ckptSlabs[k-1]
			e.ckptSlabs = e.ckptSlabs[:k-1]
			return sl
		}
		return make([]byte, 0, sideSlabBytes)
	}
	return make([]byte, 0, n)
}

// preserveDevice preserves every series of d.
func (e *Engine) preserveDevice(d *device) {
	if e.ckpt == nil {
		return
	}
	for _, s := range d.series {
		e.preserve(s)
	}
}
