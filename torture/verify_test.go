package torture

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/wal"
)

// walContent is what the readings WAL holds of the suite's series.
type walContent struct {
	copies  map[int64]int             // value -> copies in the WAL
	series  map[string]*agg           // series -> all its readings
	windows map[string]map[int64]*agg // series -> 1s window start (ns) -> readings
	maxNs   map[string]int64          // series -> newest event time
}

type agg struct {
	count uint64
	sum   float64
}

// readWAL reads the readings WAL of a stopped gateway.
func readWAL(t *testing.T, dir string) walContent {
	t.Helper()
	l, err := wal.Open(filepath.Join(dir, "wal"), wal.DefaultConfig(), nil)
	if err != nil {
		t.Fatalf("open the WAL after the run: %v", err)
	}
	defer l.Close()
	c := walContent{copies: map[int64]int{}, series: map[string]*agg{}, windows: map[string]map[int64]*agg{}, maxNs: map[string]int64{}}
	first := l.FirstIndex()
	r := l.NewReader(max(first, 1))
	var b wal.Batch
	for r.Next() {
		if err := wal.DecodeBatch(r.Record(), &b); err != nil {
			continue // a damaged record: the gateway skips it too
		}
		for _, rd := range b.Readings {
			if !strings.HasPrefix(rd.Series, measurement+",") || rd.Field != field {
				continue
			}
			c.copies[int64(rd.Value)]++
			s := c.series[rd.Series]
			if s == nil {
				s = &agg{}
				c.series[rd.Series] = s
				c.windows[rd.Series] = map[int64]*agg{}
			}
			s.count++
			s.sum += rd.Value
			start := rd.TimeNs - rd.TimeNs%int64(time.Second)
			w := c.windows[rd.Series][start]
			if w == nil {
				w = &agg{}
				c.windows[rd.Series][start] = w
			}
			w.count++
			w.sum += rd.Value
			c.maxNs[rd.Series] = max(c.maxNs[rd.Series], rd.TimeNs)
		}
	}
	if err := r.Err(); err != nil {
		t.Fatalf("read the WAL: %v", err)
	}
	return c
}

// checkAcked asserts every acknowledged value is in the WAL exactly once,
// but for those in excused (acknowledged before a deliberate damage),
// which may be missing; no value is ever there twice.
func checkAcked(t *testing.T, acked map[int64]string, c walContent, excused map[int64]string) {
	t.Helper()
	missing, dup := 0, 0
	var examples []string
	for v, n := range c.copies {
		if n > 1 {
			dup++
			if len(examples) < 5 {
				examples = append(examples, fmt.Sprintf("value %d x%d", v, n))
			}
		}
	}
	for v, s := range acked {
		if c.copies[v] == 0 {
			if _, ok := excused[v]; ok {
				continue
			}
			missing++
			if len(examples) < 10 {
				examples = append(examples, fmt.Sprintf("acknowledged %s v=%d missing", s, v))
			}
		}
	}
	if missing > 0 || dup > 0 {
		t.Errorf("WAL: %d acknowledged readings missing, %d values stored more than once: %v", missing, dup, examples)
	}
}

// windowJSON is the part of GET /api/v1/windows the suite reads.
type windowJSON struct {
	Spec  string  `json:"spec"`
	Count uint64  `json:"count"`
	Sum   float64 `json:"sum"`
}

// damaged returns, per series, the count and sum of the excused values
// the WAL no longer holds.
func damaged(c walContent, excused map[int64]string) map[string]agg {
	out := map[string]agg{}
	for v, s := range excused {
		if c.copies[v] == 0 {
			a := out[s]
			a.count++
			a.sum += float64(v)
			out[s] = a
		}
	}
	return out
}

// windowKey names a 1s window of a series.
type windowKey struct {
	series  string
	startNs int64
}

// lostWindows returns, per 1s window, the count and sum of the excused
// values the WAL no longer holds.
func lostWindows(c walContent, excused map[int64]string, tsMs map[int64]int64) map[windowKey]agg {
	out := map[windowKey]agg{}
	for v, s := range excused {
		if c.copies[v] == 0 {
			ns := tsMs[v] * int64(time.Millisecond)
			k := windowKey{s, ns - ns%int64(time.Second)}
			a := out[k]
			a.count++
			a.sum += float64(v)
			out[k] = a
		}
	}
	return out
}

// checkWindows asserts each series' 1h windows over the API hold what the
// WAL holds (count and sum); where the case damaged the WAL on purpose,
// the windows may also hold some of the lost readings (applied before the
// damage), never more.
func checkWindows(t *testing.T, httpAddr string, c walContent, lost map[string]agg) {
	t.Helper()
	for series, want := range c.series {
		q := url.Values{"series": {series}, "field": {field}, "size": {"1h"}}
		resp, err := http.Get("http://" + httpAddr + "/api/v1/windows?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Windows []windowJSON `json:"windows"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("windows of %s: %v", series, err)
		}
		var got agg
		for _, w := range body.Windows {
			if w.Spec == "tumbling:1h" {
				got.count += w.Count
				got.sum += w.Sum
			}
		}
		extra := lost[series]
		if got.count < want.count || got.count > want.count+extra.count ||
			got.sum < want.sum || got.sum > want.sum+extra.sum {
			t.Errorf("%s: 1h windows count %d sum %.0f, WAL holds %d readings summing to %.0f (damage excuses up to %d more summing to %.0f)",
				series, got.count, got.sum, want.count, want.sum, extra.count, extra.sum)
		}
	}
}

// checkOutboxes asserts no id is in an outbox twice (of a stopped gateway),
// even where a deliberate damage of the WAL took the readings that closed
// a window already emitted (the replay closes it again).
func checkOutboxes(t *testing.T, dir string) {
	t.Helper()
	for _, kind := range []string{"summaries", "alerts", "sketches"} {
		l, err := wal.Open(filepath.Join(dir, "outbox", kind, "log"), wal.DefaultConfig(), nil)
		if err != nil {
			t.Errorf("open outbox %s: %v", kind, err)
			continue
		}
		seen := map[string]bool{}
		first := l.FirstIndex()
		r := l.NewReader(max(first, 1))
		for r.Next() {
			rec, _, err := forward.DecodeRecord(r.Record())
			if err != nil {
				t.Errorf("outbox %s record %d: %v", kind, r.Index(), err)
				continue
			}
			if seen[rec.ID] {
				t.Errorf("outbox %s holds id %s twice: %s", kind, rec.ID, rec.Value)
			}
			seen[rec.ID] = true
		}
		if err := r.Err(); err != nil {
			t.Errorf("read outbox %s: %v", kind, err)
		}
		l.Close()
	}
}

// kafka is an in-process Kafka (kfake) that can go silent: while paused
// it reads requests and answers none, as a stopped broker process does.
type kafka struct {
	c      *kfake.Cluster
	paused atomic.Bool

	mu        sync.Mutex
	summaries []summary // in consumption (offset) order
	cancel    context.CancelFunc
	done      chan struct{}
}

type summary struct {
	id      string
	key     string
	series  string
	startNs int64
	count   uint64
	sum     float64
}

func startKafka(t *testing.T) *kafka {
	t.Helper()
	c, err := kfake.NewCluster(kfake.Ports(0), kfake.SeedTopics(1, "runnel.summaries", "runnel.alerts", "runnel.sketches"))
	if err != nil {
		t.Fatal(err)
	}
	k := &kafka{c: c, done: make(chan struct{})}
	c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return nil, nil, k.paused.Load()
	})
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	go k.consume(ctx, t)
	t.Cleanup(func() {
		cancel()
		<-k.done
		c.Close()
	})
	return k
}

func (k *kafka) addr() string { return k.c.ListenAddrs()[0] }

func (k *kafka) consume(ctx context.Context, t *testing.T) {
	defer close(k.done)
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.addr()), kgo.ConsumeTopics("runnel.summaries"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			var s summary
			for _, h := range r.Headers {
				if h.Key == "runnel-id" {
					s.id = string(h.Value)
				}
			}
			var v struct {
				Series  string  `json:"series"`
				Window  string  `json:"window"`
				StartNs int64   `json:"start_ns"`
				Count   uint64  `json:"count"`
				Sum     float64 `json:"sum"`
			}
			if json.Unmarshal(r.Value, &v) != nil || v.Window != "tumbling:1s" {
				return
			}
			s.key, s.series, s.startNs, s.count, s.sum = string(r.Key), v.Series, v.StartNs, v.Count, v.Sum
			k.mu.Lock()
			k.summaries = append(k.summaries, s)
			k.mu.Unlock()
		})
	}
}

// expectedWindows returns the 1s windows of the suite's series that the
// WAL's readings closed (their end at least a second behind the newest
// reading of the series, past the allowed lateness).
func expectedWindows(c walContent) map[string]map[int64]*agg {
	out := map[string]map[int64]*agg{}
	for series, ws := range c.windows {
		for start, a := range ws {
			if start+int64(time.Second)+lateness+int64(time.Second) <= c.maxNs[series] {
				if out[series] == nil {
					out[series] = map[int64]*agg{}
				}
				out[series][start] = a
			}
		}
	}
	return out
}

// checkKafka waits until every expected 1s window is in Kafka, then
// asserts each copy carries the WAL's count and sum and the first copies
// of each key arrive in window order. It returns how many duplicate
// copies Kafka holds (at-least-once allows them).
func checkKafka(t *testing.T, k *kafka, want map[string]map[int64]*agg, lost map[windowKey]agg, within time.Duration) (records, dups int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		k.mu.Lock()
		got := append([]summary(nil), k.summaries...)
		k.mu.Unlock()
		have := map[string]map[int64]bool{}
		for _, s := range got {
			if have[s.series] == nil {
				have[s.series] = map[int64]bool{}
			}
			have[s.series][s.startNs] = true
		}
		var missing []string
		for series, ws := range want {
			for start := range ws {
				if !have[series][start] {
					missing = append(missing, fmt.Sprintf("%s@%d", series, start))
				}
			}
		}
		if len(missing) == 0 {
			return checkSummaries(t, got, want, lost)
		}
		if time.Now().After(deadline) {
			sort.Strings(missing)
			t.Errorf("%d closed 1s windows never reached Kafka within %v (of %d consumed records), e.g. %v",
				len(missing), within, len(got), missing[:min(5, len(missing))])
			return len(got), 0
		}
		time.Sleep(100 * time.Millisecond) // polling the consumer's findings, bounded by the deadline
	}
}

func checkSummaries(t *testing.T, got []summary, want map[string]map[int64]*agg, lost map[windowKey]agg) (records, dups int) {
	t.Helper()
	seen := map[string]bool{}
	lastStart := map[string]int64{}
	for _, s := range got {
		// A window may hold readings a deliberate damage later took from
		// the WAL (it was forwarded before), never more.
		extra := lost[windowKey{s.series, s.startNs}]
		if w := want[s.series][s.startNs]; w != nil && (s.count < w.count || s.count > w.count+extra.count ||
			s.sum < w.sum || s.sum > w.sum+extra.sum) {
			t.Errorf("Kafka summary %s@%d: count %d sum %.0f, the WAL holds %d summing to %.0f (damage excuses up to %d more)",
				s.series, s.startNs, s.count, s.sum, w.count, w.sum, extra.count)
		}
		if seen[s.id] {
			dups++
			continue
		}
		seen[s.id] = true
		if s.startNs < lastStart[s.key] {
			t.Errorf("key %s: window %d first arrived after window %d", s.key, s.startNs, lastStart[s.key])
		}
		lastStart[s.key] = s.startNs
	}
	return len(got), dups
}
