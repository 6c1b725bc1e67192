package windows

import (
	"github.com/runnel-iot/runnel/sketches"
	"github.com/runnel-iot/runnel/wal"
)

// prefetchChunk is how many readings prefetch looks up ahead of applying
// them: their state (about 40 cache lines a reading) must still be in the
// L2 cache when they are applied, and at 8 most of it is still in L1 (32
// KiB; 16 readings' lines overflowed it: a quarter more L1 misses
// round-robin under cachegrind, with the same L2 misses).
const prefetchChunk = 8

// prefetch looks up the series and pair of each reading of rs into e.pre
// and e.prePair, computes its quantile key into e.prePV, and loads the
// cache lines its update will touch, breadth first: all series, then all
// pairs, then all spec states, then all windows, then the sketch bins of
// the windows whose pending values this reading flushes.
//
// With thousands of pairs visited in turn, no update finds its state in a
// cache, and an update is a chain of dependent loads (series map, series,
// pair, spec states, window, sketch header, sketch bin). Walking one step
// of the chains of 8 readings at a time, each step a short loop of
// independent loads, lets the CPU wait for those misses together instead
// of one after the other.
//
// It changes no state. The values it loads are summed into e.prefetched
// only so that the compiler keeps the loads.
func (e *Engine) prefetch(rs []wal.Reading) {
	pre, pairs, hs := e.pre[:len(rs)], e.prePair[:len(rs)], e.preHash[:len(rs)]
	var acc int64
	// Readings of the series of the one before (the fields of a line, a
	// device's batch) take its series; the others hash their key and load
	// their index slot.
	prev := ""
	if e.hot != nil {
		prev = e.hot.key
	}
	var same uint32 // bit i: reading i has the series of the one before
	for i := range rs {
		r := &rs[i]
		if r.Series == prev {
			same |= 1 << i
		} else {
			hs[i] = e.series.hash(r.Series)
			acc += int64(e.series.touch(hs[i]))
		}
		prev = r.Series
		e.prePV[i] = sketches.PrepareQuantile(r.Value)
	}
	hot := e.hot
	for i := range rs {
		s := hot
		if same&(1<<i) == 0 {
			s = e.series.getHash(rs[i].Series, hs[i])
		}
		pre[i] = s
		hot = s
	}
	for _, s := range pre {
		if s != nil {
			if len(s.pairs) > 0 {
				acc += s.pairs[0].bytes
			}
			acc += s.dev.maxT
			if len(s.gattrs) > 0 {
				acc += int64(s.gattrs[0].topkHash)
				if gk := s.gattrs[0].gk; gk != nil {
					acc += int64(len(gk.open))
				}
			}
		}
	}
	for i, s := range pre {
		pairs[i] = nil
		if s != nil {
			pairs[i] = s.pair(rs[i].Field)
			acc += int64(len(s.dev.groups))
		}
	}
	// The Count-Min counters of the readings' top-k keys: a few lines
	// apiece, at random in a sketch of about 100 KiB per group window.
	for i, s := range pre {
		if s == nil || same&(1<<i) != 0 { // the reading before loaded them
			continue
		}
		for gi := range s.gattrs {
			ga := &s.gattrs[gi]
			gk := ga.gk
			if !ga.hasTopK || gk == nil || len(gk.open) == 0 {
				continue
			}
			if gw := gk.open[len(gk.open)-1]; gw.topk != nil {
				acc += int64(gw.topk.PeekHash(ga.topkHash))
			}
		}
	}
	// A reading of the pair of the one before finds its state loaded.
	// The first of a run of readings of one pair (a device's burst) may
	// flush its windows' pending values within the chunk, so it loads the
	// sketches too; a lone reading, only when it flushes.
	first := func(i int) bool { return pairs[i] != nil && (i == 0 || pairs[i-1] != pairs[i]) }
	for i, p := range pairs {
		if first(i) {
			for k := range p.specs {
				if p.specs[k].cur != nil {
					acc++
				}
			}
			acc += int64(p.res.Seen())
		}
	}
	// The spec states are loaded: load the windows and panes, and list the
	// windows whose sketches will take their pending values.
	wins := e.preWins[:0]
	for i, p := range pairs {
		if !first(i) {
			continue
		}
		run := i+1 < len(pairs) && pairs[i+1] == p
		for k := range p.specs {
			ps := &p.specs[k]
			if c := ps.cur; c != nil {
				// The window's lines: its aggregate, and the pending
				// values past it; the sketch only when it will take them.
				acc += c.start + c.agg.lastT + int64(c.keys[winBuf-1]) + int64(c.vals[winBuf-1])
				if (c.n == winBuf || run) && c.q != nil {
					acc += int64(c.q.Level())
					wins = append(wins, preWin{w: c, i: int32(i)})
				}
			}
			if n := len(ps.panes); n > 0 {
				// A pane spans two lines.
				acc += ps.panes[n-1].start + ps.panes[n-1].agg.lastT
			}
		}
	}
	for _, w := range wins {
		q := w.w.q
		acc += int64(q.Peek(e.prePV[w.i])) + int64(q.PeekKeyed(w.w.vals[:w.w.n], w.w.keys[:w.w.n]))
	}
	e.preWins = wins[:0]
	e.prefetched += acc
}

// preWin is a window prefetch loads, for reading i of the chunk.
type preWin struct {
	w *tumWin
	i int32
}
