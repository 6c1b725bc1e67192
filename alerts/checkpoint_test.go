package alerts

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
	"github.com/runnel-iot/runnel/windows"
)

// step is one Apply call.
type step struct {
	index  uint64
	b      *wal.Batch
	closed []windows.Emission
}

func randomConfig() Config {
	cfg := DefaultConfig()
	cfg.MaxStates = 14 // small, so eviction and overflow happen too
	cfg.Recent = 25
	cfg.Rules = []Rule{
		{Name: "hi", Match: Match{Field: "a"}, Op: ">", Threshold: fp(6), Clear: fp(4), For: 3 * time.Second, Labels: map[string]string{"k": "v"}},
		{Name: "band", Match: Match{Field: "b"}, Op: "outside", Low: fp(1), High: fp(9), ClearLow: fp(2)},
		{Name: "silent", Match: Match{Measurement: "m", Field: "a"}, Op: "missing", For: 4 * time.Second},
		{Name: "mean", Match: Match{Field: "a"}, Value: "mean", Window: "tumbling:10s", Op: ">", Threshold: fp(5), For: 20 * time.Second},
		{Name: "low", Match: Match{Tags: map[string]string{"device": "d[0-2]"}}, Op: "<", Threshold: fp(2), For: time.Second, Severity: "critical"},
		{Name: "silent_b", Match: Match{Field: "b"}, Op: "missing", For: 3 * time.Second},
	}
	return cfg
}

// randomSteps makes n Apply calls: readings of a few series with jittered
// (sometimes out of order) event times and random-walk values, now and
// then NaN; closed windows; ticks; a clock that stalls and steps back.
func randomSteps(seed uint64, n int) []step {
	rng := rand.New(rand.NewPCG(seed, 7))
	series := []string{"m,device=d0", "m,device=d1", "m,device=d2", "m,device=d3", "x,device=d4,site=s", "m,device=d5"}
	vals := map[string]float64{}
	var steps []step
	ingest := int64(1e12)
	for i := range n {
		switch rng.IntN(10) {
		case 0:
			ingest -= rng.Int64N(2e9) // clock steps back
		case 1, 2:
			ingest += rng.Int64N(6e9) // silence
		default:
			ingest += rng.Int64N(1e9)
		}
		b := &wal.Batch{IngestNs: ingest}
		if rng.IntN(5) > 0 {
			for range rng.IntN(8) {
				s := series[rng.IntN(len(series))]
				if rng.IntN(3) == 0 && s != "m,device=d5" {
					continue // d5 keeps sending, the others go silent at times
				}
				f := "ab"[rng.IntN(2):][:1]
				k := s + f
				v := vals[k] + rng.Float64()*4 - 2
				v = max(-1, min(11, v))
				vals[k] = v
				if rng.IntN(40) == 0 {
					v = math.NaN()
				}
				tNs := ingest - rng.Int64N(3e9) // up to 3 s of jitter: out of order too
				b.Readings = append(b.Readings, wal.Reading{Series: s, Field: f, Value: v, TimeNs: tNs})
			}
		}
		var closed []windows.Emission
		for range rng.IntN(3) {
			s := series[rng.IntN(len(series))]
			end := (ingest/1e10 - int64(rng.IntN(2))) * 1e10
			closed = append(closed, windows.Emission{Index: uint64(i), Kind: windows.KindTumbling, Window: windows.WindowSummary{
				Series: s, Field: "a", Spec: "tumbling:10s", StartNs: end - 1e10, EndNs: end, Count: 3, Mean: rng.Float64() * 10,
			}})
		}
		steps = append(steps, step{uint64(i + 1), b, closed})
	}
	return steps
}

// TestCheckpointEquivalence: for randomized input, a checkpoint taken
// after any Apply, loaded into a fresh engine, followed by the remaining
// Apply calls, gives exactly the events, state and recent list of the
// uninterrupted run.
func TestCheckpointEquivalence(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			cfg := randomConfig()
			steps := randomSteps(seed, 400)
			ref, err := New(cfg, "gw")
			if err != nil {
				t.Fatal(err)
			}
			var events [][]Event // per step
			var ckpts [][]byte   // after each step
			pendingAt := 0
			for _, s := range steps {
				events = append(events, ref.Apply(s.index, s.b, s.closed, nil))
				c, err := ref.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				ckpts = append(ckpts, c)
				if ref.Stats().Pending > 0 {
					pendingAt++
				}
			}
			all := slices.Concat(events...)
			checkPairs(t, all)
			st := ref.Stats()
			t.Logf("%+v; pending at %d of %d checkpoints", st, pendingAt, len(steps))
			if st.Fired < 20 || st.Resolved < 10 || st.OutOfOrder == 0 || st.NonFinite == 0 || st.Forgotten+st.Evicted == 0 || pendingAt < 20 {
				t.Fatalf("input too tame: %+v, pending at %d checkpoints", st, pendingAt)
			}
			for k := 0; k < len(steps); k += 1 + int(seed) {
				e, err := New(cfg, "gw")
				if err != nil {
					t.Fatal(err)
				}
				if err := e.UnmarshalBinary(ckpts[k]); err != nil {
					t.Fatalf("checkpoint %d: %v", k, err)
				}
				if again, _ := e.MarshalBinary(); !bytes.Equal(again, ckpts[k]) {
					t.Fatalf("checkpoint %d does not re-encode identically", k)
				}
				var got []Event
				for _, s := range steps[k+1:] {
					got = e.Apply(s.index, s.b, s.closed, got)
				}
				want := slices.Concat(events[k+1:]...)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("after checkpoint %d: %d events, want %d\n got %q\nwant %q", k, len(got), len(want), brief(got), brief(want))
				}
				final, _ := e.MarshalBinary()
				if !bytes.Equal(final, ckpts[len(ckpts)-1]) {
					t.Fatalf("after checkpoint %d: final state differs", k)
				}
				st1, st2 := e.Stats(), ref.Stats()
				st1.MatchCache, st2.MatchCache = 0, 0 // derived, not saved
				if !reflect.DeepEqual(e.Recent(0), ref.Recent(0)) || !reflect.DeepEqual(e.Active(), ref.Active()) || st1 != st2 {
					t.Fatalf("after checkpoint %d: queries differ", k)
				}
			}
		})
	}
}

// TestCheckpointMidFor crashes in the middle of a for period and of a
// silence: the restored engine fires at the same reading and tick.
func TestCheckpointMidFor(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rules = []Rule{gt(10, 10*time.Second), {Name: "m", Op: "missing", For: 5 * time.Second}}
	first := []step{{1, batch(0, rd("s", "f", 11, 0)), nil}, {2, batch(sec(3), rd("s", "f", 12, 5)), nil}}
	// A tick fires the silence; a late reading is proof of life but does
	// not reset the pending period; the next reading completes it.
	rest := []step{{3, batch(sec(8)), nil}, {4, batch(sec(9), rd("s", "f", 9, 4)), nil}, {5, batch(sec(10), rd("s", "f", 13, 10)), nil}}
	run := func(e *Engine, steps []step) []string {
		var evs []Event
		for _, s := range steps {
			evs = e.Apply(s.index, s.b, s.closed, evs)
		}
		return brief(evs)
	}
	a, _ := New(cfg, "gw")
	run(a, first)
	ck, _ := a.MarshalBinary()
	want := run(a, rest)
	b, _ := New(cfg, "gw")
	if err := b.UnmarshalBinary(ck); err != nil {
		t.Fatal(err)
	}
	if act := b.Active(); len(act) != 1 || act[0].State != "pending" || act[0].StartNs != 0 {
		t.Fatalf("restored Active %+v", act)
	}
	got := run(b, rest)
	wantList := []string{"firing@8s v=5 th=5 start=3s", "resolved@9s v=6 th=5 start=3s", "firing@10s v=13 th=10 start=0s"}
	if !slices.Equal(want, wantList) || !slices.Equal(got, want) {
		t.Fatalf("got %q, uninterrupted %q, want %q", got, want, wantList)
	}
}

func TestCheckpointRuleChange(t *testing.T) {
	a := gt(10, 0)
	b := Rule{Name: "b", Op: "<", Threshold: fp(0), For: time.Minute}
	m := Rule{Name: "m", Op: "missing", For: 10 * time.Second}
	e := newEngine(t, a, b, m)
	e.Apply(1, batch(0, rd("s", "f", 11, 0), rd("s", "g", -1, 0)), nil, nil)
	ck, _ := e.MarshalBinary()

	b2 := b
	b2.Labels = map[string]string{"new": "label"}
	n := newEngine(t, m, b2, a, Rule{Name: "new", Op: ">", Threshold: fp(100)})
	if err := n.UnmarshalBinary(ck); err != nil {
		t.Fatal(err)
	}
	st := n.Stats()
	// r (a) is firing, m watches two; b's states are dropped.
	if st.States != 3 || st.Firing != 1 || st.Pending != 0 || st.Fired != 1 {
		t.Fatalf("Stats %+v", st)
	}
	evs := n.Apply(2, batch(sec(2), rd("s", "f", 5, 1)), nil, nil)
	if got := brief(evs); !slices.Equal(got, []string{"resolved@1s v=5 th=10 start=0s"}) {
		t.Fatalf("got %q", got)
	}
	// A smaller MaxStates and Recent apply on load.
	cfg := DefaultConfig()
	cfg.Rules = []Rule{a, b, m}
	cfg.MaxStates, cfg.Recent = 2, 0
	small, _ := New(cfg, "gw")
	if err := small.UnmarshalBinary(ck); err != nil {
		t.Fatal(err)
	}
	if st := small.Stats(); st.States != 2 || st.Firing != 1 || st.Pending != 1 || len(small.Recent(0)) != 0 {
		t.Fatalf("Stats %+v", st)
	}
}

// seal wraps a body in a valid header and checksum, so the fuzzer and the
// tests reach the body decoder.
func seal(body []byte) []byte {
	out := append([]byte(ckptMagic), ckptVersion)
	out = binary.AppendUvarint(out, uint64(len(body)))
	out = append(out, body...)
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
}

// body strips the header and checksum of a checkpoint.
func body(ck []byte) []byte {
	_, w := binary.Uvarint(ck[5:])
	return ck[5+w : len(ck)-4]
}

func sampleCheckpoints(t testing.TB) [][]byte {
	cfg := randomConfig()
	e, err := New(cfg, "gw")
	if err != nil {
		t.Fatal(err)
	}
	empty, _ := e.MarshalBinary()
	out := [][]byte{empty}
	for i, s := range randomSteps(9, 120) {
		e.Apply(s.index, s.b, s.closed, nil)
		if i%40 == 39 {
			c, _ := e.MarshalBinary()
			out = append(out, c)
		}
	}
	return out
}

func TestCheckpointCorrupt(t *testing.T) {
	cks := sampleCheckpoints(t)
	ck := cks[len(cks)-1]
	e, _ := New(randomConfig(), "gw")
	if err := e.UnmarshalBinary(cks[1]); err != nil {
		t.Fatal(err)
	}
	before, _ := e.MarshalBinary()
	unchanged := func(what string) {
		t.Helper()
		if now, _ := e.MarshalBinary(); !bytes.Equal(now, before) {
			t.Fatalf("%s changed the engine", what)
		}
	}
	for n := 0; n < len(ck); n += 1 + n/16 {
		if err := e.UnmarshalBinary(ck[:n]); !errors.Is(err, ErrCheckpoint) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	unchanged("truncation")
	for i := 0; i < len(ck); i += 1 + i/32 {
		bad := slices.Clone(ck)
		bad[i] ^= 0x10
		if err := e.UnmarshalBinary(bad); !errors.Is(err, ErrCheckpoint) {
			t.Fatalf("flip at %d: %v", i, err)
		}
	}
	unchanged("bit flips")
	if err := e.UnmarshalBinary(append(slices.Clone(ck), 0)); err == nil {
		t.Fatal("padding accepted")
	}
	v2 := slices.Clone(ck)
	v2[4] = 2
	if err := e.UnmarshalBinary(v2); err == nil || err.Error() != "bad alerts checkpoint: version 2, want 1" {
		t.Fatalf("version: %v", err)
	}
	// Inconsistent bodies with a valid checksum are refused too.
	bodies := map[string][]byte{
		"trailing": append(slices.Clone(body(ck)), 0),
		"flags":    append([]byte{7}, body(ck)[1:]...),
		"short":    body(ck)[:len(body(ck))/2],
	}
	for name, b := range bodies {
		if err := e.UnmarshalBinary(seal(b)); !errors.Is(err, ErrCheckpoint) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	unchanged("bad bodies")
	if err := e.UnmarshalBinary(ck); err != nil {
		t.Fatal(err)
	}
}

func FuzzUnmarshalBinary(f *testing.F) {
	for _, c := range sampleCheckpoints(f) {
		f.Add(c)
		f.Add(body(c))
	}
	cfg := randomConfig()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, in := range [][]byte{data, seal(data)} {
			e, err := New(cfg, "gw")
			if err != nil {
				t.Fatal(err)
			}
			if err := e.UnmarshalBinary(in); err != nil {
				if !errors.Is(err, ErrCheckpoint) {
					t.Fatalf("error %v is not ErrCheckpoint", err)
				}
				continue
			}
			// What loads re-encodes stably and keeps working.
			c1, _ := e.MarshalBinary()
			e2, _ := New(cfg, "gw")
			if err := e2.UnmarshalBinary(c1); err != nil {
				t.Fatalf("re-encoded checkpoint refused: %v", err)
			}
			if c2, _ := e2.MarshalBinary(); !bytes.Equal(c1, c2) {
				t.Fatal("re-encoding differs")
			}
			st := e.Stats()
			if st.States > cfg.MaxStates && st.States != st.Pending+st.Firing {
				t.Fatalf("%d states over the bound with evictable ones", st.States)
			}
			var evs []Event
			for _, s := range randomSteps(1, 20) {
				evs = e.Apply(s.index, s.b, s.closed, evs)
			}
			e.Active()
			e.Recent(0)
		}
	})
}
