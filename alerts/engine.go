package alerts

import (
	"cmp"
	"maps"
	"math"
	"slices"
	"sync"

	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
)

// Event is one alert transition, as published to MQTT, HTTP, SSE and
// Kafka.
type Event struct {
	// ID is the same for the firing and the resolved event of one alert:
	// a hash of gateway, rule, series, field and StartNs.
	ID       string            `json:"id"`
	Type     string            `json:"type"` // "firing" or "resolved"
	Rule     string            `json:"rule"`
	Series   string            `json:"series"`
	Field    string            `json:"field"`
	Severity string            `json:"severity"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Value fired or resolved the alert; for missing: seconds of silence.
	Value float64 `json:"value"`
	// Threshold is the edge the firing value crossed (the band edge for
	// outside; For in seconds for missing), the same in the resolved event.
	Threshold float64 `json:"threshold"`
	Op        string  `json:"op"`
	// StartNs is the event time the condition began (missing: the ingest
	// time of the last reading); AtNs the time of this event (missing:
	// the ingest time of the batch).
	StartNs int64  `json:"start_ns"`
	AtNs    int64  `json:"at_ns"`
	Gateway string `json:"gateway"`
	// Index and Seq identify the event across a replay: the WAL index of
	// the batch whose Apply produced it and its position in that call.
	Index uint64 `json:"wal_index"`
	Seq   int    `json:"seq"`
	// Reason is set on a resolved event that ends an alert because its
	// rule was changed or removed (ReasonRuleChanged, ReasonRuleRemoved);
	// empty when the condition cleared.
	Reason string `json:"reason,omitempty"`
}

// Reasons of a resolved event that a reload caused.
const (
	ReasonRuleChanged = "rule changed"
	ReasonRuleRemoved = "rule removed"
)

// Event types.
const (
	Firing   = "firing"
	Resolved = "resolved"
)

// Alert is a pending or firing alert.
type Alert struct {
	Rule     string            `json:"rule"`
	Series   string            `json:"series"`
	Field    string            `json:"field"`
	State    string            `json:"state"` // "pending" or "firing"
	ID       string            `json:"id"`
	Severity string            `json:"severity"`
	Labels   map[string]string `json:"labels,omitempty"`
	Op       string            `json:"op"`
	// Value is the newest value evaluated; for missing: seconds of silence
	// up to the newest batch.
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	StartNs   int64   `json:"start_ns"` // as in Event
	SinceNs   int64   `json:"since_ns"` // when it became pending or firing
	// LastNs is the newest event time evaluated (missing: the newest
	// batch's ingest time).
	LastNs int64 `json:"last_ns"`
}

// Stats are the engine's counters; totals are kept across Reload and
// checkpoints.
type Stats struct {
	Rules   int
	States  int // (rule, series, field) states held
	Pending int
	Firing  int
	Fired   uint64 // firing events
	// Resolved counts resolved events.
	Resolved    uint64
	Evaluations uint64 // readings and windows applied to a state
	// OutOfOrder counts readings and windows older than the newest one
	// already evaluated by their state: ignored.
	OutOfOrder uint64
	// Overflow counts evaluations dropped because a new state would exceed
	// MaxStates and no state could be evicted.
	Overflow uint64
	// Forgotten counts inactive threshold states evicted to make room
	// (their out-of-order guard is lost); Evicted counts watched
	// missing-data states evicted to make room (their series is no longer
	// watched until it sends again).
	Forgotten uint64
	Evicted   uint64
	// NonFinite counts NaN and ±Inf values not evaluated.
	NonFinite uint64
	// BadSeries counts readings and windows whose series key does not
	// parse: they match no rule.
	BadSeries uint64
	// MatchCache is the number of (series, field) match results cached.
	MatchCache int
}

// Engine evaluates alert rules. Apply and MarshalBinary/UnmarshalBinary are
// meant for the one goroutine that applies the WAL; the query methods may
// be called concurrently with it. One mutex guards everything.
type Engine struct {
	mu      sync.Mutex
	gw      string
	cfg     Config
	rules   []*rule
	missing []*rule // rules of kind missing, in config order
	hasRaw  bool    // a raw or missing rule exists
	hasAgg  bool

	states map[stateKey]*state
	idle   list // inactive threshold states, least recently touched first
	touch  uint64

	cache matchCache
	tags  []tag  // scratch for parseSeriesKey
	idBuf []byte // scratch for alertID

	hasProc bool
	procNs  int64 // largest batch IngestNs applied

	recent ring

	// Set during Apply only.
	out   []Event
	index uint64
	seq   int

	pendingN, firingN int
	c                 counters
}

type counters struct {
	evaluations, outOfOrder, overflow, fired, resolved uint64
	nonFinite, badSeries, forgotten, evicted           uint64
}

// New validates cfg and returns an engine with no state. gatewayID names
// the gateway in events and goes into alert ids.
func New(cfg Config, gatewayID string) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{gw: gatewayID, states: make(map[stateKey]*state)}
	e.setRules(cfg, compile(cfg.Rules))
	e.recent.resize(cfg.Recent)
	return e, nil
}

func (e *Engine) setRules(cfg Config, rs []*rule) {
	e.cfg = cfg
	e.rules = rs
	e.missing = e.missing[:0]
	e.hasRaw, e.hasAgg = false, false
	for _, r := range rs {
		switch r.kind {
		case kindMissing:
			e.missing = append(e.missing, r)
			e.hasRaw = true
		case kindRaw:
			e.hasRaw = true
		case kindAgg:
			e.hasAgg = true
		}
	}
	e.cache.reset()
}

// Apply evaluates one WAL batch and appends the events it produced to out:
//
//  1. every reading of b, in batch order, against the raw and missing
//     rules that match it (in rule order);
//  2. the closed windows, in order, against the aggregate rules whose
//     window spec they carry (tumbling and sliding emissions only);
//  3. the missing-data rules, at the processing time max(IngestNs so far).
//
// An empty batch is a clock tick. Events carry (index, Seq) with Seq
// counting from 0 in this call. b == nil is an empty batch that does not
// move the clock.
func (e *Engine) Apply(index uint64, b *wal.Batch, closed []windows.Emission, out []Event) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.out, e.index, e.seq = out, index, 0
	if b != nil && (!e.hasProc || b.IngestNs > e.procNs) {
		e.procNs, e.hasProc = b.IngestNs, true
	}
	if b != nil && e.hasRaw {
		for i := range b.Readings {
			rd := &b.Readings[i]
			m := e.match(rd.Series, rd.Field)
			if len(m.raw) == 0 {
				if m.bad {
					e.c.badSeries++
				}
				continue
			}
			for _, r := range m.raw {
				if r.kind == kindMissing {
					e.seen(r, rd.Series, rd.Field)
				} else {
					e.eval(r, rd.Series, rd.Field, rd.Value, rd.TimeNs)
				}
			}
		}
	}
	if e.hasAgg {
		for i := range closed {
			em := &closed[i]
			if em.Kind != windows.KindTumbling && em.Kind != windows.KindSliding {
				continue
			}
			w := &em.Window
			m := e.match(w.Series, w.Field)
			if m.bad {
				e.c.badSeries++
			}
			for _, r := range m.agg {
				if r.spec == w.Spec {
					e.eval(r, w.Series, w.Field, r.agg(w), w.EndNs)
				}
			}
		}
	}
	if b != nil {
		e.checkMissing()
	}
	out = e.out
	e.out = nil
	return out
}

// match returns the rules matching a series and field, from the cache.
func (e *Engine) match(series, field string) matchEntry {
	k := sfKey{series, field}
	if m, ok := e.cache.get(k); ok {
		return m
	}
	var m matchEntry
	meas, tags, err := parseSeriesKey(series, e.tags)
	e.tags = tags
	if err != nil {
		m.bad = true
	} else {
		for _, r := range e.rules {
			if !r.field.match(field) || !r.matchSeries(meas, tags) {
				continue
			}
			if r.kind == kindAgg {
				m.agg = append(m.agg, r)
			} else {
				m.raw = append(m.raw, r)
			}
		}
	}
	e.cache.put(k, m)
	return m
}

// stateFor returns the state of (r, series, field), creating it if there
// is room; nil (counted) when there is none.
func (e *Engine) stateFor(r *rule, series, field string) *state {
	k := stateKey{r, series, field}
	if s, ok := e.states[k]; ok {
		return s
	}
	if len(e.states) >= e.cfg.MaxStates && !e.makeRoom() {
		e.c.overflow++
		return nil
	}
	s := &state{key: k}
	e.states[k] = s
	return s
}

// makeRoom evicts one state: the least recently touched inactive threshold
// state, else the least recently touched watched missing-data state.
// Pending and firing states are never evicted: that would lose an alert.
func (e *Engine) makeRoom() bool {
	if s := e.idle.head; s != nil {
		e.idle.remove(s)
		delete(e.states, s.key)
		e.c.forgotten++
		return true
	}
	var oldest *state
	for _, r := range e.missing {
		if s := r.watched.head; s != nil && (oldest == nil || s.touch < oldest.touch) {
			oldest = s
		}
	}
	if oldest == nil {
		return false
	}
	oldest.in.remove(oldest)
	delete(e.states, oldest.key)
	e.c.evicted++
	return true
}

func (e *Engine) relist(l *list, s *state) {
	if s.in != nil {
		s.in.remove(s)
	}
	e.touch++
	s.touch = e.touch
	l.pushBack(s)
}

// eval applies value v at event time t to the threshold rule r.
func (e *Engine) eval(r *rule, series, field string, v float64, t int64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		e.c.nonFinite++
		return
	}
	s := e.stateFor(r, series, field)
	if s == nil {
		return
	}
	if s.hasT && t < s.lastT {
		e.c.outOfOrder++
		return
	}
	s.hasT, s.lastT, s.value = true, t, v
	e.c.evaluations++
	switch s.phase {
	case inactive:
		ok, edge := r.fires(v)
		if !ok {
			e.relist(&e.idle, s)
			return
		}
		e.idle.remove(s)
		s.start, s.since, s.edge = t, t, edge
		s.id, e.idBuf = alertID(e.idBuf, e.gw, r.name, series, field, t)
		if elapsed(s.start, t) >= uint64(r.forNs) {
			e.fire(s, v, t)
			return
		}
		s.phase = pending
		e.pendingN++
	case pending:
		ok, edge := r.fires(v)
		if !ok {
			// The condition ended before For: forgotten silently.
			s.phase = inactive
			e.pendingN--
			e.relist(&e.idle, s)
			return
		}
		s.edge = edge
		if elapsed(s.start, t) >= uint64(r.forNs) {
			e.pendingN--
			e.fire(s, v, t)
		}
	case firing:
		if r.resolves(v) {
			s.phase = inactive
			e.firingN--
			e.emit(s, Resolved, v, t)
			e.relist(&e.idle, s)
		}
	}
}

func (e *Engine) fire(s *state, v float64, t int64) {
	s.phase, s.since = firing, t
	e.firingN++
	e.emit(s, Firing, v, t)
}

// seen records a reading for the missing-data rule r: it resolves a firing
// alert and restarts the silence.
func (e *Engine) seen(r *rule, series, field string) {
	s := e.stateFor(r, series, field)
	if s == nil {
		return
	}
	e.c.evaluations++
	if s.phase == firing {
		s.phase = inactive
		e.firingN--
		e.emit(s, Resolved, seconds(elapsed(s.start, e.procNs)), e.procNs)
	}
	s.start, s.value = e.procNs, 0
	e.relist(&r.watched, s)
}

// checkMissing fires every watched state silent for at least For. Each
// watched list is sorted by touch, hence by last reading time (processing
// time never goes back), so only its head needs looking at.
func (e *Engine) checkMissing() {
	for _, r := range e.missing {
		for s := r.watched.head; s != nil; s = r.watched.head {
			silence := elapsed(s.start, e.procNs)
			if silence < uint64(r.forNs) {
				break
			}
			r.watched.remove(s)
			s.value, s.edge = seconds(silence), r.forSec
			s.id, e.idBuf = alertID(e.idBuf, e.gw, r.name, s.key.series, s.key.field, s.start)
			e.fire(s, s.value, e.procNs)
		}
	}
}

func seconds(ns uint64) float64 { return float64(ns) / 1e9 }

func (e *Engine) emit(s *state, typ string, v float64, at int64) {
	r := s.key.r
	ev := Event{
		ID: s.id, Type: typ, Rule: r.name, Series: s.key.series, Field: s.key.field,
		Severity: r.severity, Labels: r.labels, Value: v, Threshold: s.edge, Op: r.op,
		StartNs: s.start, AtNs: at, Gateway: e.gw, Index: e.index, Seq: e.seq,
	}
	e.seq++
	if typ == Firing {
		e.c.fired++
	} else {
		e.c.resolved++
	}
	e.recent.push(ev) // shares the rule's labels; Recent copies them
	ev.Labels = cloneLabels(r.labels)
	e.out = append(e.out, ev)
}

// Record adds events made outside Apply (the resolved events of alerts a
// reload ended, see Event.Reason) to Recent and the counters, as if Apply
// had emitted them.
func (e *Engine) Record(evs []Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range evs {
		if ev.Type == Firing {
			e.c.fired++
		} else {
			e.c.resolved++
		}
		ev.Labels = cloneLabels(ev.Labels)
		e.recent.push(ev)
	}
}

func cloneLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

// Reload validates cfg and replaces the rules. A rule with the same name
// and an equal definition keeps its states (pending, firing, watched);
// states of removed or changed rules are dropped without an event, so a
// changed rule starts from inactive. On error nothing changes.
func (e *Engine) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	rs := compile(cfg.Rules)
	e.mu.Lock()
	defer e.mu.Unlock()
	byName := make(map[string]*rule, len(rs))
	for _, r := range rs {
		byName[r.name] = r
	}
	keep := make([]*state, 0, len(e.states))
	for _, s := range e.states {
		if nr := byName[s.key.r.name]; nr != nil && nr.fp == s.key.r.fp {
			s.key.r = nr
			keep = append(keep, s)
		}
	}
	e.setRules(cfg, rs)
	e.rebuild(keep)
	e.recent.resize(cfg.Recent)
	return nil
}

// rebuild makes states the engine's states: the map, the lists in touch
// order, the phase counts; then it evicts down to MaxStates if it can.
func (e *Engine) rebuild(states []*state) {
	slices.SortFunc(states, compareStates) // a total order: deterministic lists
	e.states = make(map[stateKey]*state, len(states))
	e.idle = list{}
	for _, r := range e.rules {
		r.watched = list{}
	}
	e.pendingN, e.firingN = 0, 0
	for _, s := range states {
		s.prev, s.next, s.in = nil, nil, nil
		e.states[s.key] = s
		switch {
		case s.phase == pending:
			e.pendingN++
		case s.phase == firing:
			e.firingN++
		case s.key.r.kind == kindMissing:
			s.key.r.watched.pushBack(s)
		default:
			e.idle.pushBack(s)
		}
	}
	for len(e.states) > e.cfg.MaxStates && e.makeRoom() {
	}
}

// Active returns the pending and firing alerts, sorted by rule name,
// series and field.
func (e *Engine) Active() []Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Alert, 0, e.pendingN+e.firingN)
	for _, s := range e.states {
		if s.phase == inactive {
			continue
		}
		r := s.key.r
		a := Alert{
			Rule: r.name, Series: s.key.series, Field: s.key.field, State: s.phase.String(),
			ID: s.id, Severity: r.severity, Labels: cloneLabels(r.labels), Op: r.op,
			Value: s.value, Threshold: s.edge, StartNs: s.start, SinceNs: s.since, LastNs: s.lastT,
		}
		if r.kind == kindMissing {
			a.Value, a.LastNs = seconds(elapsed(s.start, e.procNs)), e.procNs
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Alert) int {
		return cmp.Or(cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Series, b.Series), cmp.Compare(a.Field, b.Field))
	})
	return out
}

// Recent returns up to limit of the newest events, newest first; limit <= 0
// means all kept.
func (e *Engine) Recent(limit int) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.recent.newest(limit)
}

// Rules returns a copy of the rules in effect.
func (e *Engine) Rules() []Rule {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Rule, len(e.rules))
	for i, r := range e.rules {
		out[i] = cloneRule(r.cfg)
	}
	return out
}

// Stats returns the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{
		Rules: len(e.rules), States: len(e.states), Pending: e.pendingN, Firing: e.firingN,
		Fired: e.c.fired, Resolved: e.c.resolved, Evaluations: e.c.evaluations,
		OutOfOrder: e.c.outOfOrder, Overflow: e.c.overflow, Forgotten: e.c.forgotten,
		Evicted: e.c.evicted, NonFinite: e.c.nonFinite, BadSeries: e.c.badSeries,
		MatchCache: e.cache.len(),
	}
}

// ring keeps the newest events.
type ring struct {
	buf  []Event
	next int // where the next event goes
	n    int
}

func (g *ring) push(ev Event) {
	if len(g.buf) == 0 {
		return
	}
	g.buf[g.next] = ev
	g.next = (g.next + 1) % len(g.buf)
	g.n = min(g.n+1, len(g.buf))
}

// oldestFirst returns the kept events, oldest first (shared labels).
func (g *ring) oldestFirst() []Event {
	out := make([]Event, 0, g.n)
	for i := g.n; i > 0; i-- {
		out = append(out, g.buf[(g.next-i+len(g.buf))%len(g.buf)])
	}
	return out
}

func (g *ring) newest(limit int) []Event {
	if limit <= 0 || limit > g.n {
		limit = g.n
	}
	out := make([]Event, limit)
	for i := range limit {
		ev := g.buf[(g.next-1-i+2*len(g.buf))%len(g.buf)]
		ev.Labels = cloneLabels(ev.Labels)
		out[i] = ev
	}
	return out
}

// resize keeps the newest min(n, size) events.
func (g *ring) resize(size int) {
	if size == len(g.buf) {
		return
	}
	old := g.oldestFirst()
	g.buf, g.next, g.n = make([]Event, size), 0, 0
	for _, ev := range old[max(0, len(old)-size):] {
		g.push(ev)
	}
}

// Match cache. A series' rules are found by parsing its key and testing
// every rule; the result is cached per (series, field) so the hot path is
// one map lookup, which neither allocates nor parses. Two generations of
// at most cacheGen entries: when the current one is full it becomes the
// old one and the old one is cleared for reuse; a hit in the old one is
// promoted. So the cache holds at most 2×cacheGen entries whatever the
// cardinality, and a working set above that degrades to re-matching, never
// to growing.
const cacheGen = 1 << 15

type sfKey struct{ series, field string }

type matchEntry struct {
	raw []*rule // raw and missing rules, in rule order
	agg []*rule
	bad bool // the series key does not parse
}

type matchCache struct {
	cur, old map[sfKey]matchEntry
}

func (c *matchCache) get(k sfKey) (matchEntry, bool) {
	if m, ok := c.cur[k]; ok {
		return m, true
	}
	if m, ok := c.old[k]; ok {
		c.put(k, m)
		return m, true
	}
	return matchEntry{}, false
}

func (c *matchCache) put(k sfKey, m matchEntry) {
	if c.cur == nil {
		c.cur = make(map[sfKey]matchEntry, 64)
	}
	if len(c.cur) >= cacheGen {
		c.old, c.cur = c.cur, c.old
		if c.cur == nil {
			c.cur = make(map[sfKey]matchEntry, cacheGen)
		} else {
			clear(c.cur)
		}
	}
	c.cur[k] = m
}

func (c *matchCache) reset() { c.cur, c.old = nil, nil }

func (c *matchCache) len() int { return len(c.cur) + len(c.old) }
