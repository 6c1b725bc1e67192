package windows

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/runnel-iot/runnel/internal/binc"
	"github.com/runnel-iot/runnel/sketches"
)

// Checkpoint format: see CHECKPOINT.md.
const (
	ckptMagic   = "RWIN"
	ckptVersion = 1
)

// ErrCheckpoint marks a checkpoint UnmarshalBinary cannot use: corrupt,
// truncated, of another version, or from another config.
var ErrCheckpoint = errors.New("bad windows checkpoint")

func configFingerprint(c Config) uint64 {
	return xxhash.Sum64String(fmt.Sprintf("v1 %+v", c))
}

// enc and dec are the checkpoint's byte encoding (internal/binc), with
// the engine's own records.
type enc struct {
	binc.Enc
	scratch []byte            // a sketch's encoding before its length is known; reused
	q       sketches.Quantile // the sketch of a window without one
	recs    []closedRec       // a closed history, decoded; reused
}

// blob writes a sketch's encoding (length, bytes), appended through
// scratch so that no sketch allocates a buffer of its own.
func (w *enc) blob(appendTo func([]byte) ([]byte, error)) error {
	b, err := appendTo(w.scratch[:0])
	if err != nil {
		return err
	}
	w.scratch = b
	w.Bytes(b)
	return nil
}

func (w *enc) agg(a *agg) {
	w.U(a.count)
	if a.count == 0 {
		return
	}
	for _, v := range [...]float64{a.sum, a.min, a.max, a.mean, a.m2, a.first, a.last} {
		w.F(v)
	}
	w.I(a.firstT)
	w.I(a.lastT)
}

func (w *enc) rec(r *closedRec) {
	w.I(r.start)
	w.U(r.count)
	for _, v := range [...]float64{r.sum, r.min, r.max, r.std, r.first, r.last, r.p50, r.p90, r.p99} {
		w.F(v)
	}
	w.B = append(w.B, r.reason)
}

// MarshalBinary encodes the whole state: applied index, processing time,
// devices with watermarks and idle flags, series with their open windows,
// sketches, panes, closed history and reservoirs (PRNG state included),
// group windows, counters, overflow state and the memory accounting. The
// encoding is deterministic: the same state gives the same bytes. It takes
// the read lock.
func (e *Engine) MarshalBinary() ([]byte, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	// Sized from the last encoding: growing a slice of megabytes by
	// append (1.25x a step) allocates about five times its final size.
	hint := max(e.lastSize.Load()+e.lastSize.Load()/8, 1<<16)
	w := &enc{Enc: binc.Enc{B: make([]byte, 0, hint)}}
	ss := slices.SortedFunc(e.series.all(), func(a, b *series) int { return strings.Compare(a.key, b.key) })
	if err := e.marshalHead(w, len(ss)); err != nil {
		return nil, err
	}
	for _, s := range ss {
		if err := e.marshalSeries(w, s); err != nil {
			return nil, err
		}
	}
	if err := e.marshalGroups(w); err != nil {
		return nil, err
	}
	w.B = binary.LittleEndian.AppendUint64(w.B, xxhash.Sum64(w.B))
	e.lastSize.Store(int64(len(w.B)))
	return w.B, nil
}

// marshalHead writes everything before the series: magic, version,
// fingerprint, the engine's scalars and counters, the overflow HLL, the
// devices, then the number of series that follow (n).
func (e *Engine) marshalHead(w *enc, n int) error {
	w.B = append(w.B, ckptMagic...)
	w.B = append(w.B, ckptVersion)
	w.B = binary.LittleEndian.AppendUint64(w.B, e.fingerprint)
	w.U(e.applied)
	w.I(e.procNs)
	w.I(e.nextCheck)
	w.U(e.seq)
	w.U(e.devGen)
	w.I(e.mem)
	for _, v := range e.counters() {
		w.U(*v)
	}
	w.U(uint64(len(e.winPool)))
	hll, err := e.overflowHLL.MarshalBinary()
	if err != nil {
		return fmt.Errorf("marshal windows: %w", err)
	}
	w.Bytes(hll)

	devs := sortedValues(e.devices, func(d *device) string { return d.key })
	w.U(uint64(len(devs)))
	for _, d := range devs {
		w.S(d.key)
		w.I(d.maxT)
		w.I(d.idleAdv)
		w.I(d.lastIngest)
		w.Bool(d.idle)
		w.U(d.seq)
		w.U(d.gen)
		w.I(d.bytes)
		w.U(uint64(cap(d.series)))
		w.U(uint64(cap(d.groups)))
		w.U(uint64(len(d.series)))
		for _, s := range d.series {
			w.S(s.key)
		}
		n := 0
		for _, gw := range d.groups {
			if !gw.closed {
				n++
			}
		}
		w.U(uint64(n))
		for _, gw := range d.groups {
			if !gw.closed {
				w.U(uint64(gw.k.g.gi))
				w.S(gw.k.key)
				w.I(gw.start)
			}
		}
	}

	w.U(uint64(n))
	return nil
}

// marshalGroups writes the group windows, after the series.
func (e *Engine) marshalGroups(w *enc) error {
	for _, g := range e.groups {
		w.U(uint64(len(g.hllPool)))
		w.U(uint64(len(g.topkPool)))
		keys := sortedValues(g.keys, func(k *groupKey) string { return k.key })
		w.U(uint64(len(keys)))
		for _, gk := range keys {
			if err := marshalGroupKey(w, gk); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *Engine) counters() []*uint64 {
	return []*uint64{
		&e.st.OverflowReadings, &e.st.Evictions, &e.st.LateReadings, &e.st.IdleCloses,
		&e.st.GroupLateReadings, &e.st.GroupOverflowReadings, &e.st.BadTimeReadings,
	}
}

func sortedValues[V any](m map[string]V, key func(V) string) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b V) int { return strings.Compare(key(a), key(b)) })
	return out
}

func (e *Engine) marshalSeries(w *enc, s *series) error {
	w.S(s.key)
	w.S(s.dev.key)
	w.U(s.readings)
	w.I(s.lastEventNs)
	w.I(s.lastApplied)
	w.U(s.seq)
	w.I(s.bytes)
	w.U(uint64(cap(s.pairs)))
	w.U(uint64(len(s.pairs)))
	for _, p := range s.pairs {
		w.S(p.field)
		w.I(p.bytes)
		if err := w.blob(p.res.AppendBinary); err != nil {
			return fmt.Errorf("marshal series %q field %q: %w", s.key, p.field, err)
		}
		for i := range e.specs {
			ps := &p.specs[i]
			if e.specs[i].kind == KindTumbling {
				w.U(uint64(cap(ps.wins)))
				w.U(uint64(len(ps.wins)))
				for _, tw := range ps.wins {
					w.I(tw.start)
					w.agg(&tw.agg)
					if err := w.blob(tw.sketch(&w.q).AppendBinary); err != nil {
						return fmt.Errorf("marshal series %q field %q: %w", s.key, p.field, err)
					}
				}
			} else {
				w.I(ps.nextStart)
				w.U(uint64(cap(ps.panes)))
				w.U(uint64(len(ps.panes)))
				for k := range ps.panes {
					w.I(ps.panes[k].start)
					w.agg(&ps.panes[k].agg)
				}
			}
			// The layout of a ring of structs: slot k holds the record
			// (k - histHead) mod n, oldest first.
			w.Bool(ps.hist != nil)
			w.U(uint64(ps.histN))
			w.U(uint64(ps.histHead))
			w.recs = ps.histOldestFirst(e.specs[i].histUnit(), w.recs[:0])
			for k := range w.recs {
				w.rec(&w.recs[(k-int(ps.histHead)+len(w.recs))%len(w.recs)])
			}
		}
	}
	return nil
}

func marshalGroupKey(w *enc, gk *groupKey) error {
	w.S(gk.key)
	w.I(gk.maxClosedStart)
	w.I(gk.lastActive)
	w.I(gk.bytes)
	w.Bool(gk.hist != nil)
	w.U(uint64(len(gk.hist)))
	w.U(uint64(gk.histHead))
	for k := range gk.hist {
		h := &gk.hist[k]
		w.I(h.StartNs)
		w.U(h.Readings)
		w.U(h.Distinct)
		w.U(uint64(len(h.TopK)))
		for _, it := range h.TopK {
			w.S(it.Key)
			w.U(it.Count)
		}
	}
	w.U(uint64(len(gk.open)))
	for _, gw := range gk.open {
		w.I(gw.start)
		w.U(gw.readings)
		var hb, tb []byte
		var err error
		if gw.hll != nil {
			if hb, err = gw.hll.MarshalBinary(); err != nil {
				return fmt.Errorf("marshal group %q key %q: %w", gk.g.spec.Name, gk.key, err)
			}
		}
		if gw.topk != nil {
			if tb, err = gw.topk.MarshalBinary(); err != nil {
				return fmt.Errorf("marshal group %q key %q: %w", gk.g.spec.Name, gk.key, err)
			}
		}
		w.Bytes(hb)
		w.Bytes(tb)
	}
	return nil
}

type dec struct{ binc.Dec }

// capacity reads a slice capacity for n elements, bounded so a corrupt
// value cannot make it allocate much.
func (r *dec) capacity(n, limit int, what string) int {
	c := r.U()
	if r.Err == nil && (c < uint64(n) || c > uint64(2*n+limit+8)) {
		r.Fail("%s capacity %d for %d elements", what, c, n)
		return n
	}
	return int(c)
}

func (r *dec) agg() agg {
	var a agg
	a.count = r.U()
	if a.count == 0 {
		return a
	}
	a.sum, a.min, a.max, a.mean, a.m2, a.first, a.last = r.F(), r.F(), r.F(), r.F(), r.F(), r.F(), r.F()
	a.firstT, a.lastT = r.I(), r.I()
	return a
}

func (r *dec) rec() closedRec {
	var c closedRec
	c.start = r.I()
	c.count = r.U()
	c.sum, c.min, c.max, c.std, c.first, c.last, c.p50, c.p90, c.p99 = r.F(), r.F(), r.F(), r.F(), r.F(), r.F(), r.F(), r.F(), r.F()
	c.reason = r.Byte()
	if c.reason > reasonEvicted || c.reason == reasonOpen {
		r.Fail("bad closed reason %d", c.reason)
	}
	return c
}

// UnmarshalBinary restores a checkpoint from MarshalBinary into an engine
// fresh from New with the same Config. It rejects a checkpoint of another
// config, version or a corrupt one with an error wrapping ErrCheckpoint,
// never panics, and leaves the engine unchanged on error. It takes the
// write lock.
func (e *Engine) UnmarshalBinary(data []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	hdr := len(ckptMagic) + 1 + 8
	if len(data) < hdr+8 || string(data[:len(ckptMagic)]) != ckptMagic {
		return fmt.Errorf("%w: not a windows checkpoint", ErrCheckpoint)
	}
	if v := data[len(ckptMagic)]; v != ckptVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrCheckpoint, v, ckptVersion)
	}
	if fp := binary.LittleEndian.Uint64(data[len(ckptMagic)+1:]); fp != e.fingerprint {
		return fmt.Errorf("%w: written with another windows config (fingerprint %016x, this config %016x)", ErrCheckpoint, fp, e.fingerprint)
	}
	body := data[:len(data)-8]
	if sum := binary.LittleEndian.Uint64(data[len(data)-8:]); sum != xxhash.Sum64(body) {
		return fmt.Errorf("%w: checksum mismatch", ErrCheckpoint)
	}
	if e.applied != 0 || e.series.len() != 1 || e.ckpt != nil {
		return fmt.Errorf("%w: engine is not fresh", ErrCheckpoint)
	}
	fresh, err := New(e.cfg)
	if err != nil {
		return err
	}
	fresh.sink = e.sink
	r := &dec{binc.Dec{B: body, Off: hdr, Kind: ErrCheckpoint}}
	if err := fresh.decode(r); err != nil {
		return err
	}
	if r.Off != len(body) {
		return fmt.Errorf("%w: %d trailing bytes", ErrCheckpoint, len(body)-r.Off)
	}
	e.adopt(fresh)
	return nil
}

// adopt moves the state of f (decoded, never shared) into e.
func (e *Engine) adopt(f *Engine) {
	e.series, e.devices, e.devGen, e.seq = f.series, f.devices, f.devGen, f.seq
	e.hot = nil
	e.seriesGen++
	e.act, e.ttl = f.act, f.ttl
	e.overflow, e.overflowHLL = f.overflow, f.overflowHLL
	e.applied, e.procNs, e.nextCheck = f.applied, f.procNs, f.nextCheck
	e.mem, e.winPool, e.st = f.mem, f.winPool, f.st
	e.groups = f.groups
	e.fieldNames = f.fieldNames
}
