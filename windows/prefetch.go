package windows

import (
	"github.com/runnel-iot/runnel/sketches"
	"github.com/runnel-iot/runnel/wal"
)

// prefetchChunk is how many readings prefetch looks up ahead of applying
// them: their state must stay in the L1/L2 caches until applied (about 40
// lines a reading).
const prefetchChunk = 16

// prefetch looks up the series of each reading of rs into e.pre and loads
// the cache lines its update will touch, breadth first: all series, then
// all pairs, then all windows. With thousands of pairs visited in turn,
// each update's state is in no cache, and the update is a chain of
// dependent loads (series, pair, spec states, window, sketch); walking the
// chains of many readings side by side lets the CPU wait for their misses
// together instead of one after the other. It changes no state: the
// values loaded are folded into e.prefetched only so the compiler keeps
// the loads.
func (e *Engine) prefetch(rs []wal.Reading) {
	pre := e.pre[:len(rs)]
	var acc int64
	hot := e.hot
	for i := range rs {
		r := &rs[i]
		s := hot
		if s == nil || s.key != r.Series {
			s = e.series[r.Series]
		}
		pre[i] = s
		if s != nil {
			hot = s
		}
		e.prePV[i] = sketches.PrepareQuantile(r.Value)
	}
	for i := range rs {
		s := pre[i]
		if s == nil {
			e.prePair[i] = nil
			continue
		}
		p := s.pair(rs[i].Field)
		e.prePair[i] = p
		d := s.dev
		acc += d.maxT + int64(len(d.groups)) + int64(len(s.gattrs))
	}
	wins := e.preWins[:0]
	for i := range rs {
		p := e.prePair[i]
		if p == nil {
			continue
		}
		for k := range p.specs {
			ps := &p.specs[k]
			if c := ps.cur; c != nil {
				acc += c.start + int64(c.q.Level())
				wins = append(wins, preWin{c, int32(i)})
			}
			if n := len(ps.panes); n > 0 {
				acc += ps.panes[n-1].start
			}
		}
		acc += int64(p.res.Seen())
	}
	for _, w := range wins {
		acc += int64(w.w.q.Peek(e.prePV[w.i]))
	}
	e.preWins = wins[:0]
	e.prefetched += acc
}

// preWin is a window prefetch loads the sketch bin of, for reading i.
type preWin struct {
	w *tumWin
	i int32
}
