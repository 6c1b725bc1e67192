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
//
// a holds what hashAhead and seriesAhead worked out for these readings
// while the chunks before were applied (their key hashes; the index slots
// and series they load are then in the cache), or is empty.
func (e *Engine) prefetch(rs []wal.Reading, a *aheadChunk) {
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
		} else if a.valid&(1<<i) != 0 {
			hs[i] = a.hash[i]
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

// aheadRing is how many chunks Apply works on at once: it applies one,
// whose state prefetch loaded, while the series of the next and the index
// slots of the one after are loading.
const aheadRing = 3

// aheadChunk is what Apply works out for a chunk of readings before
// prefetch reaches it: the hashes of their series keys (bit i of valid:
// reading i has one; not for a reading of the series of the one before).
type aheadChunk struct {
	hash  [prefetchChunk]uint64
	valid uint32
}

// hashAhead hashes the series keys of chunk c of rs into e.ahead and loads
// their index slots, without waiting for them: the loads proceed while
// the chunk two before is applied. A chunk past rs is left alone.
func (e *Engine) hashAhead(rs []wal.Reading, c int) {
	lo := c * prefetchChunk
	if lo >= len(rs) {
		return
	}
	a := &e.ahead[c%aheadRing]
	a.valid = 0
	var acc uint64
	for i := lo; i < min(lo+prefetchChunk, len(rs)); i++ {
		// prefetch takes the series of the reading before for these (for
		// the first of a batch, the last one applied, as of now)
		if i > 0 && rs[i].Series == rs[i-1].Series || i == 0 && e.hot != nil && rs[0].Series == e.hot.key {
			continue
		}
		a.hash[i-lo] = e.series.hash(rs[i].Series)
		a.valid |= 1 << (i - lo)
		acc += e.series.touch(a.hash[i-lo])
	}
	e.prefetched += int64(acc)
}

// seriesAhead loads the series (and their keys' bytes) of chunk c of rs,
// whose index slots hashAhead loaded a chunk before: it reads the slot of
// each hash and, when its hash matches, that series, without comparing
// keys. It changes nothing.
func (e *Engine) seriesAhead(rs []wal.Reading, c int) {
	lo := c * prefetchChunk
	if lo >= len(rs) {
		return
	}
	a := &e.ahead[c%aheadRing]
	var acc int64
	for i := range min(prefetchChunk, len(rs)-lo) {
		if a.valid&(1<<i) == 0 {
			continue
		}
		if s := e.series.peek(a.hash[i]); s != nil {
			acc += int64(len(s.pairs)) + int64(len(s.gattrs)) + int64(len(s.key))
			if len(s.key) > 0 {
				acc += int64(s.key[len(s.key)-1])
			}
		}
	}
	e.prefetched += acc
}
