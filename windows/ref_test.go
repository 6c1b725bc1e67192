package windows

import (
	"cmp"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/runnel-iot/runnel/sketches"
	"github.com/runnel-iot/runnel/wal"
)

// ref is a brute-force reference of the engine's rules: it keeps every
// value and recomputes everything from scratch. No budget, no reservoir.
type ref struct {
	cfg                 Config
	lateness, idle, ttl int64
	specs               []spec
	P, nextCheck        int64
	devs                map[string]*refDev
	series              map[string]*refSeries
	groups              []map[string]*refGKey
	gattr               []struct{ by, distinct, topk attr }
	late                []wal.Reading
	out                 []Emission
}

type refVal struct {
	v float64
	t int64
}

type refDev struct {
	key                       string
	maxT, idleAdv, lastIngest int64
	idle, dead                bool
	series                    map[string]*refSeries
}

type refSeries struct {
	key         string
	dev         *refDev
	pairs       map[string]*refPair
	lastApplied int64
}

type refPair struct {
	field string
	tum   []map[int64][]refVal // per spec: open windows
	sl    [][]refVal           // per spec: values of unemitted windows
	next  []int64              // per spec: next sliding start (noTime)
}

type refGKey struct {
	open           map[int64]*refGW
	maxClosedStart int64
	lastActive     int64
}

type refGW struct {
	start, end int64
	readings   uint64
	contrib    map[*refDev]bool
	distinct   map[string]bool
	topk       map[string]uint64
}

func newRef(c Config) *ref {
	e, err := New(c) // for specs and parsed group attrs
	if err != nil {
		panic(err)
	}
	r := &ref{cfg: c, lateness: int64(c.AllowedLateness), idle: int64(c.IdleTimeout), ttl: int64(c.SeriesTTL),
		specs: e.specs, P: noTime, nextCheck: noTime,
		devs: map[string]*refDev{}, series: map[string]*refSeries{}}
	for _, g := range e.groups {
		r.groups = append(r.groups, map[string]*refGKey{})
		r.gattr = append(r.gattr, struct{ by, distinct, topk attr }{g.by, g.distinct, g.topk})
	}
	return r
}

func (d *refDev) wm(l int64) int64 {
	w := int64(noTime)
	if d.maxT != noTime {
		w = d.maxT - l
	}
	return max(w, d.idleAdv)
}

func (r *ref) apply(b *wal.Batch) []Emission {
	r.out = nil
	r.P = max(r.P, b.IngestNs)
	for _, rd := range b.Readings {
		r.reading(rd)
	}
	if r.P >= r.nextCheck {
		r.idleSweep()
		r.ttlSweep()
		r.nextCheck = r.P + int64(time.Second)
	}
	return r.out
}

func (r *ref) reading(rd wal.Reading) {
	s := r.series[rd.Series]
	pk := parseSeriesKey(rd.Series)
	var d *refDev
	if s != nil {
		d = s.dev
	} else {
		d = r.devs[deviceOf(rd.Series, &pk)]
	}
	if d != nil {
		d.idle = false
		d.lastIngest = r.P
		if rd.TimeNs < d.wm(r.lateness) {
			r.late = append(r.late, rd)
			return
		}
	}
	if d == nil {
		d = &refDev{key: deviceOf(rd.Series, &pk), maxT: noTime, idleAdv: noTime, lastIngest: r.P, series: map[string]*refSeries{}}
		r.devs[d.key] = d
	}
	if s == nil {
		s = &refSeries{key: rd.Series, dev: d, pairs: map[string]*refPair{}}
		r.series[s.key] = s
		d.series[s.key] = s
	}
	p := s.pairs[rd.Field]
	if p == nil {
		p = &refPair{field: rd.Field}
		for range r.specs {
			p.tum = append(p.tum, map[int64][]refVal{})
			p.sl = append(p.sl, nil)
			p.next = append(p.next, noTime)
		}
		s.pairs[rd.Field] = p
	}
	v := refVal{rd.Value, rd.TimeNs}
	for i, sp := range r.specs {
		if sp.kind == KindTumbling {
			ws := alignDown(v.t, sp.size)
			p.tum[i][ws] = append(p.tum[i][ws], v)
		} else {
			p.sl[i] = append(p.sl[i], v)
		}
	}
	for gi, ga := range r.gattr {
		key, ok := attrValue(ga.by, s.key, &pk, d.key)
		if !ok {
			continue
		}
		gk := r.groups[gi][key]
		if gk == nil {
			gk = &refGKey{open: map[int64]*refGW{}, maxClosedStart: noTime}
			r.groups[gi][key] = gk
		}
		size := int64(r.cfg.Groups[gi].Size)
		ws := alignDown(v.t, size)
		gw := gk.open[ws]
		if gw == nil {
			if gk.maxClosedStart != noTime && ws <= gk.maxClosedStart {
				continue
			}
			gw = &refGW{start: ws, end: ws + size, contrib: map[*refDev]bool{}, distinct: map[string]bool{}, topk: map[string]uint64{}}
			gk.open[ws] = gw
		}
		gw.contrib[d] = true
		gw.readings++
		if dv, ok := attrValue(ga.distinct, s.key, &pk, d.key); ok && ga.distinct.kind != attrNone {
			gw.distinct[dv] = true
		}
		if tv, ok := attrValue(ga.topk, s.key, &pk, d.key); ok && ga.topk.kind != attrNone {
			gw.topk[tv]++
		}
		gk.lastActive = r.P
	}
	s.lastApplied = r.P
	d.maxT = max(d.maxT, v.t)
	r.closeDev(d, d.wm(r.lateness), reasonWatermark)
	r.checkGroups()
}

// closeDev closes d's windows ending at or before wm (all when reason is
// not watermark) and emits them in order.
func (r *ref) closeDev(d *refDev, wm int64, reason uint8) {
	var em []Emission
	for _, s := range d.series {
		em = append(em, r.closeSeries(s, wm, reason)...)
	}
	sortRefWindows(em)
	r.out = append(r.out, em...)
}

func (r *ref) closeSeries(s *refSeries, wm int64, reason uint8) []Emission {
	var em []Emission
	all := reason != reasonWatermark
	for _, p := range s.pairs {
		for i, sp := range r.specs {
			if sp.kind == KindTumbling {
				for ws, vals := range p.tum[i] {
					if all || ws+sp.size <= wm {
						em = append(em, refSummary(s.key, p.field, i, sp, ws, vals, reason))
						delete(p.tum[i], ws)
					}
				}
				continue
			}
			for {
				starts := map[int64]bool{}
				for _, v := range p.sl[i] {
					for w := alignDown(v.t, sp.slide); w > v.t-sp.size; w -= sp.slide {
						if p.next[i] == noTime || w >= p.next[i] {
							starts[w] = true
						}
					}
				}
				if len(starts) == 0 {
					break
				}
				w := int64(math.MaxInt64)
				for st := range starts {
					w = min(w, st)
				}
				if !all && w+sp.size > wm {
					break
				}
				var vals []refVal
				for _, v := range p.sl[i] {
					if v.t >= w && v.t < w+sp.size {
						vals = append(vals, v)
					}
				}
				em = append(em, refSummary(s.key, p.field, i, sp, w, vals, reason))
				p.next[i] = w + sp.slide
				vals = p.sl[i][:0:0]
				for _, v := range p.sl[i] {
					if v.t >= p.next[i] {
						vals = append(vals, v)
					}
				}
				p.sl[i] = vals
			}
		}
	}
	return em
}

func sortRefWindows(em []Emission) {
	slices.SortFunc(em, func(a, b Emission) int {
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

func refSummary(series, field string, i int, sp spec, start int64, vals []refVal, reason uint8) Emission {
	w := WindowSummary{Series: series, Field: field, Spec: sp.name, StartNs: start, EndNs: start + sp.size,
		Count: uint64(len(vals)), Closed: reasonNames[reason]}
	w.Min, w.Max = math.Inf(1), math.Inf(-1)
	ft, lt := int64(math.MaxInt64), int64(math.MinInt64)
	xs := make([]float64, len(vals))
	for k, v := range vals {
		xs[k] = v.v
		w.Sum += v.v
		w.Min = min(w.Min, v.v)
		w.Max = max(w.Max, v.v)
		if v.t < ft {
			ft, w.First = v.t, v.v
		}
		if v.t >= lt {
			lt, w.Last = v.t, v.v
		}
	}
	w.Mean = w.Sum / float64(len(vals))
	if len(vals) > 1 {
		var ss float64
		for _, x := range xs {
			ss += (x - w.Mean) * (x - w.Mean)
		}
		w.Stddev = math.Sqrt(ss / float64(len(vals)-1))
	}
	if sp.kind == KindTumbling {
		// The sketch of every value in arrival order, as an eager sketch
		// per window holds it: the engine's must be byte for byte equal.
		var sk sketches.Quantile
		for _, v := range vals {
			sk.Add(v.v)
		}
		w.Quantiles, _ = sk.MarshalBinary()
		sort.Float64s(xs)
		q := func(x float64) float64 { return xs[int(x*float64(len(xs)-1))] }
		w.P50, w.P90, w.P99 = q(0.5), q(0.9), q(0.99)
	}
	return Emission{Kind: sp.kind, Window: w, spec: i}
}

// checkGroups emits every open group window none of whose active
// contributors has a watermark below its end, by group, start, key.
func (r *ref) checkGroups() {
	type cand struct {
		gi  int
		key string
		gw  *refGW
	}
	var cs []cand
	for gi, keys := range r.groups {
		for key, gk := range keys {
			for _, gw := range gk.open {
				closable := true
				for d := range gw.contrib {
					if !d.idle && !d.dead && d.wm(r.lateness) < gw.end {
						closable = false
					}
				}
				if closable {
					cs = append(cs, cand{gi, key, gw})
				}
			}
		}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if c := cmp.Compare(a.gi, b.gi); c != 0 {
			return c
		}
		if c := cmp.Compare(a.gw.start, b.gw.start); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	for _, c := range cs {
		gk := r.groups[c.gi][c.key]
		delete(gk.open, c.gw.start)
		gk.maxClosedStart = max(gk.maxClosedStart, c.gw.start)
		gs := &GroupSummary{Group: r.cfg.Groups[c.gi].Name, Key: c.key, StartNs: c.gw.start, EndNs: c.gw.end,
			Readings: c.gw.readings, Distinct: uint64(len(c.gw.distinct))}
		for k, n := range c.gw.topk {
			gs.TopK = append(gs.TopK, itemOf(k, n))
		}
		r.out = append(r.out, Emission{Kind: KindGroup, Group: gs, spec: -1})
	}
}

func (r *ref) idleSweep() {
	keys := sortedKeys(r.devs)
	for _, k := range keys {
		d := r.devs[k]
		if d.idle || d.lastIngest+r.idle >= r.P {
			continue
		}
		end := int64(noTime)
		for _, s := range d.series {
			for _, p := range s.pairs {
				for i, sp := range r.specs {
					if sp.kind == KindTumbling {
						for ws := range p.tum[i] {
							end = max(end, ws+sp.size)
						}
					} else {
						for _, v := range p.sl[i] {
							end = max(end, alignDown(v.t, sp.slide)+sp.size)
						}
					}
				}
			}
		}
		d.idleAdv = max(d.idleAdv, end)
		d.idle = true
		r.closeDev(d, 0, reasonIdle)
		r.checkGroups()
	}
}

func (r *ref) ttlSweep() {
	for _, k := range sortedKeys(r.series) {
		s := r.series[k]
		if s.lastApplied+r.ttl >= r.P {
			continue
		}
		em := r.closeSeries(s, 0, reasonEvicted)
		sortRefWindows(em)
		r.out = append(r.out, em...)
		delete(r.series, k)
		delete(s.dev.series, k)
		if len(s.dev.series) == 0 {
			s.dev.dead = true
			delete(r.devs, s.dev.key)
		}
		r.checkGroups()
	}
	for gi := range r.groups {
		for k, gk := range r.groups[gi] {
			if len(gk.open) == 0 && gk.lastActive+r.ttl < r.P {
				delete(r.groups[gi], k)
			}
		}
	}
}

func itemOf(k string, n uint64) sketches.Item { return sketches.Item{Key: k, Count: n} }

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
