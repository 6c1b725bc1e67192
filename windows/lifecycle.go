package windows

import (
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/runnel-iot/runnel/sketches"
)

// newSeries creates the state of a series (and of its device when d is
// nil) and charges it.
func (e *Engine) newSeries(key string, pk parsedKey, d *device) *series {
	if d == nil {
		d = e.newDevice(strings.Clone(deviceOf(key, &pk)))
	}
	s := &series{key: key, meas: pk.meas, dev: d, lastEventNs: noTime, ckptGen: e.ckptGen}
	if len(e.groups) > 0 {
		s.gattrs = make([]groupAttrs, len(e.groups))
		for i, g := range e.groups {
			ga := &s.gattrs[i]
			ga.key, ga.hasKey = attrValue(g.by, key, &pk, d.key)
			ga.distinct, ga.hasDistinct = attrValue(g.distinct, key, &pk, d.key)
			ga.topk, ga.hasTopK = attrValue(g.topk, key, &pk, d.key)
			ga.topkHash = sketches.TopKHash(ga.topk)
			ga.distinctHash = sketches.HLLHash(ga.distinct)
		}
	}
	s.bytes = seriesBytes(len(key), len(e.groups))
	e.mem += s.bytes
	oldCap := cap(d.series)
	d.series = append(d.series, s)
	e.chargeDevice(d, int64(cap(d.series)-oldCap)*ptrBytes)
	s.hash = e.series.hash(key)
	e.series.put(s)
	e.seriesGen++
	e.touchSeries(s)
	return s
}

func (e *Engine) newDevice(key string) *device {
	e.devGen++
	d := &device{key: key, maxT: noTime, idleAdv: noTime, nextEnd: maxTime, gen: e.devGen}
	d.bytes = deviceBytes(len(key))
	e.mem += d.bytes
	e.devices[key] = d
	e.touchDevice(d)
	return d
}

// newPair creates the state of a (series, field) and charges it.
func (e *Engine) newPair(s *series, field string) *pair {
	p := &pair{s: s, field: e.internField(field), specs: newSpecStates(len(e.specs))}
	p.res, _ = sketches.NewReservoir(e.cfg.ReservoirSize, pairSeed(s.key, field))
	p.bytes = e.pairBaseBytes(len(field))
	e.mem += max(p.bytes, e.pairReserve)
	oldCap := cap(s.pairs)
	s.pairs = append(s.pairs, p)
	if c := cap(s.pairs); c != oldCap {
		d := int64(c-oldCap) * ptrBytes
		s.bytes += d
		e.mem += d
	}
	return p
}

// internField returns a copy of field, shared with the other pairs of that
// field name while it stays in a small cache: a pair lookup compares field
// names, and one shared copy stays in the CPU cache where a copy per pair
// is a cache miss per lookup. The cache is fixed-size (a name it drops
// lives on in its pairs), so memory does not grow with field names.
func (e *Engine) internField(field string) string {
	slot := &e.fieldNames[xxhash.Sum64String(field)%uint64(len(e.fieldNames))]
	if *slot != field {
		*slot = strings.Clone(field)
	}
	return *slot
}

// pairSeed is the reservoir seed of a pair: xxhash of series, 0, field.
func pairSeed(series, field string) uint64 {
	var h xxhash.Digest
	h.Reset()
	h.WriteString(series)
	h.Write([]byte{0})
	h.WriteString(field)
	return h.Sum64()
}

// touchDevice records a reading of d at the current processing time and
// moves it to the back of the active list.
func (e *Engine) touchDevice(d *device) {
	d.lastIngest = e.procNs
	e.seq++
	d.seq = e.seq
	e.act.pushBack(d)
}

// touchSeries moves s to the back of the TTL list.
func (e *Engine) touchSeries(s *series) {
	if s.overflow {
		return
	}
	e.seq++
	s.seq = e.seq
	e.ttl.pushBack(s)
}

// wake makes an idle device active again: it counts in the group windows
// it contributed to whose end its watermark has not reached.
func (e *Engine) wake(d *device) {
	d.idle = false
	wm := d.watermark(e.lateness)
	d.pruneGroups()
	for _, gw := range d.groups {
		if wm < gw.end {
			gw.pending++
		}
	}
}

// idleSweep closes the windows of every device idle for IdleTimeout of
// processing time, in device key order.
func (e *Engine) idleSweep() {
	e.due = e.due[:0]
	for d := e.act.head; d != nil && satAdd(d.lastIngest, e.idleNs) < e.procNs; d = d.act.next {
		e.due = append(e.due, d)
	}
	slices.SortFunc(e.due, func(a, b *device) int { return strings.Compare(a.key, b.key) })
	for _, d := range e.due {
		e.goIdle(d)
	}
	clear(e.due)
}

func (e *Engine) goIdle(d *device) {
	e.preserveDevice(d)
	e.st.IdleCloses++
	e.leaveGroups(d)
	end := int64(noTime)
	for _, s := range d.series {
		for _, p := range s.pairs {
			end = max(end, e.maxOpenEnd(p))
		}
	}
	d.idleAdv = max(d.idleAdv, end)
	d.idle = true
	e.act.remove(d)
	mark := len(e.out)
	for _, s := range d.series {
		for _, p := range s.pairs {
			e.closeAll(p, reasonIdle)
		}
	}
	d.nextEnd = maxTime
	e.sortWindows(mark)
	e.flushGroups()
}

// leaveGroups takes an active device out of the pending counts of its
// group windows (it went idle or is being freed).
func (e *Engine) leaveGroups(d *device) {
	if d.idle {
		return
	}
	wm := d.watermark(e.lateness)
	d.pruneGroups()
	for _, gw := range d.groups {
		if wm < gw.end {
			e.unpend(gw)
		}
	}
}

// maxOpenEnd is the largest end of p's open windows (noTime: none).
func (e *Engine) maxOpenEnd(p *pair) int64 {
	end := int64(noTime)
	for i := range e.specs {
		sp := &e.specs[i]
		ps := &p.specs[i]
		if sp.kind == KindTumbling {
			if n := len(ps.wins); n > 0 {
				end = max(end, ps.wins[n-1].start+sp.size)
			}
		} else if n := len(ps.panes); n > 0 {
			end = max(end, ps.panes[n-1].start+sp.size)
		}
	}
	return end
}

// closeAll closes every open window of p with the given reason.
func (e *Engine) closeAll(p *pair, reason uint8) {
	for i := range e.specs {
		if e.specs[i].kind == KindTumbling {
			e.closeTumbling(p, i, 0, reason)
		} else {
			e.closeSliding(p, i, 0, reason)
		}
	}
}

// ttlSweep evicts every series without an applied reading for SeriesTTL of
// processing time, in series key order, then group keys without open
// windows and activity for as long.
func (e *Engine) ttlSweep() {
	e.dueS = e.dueS[:0]
	for s := e.ttl.head; s != nil && satAdd(s.lastApplied, e.ttlNs) < e.procNs; s = s.ttl.next {
		e.dueS = append(e.dueS, s)
	}
	slices.SortFunc(e.dueS, func(a, b *series) int { return strings.Compare(a.key, b.key) })
	for _, s := range e.dueS {
		e.evict(s)
	}
	clear(e.dueS)
	for _, g := range e.groups {
		for k, gk := range g.keys {
			if len(gk.open) == 0 && satAdd(gk.lastActive, e.ttlNs) < e.procNs {
				gk.dead = true
				delete(g.keys, k)
				e.mem -= gk.bytes
			}
		}
	}
}

func (e *Engine) evict(s *series) {
	e.preserve(s)
	e.st.Evictions++
	mark := len(e.out)
	for _, p := range s.pairs {
		e.closeAll(p, reasonEvicted)
	}
	e.sortWindows(mark)
	for _, p := range s.pairs {
		e.freePair(p)
	}
	e.ttl.remove(s)
	e.series.del(s)
	if e.hot == s {
		e.hot = nil
	}
	e.seriesGen++
	e.mem -= s.bytes
	d := s.dev
	if i := slices.Index(d.series, s); i >= 0 {
		d.series = slices.Delete(d.series, i, i+1)
	}
	if len(d.series) == 0 {
		e.leaveGroups(d)
		e.act.remove(d)
		delete(e.devices, d.key)
		e.mem -= d.bytes
	}
	e.flushGroups()
}

// freePair uncharges a pair whose windows are all closed.
func (e *Engine) freePair(p *pair) {
	e.mem -= max(p.bytes, e.pairReserve)
	p.bytes = 0
}
