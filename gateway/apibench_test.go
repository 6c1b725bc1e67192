package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// BenchmarkAPI measures the query API of a gateway holding 10,000 series
// (two fields each, default windows config) with apiClients concurrent
// HTTP clients over loopback, idle and under a concurrent ingest load of
// ingestRate readings/s (line protocol, POST /api/v2/write, batched). It
// reports req/s and the p99 latency; the ingest variants also report the
// ingest rate actually achieved, since a query load can slow ingest too.
//
//	go test -run '^$' -bench BenchmarkAPI -benchtime 3s ./gateway/
//
// The sub-benchmarks are windows/* (GET /api/v1/windows for one series,
// field and size), series/* (GET /api/v1/series?limit=100, the first
// page) and serieswalk/* (one op walks every page of 1,000: the cost of a
// full listing, which sorts all series per page).
func BenchmarkAPI(b *testing.B) {
	const series = 10_000
	g, stop := benchGateway(b)
	defer stop()
	base := "http://" + g.Addr()
	benchFeed(b, g, base, series)

	tr := &http.Transport{MaxIdleConnsPerHost: apiClients, MaxConnsPerHost: apiClients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	one := fmt.Sprintf("/api/v1/windows?series=bench,device=dev-%05d&field=temp&size=10s", series/2)
	// The queried series must have closed windows to return, or the
	// benchmark measures an empty answer.
	var w struct {
		Windows []json.RawMessage `json:"windows"`
	}
	if err := getJSONBench(client, base+one, &w); err != nil || len(w.Windows) < 3 {
		b.Fatalf("windows of the queried series: %d windows, err %v", len(w.Windows), err)
	}
	walk := func() error {
		for off := 0; ; off += 1000 {
			var page struct {
				Total  int               `json:"total"`
				Series []json.RawMessage `json:"series"`
			}
			if err := getJSONBench(client, fmt.Sprintf("%s/api/v1/series?limit=1000&offset=%d", base, off), &page); err != nil {
				return err
			}
			if off+len(page.Series) >= page.Total || len(page.Series) == 0 {
				if page.Total < series {
					return fmt.Errorf("walk found %d series, want %d", page.Total, series)
				}
				return nil
			}
		}
	}
	ops := []struct {
		name string
		do   func() error
	}{
		{"windows", func() error { return getBench(client, base+one) }},
		{"series", func() error { return getBench(client, base+"/api/v1/series?limit=100") }},
		{"serieswalk", walk},
	}
	for _, op := range ops {
		b.Run(op.name, func(b *testing.B) {
			b.Run("idle", func(b *testing.B) { runClients(b, op.do, nil) })
			b.Run("ingest", func(b *testing.B) {
				ld := &ingestLoad{url: base + "/api/v2/write?precision=ms", series: series, client: &http.Client{Timeout: 10 * time.Second}}
				runClients(b, op.do, ld)
			})
		})
	}
}

// apiClients is the number of concurrent HTTP clients; ingestRate the
// readings/s of the concurrent load.
const (
	apiClients = 8
	ingestRate = 50_000
)

// runClients runs b.N ops over apiClients goroutines and reports req/s
// and the p99 latency; with load, it runs the load for the duration.
func runClients(b *testing.B, op func() error, load *ingestLoad) {
	if load != nil {
		load.start(b)
		defer load.stop(b)
	}
	var next atomic.Int64
	lat := make([][]time.Duration, apiClients)
	errs := make(chan error, apiClients)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := range apiClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := op(); err != nil {
					errs <- err
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	p99 := all[min(len(all)-1, len(all)*99/100)]
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	if load != nil {
		b.ReportMetric(load.rate(), "ingest-readings/s")
	}
}

// ingestLoad posts line protocol at ingestRate in batches every 20ms,
// cycling over the fed series with the current time.
type ingestLoad struct {
	url    string
	series int
	client *http.Client

	cancel  context.CancelFunc
	done    chan error
	sent    atomic.Int64 // readings acknowledged (204)
	startAt time.Time
	stopAt  time.Time
}

func (l *ingestLoad) start(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done, l.startAt = cancel, make(chan error, 1), time.Now()
	const every = 20 * time.Millisecond
	perTick := ingestRate * int(every) / int(time.Second) / 2 // lines of two fields
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		var body bytes.Buffer
		dev := 0
		for {
			select {
			case <-ctx.Done():
				l.done <- nil
				return
			case <-tick.C:
			}
			body.Reset()
			now := time.Now().UnixMilli()
			for range perTick {
				fmt.Fprintf(&body, "bench,device=dev-%05d temp=%d.5,hum=%d %d\n", dev, dev%40, dev%100, now)
				dev = (dev + 1) % l.series
			}
			resp, err := l.client.Post(l.url, "text/plain", &body)
			if err != nil {
				if ctx.Err() != nil {
					l.done <- nil
					return
				}
				l.done <- fmt.Errorf("ingest load: %w", err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				l.done <- fmt.Errorf("ingest load: %s", resp.Status)
				return
			}
			l.sent.Add(int64(2 * perTick))
		}
	}()
}

func (l *ingestLoad) stop(b *testing.B) {
	l.stopAt = time.Now()
	l.cancel()
	if err := <-l.done; err != nil {
		b.Error(err)
	}
	l.client.CloseIdleConnections()
}

func (l *ingestLoad) rate() float64 {
	end := l.stopAt
	if end.IsZero() {
		end = time.Now()
	}
	return float64(l.sent.Load()) / end.Sub(l.startAt).Seconds()
}

// benchGateway runs a gateway with the default windows config on loopback
// ports until stop is called.
func benchGateway(b *testing.B, adjust ...func(*Config)) (*Gateway, func()) {
	b.Helper()
	cfg := DefaultConfig()
	cfg.Gateway.ID = "bench-gw"
	cfg.Gateway.DataDir = b.TempDir()
	cfg.HTTP.Addr, cfg.MQTT.Addr, cfg.UDP.Addr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	// The default windows (10s, 1m, 5m tumbling, 5m/10s sliding) cost about
	// 24 KiB per series of two fields: 64 MiB keeps only ~2,800 of them.
	cfg.Windows.MemoryBudget = 512 * wal.MiB
	for _, f := range adjust {
		f(&cfg)
	}
	g, err := New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		b.Fatalf("gateway Run: %v", err)
	case <-time.After(10 * time.Second):
		b.Fatal("gateway not ready within 10s")
	}
	return g, func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
}

// benchFeed writes n series of two fields, six readings each 10s apart
// ending now, so every series has closed 10s windows; it returns once the
// windows have applied them all.
func benchFeed(b *testing.B, g *Gateway, base string, n int) {
	b.Helper()
	now := time.Now().Add(-time.Second).UnixMilli()
	var body bytes.Buffer
	for step := 5; step >= 0; step-- {
		ts := now - int64(step)*10_000
		for lo := 0; lo < n; lo += 5000 {
			body.Reset()
			for k := lo; k < min(n, lo+5000); k++ {
				fmt.Fprintf(&body, "bench,device=dev-%05d temp=%d.5,hum=%d %d\n", k, (k+step)%40, k%100, ts)
			}
			resp, err := http.Post(base+"/api/v2/write?precision=ms", "text/plain", &body)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				b.Fatalf("feed: %s", resp.Status)
			}
		}
	}
	deadline := time.Now().Add(time.Minute)
	for g.pipeline.Windows().AppliedIndex() < g.wal.LastIndex() {
		if time.Now().After(deadline) {
			b.Fatalf("windows applied %d of %d WAL records within 1m", g.pipeline.Windows().AppliedIndex(), g.wal.LastIndex())
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	st := g.pipeline.Windows().Stats()
	if st.Series < n {
		b.Fatalf("windows hold %d series, want %d", st.Series, n)
	}
	b.Logf("fed %d series: windows state %.1f MiB, %.1f KiB per series", st.Series, float64(st.MemoryBytes)/(1<<20), float64(st.MemoryBytes)/float64(st.Series)/1024)
	http.DefaultClient.CloseIdleConnections()
}

func getBench(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func getJSONBench(c *http.Client, url string, v any) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
