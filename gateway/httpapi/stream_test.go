package httpapi

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/windows"
)

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) { return cond(), "waiting for " + what })
}

// readEvent reads one SSE event (name and data), skipping comments.
func readEvent(t *testing.T, r *bufio.Reader) (string, string) {
	t.Helper()
	var name, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && name != "":
			return name, data
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
}

func TestStream(t *testing.T) {
	hub := NewHub(4)
	mux := http.NewServeMux()
	(&API{Stream: hub}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/api/v1/stream?prefix=env&kind=tumbling")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	waitCond(t, "the client subscribed", func() bool { return hub.Clients() == 1 })
	win := func(series string, kind windows.Kind, count uint64) windows.Emission {
		return windows.Emission{Kind: kind, Window: windows.WindowSummary{
			Series: series, Field: "temp", Spec: "tumbling:10s", StartNs: 1e18, EndNs: 1e18 + 1e10,
			Count: count, Sum: 42, Min: 1, Max: 9, Mean: 4.2, P50: 4, P90: 8, P99: 9, Closed: "watermark"}}
	}
	hub.PublishEmission(win("cpu,device=a", windows.KindTumbling, 1)) // filtered out: prefix
	hub.PublishEmission(win("env,device=a", windows.KindSliding, 2))  // filtered out: kind
	hub.PublishEmission(win("env,device=b", windows.KindTumbling, 3))
	r := bufio.NewReader(resp.Body)
	name, data := readEvent(t, r)
	var got struct {
		Series string  `json:"series"`
		Count  uint64  `json:"count"`
		Sum    float64 `json:"sum"`
		P99    float64 `json:"p99"`
		Spec   string  `json:"spec"`
	}
	if err := json.Unmarshal([]byte(data), &got); err != nil {
		t.Fatal(err)
	}
	if name != "window" || got.Series != "env,device=b" || got.Count != 3 || got.Sum != 42 || got.P99 != 9 || got.Spec != "tumbling:10s" {
		t.Fatalf("event %s %s; want the tumbling window of env,device=b only", name, data)
	}

	// A client that reads nothing is dropped once its buffer and the socket
	// are full; publishing never waits for it, and the fast client goes on.
	slow, err := http.Get(srv.URL + "/api/v1/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Body.Close()
	waitCond(t, "the slow client subscribed", func() bool { return hub.Clients() == 2 })
	big := make([]byte, 64<<10)
	for i := range big {
		big[i] = 'x'
	}
	data64 := []byte(`{"pad":"` + string(big) + `"}`)
	start := time.Now()
	for range 200 { // 13 MB: more than the socket buffers hold
		hub.Publish(Event{Type: "window", Series: "other", Kind: "tumbling", Data: data64})
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("publishing 200 events took %s: the hub waited for a slow client", el)
	}
	waitCond(t, "the slow client dropped", func() bool { return hub.Dropped() == 1 })
	hub.PublishEmission(win("env,device=c", windows.KindTumbling, 5))
	if _, data := readEvent(t, r); !strings.Contains(data, `"env,device=c"`) {
		t.Fatalf("the fast client got %.80s, want the next window", data)
	}

	for _, bad := range []string{"?kind=hourly", "?series=x"} {
		resp, err := http.Get(srv.URL + "/api/v1/stream" + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%s: %s, want 400", bad, resp.Status)
		}
	}
}

// TestStreamNoClientsNoWork checks that a closed window costs nothing
// while no stream client is connected: every window closing was turned
// into JSON for nobody (at 33,000 windows/s in make bench's forward
// phase, an eighth of the gateway's allocations).
func TestStreamNoClientsNoWork(t *testing.T) {
	hub := NewHub(4)
	e := windows.Emission{Kind: windows.KindTumbling, Window: windows.WindowSummary{
		Series: "env,device=a", Field: "temp", Spec: "tumbling:10s", StartNs: 1e18, EndNs: 1e18 + 1e10, Count: 1}}
	if n := testing.AllocsPerRun(100, func() { hub.PublishEmission(e) }); n != 0 {
		t.Errorf("%v allocations per window with no client, want 0", n)
	}
	s := hub.subscribe(streamFilter{})
	hub.PublishEmission(e)
	select {
	case ev := <-s.ch:
		if !strings.Contains(string(ev.Data), `"env,device=a"`) {
			t.Errorf("event %s", ev.Data)
		}
	default:
		t.Fatal("a subscribed client got no event")
	}
	hub.unsubscribe(s)
	if n := testing.AllocsPerRun(100, func() { hub.PublishEmission(e) }); n != 0 {
		t.Errorf("%v allocations per window after the client left, want 0", n)
	}
}
