package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/runnel-iot/runnel/alerts"
	"github.com/runnel-iot/runnel/gateway/httpapi"
)

// The dashboard test drives the real page in headless Chromium against an
// in-process gateway fed over MQTT: it is the only test of the page's
// JavaScript. It needs Debian's chromium; without it the test skips,
// unless REQUIRE_TEST_TOOLS=1 (CI), where a missing browser is a failure.

const dashSite = "plant-7-north-assembly-hall-with-a-long-name" // long, unbreakable: tests wrapping on a phone

// dashSeries is the series the MQTT publisher below feeds.
var dashSeries = "env,device=pi-042,site=" + dashSite

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	if os.Getenv("REQUIRE_TEST_TOOLS") == "1" {
		t.Fatal("chromium not found (/usr/bin/chromium) and REQUIRE_TEST_TOOLS=1")
	}
	t.Skip("chromium not installed (/usr/bin/chromium); the dashboard browser test needs it")
	return ""
}

// dashGateway runs a gateway with 1s tumbling windows and no lateness, so
// windows close about once a second while readings flow; it stops with the
// test.
func dashGateway(t *testing.T, tokens ...string) *Gateway {
	t.Helper()
	cfg := testConfig(t)
	cfg.HTTP.Tokens = tokens
	cfg.Windows.Tumbling = []time.Duration{time.Second, 10 * time.Second}
	cfg.Windows.Sliding = nil
	cfg.Windows.AllowedLateness = 0
	threshold, spike := 1.0, 100.0
	cfg.Alerts.Rules = []alerts.Rule{{Name: "hum_high", Match: alerts.Match{Measurement: "env", Field: "hum"},
		Op: ">", Threshold: &threshold, Severity: "warning"},
		// Fires and resolves only for dashBusy's readings (the publishers'
		// temperatures stay near 21).
		{Name: "temp_spike", Match: alerts.Match{Measurement: "env", Field: "temp"},
			Op: ">", Threshold: &spike, Severity: "critical"}}
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gateway Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("gateway did not stop within 15s")
		}
	})
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("gateway Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("gateway not ready within 10s")
	}
	return g
}

// dashPublish connects one paho client per device and publishes a JSON
// reading for each every 100ms at QoS 1 until the test ends.
func dashPublish(t *testing.T, g *Gateway, devices ...string) {
	t.Helper()
	addr := g.broker.Addr("tcp").String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, len(devices))
	for i, dev := range devices {
		opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("dash-" + dev).
			SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetConnectRetry(false)
		c := mqtt.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			cancel()
			t.Fatalf("mqtt connect %s: %v", dev, tok.Error())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Disconnect(250)
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				x := float64(n)/10 + float64(i)
				body := fmt.Sprintf(`{"temp":%.3f,"hum":%.3f,"tags":{"site":%q}}`, 21+2*math.Sin(x), 40+5*math.Cos(x), dashSite)
				tok := c.Publish("telemetry/"+dev+"/env", 1, false, body)
				if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					errs <- fmt.Errorf("publish for %s: %v (or no PUBACK within 5s)", dev, tok.Error())
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// dashBrowser starts headless Chromium for the test, bounded to 60s in
// all, and returns a context that owns its first tab. JavaScript exceptions
// and console errors of any page fail the test (network errors, like the
// expected 404 of /api/v1/alerts, do not).
func dashBrowser(t *testing.T) context.Context {
	t.Helper()
	exec := chromiumPath(t)
	bound, cancelBound := context.WithTimeout(context.Background(), 60*time.Second)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exec), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(bound, opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithListener(jsErrors(t)))
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // waits for the browser process to exit
		cancelBound()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// jsErrors reports page errors as test errors.
func jsErrors(t *testing.T) func(ev any) {
	return func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg := e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
			t.Errorf("javascript exception: %s (line %d)", msg, e.ExceptionDetails.LineNumber)
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				var parts []string
				for _, a := range e.Args {
					if a.Description != "" {
						parts = append(parts, a.Description)
					} else {
						parts = append(parts, string(a.Value))
					}
				}
				t.Errorf("console.%s: %s", e.Type, strings.Join(parts, " "))
			}
		case *log.EventEntryAdded:
			if e.Entry.Level == log.EntryLevelError && e.Entry.Source != log.EntrySourceNetwork {
				t.Errorf("browser console error (%s): %s %s", e.Entry.Source, e.Entry.Text, e.Entry.URL)
			}
		}
	}
}

// tab opens a new tab in the test's browser.
func tab(t *testing.T, browser context.Context) context.Context {
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithListener(jsErrors(t)))
	t.Cleanup(cancel)
	return ctx
}

// pollJS waits until expr is true in the page, failing with what state
// describes if it never is.
func pollJS(t *testing.T, ctx context.Context, what, expr, state string, timeout time.Duration) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](state))
		t.Fatalf("%s: not within %s (%v); page state: %s", what, timeout, err, got)
	}
}

func evalJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

const dashState = `JSON.stringify({health: document.getElementById('health').textContent,
	points: document.getElementById('chart').dataset.points,
	chart: document.getElementById('chart-status').textContent,
	series: document.getElementById('series-count').textContent,
	live: document.getElementById('live').textContent})`

// saveScreenshot writes a full-page PNG to the test's temp dir (and to
// $DASHBOARD_SCREENSHOT_DIR when set, to look at it after the run).
func saveScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	dirs := []string{t.TempDir()}
	if d := os.Getenv("DASHBOARD_SCREENSHOT_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", p, len(png))
	}
}

// dashBusy is the series dashWriteBusy writes: more readings than any
// other, so the page shows it by default.
const dashBusy = "env,device=pi-busy"

// dashWriteBusy writes 400 readings of dashBusy over HTTP, spread over the
// last 4 s (closed 1 s windows to draw), one of them a temperature spike
// that fires temp_spike and the next one resolving it.
func dashWriteBusy(t *testing.T, g *Gateway) {
	t.Helper()
	var b strings.Builder
	now := time.Now().UnixMilli()
	for i := range 400 {
		temp := 20.0 + float64(i%7)/10
		if i == 200 {
			temp = 150
		}
		fmt.Fprintf(&b, "%s temp=%g %d\n", dashBusy, temp, now-4000+int64(i)*10)
	}
	resp, err := http.Post("http://"+g.Addr()+"/api/v2/write?precision=ms", "text/plain", strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write the busy series: %s", resp.Status)
	}
}

func TestDashboard(t *testing.T) {
	browser := dashBrowser(t)
	g := dashGateway(t)
	dashPublish(t, g, "pi-042", "pi-043")
	dashWriteBusy(t, g)
	base := "http://" + g.Addr() + "/"

	t.Run("defaults", func(t *testing.T) {
		ctx := tab(t, browser)
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(base)); err != nil {
			t.Fatal(err)
		}
		// With no series chosen, the chart shows the busiest one.
		pollJS(t, ctx, "the chart shows the busiest series without a click",
			`document.getElementById('sel-series').textContent === '`+dashBusy+`' && Number(document.getElementById('chart').dataset.points) >= 2`, dashState, 20*time.Second)
		// Recent alert events say what happened: the spike fired, then
		// resolved; the resolved one gives when, not a "since".
		recent := `[...document.querySelectorAll('#alerts-recent li')].map(e => e.dataset.type + ': ' + e.textContent).join(' | ')`
		pollJS(t, ctx, "the recent events list the spike's firing and resolved events",
			`(`+recent+`).includes('temp_spike') && (`+recent+`).includes('resolved: ')`, recent, 15*time.Second)
		items := evalJS[[]string](t, ctx, `[...document.querySelectorAll('#alerts-recent li')].map(e => e.dataset.type + ': ' + e.textContent)`)
		var fired, resolved bool
		for _, it := range items {
			if !strings.Contains(it, "temp_spike") {
				continue
			}
			switch {
			case strings.HasPrefix(it, "resolved: ") && strings.Contains(it, "resolved at ") && !strings.Contains(it, "since"):
				resolved = true
			case strings.HasPrefix(it, "firing: ") && strings.Contains(it, "fired at "):
				fired = true
			default:
				t.Errorf("recent event %q: want its type and when it happened, no \"since\"", it)
			}
		}
		if !fired || !resolved {
			t.Errorf("recent events %q: want temp_spike fired and resolved", items)
		}
		if got := evalJS[string](t, ctx, `location.hash`); !strings.Contains(got, "pi-busy") {
			t.Errorf("location hash %q: the default selection is not in the link", got)
		}
	})

	t.Run("desktop", func(t *testing.T) {
		ctx := tab(t, browser)
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(base)); err != nil {
			t.Fatal(err)
		}
		btn := `button[data-series="` + dashSeries + `"]`
		pollJS(t, ctx, "the series list shows the series", `document.querySelector('`+btn+`') !== null`, dashState, 15*time.Second)
		// The busiest series shows first (see defaults); then the click.
		pollJS(t, ctx, "the busiest series is selected", `document.getElementById('sel-series').textContent === '`+dashBusy+`'`, dashState, 10*time.Second)
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(btn))); err != nil {
			t.Fatalf("click the series: %v", err)
		}
		pollJS(t, ctx, "the chart draws two closed windows", `Number(document.getElementById('chart').dataset.points) >= 2`, dashState, 20*time.Second)
		pollJS(t, ctx, "health shows ready", `document.getElementById('ready').dataset.ready === 'true' && document.getElementById('health').textContent === 'ready'`, dashState, 5*time.Second)
		pollJS(t, ctx, "rates are computed", `/^[0-9.,]+$/.test(document.getElementById('rate-readings').textContent)`, dashState, 5*time.Second)
		pollJS(t, ctx, "the firing alerts are listed", `document.getElementById('alerts-summary').textContent === '2 active' && document.getElementById('alerts-list').textContent.includes('hum_high')`, dashState, 10*time.Second)

		if got := evalJS[string](t, ctx, `document.getElementById('series-list').textContent`); !strings.Contains(got, dashSeries) || !strings.Contains(got, "env,device=pi-043") {
			t.Errorf("series list = %q, want both devices' series", got)
		}
		if got := evalJS[string](t, ctx, `document.getElementById('gw-id').textContent`); got != "test-gw" {
			t.Errorf("gateway id shown = %q", got)
		}
		if got := evalJS[string](t, ctx, `document.getElementById('sel-series').textContent + ' ' + document.getElementById('field').value + ' ' + document.getElementById('size').value`); got != dashSeries+" temp tumbling:1s" {
			t.Errorf("selection = %q, want the series, the field shown before (the busy series' temp) and the smallest window", got)
		}
		// The chart keeps following the live stream: a window closes about
		// once a second, so the count grows.
		n := evalJS[int](t, ctx, `Number(document.getElementById('chart').dataset.points)`)
		pollJS(t, ctx, "the chart grows from the stream", fmt.Sprintf(`Number(document.getElementById('chart').dataset.points) > %d`, n), dashState, 10*time.Second)
		if live := evalJS[string](t, ctx, `document.getElementById('live').textContent`); live != "● live" {
			t.Errorf("stream indicator = %q", live)
		}
		// Search narrows the list through the API's prefix filter.
		if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("q"), "env,device=pi-043")); err != nil {
			t.Fatal(err)
		}
		pollJS(t, ctx, "search narrows the list", `document.querySelectorAll('#series-list button').length === 1 && document.getElementById('series-count').textContent === '1 series match'`, dashState, 5*time.Second)
		saveScreenshot(t, ctx, "dashboard.png")
	})

	t.Run("phone", func(t *testing.T) {
		ctx := tab(t, browser)
		// A deep link selects the series with its long name on a narrow screen.
		u := base + "#" + url.Values{"series": {dashSeries}, "field": {"temp"}}.Encode()
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(3), chromedp.EmulateMobile), chromedp.Navigate(u)); err != nil {
			t.Fatal(err)
		}
		pollJS(t, ctx, "the chart draws on a phone", `Number(document.getElementById('chart').dataset.points) >= 1 && document.querySelector('#series-list button') !== null`, dashState, 15*time.Second)
		if got := evalJS[string](t, ctx, `document.getElementById('field').value`); got != "temp" {
			t.Errorf("deep-linked field = %q, want temp", got)
		}
		sw := evalJS[[]int](t, ctx, `[document.documentElement.scrollWidth, window.innerWidth]`)
		if sw[0] > sw[1] {
			t.Errorf("horizontal overflow on a 390px phone: scrollWidth %d > innerWidth %d", sw[0], sw[1])
		}
		if cols := evalJS[string](t, ctx, `getComputedStyle(document.querySelector('main')).gridTemplateColumns`); strings.Contains(strings.TrimSpace(cols), " ") {
			t.Errorf("phone layout has columns %q, want one", cols)
		}
		small := evalJS[[]string](t, ctx, `[...document.querySelectorAll('main button, main input, main select')]
			.filter(e => e.getClientRects().length && e.getBoundingClientRect().height < 44)
			.map(e => e.id || e.textContent.slice(0, 30))`)
		if len(small) > 0 {
			t.Errorf("controls under 44px high (touch size) on a phone: %q", small)
		}
		saveScreenshot(t, ctx, "dashboard-phone.png")
	})
}

// TestDashboardToken runs the page against a gateway that requires a
// token. The page and its assets load without one (a page load cannot send
// a header); a 401 from the API must bring up the token prompt, and the
// token must then be sent on every request, the fetch-streamed SSE
// included.
func TestDashboardToken(t *testing.T) {
	browser := dashBrowser(t)
	const token = "dash-s3cret"
	g := dashGateway(t, token)
	dashPublish(t, g, "pi-042")

	ctx := tab(t, browser)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+g.Addr()+"/")); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, "a 401 opens the token prompt", `document.getElementById('token-dialog').open`, dashState, 10*time.Second)
	if got := evalJS[string](t, ctx, `document.getElementById('health').textContent`); got != "token required" {
		t.Errorf("health without a token = %q", got)
	}
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("token"), "wrong"), chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`))); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, "a wrong token is refused", `document.getElementById('token-dialog').open && document.getElementById('token-error').textContent !== ''`, dashState, 10*time.Second)
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`))); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, "with the token, health shows ready", `document.getElementById('health').textContent === 'ready' && !document.getElementById('token-dialog').open`, dashState, 10*time.Second)
	if got := evalJS[string](t, ctx, `localStorage.getItem('runnel.token')`); got != token {
		t.Errorf("stored token = %q", got)
	}
	btn := `button[data-series="` + dashSeries + `"]`
	pollJS(t, ctx, "the series list loads with the token", `document.querySelector('`+btn+`') !== null`, dashState, 15*time.Second)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(btn))); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, "the stream opens with the token and the chart draws", `document.getElementById('live').textContent === '● live' && Number(document.getElementById('chart').dataset.points) >= 2`, dashState, 20*time.Second)

	// A reload keeps the token: no prompt.
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	pollJS(t, ctx, "after a reload the stored token is used", `document.getElementById('health').textContent === 'ready' && !document.getElementById('token-dialog').open`, dashState, 10*time.Second)
}

// TestDashboardStatus checks GET /api/v1/status, the numbers the
// dashboard shows, against what a real gateway was sent over HTTP.
func TestDashboardStatus(t *testing.T) {
	g := dashGateway(t)
	base := "http://" + g.Addr()
	now := time.Now().UnixMilli()
	body := fmt.Sprintf("env,device=d1 temp=20 %d\nenv,device=d2 temp=21,hum=30 %d\nnot line protocol\n", now, now)
	resp, err := http.Post(base+"/api/v2/write?precision=ms", "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("write with a bad line = %s, want 400 (good lines kept)", resp.Status)
	}
	// An hour behind d1's watermark: late.
	resp, err = http.Post(base+"/api/v2/write?precision=ms", "text/plain", strings.NewReader(fmt.Sprintf("env,device=d1 temp=19 %d\n", now-3_600_000)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write = %s", resp.Status)
	}
	var st httpapi.Status
	waitFor(t, 10*time.Second, func() (bool, string) {
		st = httpapi.Status{}
		r, err := http.Get(base + "/api/v1/status")
		if err != nil {
			return false, err.Error()
		}
		defer r.Body.Close()
		if r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/json" {
			return false, r.Status
		}
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
			return false, err.Error()
		}
		return st.Ingest.Late == 1 && st.Windows.Series >= 2, fmt.Sprintf("%+v", st)
	})
	want := []struct {
		name string
		ok   bool
	}{
		{"gateway id", st.GatewayID == "test-gw"},
		{"version", st.Version == Version},
		{"ready", st.Ready && st.Reason == ""},
		{"uptime", st.UptimeSeconds > 0 && st.UptimeSeconds < 60},
		{"time", math.Abs(float64(time.Now().UnixNano()-st.TimeNs)) < float64(10*time.Second)},
		{"readings by listener", st.Ingest.Readings.HTTP == 4 && st.Ingest.Readings.Total == 4 && st.Ingest.Readings.MQTT == 0},
		{"rejected", st.Ingest.Rejected.HTTP == 1 && st.Ingest.Rejected.Total == 1},
		{"dead letters", st.Ingest.DeadLetters == 1},
		{"wal", st.WAL.Appends >= 2 && st.WAL.Records >= 2 && st.WAL.DiskBytes > 0 && st.WAL.LastIndex >= 2},
		{"windows", st.Windows.Pairs >= 3 && st.Windows.BudgetBytes == int64(64<<20) && st.Windows.MemoryBytes > 0},
		{"no checkpoint yet", st.Checkpoint.AgeSeconds == -1 || st.Checkpoint.Count > 0},
		{"the hum alert fires; forwarding is off", st.AlertsActive == 1 && st.Forward != nil && !st.Forward.Enabled},
	}
	for _, w := range want {
		if !w.ok {
			t.Errorf("%s wrong in status %+v", w.name, st)
		}
	}
}
