package windows

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/runnel-iot/runnel/sketches"
	"github.com/runnel-iot/runnel/wal"
)

// OverflowSeries is the series that takes the readings of new series once
// the memory budget is spent, per field. OverflowKey is the group key that
// takes a group's readings when a new group window would not fit.
const (
	OverflowSeries = "_overflow"
	OverflowKey    = "_overflow"
)

// Kind says what an Emission holds.
type Kind uint8

// Emission kinds.
const (
	KindTumbling Kind = iota + 1
	KindSliding
	KindGroup
)

func (k Kind) String() string {
	switch k {
	case KindTumbling:
		return "tumbling"
	case KindSliding:
		return "sliding"
	case KindGroup:
		return "group"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Emission is one closed window (tumbling or sliding, per series and field)
// or one closed group window.
type Emission struct {
	Index  uint64        // the WAL index whose Apply emitted it
	Seq    int           // position among the emissions of that Apply call, so (Index, Seq) identifies it
	Kind   Kind          // KindTumbling, KindSliding, KindGroup
	Window WindowSummary // for tumbling and sliding
	Group  *GroupSummary // for groups

	spec int // order within an event (config order of the spec)
}

// WindowSummary is the aggregate of one window of one series and field.
type WindowSummary struct {
	Series, Field string
	// Spec is the stable text of the window spec: "tumbling:1m",
	// "sliding:5m/10s".
	Spec           string
	StartNs, EndNs int64
	Count          uint64
	Sum, Min, Max  float64
	Mean           float64 // Sum/Count
	Stddev         float64 // sample standard deviation (n−1), 0 for n < 2
	First, Last    float64 // by event time (ties: arrival order)
	P50, P90, P99  float64 // tumbling only, from sketches.Quantile (relative error 2 % at worst, finer for narrow ranges)
	// Quantiles is the MarshalBinary of a closed tumbling window's quantile
	// sketch, for merging upstream. Set in emissions only; nil in query
	// results and for sliding windows.
	Quantiles []byte
	Open      bool   // true in query results for still-open windows
	Closed    string // "watermark", "idle", "evicted", or "" when open
}

// GroupSummary is the state of one group window.
type GroupSummary struct {
	Group, Key     string
	StartNs, EndNs int64
	Distinct       uint64          // HLL estimate; 0 without a distinct attribute
	TopK           []sketches.Item // heavy hitters by readings; nil without topk
	// HLL and CountMin are the MarshalBinary of the window's HLL and TopK
	// (whose encoding ends with its Count-Min sketch), for upstream
	// merging. Set in emissions only; nil in query results.
	HLL, CountMin []byte
	Readings      uint64
	Open          bool // true in query results for still-open windows
}

// SeriesFilter selects series in Engine.Series. Empty fields match all.
type SeriesFilter struct {
	Measurement string
	Tags        map[string]string
	Prefix      string
}

// SeriesInfo describes one series.
type SeriesInfo struct {
	Series      string
	Fields      []string
	Readings    uint64
	LastEventNs int64
}

// Stats are the engine's counters and gauges.
type Stats struct {
	// Series and Devices with state; the reserved overflow series (and its
	// device) counts once it holds readings.
	Series, Pairs    int
	Devices          int
	OverflowReadings uint64
	OverflowSeries   uint64 // distinct series sent to overflow (HLL estimate)
	Evictions        uint64 // series evicted by SeriesTTL
	LateReadings     uint64
	IdleCloses       uint64 // devices that went idle
	// GroupLateReadings counts readings (applied to their series) whose
	// group window had already closed; GroupOverflowReadings those sent to
	// a group's OverflowKey by the budget.
	GroupLateReadings     uint64
	GroupOverflowReadings uint64
	// BadTimeReadings counts readings with an event time beyond ±2^62 ns,
	// applied nowhere.
	BadTimeReadings uint64
	MemoryBytes     int64
	BudgetBytes     int64
	AppliedIndex    uint64
	ProcessingNs    int64
}

// LateSink receives late readings so the gateway can keep them in a bounded
// late log. Late is called under the engine's write lock and must not block
// or call the engine.
type LateSink interface {
	Late(r wal.Reading, watermarkNs int64)
}

type spec struct {
	name    string
	kind    Kind
	size    int64 // window size
	slide   int64 // sliding only
	initCap int   // sliding: pane slice capacity
}

// Engine is the event-time window engine: per series and field tumbling and
// sliding windows, per device watermarks and idleness, group sketches and
// the memory budget. It is pure and deterministic: time arrives only as
// event times and batch ingest times, and the same Apply calls from the
// same state give the same emissions and state.
//
// Apply takes the write lock; the read API takes the read lock and returns
// copies owned by the caller. An Engine is safe for concurrent use.
type Engine struct {
	mu  sync.RWMutex
	cfg Config

	lateness, idleNs, ttlNs, budget int64
	specs                           []spec
	nTum                            int
	groups                          []*groupState
	fingerprint                     uint64

	series  seriesIndex
	devices map[string]*device
	devGen  uint64
	seq     uint64
	gwSeq   uint32 // the last groupWin.seq given

	// seriesGen counts series creations and evictions (under mu); the
	// sorted cache serves GET /api/v1/series pages in O(page) while the set
	// of series is unchanged, instead of sorting every series per request.
	seriesGen uint64
	sortedMu  sync.Mutex
	sorted    []*series
	sortedFor uint64 // seriesGen+1 that sorted reflects; 0: not built

	act list[device, *device] // non-idle devices by last ingest
	ttl list[series, *series] // series by last applied reading

	overflow    *series
	overflowHLL *sketches.HLL

	applied   uint64
	procNs    int64
	nextCheck int64
	sink      LateSink

	mem         int64 // accounted bytes
	admit       int64 // budget less the headroom kept for overflow state
	pairReserve int64 // bytes charged per pair at least
	winPool     []*tumWin

	st Stats // counters only; gauges are filled by Stats()

	// The checkpoint in progress (checkpoint_stream.go), the generation of
	// the newest one begun, and buffers kept for the next one.
	ckpt                        *Checkpoint
	ckptGen                     uint64
	ckptSeries                  []*series
	ckptHead, ckptTail, ckptOut []byte
	ckptSide, ckptSlabs         [][]byte     // slab list, and empty slabs kept
	ckptEnc                     enc          // preserve's encoder
	lastSize                    atomic.Int64 // of the last MarshalBinary: the next one's buffer

	// fieldNames caches field names for pairs to share (internField).
	fieldNames [64]string

	// hot is the series of the last reading (nil after an eviction or a
	// restore): a cache of e.series, consistent with it.
	hot *series

	// Apply scratch: the series and pairs prefetch found for the readings
	// of the current chunk, and the sum of what it loaded.
	pre        [prefetchChunk]*series
	prePair    [prefetchChunk]*pair
	prePV      [prefetchChunk]sketches.QuantileValue
	preHash    [prefetchChunk]uint64
	ahead      [aheadRing]aheadChunk
	preWins    []preWin
	scratchQ   sketches.Quantile // the sketch of a window without one, as it closes
	prefetched int64
	// Apply scratch.
	out      []Emission
	closingG []*groupWin
	due      []*device
	dueS     []*series
}

// New returns an empty engine for cfg, which must be valid. It starts no
// goroutine.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("windows config: %w", err)
	}
	e := &Engine{
		cfg:       cloneConfig(cfg),
		lateness:  int64(cfg.AllowedLateness),
		idleNs:    int64(cfg.IdleTimeout),
		ttlNs:     int64(cfg.SeriesTTL),
		budget:    int64(cfg.MemoryBudget),
		series:    newSeriesIndex(),
		devices:   make(map[string]*device),
		procNs:    noTime,
		nextCheck: noTime,
	}
	for _, d := range cfg.Tumbling {
		e.specs = append(e.specs, spec{name: TumblingName(d), kind: KindTumbling, size: int64(d)})
	}
	e.nTum = len(e.specs)
	for _, s := range cfg.Sliding {
		panes := int(s.Size/s.Slide) + 2
		e.specs = append(e.specs, spec{name: SlidingName(s), kind: KindSliding, size: int64(s.Size), slide: int64(s.Slide), initCap: panes})
	}
	for i, g := range cfg.Groups {
		e.groups = append(e.groups, newGroupState(i, g))
	}
	e.fingerprint = configFingerprint(e.cfg)
	e.pairReserve = e.pairReserveBytes()
	e.admit = e.budget - e.headroomBytes()
	if e.admit < e.budget/2 {
		return nil, fmt.Errorf("windows config: %w", &ConfigError{Key: "memory_budget",
			Msg: fmt.Sprintf("%s is too small: the overflow state of the configured windows and groups needs %d bytes, at most half the budget", cfg.MemoryBudget, e.headroomBytes())})
	}
	e.mem = e.baseBytes()
	e.overflowHLL = sketches.NewHLL()
	e.mem += int64(e.overflowHLL.SizeBytes())
	e.overflow = e.newSeries(OverflowSeries, parseSeriesKey(OverflowSeries), nil)
	e.overflow.overflow = true
	e.ttl.remove(e.overflow)   // the overflow series is never evicted
	e.overflow.dev.idle = true // no reading yet: nothing to close
	e.act.remove(e.overflow.dev)
	return e, nil
}

func cloneConfig(c Config) Config {
	c.Tumbling = slices.Clone(c.Tumbling)
	c.Sliding = slices.Clone(c.Sliding)
	c.Groups = slices.Clone(c.Groups)
	return c
}

// SetLateSink sets the receiver of late readings. Call it before the first
// Apply; nil drops them (they are still counted).
func (e *Engine) SetLateSink(s LateSink) {
	e.mu.Lock()
	e.sink = s
	e.mu.Unlock()
}

// AppliedIndex reports the index of the last applied batch (0: none).
func (e *Engine) AppliedIndex() uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.applied
}

// Apply applies one WAL batch, in WAL index order, and appends what it
// emits to out, returning it. Emissions come in the order readings are
// processed, then idle closes, then evictions; their Seq numbers are
// consecutive from 0 per call. Processing time is the largest IngestNs seen
// so far: idle devices and TTL eviction are judged only by it, at most once
// per second of it, after the batch's readings.
//
// A batch whose index is not above AppliedIndex (once one was applied) is
// ignored, so a replay that overlaps a checkpoint cannot count twice.
// Apply takes the write lock; b is not retained.
func (e *Engine) Apply(index uint64, b *wal.Batch, out []Emission) []Emission {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.applied != 0 && index <= e.applied {
		return out
	}
	base := len(out)
	e.out = out
	if b.IngestNs > e.procNs {
		e.procNs = b.IngestNs
	}
	// A software pipeline over chunks of readings: while one is applied,
	// the series of the next and the index slots of the one after are
	// loading (hashAhead, seriesAhead), so prefetch finds them in the
	// cache.
	all := b.Readings
	e.hashAhead(all, 0)
	e.hashAhead(all, 1)
	e.seriesAhead(all, 0)
	for c, i := 0, 0; i < len(all); c, i = c+1, i+prefetchChunk {
		rs := all[i:min(i+prefetchChunk, len(all))]
		e.prefetch(rs, &e.ahead[c%aheadRing])
		e.hashAhead(all, c+2)
		e.seriesAhead(all, c+1)
		for j := range rs {
			e.applyReading(&rs[j], e.pre[j], e.prePair[j], &e.prePV[j])
		}
	}
	if e.procNs >= e.nextCheck {
		e.idleSweep()
		e.ttlSweep()
		e.nextCheck = satAdd(e.procNs, int64(time.Second))
	}
	e.applied = index
	out = e.out
	e.out = nil
	for i := base; i < len(out); i++ {
		out[i].Index = index
		out[i].Seq = i - base
	}
	return out
}

func satAdd(a, b int64) int64 {
	if a > maxTime-b {
		return maxTime
	}
	return a + b
}

// applyReading is the per-reading hot path. s and p are the series and
// pair prefetch found (nil: none then; pairs and series are freed only by
// the sweeps after a batch, so what it found is still live), pv the
// reading's value prepared for the sketches.
func (e *Engine) applyReading(r *wal.Reading, s *series, p *pair, pv *sketches.QuantileValue) {
	if r.TimeNs < -timeLimit || r.TimeNs > timeLimit {
		e.st.BadTimeReadings++
		return
	}
	if s == nil { // new since prefetch looked, or new
		s = e.series.get(r.Series)
	}
	if p == nil && s != nil { // new since prefetch looked, or new
		p = s.pair(r.Field)
	}
	var pk parsedKey
	var d *device
	if p == nil {
		cost := e.pairReserve
		if s == nil {
			pk = parseSeriesKey(r.Series)
			d = e.devices[deviceOf(r.Series, &pk)]
			cost += e.seriesReserve(len(r.Series), d == nil)
		}
		if e.mem+cost > e.admit {
			e.st.OverflowReadings++
			e.overflowHLL.AddString(r.Series)
			s, d = e.overflow, nil
			p = s.pair(r.Field)
		}
	}
	if s != nil {
		d = s.dev
	}
	if d != nil {
		if d.idle {
			e.wake(d)
		}
		e.touchDevice(d)
		if wm := d.watermark(e.lateness); r.TimeNs < wm {
			e.st.LateReadings++
			if e.sink != nil {
				e.sink.Late(*r, wm)
			}
			return
		}
	}
	if s == nil {
		s = e.newSeries(strings.Clone(r.Series), pk, d)
		d = s.dev
	} else {
		e.preserve(s) // a checkpoint in progress encodes it first, as it was
	}
	e.hot = s
	if p == nil {
		p = e.newPair(s, r.Field)
	}
	e.applyToPair(p, r.Value, pv, r.TimeNs)
	e.applyToGroups(s, d, r.TimeNs)
	s.readings++
	s.lastEventNs = max(s.lastEventNs, r.TimeNs)
	s.lastApplied = e.procNs
	e.touchSeries(s)

	oldWm := d.watermark(e.lateness)
	d.maxT = max(d.maxT, r.TimeNs)
	if wm := d.watermark(e.lateness); wm > oldWm {
		e.crossGroups(d, oldWm, wm)
		if wm >= d.nextEnd {
			e.closeDue(d, wm)
		}
	}
	e.flushGroups()
}

func (s *series) pair(field string) *pair {
	for _, p := range s.pairs {
		if p.field == field {
			return p
		}
	}
	return nil
}

// applyToPair adds one value (pv: v prepared for the quantile sketches)
// to every window of its pair.
//
// Tumbling specs come first in e.specs, then sliding ones.
func (e *Engine) applyToPair(p *pair, v float64, pv *sketches.QuantileValue, t int64) {
	specs := e.specs[:len(p.specs)]
	for i := range e.nTum {
		sp, ps := &specs[i], &p.specs[i]
		// Most readings go to the window the previous one went to: skip
		// the lookup (a cache miss on the window list with many pairs),
		// and the division that aligns t (starts are aligned, so this is
		// alignDown(t, size) == c.start; start+size cannot overflow, both
		// are within 2^62 + a week).
		if c := ps.cur; c != nil && c.start <= t && t < c.start+sp.size {
			c.add(v, pv, t)
			continue
		}
		e.addTumbling(p, sp, ps, v, pv, t)
	}
	for i := e.nTum; i < len(specs); i++ {
		sp, ps := &specs[i], &p.specs[i]
		if k := len(ps.panes); k > 0 { // the newest pane, as above
			if c := &ps.panes[k-1]; c.start <= t && t < c.start+sp.slide {
				c.agg.add(v, t)
				continue
			}
		}
		e.addSliding(p, sp, ps, v, t)
	}
	p.res.Add(sketches.Sample{Value: v, TimeNs: t})
}

// addTumbling adds a value to a window other than ps.cur, opening it if
// need be, and makes it ps.cur.
func (e *Engine) addTumbling(p *pair, sp *spec, ps *specState, v float64, pv *sketches.QuantileValue, t int64) {
	d := p.s.dev
	ws := alignDown(t, sp.size)
	var w *tumWin
	k := len(ps.wins)
	for ; k > 0; k-- {
		if c := ps.wins[k-1]; c.start <= ws {
			if c.start == ws {
				w = c
			}
			break
		}
	}
	if w == nil {
		w = e.getWin()
		w.start = ws
		oldCap := cap(ps.wins)
		ps.wins = slices.Insert(ps.wins, k, w)
		e.chargePair(p, winBytes+int64(cap(ps.wins)-oldCap)*ptrBytes)
		d.nextEnd = min(d.nextEnd, ws+sp.size)
	}
	ps.cur = w
	w.add(v, pv, t)
}

// addSliding adds a value to a pane other than the newest, adding it if
// need be.
func (e *Engine) addSliding(p *pair, sp *spec, ps *specState, v float64, t int64) {
	d := p.s.dev
	k := len(ps.panes)
	start := alignDown(t, sp.slide)
	for ; k > 0; k-- {
		if c := &ps.panes[k-1]; c.start <= start {
			if c.start == start {
				c.agg.add(v, t)
				return
			}
			break
		}
	}
	oldCap := cap(ps.panes)
	if ps.panes == nil {
		ps.panes = make([]pane, 0, sp.initCap)
	}
	ps.panes = slices.Insert(ps.panes, k, pane{start: start})
	ps.panes[k].agg.add(v, t)
	if c := cap(ps.panes); c != oldCap {
		e.chargePair(p, int64(c-oldCap)*paneBytes)
	}
	w := start - sp.size + sp.slide
	if ps.nextStart != noTime && w < ps.nextStart {
		w = ps.nextStart
	}
	d.nextEnd = min(d.nextEnd, w+sp.size)
}

// crossGroups updates the pending counts of d's group windows whose end its
// watermark passed.
func (e *Engine) crossGroups(d *device, oldWm, wm int64) {
	if d.idle {
		return
	}
	d.pruneGroups()
	for _, gw := range d.groups {
		if oldWm < gw.end && gw.end <= wm {
			e.unpend(gw)
		}
	}
}

func (d *device) pruneGroups() {
	n := 0
	for _, gw := range d.groups {
		if !gw.closed {
			d.groups[n] = gw
			n++
		}
	}
	clear(d.groups[n:])
	d.groups = d.groups[:n]
}

func (e *Engine) unpend(gw *groupWin) {
	gw.pending--
	if gw.pending == 0 {
		e.closingG = append(e.closingG, gw)
	}
}

// closeDue closes every window of d's series whose end the watermark wm
// reached, emits them in order and recomputes d.nextEnd.
func (e *Engine) closeDue(d *device, wm int64) {
	e.preserveDevice(d)
	mark := len(e.out)
	next := int64(maxTime)
	for _, s := range d.series {
		for _, p := range s.pairs {
			for i := range e.specs {
				sp := &e.specs[i]
				ps := &p.specs[i]
				if sp.kind == KindTumbling {
					e.closeTumbling(p, i, wm, reasonWatermark)
					if len(ps.wins) > 0 {
						next = min(next, ps.wins[0].start+sp.size)
					}
				} else {
					e.closeSliding(p, i, wm, reasonWatermark)
					if len(ps.panes) > 0 {
						next = min(next, ps.nextWindowStart(sp)+sp.size)
					}
				}
			}
		}
	}
	d.nextEnd = next
	e.sortWindows(mark)
}

// sortWindows orders the window emissions of one event: oldest end first,
// tumbling before sliding and by spec order, then by start, series, field.
func (e *Engine) sortWindows(mark int) {
	if len(e.out)-mark < 2 {
		return
	}
	slices.SortFunc(e.out[mark:], func(a, b Emission) int {
		if c := cmp.Compare(a.Window.EndNs, b.Window.EndNs); c != 0 {
			return c
		}
		if c := cmp.Compare(a.spec, b.spec); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Window.StartNs, b.Window.StartNs); c != 0 {
			return c
		}
		if c := strings.Compare(a.Window.Series, b.Window.Series); c != 0 {
			return c
		}
		return strings.Compare(a.Window.Field, b.Window.Field)
	})
}

func (ps *specState) nextWindowStart(sp *spec) int64 {
	w := ps.panes[0].start - sp.size + sp.slide
	if ps.nextStart != noTime && w < ps.nextStart {
		w = ps.nextStart
	}
	return w
}

// closeTumbling closes the open tumbling windows of spec i ending at or
// before wm (all of them when reason is not watermark).
func (e *Engine) closeTumbling(p *pair, i int, wm int64, reason uint8) {
	sp := &e.specs[i]
	ps := &p.specs[i]
	n := 0
	for _, w := range ps.wins {
		end := w.start + sp.size
		if reason == reasonWatermark && end > wm {
			break
		}
		a := &w.agg
		q := w.closingSketch(&e.scratchQ)
		rec := closedRec{
			start: w.start, count: a.count, sum: a.sum, min: a.min, max: a.max, std: a.stddev(),
			first: a.first, last: a.last,
			p50: q.Quantile(0.5), p90: q.Quantile(0.9), p99: q.Quantile(0.99),
			reason: reason,
		}
		e.emitWindow(p, i, &rec)
		if q, err := q.MarshalBinary(); err == nil {
			e.out[len(e.out)-1].Window.Quantiles = q
		}
		e.pushHist(p, ps, sp, rec)
		e.putWin(p, w)
		n++
	}
	if n > 0 {
		copy(ps.wins, ps.wins[n:])
		clear(ps.wins[len(ps.wins)-n:])
		ps.wins = ps.wins[:len(ps.wins)-n]
		ps.cur = nil // it may have been closed and pooled
	}
}

// closeSliding emits the sliding windows of spec i that hold a reading and
// end at or before wm (all of them when reason is not watermark), merging
// their panes, and drops panes no open window needs.
func (e *Engine) closeSliding(p *pair, i int, wm int64, reason uint8) {
	sp := &e.specs[i]
	ps := &p.specs[i]
	for len(ps.panes) > 0 {
		w := ps.nextWindowStart(sp)
		end := w + sp.size
		if reason == reasonWatermark && end > wm {
			break
		}
		var a agg
		for k := range ps.panes {
			if ps.panes[k].start >= end {
				break
			}
			a.merge(&ps.panes[k].agg)
		}
		rec := closedRec{
			start: w, count: a.count, sum: a.sum, min: a.min, max: a.max, std: a.stddev(),
			first: a.first, last: a.last, reason: reason,
		}
		e.emitWindow(p, i, &rec)
		e.pushHist(p, ps, sp, rec)
		ps.nextStart = w + sp.slide
		drop := 0
		for drop < len(ps.panes) && ps.panes[drop].start < ps.nextStart {
			drop++
		}
		if drop > 0 {
			copy(ps.panes, ps.panes[drop:])
			ps.panes = ps.panes[:len(ps.panes)-drop]
		}
	}
}

func (e *Engine) emitWindow(p *pair, i int, rec *closedRec) {
	sp := &e.specs[i]
	e.out = append(e.out, Emission{
		Kind:   sp.kind,
		Window: p.summary(sp, rec),
		spec:   i,
	})
}

func (p *pair) summary(sp *spec, rec *closedRec) WindowSummary {
	ws := WindowSummary{
		Series: p.s.key, Field: p.field, Spec: sp.name,
		StartNs: rec.start, EndNs: rec.start + sp.size,
		Count: rec.count, Sum: rec.sum, Min: rec.min, Max: rec.max,
		Stddev: rec.std, First: rec.first, Last: rec.last,
		P50: rec.p50, P90: rec.p90, P99: rec.p99,
		Closed: reasonNames[rec.reason],
	}
	if rec.count > 0 {
		ws.Mean = rec.sum / float64(rec.count)
	}
	ws.Open = rec.reason == reasonOpen
	return ws
}

// pushHist keeps rec in the spec's closed history. The pair is charged a
// full history of structs when it begins, as before the history was
// encoded: the reservation the budget admitted it with, and the same
// accounting whatever the records' sizes, so checkpoints and replays
// account alike.
func (e *Engine) pushHist(p *pair, ps *specState, sp *spec, rec closedRec) {
	n := e.cfg.ClosedHistory
	if n == 0 {
		return
	}
	if ps.hist == nil {
		ps.hist = make([]byte, 0, histRecHint)
		e.chargePair(p, int64(n)*recBytes)
	}
	ps.pushHist(&rec, n, sp.histUnit())
}

// histRecHint is the encoded size of a typical record of a window of one
// value, for the first allocation of a history.
const histRecHint = 20

// histUnit is what a closed window's start is a multiple of.
func (sp *spec) histUnit() int64 {
	if sp.kind == KindSliding {
		return sp.slide
	}
	return sp.size
}

func (e *Engine) getWin() *tumWin {
	if n := len(e.winPool); n > 0 {
		w := e.winPool[n-1]
		e.winPool[n-1] = nil
		e.winPool = e.winPool[:n-1]
		e.mem -= winBytes
		return w
	}
	return new(tumWin)
}

const winPoolMax = 256

func (e *Engine) putWin(p *pair, w *tumWin) {
	e.chargePair(p, -winBytes)
	if len(e.winPool) >= winPoolMax {
		return
	}
	w.start = 0
	w.agg = agg{}
	w.n = 0
	if w.q != nil {
		w.q.Reset()
	}
	e.winPool = append(e.winPool, w)
	e.mem += winBytes
}
