package windows

import (
	"math"
	"strings"

	"github.com/runnel-iot/runnel/internal/serieskey"
	"github.com/runnel-iot/runnel/sketches"
)

const (
	noTime  = math.MinInt64 // "−∞": no event time yet
	maxTime = math.MaxInt64
	// Event times beyond ±timeLimit are rejected (Stats.BadTimeReadings) so
	// that window ends and watermarks never overflow.
	timeLimit = int64(1) << 62
)

// agg is the running aggregate of a tumbling window or a sliding pane.
type agg struct {
	count         uint64
	sum, min, max float64
	mean, m2      float64 // Welford
	first, last   float64
	firstT, lastT int64
}

func (a *agg) add(v float64, t int64) {
	if a.count == 0 {
		a.count, a.sum, a.min, a.max = 1, v, v, v
		a.mean, a.m2 = v, 0
		a.first, a.last, a.firstT, a.lastT = v, v, t, t
		return
	}
	a.count++
	a.sum += v
	if v < a.min {
		a.min = v
	}
	if v > a.max {
		a.max = v
	}
	d := v - a.mean
	a.mean += d / float64(a.count)
	a.m2 += d * (v - a.mean)
	if t < a.firstT { // ties keep the earlier arrival
		a.first, a.firstT = v, t
	}
	if t >= a.lastT { // ties take the later arrival
		a.last, a.lastT = v, t
	}
}

// merge adds b, which covers a later, disjoint time range (panes in
// order), with Chan et al.'s parallel update of the moments.
func (a *agg) merge(b *agg) {
	if b.count == 0 {
		return
	}
	if a.count == 0 {
		*a = *b
		return
	}
	na, nb := float64(a.count), float64(b.count)
	n := na + nb
	d := b.mean - a.mean
	a.mean += d * nb / n
	a.m2 += b.m2 + d*d*na*nb/n
	a.count += b.count
	a.sum += b.sum
	a.min = min(a.min, b.min)
	a.max = max(a.max, b.max)
	if b.firstT < a.firstT {
		a.first, a.firstT = b.first, b.firstT
	}
	if b.lastT >= a.lastT {
		a.last, a.lastT = b.last, b.lastT
	}
}

func (a *agg) stddev() float64 {
	if a.count < 2 || !(a.m2 > 0) {
		return 0
	}
	return math.Sqrt(a.m2 / float64(a.count-1))
}

// winBuf is how many values a tumbling window holds back from its
// quantile sketch. An update then writes only the window itself, and its
// sketch (header and bins: two cache misses of the five an update takes
// per window when thousands of pairs are visited in turn) is touched once
// per winBuf+1 values, while still in cache from the first of them.
const winBuf = 4

// tumWin is one open tumbling window, pooled by the engine.
type tumWin struct {
	start int64
	agg   agg
	// The latest values not yet in q, in arrival order, with their
	// level-0 quantile keys (sketches.QuantileValue packed into 12 bytes).
	n    uint8
	keys [winBuf]int32
	vals [winBuf]float64
	// q is the window's quantile sketch, nil while the window holds at
	// most winBuf values: its sketch is then that of the pending values,
	// built on demand by sketch. A window of a series that reports less
	// often than winBuf+1 times its size never needs one, and a sketch is
	// most of a window's memory. A pooled window keeps its sketch, reset.
	q *sketches.Quantile
}

// add adds one value (pv: v prepared for the quantile sketch). Values are
// given to the sketch in arrival order, winBuf+1 at a time, so it holds
// exactly what adding each as it came would have left.
func (w *tumWin) add(v float64, pv *sketches.QuantileValue, t int64) {
	w.agg.add(v, t)
	if w.n < winBuf {
		w.vals[w.n], w.keys[w.n] = v, pv.Key0()
		w.n++
		return
	}
	if w.q == nil {
		w.q = new(sketches.Quantile)
	}
	w.addPending(w.q)
	w.n = 0
	w.q.AddPrepared(*pv)
}

// addPending adds the pending values to q, leaving them pending.
func (w *tumWin) addPending(q *sketches.Quantile) {
	q.AddKeyed(w.vals[:w.n], w.keys[:w.n])
}

// setPending makes v the window's one pending value.
func (w *tumWin) setPending(v float64) {
	w.vals[0], w.keys[0], w.n = v, sketches.PrepareQuantile(v).Key0(), 1
}

// sketch returns the window's quantile sketch without changing the window:
// q when nothing is pending, else scratch, set to q (or reset) and given
// the pending values.
func (w *tumWin) sketch(scratch *sketches.Quantile) *sketches.Quantile {
	if w.q != nil {
		if w.n == 0 {
			return w.q
		}
		*scratch = *w.q
	} else {
		scratch.Reset()
	}
	w.addPending(scratch)
	return scratch
}

// closingSketch is sketch for a window being closed: the pending values go
// into q when it has one, which saves the copy.
func (w *tumWin) closingSketch(scratch *sketches.Quantile) *sketches.Quantile {
	if w.q != nil {
		w.addPending(w.q)
		w.n = 0
		return w.q
	}
	return w.sketch(scratch)
}

// pane is one slide-wide slice of a sliding window's time axis.
type pane struct {
	start int64
	agg   agg
}

// closedRec is a closed window kept for queries: a WindowSummary without
// the strings (the pair has them) and with End derived from the spec.
type closedRec struct {
	start                      int64
	count                      uint64
	sum, min, max, std         float64
	first, last, p50, p90, p99 float64
	reason                     uint8
}

// Closed reasons, as stored in closedRec and the checkpoint.
const (
	reasonOpen uint8 = iota
	reasonWatermark
	reasonIdle
	reasonEvicted
)

var reasonNames = [...]string{"", "watermark", "idle", "evicted"}

// specState is a pair's state for one window spec: what every reading
// reads (40 bytes; a pair's four default specs span three cache lines),
// with the rest behind a pointer (specCold), read only when a window opens
// or closes. With thousands of pairs visited in turn each line is a cache
// miss; the states in one struct spanned five.
type specState struct {
	cur       *tumWin // tumbling: the window the last reading went to (a cache: nil or in wins)
	panes     []pane  // sliding: non-empty panes by start
	*specCold         // never nil (newSpecStates)
}

// specCold is the part of a specState a reading reaches only when it
// opens or closes a window.
type specCold struct {
	wins      []*tumWin // tumbling: open windows by start
	nextStart int64     // sliding: first window start not yet emitted (noTime: none)
	hist      []byte    // closed history, encoded (hist.go)
	histN     int32     // records in hist
	histHead  int32     // when full, the slot of the oldest record in a ring of structs
}

// newSpecStates returns the states of a new pair's n specs, nothing yet
// emitted.
func newSpecStates(n int) []specState {
	hot, cold := make([]specState, n), make([]specCold, n)
	for i := range hot {
		cold[i].nextStart = noTime
		hot[i].specCold = &cold[i]
	}
	return hot
}

// pair is the state of one (series, field).
type pair struct {
	s     *series
	field string
	specs []specState
	res   *sketches.Reservoir
	bytes int64 // accounted bytes (actual, before reservation)
}

// series is the state of one series key.
type series struct {
	key         string
	hash        uint64 // the engine's seriesIndex.hash(key)
	meas        string
	dev         *device
	pairs       []*pair
	readings    uint64
	lastEventNs int64
	lastApplied int64 // processing time of the last applied reading
	seq         uint64
	ttl         link[series] // in the TTL list, oldest first
	gattrs      []groupAttrs // per group
	bytes       int64
	overflow    bool
	// ckptGen is the generation of the checkpoint that has this series
	// (encoded, or saved at side[ckptOff:ckptEnd] before a change) or that
	// began before it existed; see Checkpoint.
	ckptGen                    uint64
	ckptSlab, ckptOff, ckptEnd int
}

// groupAttrs are the attribute values a series gives one group, and the
// state of its key there.
type groupAttrs struct {
	gk                           *groupKey // cached key state (nil until used)
	key, distinct, topk          string
	topkHash                     uint64 // sketches.TopKHash(topk)
	distinctHash                 uint64 // sketches.HLLHash(distinct): not hashed per reading
	hasKey, hasDistinct, hasTopK bool
	// gwSeq is the seq of the group window the series' device was last
	// seen to be in (in its device's groups), 0: none. It fills padding.
	gwSeq uint32
}

// device is the watermark state of one device.
type device struct {
	key        string
	maxT       int64 // largest applied event time (noTime: none)
	idleAdv    int64 // watermark floor set when the device went idle
	lastIngest int64
	idle       bool
	nextEnd    int64 // lower bound of the earliest open window end of its series
	series     []*series
	groups     []*groupWin // open group windows it contributed to (closed ones pruned lazily)
	seq        uint64
	act        link[device] // in the active (non-idle) list, oldest ingest first
	gen        uint64       // incarnation, for checkpoints and references
	bytes      int64
}

func (d *device) watermark(lateness int64) int64 {
	w := int64(noTime)
	if d.maxT != noTime {
		w = d.maxT - lateness
	}
	return max(w, d.idleAdv)
}

// parsedKey is a series key split at unescaped commas and equals signs.
type parsedKey struct {
	meas string
	tags [][2]string // unescaped key, value
}

// parseSeriesKey splits a line-protocol series key: the measurement, then
// key=value tags separated by unescaped commas (`\,` `\=` `\ ` `\\` escape;
// see ingest/series.go).
func parseSeriesKey(s string) parsedKey {
	var p parsedKey
	parts := serieskey.Split(s, ',')
	p.meas = unescape(parts[0])
	for _, t := range parts[1:] {
		kv := serieskey.Split(t, '=')
		if len(kv) < 2 {
			continue
		}
		k := unescape(kv[0])
		v := unescape(t[len(kv[0])+1:])
		p.tags = append(p.tags, [2]string{k, v})
	}
	return p
}

func (p *parsedKey) tag(k string) (string, bool) {
	for _, t := range p.tags {
		if t[0] == k {
			return t[1], true
		}
	}
	return "", false
}

// deviceOf is the device tag of a series, else the whole key.
func deviceOf(key string, p *parsedKey) string {
	if d, ok := p.tag("device"); ok {
		return d
	}
	return key
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && (s[i+1] == ',' || s[i+1] == '=' || s[i+1] == ' ' || s[i+1] == '\\') {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// attrValue resolves an attribute of a series.
func attrValue(a attr, key string, p *parsedKey, dev string) (string, bool) {
	switch a.kind {
	case attrMeasurement:
		return p.meas, true
	case attrDevice:
		return dev, true
	case attrSeries:
		return key, true
	case attrTag:
		return p.tag(a.tag)
	case attrMulti:
		return multiValue(a, p)
	}
	return "", false
}

// multiValue is a several-attribute group key, "env,site=plant1": the
// measurement, then tag=value, escaped as a series key. A series without
// one of the tags is in no window of the group.
func multiValue(a attr, p *parsedKey) (string, bool) {
	var b strings.Builder
	for i, e := range a.parts {
		if i > 0 {
			b.WriteByte(',')
		}
		if e.kind == attrMeasurement {
			escapeKeyPart(&b, p.meas)
			continue
		}
		v, ok := p.tag(e.tag)
		if !ok {
			return "", false
		}
		escapeKeyPart(&b, e.tag)
		b.WriteByte('=')
		escapeKeyPart(&b, v)
	}
	return b.String(), true
}

func escapeKeyPart(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',', '=', ' ', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func alignDown(t, size int64) int64 { return floorDiv(t, size) * size }
