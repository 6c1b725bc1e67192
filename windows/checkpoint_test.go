package windows

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/runnel-iot/runnel/wal"
)

func TestCheckpointReplay(t *testing.T) {
	for _, lateness := range []time.Duration{0, 2 * time.Second, 10 * time.Second} {
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(fmt.Sprintf("lateness=%s/seed=%d", lateness, seed), func(t *testing.T) {
				c := bruteConfig(lateness)
				stream := genStream(seed, 400, lateness)
				whole := mustNew(t, c)
				var all [][]Emission
				for i := range stream {
					all = append(all, whole.Apply(uint64(i+1), &stream[i], nil))
				}
				final, err := whole.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				rng := rand.New(rand.NewPCG(seed, uint64(lateness)))
				for range 3 {
					cut := rng.IntN(len(stream))
					first := mustNew(t, c)
					for i := range stream[:cut] {
						first.Apply(uint64(i+1), &stream[i], nil)
					}
					ckpt, err := first.MarshalBinary()
					if err != nil {
						t.Fatal(err)
					}
					resumed := mustNew(t, c)
					if err := resumed.UnmarshalBinary(ckpt); err != nil {
						t.Fatalf("cut %d: %v", cut, err)
					}
					if again, _ := resumed.MarshalBinary(); !bytes.Equal(again, ckpt) {
						t.Fatalf("cut %d: restored state encodes differently", cut)
					}
					if resumed.AppliedIndex() != uint64(cut) {
						t.Fatalf("cut %d: applied index %d", cut, resumed.AppliedIndex())
					}
					for i := cut; i < len(stream); i++ {
						got := resumed.Apply(uint64(i+1), &stream[i], nil)
						if !reflect.DeepEqual(got, all[i]) {
							t.Fatalf("cut %d, batch %d: emissions differ:\n got %s\nwant %s", cut, i+1, brief(got), brief(all[i]))
						}
					}
					end, _ := resumed.MarshalBinary()
					if !bytes.Equal(end, final) {
						for k := range end {
							if end[k] != final[k] {
								t.Logf("first difference at byte %d: % x vs % x", k, end[max(0, k-20):k+20], final[max(0, k-20):k+20])
								break
							}
						}
						t.Fatalf("cut %d: final state differs from the uninterrupted run (%d vs %d bytes)", cut, len(end), len(final))
					}
				}
			})
		}
	}
}

// checkpointOf returns the checkpoint of a random stream run to its end.
func checkpointOf(t testing.TB, c Config, n int) []byte {
	e := mustNew(t, c)
	for i, b := range genStream(9, n, c.AllowedLateness) {
		e.Apply(uint64(i+1), &b, nil)
	}
	ckpt, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return ckpt
}

// resum fixes the checksum of a mutated checkpoint, so the mutation
// reaches the decoder.
func resum(b []byte) []byte {
	if len(b) < 21 {
		return b
	}
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint64(b[len(b)-8:], xxhash.Sum64(b[:len(b)-8]))
	return b
}

func TestCheckpointRejects(t *testing.T) {
	c := bruteConfig(2 * time.Second)
	ckpt := checkpointOf(t, c, 150)
	other := c
	other.AllowedLateness = 3 * time.Second
	used := mustNew(t, c)
	used.Apply(1, &wal.Batch{IngestNs: 1, Readings: []wal.Reading{{Series: "x", Field: "f", TimeNs: 1}}}, nil)
	cases := []struct {
		name string
		e    *Engine
		data []byte
	}{
		{"empty", mustNew(t, c), nil},
		{"garbage", mustNew(t, c), []byte("not a checkpoint at all, really")},
		{"truncated", mustNew(t, c), ckpt[:len(ckpt)/2]},
		{"flipped bit", mustNew(t, c), func() []byte { b := bytes.Clone(ckpt); b[len(b)/3] ^= 4; return b }()},
		{"version", mustNew(t, c), func() []byte { b := bytes.Clone(ckpt); b[4] = 2; return b }()},
		{"other config", mustNew(t, other), ckpt},
		{"not fresh", used, ckpt},
		{"trailing", mustNew(t, c), resum(append(bytes.Clone(ckpt[:len(ckpt)-8]), 0, 0, 0, 0, 0, 0, 0, 0, 0))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := tc.e.MarshalBinary()
			err := tc.e.UnmarshalBinary(tc.data)
			if !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("err %v, want ErrCheckpoint", err)
			}
			if after, _ := tc.e.MarshalBinary(); !bytes.Equal(before, after) {
				t.Error("a rejected checkpoint changed the engine")
			}
		})
	}
}

// TestCheckpointMutations feeds the decoder many mutated checkpoints with
// valid checksums: none may panic, and whatever decodes must re-encode to
// the same bytes and survive further batches.
func TestCheckpointMutations(t *testing.T) {
	c := bruteConfig(2 * time.Second)
	ckpt := checkpointOf(t, c, 120)
	rng := rand.New(rand.NewPCG(1, 2))
	more := genStream(10, 20, c.AllowedLateness)
	for i := range 600 {
		b := bytes.Clone(ckpt[:len(ckpt)-8])
		switch i % 3 {
		case 0:
			b[13+rng.IntN(len(b)-13)] ^= byte(1 << rng.IntN(8))
		case 1:
			b = b[:13+rng.IntN(len(b)-13)]
		case 2:
			p := 13 + rng.IntN(len(b)-13)
			b[p] = byte(rng.IntN(256))
			b[13+rng.IntN(len(b)-13)] = byte(rng.IntN(256))
		}
		checkDecode(t, c, resum(append(b, make([]byte, 8)...)), more)
	}
}

func checkDecode(t *testing.T, c Config, data []byte, more []wal.Batch) {
	e := mustNew(t, c)
	if err := e.UnmarshalBinary(data); err != nil {
		if !errors.Is(err, ErrCheckpoint) {
			t.Fatalf("error %v does not wrap ErrCheckpoint", err)
		}
		return
	}
	again, err := e.MarshalBinary()
	if err != nil || !bytes.Equal(again, data) {
		t.Fatalf("decoded checkpoint re-encodes differently (err %v)", err)
	}
	idx := e.AppliedIndex()
	for i := range more {
		e.Apply(idx+uint64(i)+1, &more[i], nil)
	}
}

func FuzzUnmarshalBinary(f *testing.F) {
	c := bruteConfig(2 * time.Second)
	ckpt := checkpointOf(f, c, 60)
	f.Add(ckpt)
	f.Add(ckpt[:len(ckpt)/2])
	f.Add([]byte("RWIN\x01"))
	more := genStream(10, 5, c.AllowedLateness)
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, c, data, more)
		checkDecode(t, c, resum(data), more)
	})
}
