package windows

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// TestCheckpointStreamed: a checkpoint produced in chunks while Apply goes
// on (new series, readings, windows closing, idle devices, evictions
// between the chunks) is byte for byte what MarshalBinary gave at
// BeginCheckpoint, restores, and leaves the engine's state as if no
// checkpoint had run.
func TestCheckpointStreamed(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			c := bruteConfig(2 * time.Second)
			stream := genStream(seed, 500, c.AllowedLateness)
			ref := mustNew(t, c)  // never checkpointed incrementally
			live := mustNew(t, c) // checkpointed while applying
			rng := rand.New(rand.NewPCG(seed, 3))
			var ck *Checkpoint
			var got bytes.Buffer
			var want []byte
			done := 0
			for i := range stream {
				if ck == nil && rng.IntN(40) == 0 {
					var err error
					if ck, err = live.BeginCheckpoint(); err != nil {
						t.Fatal(err)
					}
					if _, err := live.BeginCheckpoint(); !errors.Is(err, ErrCheckpointInProgress) {
						t.Fatalf("second BeginCheckpoint = %v, want ErrCheckpointInProgress", err)
					}
					if want, err = ref.MarshalBinary(); err != nil {
						t.Fatal(err)
					}
					got.Reset()
				}
				idx := uint64(i + 1)
				ref.Apply(idx, &stream[i], nil)
				live.Apply(idx, &stream[i], nil)
				if ck == nil {
					continue
				}
				chunk, err := ck.Next(1 + rng.IntN(400))
				if err == io.EOF {
					if !bytes.Equal(got.Bytes(), want) || ck.Size() != int64(len(want)) {
						t.Fatalf("batch %d: streamed checkpoint (%d bytes) differs from MarshalBinary at its start (%d bytes)", i+1, got.Len(), len(want))
					}
					fresh := mustNew(t, c)
					if err := fresh.UnmarshalBinary(got.Bytes()); err != nil {
						t.Fatalf("restore streamed checkpoint: %v", err)
					}
					if fresh.AppliedIndex() != ck.Index() {
						t.Fatalf("restored applied index %d, want %d", fresh.AppliedIndex(), ck.Index())
					}
					ck = nil
					done++
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				got.Write(chunk)
			}
			if ck != nil {
				ck.Abort()
				if _, err := ck.Next(10); err == nil {
					t.Error("Next after Abort succeeded")
				}
			}
			a, _ := ref.MarshalBinary()
			b, _ := live.MarshalBinary()
			if !bytes.Equal(a, b) {
				t.Fatal("state after streamed checkpoints differs from the state without")
			}
			if done == 0 {
				t.Fatal("no checkpoint finished: the test proves nothing")
			}
			t.Logf("%d streamed checkpoints", done)
		})
	}
}
