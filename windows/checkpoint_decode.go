package windows

import (
	"cmp"
	"slices"

	"github.com/runnel-iot/runnel/sketches"
)

type groupRef struct {
	gi    int
	key   string
	start int64
}

// decode reads the body of a checkpoint into f, a fresh engine, and checks
// the invariants Apply relies on, so a checkpoint that decodes cannot make
// a later Apply panic.
func (f *Engine) decode(r *dec) error {
	f.applied, f.procNs, f.nextCheck = r.U(), r.I(), r.I()
	f.seq, f.devGen, f.mem = r.U(), r.U(), r.I()
	for _, c := range f.counters() {
		*c = r.U()
	}
	if n := r.U(); n > winPoolMax {
		r.Fail("window pool %d", n)
	} else {
		f.winPool = make([]*tumWin, n)
		for i := range f.winPool {
			f.winPool[i] = new(tumWin)
		}
	}
	if hb := r.Bytes(); r.Err == nil {
		if err := f.overflowHLL.UnmarshalBinary(hb); err != nil {
			r.Fail("overflow hll: %v", err)
		}
	}
	f.series = newSeriesIndex()
	f.devices = make(map[string]*device)
	f.overflow = nil
	f.act, f.ttl = list[device, *device]{}, list[series, *series]{}

	refs := f.decodeDevices(r)
	f.decodeAllSeries(r)
	for _, g := range f.groups {
		f.decodeGroup(r, g)
	}
	if r.Err != nil {
		return r.Err
	}
	if f.overflow == nil {
		r.Fail("no overflow series")
		return r.Err
	}
	f.link(r, refs)
	return r.Err
}

type devRefs struct {
	series []string
	groups []groupRef
	capS   int
	capG   int
}

func (f *Engine) decodeDevices(r *dec) map[*device]*devRefs {
	n := r.Count(16, "device")
	refs := make(map[*device]*devRefs, n)
	prev := ""
	for i := 0; i < n && r.Err == nil; i++ {
		d := &device{key: r.S(), nextEnd: maxTime}
		if i > 0 && d.key <= prev {
			r.Fail("device %q out of order", d.key)
		}
		prev = d.key
		d.maxT, d.idleAdv, d.lastIngest = r.I(), r.I(), r.I()
		d.idle = r.Bool()
		d.seq, d.gen, d.bytes = r.U(), r.U(), r.I()
		dr := &devRefs{}
		capS, capG := r.U(), r.U()
		ns := r.Count(1, "device series")
		for range ns {
			dr.series = append(dr.series, r.S())
		}
		ng := r.Count(3, "device group")
		for range ng {
			gr := groupRef{gi: int(r.U()), key: r.S(), start: r.I()}
			if gr.gi >= len(f.groups) {
				r.Fail("group %d of %d", gr.gi, len(f.groups))
			}
			dr.groups = append(dr.groups, gr)
		}
		if capS < uint64(ns) || capS > uint64(2*ns+8) || capG < uint64(ng) || capG > uint64(2*ng+64) {
			r.Fail("device %q capacities", d.key)
		}
		dr.capS, dr.capG = int(capS), int(capG)
		f.devices[d.key] = d
		refs[d] = dr
	}
	return refs
}

func (f *Engine) decodeAllSeries(r *dec) {
	n := r.Count(8, "series")
	prev := ""
	for i := 0; i < n && r.Err == nil; i++ {
		key := r.S()
		if i > 0 && key <= prev {
			r.Fail("series %q out of order", key)
		}
		prev = key
		d := f.devices[r.S()]
		if d == nil {
			r.Fail("series %q of an unknown device", key)
			return
		}
		pk := parseSeriesKey(key)
		s := &series{key: key, meas: pk.meas, dev: d}
		if len(f.groups) > 0 {
			s.gattrs = make([]groupAttrs, len(f.groups))
			for gi, g := range f.groups {
				ga := &s.gattrs[gi]
				ga.key, ga.hasKey = attrValue(g.by, key, &pk, d.key)
				ga.distinct, ga.hasDistinct = attrValue(g.distinct, key, &pk, d.key)
				ga.topk, ga.hasTopK = attrValue(g.topk, key, &pk, d.key)
				ga.topkHash = sketches.TopKHash(ga.topk)
				ga.distinctHash = sketches.HLLHash(ga.distinct)
			}
		}
		s.readings, s.lastEventNs, s.lastApplied, s.seq, s.bytes = r.U(), r.I(), r.I(), r.U(), r.I()
		capP := r.U()
		np := r.Count(4, "pair")
		if capP < uint64(np) || capP > uint64(2*np+8) {
			r.Fail("series %q pair capacity %d", key, capP)
			return
		}
		s.pairs = make([]*pair, 0, capP)
		for range np {
			if p := f.decodePair(r, s); p != nil {
				if s.pair(p.field) != nil {
					r.Fail("series %q field %q twice", key, p.field)
				}
				s.pairs = append(s.pairs, p)
			}
		}
		if key == OverflowSeries {
			s.overflow = true
			f.overflow = s
		}
		s.hash = f.series.hash(key)
		f.series.put(s)
	}
}

func (f *Engine) decodePair(r *dec, s *series) *pair {
	p := &pair{s: s, field: f.internField(r.S()), specs: newSpecStates(len(f.specs))}
	p.bytes = r.I()
	rb := r.Bytes()
	if r.Err != nil {
		return nil
	}
	p.res, _ = sketches.NewReservoir(f.cfg.ReservoirSize, pairSeed(s.key, p.field))
	if err := p.res.UnmarshalBinary(rb); err != nil {
		r.Fail("series %q field %q reservoir: %v", s.key, p.field, err)
		return nil
	}
	for i := range f.specs {
		sp := &f.specs[i]
		ps := &p.specs[i]
		ps.nextStart = noTime
		if sp.kind == KindTumbling {
			f.decodeWins(r, sp, ps)
		} else {
			f.decodePanes(r, sp, ps)
		}
		hasHist := r.Bool()
		n, head := r.U(), r.U()
		h := uint64(f.cfg.ClosedHistory)
		if n > h || (!hasHist && n > 0) || (n < h && head != 0) || (n == h && n > 0 && head >= n) {
			r.Fail("series %q field %q history %d/%d", s.key, p.field, n, head)
			return nil
		}
		if hasHist {
			// Slot k of the encoded ring holds record (k - head) mod n.
			recs := make([]closedRec, n)
			for k := range recs {
				recs[(k-int(head)+int(n))%int(n)] = r.rec()
			}
			unit := sp.histUnit()
			var b []byte
			for k := range recs {
				b = appendRec(b, &recs[k], unit)
			}
			ps.hist = make([]byte, len(b), len(b)+len(b)/8) // non-nil, as hasHist says
			copy(ps.hist, b)
			ps.histN, ps.histHead = int32(n), int32(head)
		}
	}
	if r.Err != nil {
		return nil
	}
	return p
}

func (f *Engine) decodeWins(r *dec, sp *spec, ps *specState) {
	c := r.U()
	n := r.Count(4, "window")
	if c < uint64(n) || c > uint64(2*n+8) {
		r.Fail("window capacity %d for %d", c, n)
		return
	}
	ps.wins = make([]*tumWin, 0, c)
	for k := 0; k < n && r.Err == nil; k++ {
		w := new(tumWin)
		w.start = r.I()
		w.agg = r.agg()
		qb := r.Bytes()
		if r.Err != nil {
			return
		}
		if !aligned(w.start, sp.size) || (k > 0 && w.start <= ps.wins[k-1].start) || w.agg.count == 0 {
			r.Fail("window start %d", w.start)
			return
		}
		q := new(sketches.Quantile)
		if err := q.UnmarshalBinary(qb); err != nil {
			r.Fail("window quantile: %v", err)
			return
		}
		// A window of one value keeps it pending and no sketch when that
		// rebuilds this one (as Apply leaves it); any other sketch is kept
		// as decoded, nothing pending: the values it will be given next
		// make the same sketch as they would have in the encoded engine,
		// since both give them in arrival order after the same ones.
		var one sketches.Quantile
		if w.agg.count == 1 {
			w.setPending(w.agg.first)
			if *w.sketch(&one) != *q {
				w.n = 0
				w.q = q
			}
		} else {
			w.q = q
		}
		ps.wins = append(ps.wins, w)
	}
}

func (f *Engine) decodePanes(r *dec, sp *spec, ps *specState) {
	ps.nextStart = r.I()
	c := r.U()
	n := r.Count(2, "pane")
	if c < uint64(n) || c > uint64(2*n+sp.initCap+8) {
		r.Fail("pane capacity %d for %d", c, n)
		return
	}
	if c > 0 {
		ps.panes = make([]pane, 0, c)
	}
	if ps.nextStart != noTime && !aligned(ps.nextStart, sp.slide) {
		r.Fail("sliding next start %d", ps.nextStart)
		return
	}
	for k := 0; k < n && r.Err == nil; k++ {
		pn := pane{start: r.I(), agg: r.agg()}
		if !aligned(pn.start, sp.slide) || pn.agg.count == 0 ||
			(k > 0 && pn.start <= ps.panes[k-1].start) || (ps.nextStart != noTime && pn.start < ps.nextStart) {
			r.Fail("pane start %d", pn.start)
			return
		}
		ps.panes = append(ps.panes, pn)
	}
}

func aligned(t, size int64) bool {
	return t >= -timeLimit && t <= timeLimit && alignDown(t, size) == t
}

func (f *Engine) decodeGroup(r *dec, g *groupState) {
	nh, nt := r.U(), r.U()
	if nh > groupPoolMax || nt > groupPoolMax || (nh > 0 && g.distinct.kind == attrNone) || (nt > 0 && g.topk.kind == attrNone) {
		r.Fail("group %q pools", g.spec.Name)
		return
	}
	for range nh {
		g.hllPool = append(g.hllPool, sketches.NewHLL())
	}
	for range nt {
		g.topkPool = append(g.topkPool, g.newTopK())
	}
	n := r.Count(6, "group key")
	prev := ""
	for i := 0; i < n && r.Err == nil; i++ {
		gk := &groupKey{g: g, key: r.S()}
		if i > 0 && gk.key <= prev {
			r.Fail("group %q key %q out of order", g.spec.Name, gk.key)
		}
		prev = gk.key
		gk.maxClosedStart, gk.lastActive, gk.bytes = r.I(), r.I(), r.I()
		hasHist := r.Bool()
		hn, head := r.U(), r.U()
		h := uint64(f.cfg.ClosedHistory)
		if hn > h || (!hasHist && hn > 0) || (hn < h && head != 0) || (hn == h && hn > 0 && head >= hn) {
			r.Fail("group %q key %q history", g.spec.Name, gk.key)
			return
		}
		if hasHist {
			gk.hist = make([]GroupSummary, hn, h)
			for k := range gk.hist {
				gs := &gk.hist[k]
				gs.Group, gs.Key = g.spec.Name, gk.key
				gs.StartNs = r.I()
				gs.EndNs = gs.StartNs + g.size
				gs.Readings, gs.Distinct = r.U(), r.U()
				nk := r.Count(2, "top-k item")
				if nk > sketches.TopKCapacity {
					r.Fail("top-k items %d", nk)
					return
				}
				if g.topk.kind != attrNone {
					gs.TopK = make([]sketches.Item, nk)
				}
				for j := range nk {
					it := sketches.Item{Key: r.S(), Count: r.U()}
					if gs.TopK != nil {
						gs.TopK[j] = it
					}
				}
			}
			gk.histHead = int(head)
		}
		f.decodeGroupWins(r, g, gk)
		g.keys[gk.key] = gk
	}
}

func (f *Engine) decodeGroupWins(r *dec, g *groupState, gk *groupKey) {
	n := r.Count(4, "group window")
	for k := 0; k < n && r.Err == nil; k++ {
		gw := &groupWin{k: gk, start: r.I()}
		gw.end = gw.start + g.size
		gw.readings = r.U()
		hb, tb := r.Bytes(), r.Bytes()
		if r.Err != nil {
			return
		}
		if !aligned(gw.start, g.size) || (k > 0 && gw.start <= gk.open[k-1].start) || gw.readings == 0 {
			r.Fail("group window start %d", gw.start)
			return
		}
		if (len(hb) > 0) != (g.distinct.kind != attrNone) || (len(tb) > 0) != (g.topk.kind != attrNone) {
			r.Fail("group %q window sketches", g.spec.Name)
			return
		}
		if len(hb) > 0 {
			gw.hll = sketches.NewHLL()
			if err := gw.hll.UnmarshalBinary(hb); err != nil {
				r.Fail("group hll: %v", err)
				return
			}
		}
		if len(tb) > 0 {
			gw.topk = g.newTopK()
			if err := gw.topk.UnmarshalBinary(tb); err != nil {
				r.Fail("group top-k: %v", err)
				return
			}
		}
		gk.open = append(gk.open, gw)
	}
}

// link resolves the references between devices, series and group windows,
// recomputes what is derived (pending counts, lists, next window ends) and
// checks the invariants.
func (f *Engine) link(r *dec, refs map[*device]*devRefs) {
	seen := 0
	for d, dr := range refs {
		d.series = make([]*series, 0, dr.capS)
		for _, k := range dr.series {
			s := f.series.get(k)
			if s == nil || s.dev != d || slices.Contains(d.series, s) {
				r.Fail("device %q series %q", d.key, k)
				return
			}
			d.series = append(d.series, s)
		}
		seen += len(d.series)
		if len(d.series) == 0 {
			r.Fail("device %q without series", d.key)
			return
		}
		d.groups = make([]*groupWin, 0, dr.capG)
		for _, gr := range dr.groups {
			gk := f.groups[gr.gi].keys[gr.key]
			var gw *groupWin
			if gk != nil {
				gw = gk.find(gr.start)
			}
			if gw == nil || slices.Contains(d.groups, gw) {
				r.Fail("device %q group window %d/%q/%d", d.key, gr.gi, gr.key, gr.start)
				return
			}
			d.groups = append(d.groups, gw)
			if !d.idle && d.watermark(f.lateness) < gw.end {
				gw.pending++
			}
		}
	}
	if seen != f.series.len() {
		r.Fail("series not listed by their devices")
		return
	}
	for _, g := range f.groups {
		for _, gk := range g.keys {
			for _, gw := range gk.open {
				if gw.pending <= 0 {
					r.Fail("group %q key %q window %d has no pending device", g.spec.Name, gk.key, gw.start)
					return
				}
			}
		}
	}
	devs := make([]*device, 0, len(f.devices))
	for _, d := range f.devices {
		if !d.idle {
			devs = append(devs, d)
		}
		f.recomputeNextEnd(d)
	}
	slices.SortFunc(devs, func(a, b *device) int { return cmp.Compare(a.seq, b.seq) })
	for _, d := range devs {
		f.act.pushBack(d)
	}
	ss := make([]*series, 0, f.series.len())
	for s := range f.series.all() {
		if !s.overflow {
			ss = append(ss, s)
		}
	}
	slices.SortFunc(ss, func(a, b *series) int { return cmp.Compare(a.seq, b.seq) })
	for _, s := range ss {
		f.ttl.pushBack(s)
	}
}

func (f *Engine) recomputeNextEnd(d *device) {
	next := int64(maxTime)
	for _, s := range d.series {
		for _, p := range s.pairs {
			for i := range f.specs {
				sp := &f.specs[i]
				ps := &p.specs[i]
				if sp.kind == KindTumbling {
					if len(ps.wins) > 0 {
						next = min(next, ps.wins[0].start+sp.size)
					}
				} else if len(ps.panes) > 0 {
					next = min(next, ps.nextWindowStart(sp)+sp.size)
				}
			}
		}
	}
	d.nextEnd = next
}
