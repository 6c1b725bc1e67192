package windows

import (
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/runnel-iot/runnel/wal"
)

// TestHistRing checks the encoded closed history against a ring of
// structs, the layout it replaced: the same records newest first, oldest
// first, and in the checkpoint's slot order, bit for bit, for records of
// every shape (special floats, fields equal to each other or to zero,
// starts off the unit, huge counts).
func TestHistRing(t *testing.T) {
	specials := []float64{0, math.Copysign(0, -1), math.NaN(), math.Float64frombits(0x7ff8000000000001), math.Inf(1), math.Inf(-1), 1, -1, 17.25, math.MaxFloat64, 0x1p-1074}
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(prev []float64) float64 {
		switch r.IntN(4) {
		case 0:
			return specials[r.IntN(len(specials))]
		case 1:
			if len(prev) > 0 {
				return prev[r.IntN(len(prev))]
			}
		}
		return r.NormFloat64() * 1e3
	}
	randRec := func(unit int64) closedRec {
		var fs []float64
		for range 9 {
			fs = append(fs, pick(fs))
		}
		rec := closedRec{min: fs[0], max: fs[1], sum: fs[2], std: fs[3], first: fs[4], last: fs[5], p50: fs[6], p90: fs[7], p99: fs[8]}
		rec.reason = uint8(1 + r.IntN(3))
		switch r.IntN(4) {
		case 0:
			rec.count = r.Uint64()
		case 1:
			rec.count = 1
		default:
			rec.count = uint64(r.IntN(1000))
		}
		rec.start = (r.Int64N(1<<40) - 1<<39) * unit
		switch r.IntN(5) {
		case 0:
			rec.start += 1 + r.Int64N(unit-1) // off the unit: raw
		case 1:
			rec.start = []int64{-timeLimit, timeLimit, math.MinInt64 + 1, math.MaxInt64}[r.IntN(4)]
		}
		return rec
	}
	same := func(a, b closedRec) bool {
		fa, fb := recFloats(&a), recFloats(&b)
		for i := range fa {
			if math.Float64bits(*fa[i]) != math.Float64bits(*fb[i]) {
				return false
			}
		}
		return a.start == b.start && a.count == b.count && a.reason == b.reason
	}
	for _, n := range []int{1, 2, 3, 10} {
		for _, unit := range []int64{3, 10e9} {
			ps := newSpecStates(1)[0]
			var ring []closedRec // the struct ring pushHist used to keep
			head := 0
			for step := range 200 {
				rec := randRec(unit)
				if len(ring) < n {
					ring = append(ring, rec)
				} else {
					ring[head] = rec
					head = (head + 1) % n
				}
				ps.pushHist(&rec, n, unit)
				if int(ps.histN) != len(ring) || int(ps.histHead) != head {
					t.Fatalf("n %d step %d: %d records head %d, want %d head %d", n, step, ps.histN, ps.histHead, len(ring), head)
				}
				var newest []closedRec
				ps.histNewestFirst(unit, func(c *closedRec) bool { newest = append(newest, *c); return true })
				oldest := ps.histOldestFirst(unit, nil)
				if len(oldest) != len(ring) {
					t.Fatalf("n %d step %d: %d records oldest first, want %d", n, step, len(oldest), len(ring))
				}
				for k := range ring {
					want := ring[(head-1-k+2*len(ring))%len(ring)]
					if !same(newest[k], want) {
						t.Fatalf("n %d step %d: newest-first %d is %+v, want %+v", n, step, k, newest[k], want)
					}
					if slot := oldest[(k-head+len(ring))%len(ring)]; !same(slot, ring[k]) {
						t.Fatalf("n %d step %d: slot %d is %+v, want %+v", n, step, k, slot, ring[k])
					}
				}
				if len(ps.hist) > n*(recMaxLen+1) {
					t.Fatalf("n %d: history of %d bytes", n, len(ps.hist))
				}
			}
		}
	}
}

// A window of one value, the common closed record of a series that
// reports about once per window, takes a fraction of its struct.
func TestHistRecordOfOneValue(t *testing.T) {
	v := 21.5
	rec := closedRec{start: 1_700_000_000 * 1e9, count: 1, sum: v, min: v, max: v, first: v, last: v, p50: v, p90: v, p99: v, reason: reasonWatermark}
	b := appendRec(nil, &rec, 10e9)
	if len(b) > 20 {
		t.Errorf("one-value record takes %d bytes, want at most 20", len(b))
	}
	if got := decodeRec(b[:len(b)-1], 10e9); got != rec {
		t.Errorf("decoded %+v, want %+v", got, rec)
	}
}

// Pairs of one field name share its text (one copy stays in the CPU
// cache), restored ones too, and the shared copy is not the caller's.
func TestFieldNamesShared(t *testing.T) {
	e := mustNew(t, testConfig())
	field := string([]byte("temp"))
	e.Apply(1, &wal.Batch{Readings: []wal.Reading{{Series: "a", Field: field, Value: 1}, {Series: "b", Field: "temp", Value: 2}}}, nil)
	pa, pb := e.series.get("a").pair("temp"), e.series.get("b").pair("temp")
	if unsafe.StringData(pa.field) != unsafe.StringData(pb.field) {
		t.Errorf("two pairs of field temp keep two copies of its name")
	}
	if unsafe.StringData(pa.field) == unsafe.StringData(field) {
		t.Errorf("the pair keeps the reading's field string")
	}
	ck, _ := e.MarshalBinary()
	f := mustNew(t, testConfig())
	if err := f.UnmarshalBinary(ck); err != nil {
		t.Fatal(err)
	}
	if unsafe.StringData(f.series.get("a").pair("temp").field) != unsafe.StringData(f.series.get("b").pair("temp").field) {
		t.Errorf("restored pairs of field temp keep two copies of its name")
	}
}

// FuzzHistRecord: any record (any float bits, start, count, unit) decodes
// to itself, within recMaxLen bytes, and its length byte says its size.
func FuzzHistRecord(f *testing.F) {
	f.Add(int64(17e9), uint64(1), uint64(0x4035800000000000), uint64(0), uint64(0x7ff8000000000001), uint8(1), int64(10e9))
	f.Add(int64(-5), uint64(1<<63), uint64(0x8000000000000000), uint64(1), uint64(0xfff0000000000000), uint8(3), int64(3))
	f.Fuzz(func(t *testing.T, start int64, count, a, b, c uint64, reason uint8, unit int64) {
		if unit <= 0 {
			unit = 1
		}
		vals := []uint64{a, b, c, 0, a ^ b}
		fl := func(i int) float64 { return math.Float64frombits(vals[(a>>uint(i*3)+uint64(i))%uint64(len(vals))]) }
		rec := closedRec{start: start, count: count, min: fl(0), max: fl(1), sum: fl(2), std: fl(3), first: fl(4), last: fl(5), p50: fl(6), p90: fl(7), p99: fl(8), reason: reason & 3}
		enc := appendRec([]byte{0xAA}, &rec, unit)[1:]
		if len(enc) > recMaxLen+1 || int(enc[len(enc)-1]) != len(enc)-1 {
			t.Fatalf("record of %d bytes, length byte %d", len(enc), enc[len(enc)-1])
		}
		got := decodeRec(enc[:len(enc)-1], unit)
		gf, rf := recFloats(&got), recFloats(&rec)
		for i := range gf {
			if math.Float64bits(*gf[i]) != math.Float64bits(*rf[i]) {
				t.Fatalf("field %d: %x, want %x", i, math.Float64bits(*gf[i]), math.Float64bits(*rf[i]))
			}
		}
		if got.start != rec.start || got.count != rec.count || got.reason != rec.reason {
			t.Fatalf("decoded %+v, want %+v", got, rec)
		}
		ps := newSpecStates(1)[0]
		ps.hist = enc
		ps.histN = 1
		if l := ps.recLenAt(0); l != len(enc) {
			t.Fatalf("recLenAt %d, want %d", l, len(enc))
		}
	})
}
