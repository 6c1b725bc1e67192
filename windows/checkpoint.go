package windows

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
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

type enc struct{ b []byte }

func (w *enc) u(v uint64)  { w.b = binary.AppendUvarint(w.b, v) }
func (w *enc) i(v int64)   { w.b = binary.AppendVarint(w.b, v) }
func (w *enc) f(v float64) { w.b = binary.LittleEndian.AppendUint64(w.b, math.Float64bits(v)) }
func (w *enc) s(v string)  { w.u(uint64(len(v))); w.b = append(w.b, v...) }
func (w *enc) bs(v []byte) { w.u(uint64(len(v))); w.b = append(w.b, v...) }
func (w *enc) bool(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}

func (w *enc) agg(a *agg) {
	w.u(a.count)
	if a.count == 0 {
		return
	}
	for _, v := range [...]float64{a.sum, a.min, a.max, a.mean, a.m2, a.first, a.last} {
		w.f(v)
	}
	w.i(a.firstT)
	w.i(a.lastT)
}

func (w *enc) rec(r *closedRec) {
	w.i(r.start)
	w.u(r.count)
	for _, v := range [...]float64{r.sum, r.min, r.max, r.std, r.first, r.last, r.p50, r.p90, r.p99} {
		w.f(v)
	}
	w.b = append(w.b, r.reason)
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
	w := &enc{b: make([]byte, 0, 1<<16)}
	w.b = append(w.b, ckptMagic...)
	w.b = append(w.b, ckptVersion)
	w.b = binary.LittleEndian.AppendUint64(w.b, e.fingerprint)
	w.u(e.applied)
	w.i(e.procNs)
	w.i(e.nextCheck)
	w.u(e.seq)
	w.u(e.devGen)
	w.i(e.mem)
	for _, v := range e.counters() {
		w.u(*v)
	}
	w.u(uint64(len(e.winPool)))
	hll, err := e.overflowHLL.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("marshal windows: %w", err)
	}
	w.bs(hll)

	devs := sortedValues(e.devices, func(d *device) string { return d.key })
	w.u(uint64(len(devs)))
	for _, d := range devs {
		w.s(d.key)
		w.i(d.maxT)
		w.i(d.idleAdv)
		w.i(d.lastIngest)
		w.bool(d.idle)
		w.u(d.seq)
		w.u(d.gen)
		w.i(d.bytes)
		w.u(uint64(cap(d.series)))
		w.u(uint64(cap(d.groups)))
		w.u(uint64(len(d.series)))
		for _, s := range d.series {
			w.s(s.key)
		}
		n := 0
		for _, gw := range d.groups {
			if !gw.closed {
				n++
			}
		}
		w.u(uint64(n))
		for _, gw := range d.groups {
			if !gw.closed {
				w.u(uint64(gw.k.g.gi))
				w.s(gw.k.key)
				w.i(gw.start)
			}
		}
	}

	ss := sortedValues(e.series, func(s *series) string { return s.key })
	w.u(uint64(len(ss)))
	for _, s := range ss {
		if err := e.marshalSeries(w, s); err != nil {
			return nil, err
		}
	}

	for _, g := range e.groups {
		w.u(uint64(len(g.hllPool)))
		w.u(uint64(len(g.topkPool)))
		keys := sortedValues(g.keys, func(k *groupKey) string { return k.key })
		w.u(uint64(len(keys)))
		for _, gk := range keys {
			if err := marshalGroupKey(w, gk); err != nil {
				return nil, err
			}
		}
	}
	w.b = binary.LittleEndian.AppendUint64(w.b, xxhash.Sum64(w.b))
	return w.b, nil
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
	w.s(s.key)
	w.s(s.dev.key)
	w.u(s.readings)
	w.i(s.lastEventNs)
	w.i(s.lastApplied)
	w.u(s.seq)
	w.i(s.bytes)
	w.u(uint64(cap(s.pairs)))
	w.u(uint64(len(s.pairs)))
	for _, p := range s.pairs {
		w.s(p.field)
		w.i(p.bytes)
		rb, err := p.res.MarshalBinary()
		if err != nil {
			return fmt.Errorf("marshal series %q field %q: %w", s.key, p.field, err)
		}
		w.bs(rb)
		for i := range e.specs {
			ps := &p.specs[i]
			if e.specs[i].kind == KindTumbling {
				w.u(uint64(cap(ps.wins)))
				w.u(uint64(len(ps.wins)))
				for _, tw := range ps.wins {
					w.i(tw.start)
					w.agg(&tw.agg)
					qb, err := tw.q.MarshalBinary()
					if err != nil {
						return fmt.Errorf("marshal series %q field %q: %w", s.key, p.field, err)
					}
					w.bs(qb)
				}
			} else {
				w.i(ps.nextStart)
				w.u(uint64(cap(ps.panes)))
				w.u(uint64(len(ps.panes)))
				for k := range ps.panes {
					w.i(ps.panes[k].start)
					w.agg(&ps.panes[k].agg)
				}
			}
			w.bool(ps.hist != nil)
			w.u(uint64(len(ps.hist)))
			w.u(uint64(ps.histHead))
			for k := range ps.hist {
				w.rec(&ps.hist[k])
			}
		}
	}
	return nil
}

func marshalGroupKey(w *enc, gk *groupKey) error {
	w.s(gk.key)
	w.i(gk.maxClosedStart)
	w.i(gk.lastActive)
	w.i(gk.bytes)
	w.bool(gk.hist != nil)
	w.u(uint64(len(gk.hist)))
	w.u(uint64(gk.histHead))
	for k := range gk.hist {
		h := &gk.hist[k]
		w.i(h.StartNs)
		w.u(h.Readings)
		w.u(h.Distinct)
		w.u(uint64(len(h.TopK)))
		for _, it := range h.TopK {
			w.s(it.Key)
			w.u(it.Count)
		}
	}
	w.u(uint64(len(gk.open)))
	for _, gw := range gk.open {
		w.i(gw.start)
		w.u(gw.readings)
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
		w.bs(hb)
		w.bs(tb)
	}
	return nil
}

// dec reads a checkpoint, remembering the first error.
type dec struct {
	b   []byte
	off int
	err error
}

func (r *dec) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: at byte %d: %s", ErrCheckpoint, r.off, fmt.Sprintf(format, args...))
	}
	r.off = len(r.b)
}

func (r *dec) u() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail("bad uvarint")
		return 0
	}
	r.off += n
	return v
}

func (r *dec) i() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.off += n
	return v
}

func (r *dec) f() float64 {
	if r.err != nil {
		return 0
	}
	if len(r.b)-r.off < 8 {
		r.fail("truncated float")
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.b[r.off:]))
	r.off += 8
	return v
}

func (r *dec) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail("truncated")
		return 0
	}
	v := r.b[r.off]
	r.off++
	return v
}

func (r *dec) bool() bool {
	switch r.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail("bad bool")
	return false
}

func (r *dec) bs() []byte {
	n := r.u()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)-r.off) {
		r.fail("length %d past the end", n)
		return nil
	}
	v := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return v
}

func (r *dec) s() string { return string(r.bs()) }

// count reads an element count whose elements take at least minBytes each.
func (r *dec) count(minBytes int, what string) int {
	n := r.u()
	if r.err == nil && n > uint64((len(r.b)-r.off)/minBytes) {
		r.fail("%s count %d past the end", what, n)
		return 0
	}
	return int(n)
}

// capacity reads a slice capacity for n elements, bounded so a corrupt
// value cannot make it allocate much.
func (r *dec) capacity(n, limit int, what string) int {
	c := r.u()
	if r.err == nil && (c < uint64(n) || c > uint64(2*n+limit+8)) {
		r.fail("%s capacity %d for %d elements", what, c, n)
		return n
	}
	return int(c)
}

func (r *dec) agg() agg {
	var a agg
	a.count = r.u()
	if a.count == 0 {
		return a
	}
	a.sum, a.min, a.max, a.mean, a.m2, a.first, a.last = r.f(), r.f(), r.f(), r.f(), r.f(), r.f(), r.f()
	a.firstT, a.lastT = r.i(), r.i()
	return a
}

func (r *dec) rec() closedRec {
	var c closedRec
	c.start = r.i()
	c.count = r.u()
	c.sum, c.min, c.max, c.std, c.first, c.last, c.p50, c.p90, c.p99 = r.f(), r.f(), r.f(), r.f(), r.f(), r.f(), r.f(), r.f(), r.f()
	c.reason = r.byte()
	if c.reason > reasonEvicted || c.reason == reasonOpen {
		r.fail("bad closed reason %d", c.reason)
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
	if e.applied != 0 || len(e.series) != 1 {
		return fmt.Errorf("%w: engine is not fresh", ErrCheckpoint)
	}
	fresh, err := New(e.cfg)
	if err != nil {
		return err
	}
	fresh.sink = e.sink
	r := &dec{b: body, off: hdr}
	if err := fresh.decode(r); err != nil {
		return err
	}
	if r.off != len(body) {
		return fmt.Errorf("%w: %d trailing bytes", ErrCheckpoint, len(body)-r.off)
	}
	e.adopt(fresh)
	return nil
}

// adopt moves the state of f (decoded, never shared) into e.
func (e *Engine) adopt(f *Engine) {
	e.series, e.devices, e.devGen, e.seq = f.series, f.devices, f.devGen, f.seq
	e.seriesGen++
	e.act, e.ttl = f.act, f.ttl
	e.overflow, e.overflowHLL = f.overflow, f.overflowHLL
	e.applied, e.procNs, e.nextCheck = f.applied, f.procNs, f.nextCheck
	e.mem, e.winPool, e.st = f.mem, f.winPool, f.st
	e.groups = f.groups
}
