package alerts

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"

	"github.com/runnel-iot/runnel/internal/binc"
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

// enc and dec are the checkpoint's byte encoding (internal/binc).
type enc struct{ binc.Enc }

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
	body := &enc{binc.Enc{B: make([]byte, 0, 256+64*len(e.states))}}
	body.Byte(boolByte(e.hasProc))
	body.I(e.procNs)
	body.U(e.touch)
	c := e.c
	for _, v := range [numCounters]uint64{c.evaluations, c.outOfOrder, c.overflow, c.fired, c.resolved, c.nonFinite, c.badSeries, c.forgotten, c.evicted} {
		body.U(v)
	}
	body.U(uint64(len(e.rules)))
	ref := make(map[*rule]uint64, len(e.rules))
	for i, r := range e.rules {
		body.S(r.name)
		body.B = binary.LittleEndian.AppendUint64(body.B, r.fp)
		ref[r] = uint64(i)
	}
	states := make([]*state, 0, len(e.states))
	for _, s := range e.states {
		states = append(states, s)
	}
	// Touch values are unique for listed states; pending and firing ones
	// keep the touch of their last listing, so ties are broken by key.
	slices.SortFunc(states, compareStates)
	body.U(uint64(len(states)))
	for _, s := range states {
		body.U(ref[s.key.r])
		body.S(s.key.series)
		body.S(s.key.field)
		body.Byte(byte(s.phase))
		body.Byte(boolByte(s.hasT))
		body.I(s.lastT)
		body.I(s.start)
		body.I(s.since)
		body.F(s.value)
		body.F(s.edge)
		body.U(s.touch)
	}
	evs := e.recent.oldestFirst()
	body.U(uint64(len(evs)))
	for _, ev := range evs {
		t := byte(1)
		if ev.Type == Resolved {
			t = 2
		}
		body.Byte(t)
		for _, s := range [...]string{ev.ID, ev.Rule, ev.Series, ev.Field, ev.Severity} {
			body.S(s)
		}
		body.U(uint64(len(ev.Labels)))
		for _, k := range sortedKeys(ev.Labels) {
			body.S(k)
			body.S(ev.Labels[k])
		}
		body.F(ev.Value)
		body.F(ev.Threshold)
		body.S(ev.Op)
		body.I(ev.StartNs)
		body.I(ev.AtNs)
		body.S(ev.Gateway)
		body.U(ev.Index)
		body.U(uint64(ev.Seq))
	}
	out := make([]byte, 0, len(body.B)+20)
	out = append(out, ckptMagic...)
	out = append(out, ckptVersion)
	out = binary.AppendUvarint(out, uint64(len(body.B)))
	out = append(out, body.B...)
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
	return out, nil
}

func compareStates(a, b *state) int {
	return cmp.Or(cmp.Compare(a.touch, b.touch), cmp.Compare(a.key.r.name, b.key.r.name),
		cmp.Compare(a.key.series, b.key.series), cmp.Compare(a.key.field, b.key.field))
}

// dec reads a checkpoint body; the first error sticks and later reads
// return zero values.
type dec struct{ binc.Dec }

// UnmarshalBinary replaces the engine's state with a checkpoint's. States
// of rules the engine no longer has, or has with another definition, are
// dropped; if MaxStates is now lower, evictable states are evicted down to
// it; Recent keeps the newest events that fit. On error the engine is
// unchanged.
func (e *Engine) UnmarshalBinary(data []byte) error {
	body, err := checkpointBody(data)
	if err != nil {
		return err
	}
	d := &dec{binc.Dec{B: body, Kind: ErrCheckpoint}}
	flags := d.Byte()
	if flags > 1 {
		d.Fail("flags %#x", flags)
	}
	h := ckptHeader{procSet: flags == 1}
	h.procNs = d.I()
	h.touch = d.U()
	var cs [numCounters]uint64
	for i := range cs {
		cs[i] = d.U()
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	table := d.ruleTable(e.rules)
	states := d.states(e, table, h)
	evs := d.events(e.cfg.Recent)
	if d.Err == nil && d.Off != len(d.B) {
		d.Fail("%d trailing bytes", len(d.B)-d.Off)
	}
	if d.Err != nil {
		return d.Err
	}

	e.hasProc, e.procNs, e.touch = h.procSet, h.procNs, h.touch
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

// checkpointBody checks a checkpoint's frame (magic, version, length,
// checksum) and returns its body.
func checkpointBody(data []byte) ([]byte, error) {
	if len(data) < len(ckptMagic)+1+1+4 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrCheckpoint, len(data))
	}
	if string(data[:4]) != ckptMagic {
		return nil, fmt.Errorf("%w: bad magic %q", ErrCheckpoint, data[:4])
	}
	if data[4] != ckptVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrCheckpoint, data[4], ckptVersion)
	}
	n, w := binary.Uvarint(data[5:])
	if w <= 0 {
		return nil, fmt.Errorf("%w: bad body length", ErrCheckpoint)
	}
	hdr := 5 + w
	if n != uint64(len(data)-hdr-4) {
		return nil, fmt.Errorf("%w: body of %d bytes, %d present (truncated or padded)", ErrCheckpoint, n, len(data)-hdr-4)
	}
	end := len(data) - 4
	if got, want := crc32.Checksum(data[:end], castagnoli), binary.LittleEndian.Uint32(data[end:]); got != want {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x", ErrCheckpoint, got, want)
	}
	return data[hdr:end], nil
}

// ckptHeader is what the states of a checkpoint are checked against.
type ckptHeader struct {
	procSet bool
	procNs  int64
	touch   uint64
}

// ruleTable reads the checkpoint's rule table and maps each entry to the
// engine's rule of that name and fingerprint, or nil: its states are
// dropped.
func (d *dec) ruleTable(rules []*rule) []*rule {
	byName := make(map[string]*rule, len(rules))
	for _, r := range rules {
		byName[r.name] = r
	}
	nr := d.Count(9, "rules")
	table := make([]*rule, nr)
	seenName := make(map[string]bool, nr)
	for i := range nr {
		name := d.S()
		p := d.Take(8)
		if d.Err != nil {
			break
		}
		if seenName[name] {
			d.Fail("rule %q twice", name)
			break
		}
		seenName[name] = true
		if r := byName[name]; r != nil && r.fp == binary.LittleEndian.Uint64(p) {
			table[i] = r
		}
	}
	return table
}

// states reads the states, in touch order, and keeps those of rules in
// table; each is checked against the header and its rule. Called with
// e.mu held (it fills e.idBuf).
func (d *dec) states(e *Engine, table []*rule, h ckptHeader) []*state {
	ns := d.Count(16, "states")
	states := make([]*state, 0, ns)
	seen := make(map[stateKey]bool, ns)
	var prev *state
	for range ns {
		s, ri, ph, ht := d.state()
		if d.Err != nil {
			break
		}
		switch {
		case ri >= uint64(len(table)):
			d.Fail("state refers to rule %d of %d", ri, len(table))
		case ph > byte(firing) || ht > 1:
			d.Fail("state phase %d, hasT %d", ph, ht)
		case s.touch > h.touch:
			d.Fail("state touch %d beyond the counter %d", s.touch, h.touch)
		case prev != nil && s.touch < prev.touch:
			d.Fail("states out of touch order")
		}
		if d.Err != nil {
			break
		}
		s.phase, s.hasT = phase(ph), ht == 1
		prev = s
		r := table[ri]
		if r == nil {
			continue
		}
		s.key.r = r
		switch {
		case seen[s.key]:
			d.Fail("state %s %q %q twice", r.name, s.key.series, s.key.field)
		case r.kind == kindMissing && s.phase == pending:
			d.Fail("missing-data state of %s is pending", r.name)
		case r.kind == kindMissing && !h.procSet:
			d.Fail("missing-data state without a processing time")
		case r.kind == kindMissing && s.start > h.procNs:
			d.Fail("missing-data state last seen after the processing time")
		case r.kind != kindMissing && s.phase != inactive && (!s.hasT || s.start > s.lastT):
			d.Fail("%s state of %s starts after its newest time", s.phase, r.name)
		}
		if d.Err != nil {
			break
		}
		seen[s.key] = true
		if s.phase != inactive {
			s.id, e.idBuf = alertID(e.idBuf, e.gw, r.name, s.key.series, s.key.field, s.start)
		}
		states = append(states, s)
	}
	return states
}

// state reads one state, the index of its rule in the table, and its
// phase and hasT bytes, which the caller checks.
func (d *dec) state() (s *state, ri uint64, ph, ht byte) {
	ri = d.U()
	s = &state{}
	s.key.series, s.key.field = d.S(), d.S()
	ph = d.Byte()
	ht = d.Byte()
	s.lastT, s.start, s.since = d.I(), d.I(), d.I()
	s.value, s.edge = d.F(), d.F()
	s.touch = d.U()
	return s, ri, ph, ht
}

// events reads the recent events and returns the newest that fit in
// recent, oldest first.
func (d *dec) events(recent int) []Event {
	nev := d.Count(29, "events")
	evs := make([]Event, 0, min(nev, recent))
	for i := range nev {
		ev := d.event()
		if d.Err != nil {
			break
		}
		if i >= nev-recent {
			evs = append(evs, ev)
		}
	}
	return evs
}

// event reads one event.
func (d *dec) event() Event {
	var ev Event
	switch d.Byte() {
	case 1:
		ev.Type = Firing
	case 2:
		ev.Type = Resolved
	default:
		d.Fail("event type")
	}
	ev.ID, ev.Rule, ev.Series, ev.Field, ev.Severity = d.S(), d.S(), d.S(), d.S(), d.S()
	nl := d.Count(2, "labels")
	if nl > 0 {
		ev.Labels = make(map[string]string, nl)
	}
	for range nl {
		k, v := d.S(), d.S()
		ev.Labels[k] = v
	}
	ev.Value, ev.Threshold = d.F(), d.F()
	ev.Op = d.S()
	ev.StartNs, ev.AtNs = d.I(), d.I()
	ev.Gateway = d.S()
	ev.Index = d.U()
	seq := d.U()
	if seq > math.MaxInt32 {
		d.Fail("event seq %d", seq)
	}
	ev.Seq = int(seq)
	return ev
}
