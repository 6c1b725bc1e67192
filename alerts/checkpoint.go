package alerts

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
)

// Checkpoint format, version 1 (all integers uvarint "u" or zig-zag varint
// "i"; floats "f" 8 bytes LE of the IEEE bits; strings "s" a uvarint length
// and the bytes):
//
//	"RALT" magic, 1 byte version, u body length, body,
//	4 bytes LE CRC-32C of everything before it.
//
//	body: byte flags (1: the processing time is set), i processing time,
//	  u touch counter, u × 9 counters (evaluations, out of order, overflow,
//	  fired, resolved, non-finite, bad series, forgotten, evicted);
//	  u rules × (s name, 8 bytes LE fingerprint);
//	  u states, by touch × (u rule, s series, s field, byte phase,
//	    byte hasT, i lastT, i start, i since, f value, f edge, u touch);
//	  u events, oldest first × (byte type 1 firing 2 resolved, s id, s rule,
//	    s series, s field, s severity, u labels × (s key, s value),
//	    f value, f threshold, s op, i start, i at, s gateway, u index, u seq).
//
// States refer to the rule table; on load a state is kept only when the
// engine has a rule of that name with the same fingerprint, so a checkpoint
// taken before a rule change restores exactly the unchanged rules' state.
const (
	ckptMagic   = "RALT"
	ckptVersion = 1
	numCounters = 9
)

// ErrCheckpoint marks a checkpoint UnmarshalBinary cannot use: corrupt,
// truncated, of another version, or inconsistent.
var ErrCheckpoint = errors.New("bad alerts checkpoint")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type enc struct{ b []byte }

func (w *enc) u(v uint64)  { w.b = binary.AppendUvarint(w.b, v) }
func (w *enc) i(v int64)   { w.b = binary.AppendVarint(w.b, v) }
func (w *enc) f(v float64) { w.b = binary.LittleEndian.AppendUint64(w.b, math.Float64bits(v)) }
func (w *enc) s(v string)  { w.u(uint64(len(v))); w.b = append(w.b, v...) }
func (w *enc) byte(v byte) { w.b = append(w.b, v) }

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// MarshalBinary encodes the engine's state: processing time, states with
// their rule fingerprints and list order, counters and recent events. The
// same state gives the same bytes. The match cache is not saved: it is
// derived.
func (e *Engine) MarshalBinary() ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	body := &enc{b: make([]byte, 0, 256+64*len(e.states))}
	body.byte(boolByte(e.hasProc))
	body.i(e.procNs)
	body.u(e.touch)
	c := e.c
	for _, v := range [numCounters]uint64{c.evaluations, c.outOfOrder, c.overflow, c.fired, c.resolved, c.nonFinite, c.badSeries, c.forgotten, c.evicted} {
		body.u(v)
	}
	body.u(uint64(len(e.rules)))
	ref := make(map[*rule]uint64, len(e.rules))
	for i, r := range e.rules {
		body.s(r.name)
		body.b = binary.LittleEndian.AppendUint64(body.b, r.fp)
		ref[r] = uint64(i)
	}
	states := make([]*state, 0, len(e.states))
	for _, s := range e.states {
		states = append(states, s)
	}
	// Touch values are unique for listed states; pending and firing ones
	// keep the touch of their last listing, so ties are broken by key.
	slices.SortFunc(states, compareStates)
	body.u(uint64(len(states)))
	for _, s := range states {
		body.u(ref[s.key.r])
		body.s(s.key.series)
		body.s(s.key.field)
		body.byte(byte(s.phase))
		body.byte(boolByte(s.hasT))
		body.i(s.lastT)
		body.i(s.start)
		body.i(s.since)
		body.f(s.value)
		body.f(s.edge)
		body.u(s.touch)
	}
	evs := e.recent.oldestFirst()
	body.u(uint64(len(evs)))
	for _, ev := range evs {
		t := byte(1)
		if ev.Type == Resolved {
			t = 2
		}
		body.byte(t)
		for _, s := range [...]string{ev.ID, ev.Rule, ev.Series, ev.Field, ev.Severity} {
			body.s(s)
		}
		body.u(uint64(len(ev.Labels)))
		for _, k := range sortedKeys(ev.Labels) {
			body.s(k)
			body.s(ev.Labels[k])
		}
		body.f(ev.Value)
		body.f(ev.Threshold)
		body.s(ev.Op)
		body.i(ev.StartNs)
		body.i(ev.AtNs)
		body.s(ev.Gateway)
		body.u(ev.Index)
		body.u(uint64(ev.Seq))
	}
	out := make([]byte, 0, len(body.b)+20)
	out = append(out, ckptMagic...)
	out = append(out, ckptVersion)
	out = binary.AppendUvarint(out, uint64(len(body.b)))
	out = append(out, body.b...)
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
	return out, nil
}

func compareStates(a, b *state) int {
	return cmp.Or(cmp.Compare(a.touch, b.touch), cmp.Compare(a.key.r.name, b.key.r.name),
		cmp.Compare(a.key.series, b.key.series), cmp.Compare(a.key.field, b.key.field))
}

// dec reads a checkpoint body; the first error sticks and later reads
// return zero values.
type dec struct {
	b   []byte
	off int
	err error
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: at byte %d: %s", ErrCheckpoint, d.off, fmt.Sprintf(format, args...))
	}
}

func (d *dec) u() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.off += n
	return v
}

func (d *dec) i() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.off += n
	return v
}

func (d *dec) take(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail("%d bytes wanted, %d left", n, len(d.b)-d.off)
		return nil
	}
	p := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return p
}

func (d *dec) f() float64 {
	p := d.take(8)
	if p == nil {
		return 0
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(p))
}

func (d *dec) byte() byte {
	p := d.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *dec) s() string { return string(d.take(d.u())) }

// count reads a count of items that take at least minSize bytes each, so
// a corrupt count cannot make the decoder allocate beyond the input.
func (d *dec) count(what string, minSize int) int {
	n := d.u()
	if d.err == nil && n > uint64((len(d.b)-d.off)/minSize) {
		d.fail("%d %s cannot fit in %d bytes", n, what, len(d.b)-d.off)
		return 0
	}
	return int(n)
}

// UnmarshalBinary replaces the engine's state with a checkpoint's. States
// of rules the engine no longer has, or has with another definition, are
// dropped; if MaxStates is now lower, evictable states are evicted down to
// it; Recent keeps the newest events that fit. On error the engine is
// unchanged.
func (e *Engine) UnmarshalBinary(data []byte) error {
	if len(data) < len(ckptMagic)+1+1+4 {
		return fmt.Errorf("%w: %d bytes is too short", ErrCheckpoint, len(data))
	}
	if string(data[:4]) != ckptMagic {
		return fmt.Errorf("%w: bad magic %q", ErrCheckpoint, data[:4])
	}
	if data[4] != ckptVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrCheckpoint, data[4], ckptVersion)
	}
	n, w := binary.Uvarint(data[5:])
	if w <= 0 {
		return fmt.Errorf("%w: bad body length", ErrCheckpoint)
	}
	hdr := 5 + w
	if n != uint64(len(data)-hdr-4) {
		return fmt.Errorf("%w: body of %d bytes, %d present (truncated or padded)", ErrCheckpoint, n, len(data)-hdr-4)
	}
	end := len(data) - 4
	if got, want := crc32.Checksum(data[:end], castagnoli), binary.LittleEndian.Uint32(data[end:]); got != want {
		return fmt.Errorf("%w: checksum %08x, want %08x", ErrCheckpoint, got, want)
	}
	d := &dec{b: data[hdr:end]}

	flags := d.byte()
	if flags > 1 {
		d.fail("flags %#x", flags)
	}
	procNs := d.i()
	touch := d.u()
	var cs [numCounters]uint64
	for i := range cs {
		cs[i] = d.u()
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	byName := make(map[string]*rule, len(e.rules))
	for _, r := range e.rules {
		byName[r.name] = r
	}
	nr := d.count("rules", 9)
	table := make([]*rule, nr) // nil: dropped
	seenName := make(map[string]bool, nr)
	for i := range nr {
		name := d.s()
		p := d.take(8)
		if d.err != nil {
			break
		}
		if seenName[name] {
			d.fail("rule %q twice", name)
			break
		}
		seenName[name] = true
		if r := byName[name]; r != nil && r.fp == binary.LittleEndian.Uint64(p) {
			table[i] = r
		}
	}

	ns := d.count("states", 16)
	states := make([]*state, 0, ns)
	seen := make(map[stateKey]bool, ns)
	var prev *state
	procSet := flags == 1
	for range ns {
		ri := d.u()
		s := &state{}
		s.key.series, s.key.field = d.s(), d.s()
		ph := d.byte()
		ht := d.byte()
		s.lastT, s.start, s.since = d.i(), d.i(), d.i()
		s.value, s.edge = d.f(), d.f()
		s.touch = d.u()
		if d.err != nil {
			break
		}
		switch {
		case ri >= uint64(nr):
			d.fail("state refers to rule %d of %d", ri, nr)
		case ph > byte(firing) || ht > 1:
			d.fail("state phase %d, hasT %d", ph, ht)
		case s.touch > touch:
			d.fail("state touch %d beyond the counter %d", s.touch, touch)
		case prev != nil && s.touch < prev.touch:
			d.fail("states out of touch order")
		}
		if d.err != nil {
			break
		}
		s.phase, s.hasT = phase(ph), ht == 1
		r := table[ri]
		if r == nil {
			prev = s
			continue
		}
		s.key.r = r
		switch {
		case seen[s.key]:
			d.fail("state %s %q %q twice", r.name, s.key.series, s.key.field)
		case r.kind == kindMissing && s.phase == pending:
			d.fail("missing-data state of %s is pending", r.name)
		case r.kind == kindMissing && !procSet:
			d.fail("missing-data state without a processing time")
		case r.kind == kindMissing && s.start > procNs:
			d.fail("missing-data state last seen after the processing time")
		case r.kind != kindMissing && s.phase != inactive && (!s.hasT || s.start > s.lastT):
			d.fail("%s state of %s starts after its newest time", s.phase, r.name)
		}
		if d.err != nil {
			break
		}
		seen[s.key] = true
		if s.phase != inactive {
			s.id, e.idBuf = alertID(e.idBuf, e.gw, r.name, s.key.series, s.key.field, s.start)
		}
		states = append(states, s)
		prev = s
	}

	nev := d.count("events", 29)
	evs := make([]Event, 0, min(nev, e.cfg.Recent))
	for i := range nev {
		var ev Event
		switch d.byte() {
		case 1:
			ev.Type = Firing
		case 2:
			ev.Type = Resolved
		default:
			d.fail("event type")
		}
		ev.ID, ev.Rule, ev.Series, ev.Field, ev.Severity = d.s(), d.s(), d.s(), d.s(), d.s()
		nl := d.count("labels", 2)
		if nl > 0 {
			ev.Labels = make(map[string]string, nl)
		}
		for range nl {
			k, v := d.s(), d.s()
			ev.Labels[k] = v
		}
		ev.Value, ev.Threshold = d.f(), d.f()
		ev.Op = d.s()
		ev.StartNs, ev.AtNs = d.i(), d.i()
		ev.Gateway = d.s()
		ev.Index = d.u()
		seq := d.u()
		if seq > math.MaxInt32 {
			d.fail("event seq %d", seq)
		}
		ev.Seq = int(seq)
		if d.err != nil {
			break
		}
		if i >= nev-e.cfg.Recent {
			evs = append(evs, ev)
		}
	}
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d trailing bytes", len(d.b)-d.off)
	}
	if d.err != nil {
		return d.err
	}

	e.hasProc, e.procNs, e.touch = procSet, procNs, touch
	e.c = counters{
		evaluations: cs[0], outOfOrder: cs[1], overflow: cs[2], fired: cs[3], resolved: cs[4],
		nonFinite: cs[5], badSeries: cs[6], forgotten: cs[7], evicted: cs[8],
	}
	e.rebuild(states)
	e.recent.buf, e.recent.next, e.recent.n = make([]Event, e.cfg.Recent), 0, 0
	for _, ev := range evs {
		e.recent.push(ev)
	}
	return nil
}
