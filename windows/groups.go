package windows

import (
	"cmp"
	"slices"
	"strings"

	"github.com/runnel-iot/runnel/sketches"
)

// groupState is one configured group and its keys.
type groupState struct {
	gi                  int
	spec                GroupSpec
	by, distinct, topk  attr
	size                int64
	keys                map[string]*groupKey
	hllPool             []*sketches.HLL
	topkPool            []*sketches.TopK
	hllBytes, topkBytes int64 // charged per sketch (fixed, so restored state charges alike)
}

// groupKey is the state of one key of a group.
type groupKey struct {
	g              *groupState
	key            string
	open           []*groupWin // by start
	maxClosedStart int64       // windows starting at or before it are closed (noTime: none)
	lastActive     int64       // processing time of the last reading
	hist           []GroupSummary
	histHead       int
	dead           bool
	bytes          int64
}

// groupWin is one open group window. pending counts its contributing
// devices that are active and whose watermark is below end; it closes when
// that reaches zero.
type groupWin struct {
	k          *groupKey
	start, end int64
	readings   uint64
	pending    int
	hll        *sketches.HLL
	topk       *sketches.TopK
	closed     bool
	// seq identifies the window to groupAttrs.gwSeq: 1 up, 0 for
	// windows restored from a checkpoint (never matched).
	seq uint32
}

const groupPoolMax = 2

func newGroupState(i int, g GroupSpec) *groupState {
	gs := &groupState{gi: i, spec: g, size: int64(g.Size), keys: make(map[string]*groupKey)}
	gs.by, _ = parseBy(g.By)
	gs.distinct, _ = parseAttr(g.Distinct, true)
	gs.topk, _ = parseAttr(g.TopK, true)
	if gs.distinct.kind != attrNone {
		gs.hllBytes = int64(sketches.NewHLL().SizeBytes())
	}
	if gs.topk.kind != attrNone {
		gs.topkBytes = int64(gs.newTopK().SizeBytes())
	}
	return gs
}

func (g *groupState) newTopK() *sketches.TopK {
	t, err := sketches.NewTopK(g.spec.K, sketches.CountMinEpsilon, sketches.CountMinDelta)
	if err != nil {
		panic("BUG: validated top-k rejected: " + err.Error())
	}
	return t
}

func (g *groupState) winBytes() int64 { return gwSize + g.hllBytes + g.topkBytes }

// applyToGroups adds a reading at t of series s (device d) to the window of
// its key in every group.
func (e *Engine) applyToGroups(s *series, d *device, t int64) {
	for gi, g := range e.groups {
		ga := &s.gattrs[gi]
		if !ga.hasKey {
			continue
		}
		gk := ga.gk
		if gk == nil || gk.dead {
			gk = e.groupKeyFor(g, ga.key)
			ga.gk = gk
		}
		var ws int64
		var gw *groupWin
		if n := len(gk.open); n > 0 && gk.open[n-1].start <= t && t < gk.open[n-1].end {
			gw = gk.open[n-1] // the newest window, without a division
			ws = gw.start
		} else {
			ws = alignDown(t, g.size)
			gw = gk.find(ws)
		}
		if gw == nil {
			if gk.maxClosedStart != noTime && ws <= gk.maxClosedStart {
				e.st.GroupLateReadings++
				continue
			}
			if gk.key != OverflowKey && e.mem+g.winBytes() > e.admit {
				e.st.GroupOverflowReadings++
				gk = e.groupKeyFor(g, OverflowKey)
				if gw = gk.find(ws); gw == nil && gk.maxClosedStart != noTime && ws <= gk.maxClosedStart {
					e.st.GroupLateReadings++
					continue
				}
			}
			if gw == nil {
				gw = e.newGroupWin(g, gk, ws)
			}
		}
		// A series' readings mostly go to the window of its last one, which
		// its device is then known to be in: no search of the device's
		// windows (closed ones leave the list only once closed, and a
		// closed window takes no reading).
		if ga.gwSeq == 0 || ga.gwSeq != gw.seq {
			if !slices.Contains(d.groups, gw) {
				oldCap := cap(d.groups)
				d.groups = append(d.groups, gw)
				e.chargeDevice(d, int64(cap(d.groups)-oldCap)*ptrBytes)
				gw.pending++
			}
			ga.gwSeq = gw.seq
		}
		gw.readings++
		if gw.hll != nil && ga.hasDistinct {
			gw.hll.AddHash(ga.distinctHash)
		}
		if gw.topk != nil && ga.hasTopK {
			gw.topk.AddStringHashed(ga.topk, ga.topkHash, 1)
		}
		gk.lastActive = e.procNs
	}
}

func (k *groupKey) find(start int64) *groupWin {
	for i := len(k.open) - 1; i >= 0; i-- {
		if k.open[i].start == start {
			return k.open[i]
		}
		if k.open[i].start < start {
			break
		}
	}
	return nil
}

func (e *Engine) groupKeyFor(g *groupState, key string) *groupKey {
	if gk := g.keys[key]; gk != nil {
		return gk
	}
	gk := &groupKey{g: g, key: strings.Clone(key), maxClosedStart: noTime}
	gk.bytes = gkSize + allocSize(int64(len(key))) + mapEntryBytes + 4*ptrBytes
	e.mem += gk.bytes
	g.keys[gk.key] = gk
	return gk
}

func (e *Engine) newGroupWin(g *groupState, gk *groupKey, start int64) *groupWin {
	gw := &groupWin{k: gk, start: start, end: start + g.size, seq: e.nextGroupWinSeq()}
	// Pooled sketches stay charged while pooled.
	if g.distinct.kind != attrNone {
		if n := len(g.hllPool); n > 0 {
			gw.hll, g.hllPool = g.hllPool[n-1], g.hllPool[:n-1]
		} else {
			gw.hll = sketches.NewHLL()
			e.mem += g.hllBytes
		}
	}
	if g.topk.kind != attrNone {
		if n := len(g.topkPool); n > 0 {
			gw.topk, g.topkPool = g.topkPool[n-1], g.topkPool[:n-1]
		} else {
			gw.topk = g.newTopK()
			e.mem += g.topkBytes
		}
	}
	i, _ := slices.BinarySearchFunc(gk.open, start, func(w *groupWin, s int64) int { return cmp.Compare(w.start, s) })
	gk.open = slices.Insert(gk.open, i, gw)
	e.mem += gwSize
	return gw
}

// nextGroupWinSeq numbers a new group window. When the numbers wrap, every
// series forgets the window it was in, so no number is ever taken for
// another window's.
func (e *Engine) nextGroupWinSeq() uint32 {
	e.gwSeq++
	if e.gwSeq == 0 {
		for s := range e.series.all() {
			for i := range s.gattrs {
				s.gattrs[i].gwSeq = 0
			}
		}
		e.gwSeq = 1
	}
	return e.gwSeq
}

// flushGroups emits the group windows whose pending count reached zero
// during the current event, by group, start and key.
func (e *Engine) flushGroups() {
	if len(e.closingG) == 0 {
		return
	}
	slices.SortFunc(e.closingG, func(a, b *groupWin) int {
		if c := cmp.Compare(a.k.g.gi, b.k.g.gi); c != 0 {
			return c
		}
		if c := cmp.Compare(a.start, b.start); c != 0 {
			return c
		}
		return strings.Compare(a.k.key, b.k.key)
	})
	for _, gw := range e.closingG {
		if !gw.closed && gw.pending <= 0 {
			e.closeGroupWin(gw)
		}
	}
	clear(e.closingG)
	e.closingG = e.closingG[:0]
}

func (e *Engine) closeGroupWin(gw *groupWin) {
	gk, g := gw.k, gw.k.g
	gs := gw.summary()
	if gw.hll != nil {
		gs.HLL, _ = gw.hll.MarshalBinary()
	}
	if gw.topk != nil {
		gs.CountMin, _ = gw.topk.MarshalBinary()
	}
	e.out = append(e.out, Emission{Kind: KindGroup, Group: gs, spec: -1})
	e.pushGroupHist(gk, gs)
	if gw.hll != nil {
		if len(g.hllPool) < groupPoolMax {
			gw.hll.Reset()
			g.hllPool = append(g.hllPool, gw.hll)
		} else {
			e.mem -= g.hllBytes
		}
		gw.hll = nil
	}
	if gw.topk != nil {
		if len(g.topkPool) < groupPoolMax {
			gw.topk.Reset()
			g.topkPool = append(g.topkPool, gw.topk)
		} else {
			e.mem -= g.topkBytes
		}
		gw.topk = nil
	}
	e.mem -= gwSize
	gw.closed = true
	if i := slices.Index(gk.open, gw); i >= 0 {
		gk.open = slices.Delete(gk.open, i, i+1)
	}
	gk.maxClosedStart = max(gk.maxClosedStart, gw.start)
}

// summary is the window's GroupSummary without the sketch encodings.
func (gw *groupWin) summary() *GroupSummary {
	gs := &GroupSummary{
		Group: gw.k.g.spec.Name, Key: gw.k.key,
		StartNs: gw.start, EndNs: gw.end, Readings: gw.readings,
	}
	if gw.hll != nil {
		gs.Distinct = gw.hll.Estimate()
	}
	if gw.topk != nil {
		gs.TopK = gw.topk.Top()
	}
	return gs
}

func groupHistBytes(gs *GroupSummary) int64 {
	b := groupRecB + allocSize(int64(len(gs.TopK))*int64(24))
	for _, it := range gs.TopK {
		b += allocSize(int64(len(it.Key)))
	}
	return b
}

func (e *Engine) pushGroupHist(gk *groupKey, gs *GroupSummary) {
	n := e.cfg.ClosedHistory
	if n == 0 {
		return
	}
	h := *gs
	h.HLL, h.CountMin = nil, nil
	add := groupHistBytes(&h) - groupRecB
	if gk.hist == nil {
		gk.hist = make([]GroupSummary, 0, n)
		add += allocSize(int64(n) * groupRecB)
	}
	if len(gk.hist) < n {
		gk.hist = append(gk.hist, h)
	} else {
		add -= groupHistBytes(&gk.hist[gk.histHead]) - groupRecB
		gk.hist[gk.histHead] = h
		gk.histHead = (gk.histHead + 1) % n
	}
	gk.bytes += add
	e.mem += add
}
