package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
)

// waitFor is testutil.WaitFor.
var waitFor = testutil.WaitFor

func testConfig(t *testing.T) Config {
	c := DefaultConfig()
	c.Gateway.ID = "test-gw"
	c.Gateway.DataDir = t.TempDir()
	c.HTTP.Addr = "127.0.0.1:0"
	c.MQTT.Addr = "127.0.0.1:0"
	c.UDP.Addr = "127.0.0.1:0"
	return c
}

// syncBuffer is a buffer a logger and a test share.
type syncBuffer = testutil.SyncBuffer

func get(client *http.Client, url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func TestLifecycle(t *testing.T) {
	var logs syncBuffer
	cfg := testConfig(t)
	g, err := New(cfg, NewLogger(LogConfig{Level: "info", Format: "text"}, &logs))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()

	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("gateway not ready within 10s")
	}
	addr := g.Addr()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, tc := range []struct{ path, body string }{
		{"/healthz", "ok\n"},
		{"/readyz", `{"ready":true}` + "\n"},
	} {
		waitFor(t, 5*time.Second, func() (bool, string) {
			code, body, err := get(client, "http://"+addr+tc.path)
			return code == http.StatusOK && body == tc.body, tc.path + ": " + strings.TrimSpace(body) + " " + http.StatusText(code) + " " + errString(err)
		})
	}
	if code, _, _ := get(client, "http://"+addr+"/nope"); code != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", code)
	}
	if code, _, _ := get(client, "http://"+addr+"/healthz?x"); code != http.StatusOK {
		t.Errorf("GET /healthz?x = %d, want 200", code)
	}
	if l := logs.String(); !strings.Contains(l, `msg="gateway started" gateway_id=test-gw http_addr=`+addr) {
		t.Errorf("log lacks the start line:\n%s", l)
	}

	// An open live stream (a dashboard tab) must not hold the shutdown
	// until its deadline (30s here).
	stream, err := (&http.Client{}).Get("http://" + addr + "/api/v1/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	if fi, err := os.Stat(filepath.Join(cfg.Gateway.DataDir, "wal")); err != nil || !fi.IsDir() {
		t.Errorf("no WAL directory in the data dir: %v", err)
	}
	if _, _, err := get(client, "http://"+addr+"/healthz"); err == nil {
		t.Error("HTTP still answers after Run returned")
	}
	rec := httptest.NewRecorder()
	g.handleReadyz(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != `{"ready":false,"reason":"shutting down"}`+"\n" {
		t.Errorf("readyz after stop = %d %s", rec.Code, rec.Body)
	}
	if err := g.Run(context.Background()); err == nil {
		t.Error("second Run succeeded, want an error")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestReadyzReasons(t *testing.T) {
	g, err := New(testConfig(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                           string
		walOpen, httpUp, mqttUp, stopp bool
		code                           int
		body                           string
	}{
		{"before start", false, false, false, false, 503, `{"ready":false,"reason":"wal not open"}`},
		{"wal open, no listener", true, false, false, false, 503, `{"ready":false,"reason":"http listener not up"}`},
		{"no broker", true, true, false, false, 503, `{"ready":false,"reason":"mqtt broker not up"}`},
		{"running", true, true, true, false, 200, `{"ready":true}`},
		{"stopping", true, true, true, true, 503, `{"ready":false,"reason":"shutting down"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g.walOpen.Store(tt.walOpen)
			g.httpUp.Store(tt.httpUp)
			g.mqttUp.Store(tt.mqttUp)
			g.stopping.Store(tt.stopp)
			rec := httptest.NewRecorder()
			g.handleReadyz(rec, httptest.NewRequest("GET", "/readyz", nil))
			if rec.Code != tt.code || strings.TrimSpace(rec.Body.String()) != tt.body || rec.Header().Get("Content-Type") != "application/json" {
				t.Errorf("readyz = %d %s (%s), want %d %s", rec.Code, rec.Body, rec.Header().Get("Content-Type"), tt.code, tt.body)
			}
		})
	}
}

func TestListenError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t)
	cfg.HTTP.Addr = busy.Addr().String()
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = g.Run(context.Background())
	want := "listen http on " + cfg.HTTP.Addr + ": bind: address already in use"
	if err == nil || err.Error() != want {
		t.Errorf("Run on a busy port = %v, want %q", err, want)
	}
	select {
	case <-g.Ready():
		t.Error("Ready closed although start failed")
	default:
	}
}

func TestDataDirError(t *testing.T) {
	cfg := testConfig(t)
	file := cfg.Gateway.DataDir + "/file"
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Gateway.DataDir = file + "/data"
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = g.Run(context.Background())
	if want := "create data dir " + cfg.Gateway.DataDir + ": not a directory"; err == nil || err.Error() != want {
		t.Errorf("Run = %v, want %q", err, want)
	}
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.Log.Level = "loud"
	_, err := New(cfg, nil)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Key != "log.level" {
		t.Errorf("New with a bad log level = %v, want a *ConfigError for log.level", err)
	}
}

func TestNewLogger(t *testing.T) {
	tests := []struct {
		cfg  LogConfig
		want []string // substrings of the output
		not  []string // substrings it must not hold
	}{
		{LogConfig{Level: "info", Format: "json"}, []string{`"msg":"shown","k_v":1`, `"msg":"warned"`}, []string{"hidden"}},
		{LogConfig{Level: "debug", Format: "text"}, []string{`msg=hidden`, `msg=shown k_v=1`}, []string{`"msg"`}},
		{LogConfig{Level: "error", Format: "text"}, []string{`msg=shown`}, []string{"warned", "hidden"}},
	}
	for _, tt := range tests {
		var b strings.Builder
		l := NewLogger(tt.cfg, &b)
		l.Debug("hidden")
		l.Warn("warned")
		l.Error("shown", "k_v", 1)
		out := b.String()
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%+v: output lacks %q:\n%s", tt.cfg, w, out)
			}
		}
		for _, n := range tt.not {
			if strings.Contains(out, n) {
				t.Errorf("%+v: output holds %q:\n%s", tt.cfg, n, out)
			}
		}
	}
}

func TestVersionString(t *testing.T) {
	if s := VersionString(); !strings.HasPrefix(s, "runnel dev (commit unknown, go1.") {
		t.Errorf("VersionString() = %q", s)
	}
}

// TestReadyzBrokenUplink: with Kafka unreachable the gateway stays ready
// and /readyz says the uplink is down.
func TestReadyzBrokenUplink(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there now
	cfg := testConfig(t)
	cfg.Kafka.Brokers = []string{dead}
	cfg.Kafka.RequestTimeout = time.Second
	g := runGateway(t, cfg)
	client := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, 15*time.Second, func() (bool, string) {
		code, body, err := get(client, "http://"+g.Addr()+"/readyz")
		return code == http.StatusOK && strings.Contains(body, `"ready":true`) && strings.Contains(body, `"uplink":"down: `), fmt.Sprint(code, body, err)
	})
	// Probes are unauthenticated: no broker address in the answer.
	_, body, _ := get(client, "http://"+g.Addr()+"/readyz")
	if _, port, _ := net.SplitHostPort(dead); strings.Contains(body, dead) || strings.Contains(body, ":"+port) {
		t.Errorf("/readyz shows the broker address %s: %s", dead, body)
	}
}

func TestRedactAddrs(t *testing.T) {
	for in, want := range map[string]string{
		"dial tcp 127.0.0.1:9092: connect: connection refused": "dial tcp <address>: connect: connection refused",
		"broker kafka-1.plant.local:9093 unreachable":          "broker <address> unreachable",
		"dial tcp [fd00::1]:9092: i/o timeout":                 "dial tcp <address>: i/o timeout",
		"unable to dial: context deadline exceeded":            "unable to dial: context deadline exceeded",
	} {
		if got := redactAddrs(in); got != want {
			t.Errorf("redactAddrs(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestMemoryLimit: gateway.memory_limit becomes the runtime's soft limit.
func TestMemoryLimit(t *testing.T) {
	if os.Getenv("GOMEMLIMIT") != "" {
		t.Skip("GOMEMLIMIT set: it wins over the config")
	}
	t.Cleanup(func() { debug.SetMemoryLimit(math.MaxInt64) }) // after the gateway's cleanup
	cfg := testConfig(t)
	cfg.Gateway.MemoryLimit = 96 * wal.MiB
	runGateway(t, cfg)
	if l := debug.SetMemoryLimit(-1); l != 96<<20 {
		t.Errorf("memory limit %d, want 96 MiB", l)
	}
}

// TestAutoMemoryLimit: with gateway.memory_limit 0 the runtime's soft
// limit follows the live heap while the gateway runs, and the limit from
// before comes back when it stops.
func TestAutoMemoryLimit(t *testing.T) {
	if os.Getenv("GOMEMLIMIT") != "" {
		t.Skip("GOMEMLIMIT set: it wins over the config")
	}
	before := debug.SetMemoryLimit(-1)
	cfg := testConfig(t)
	cfg.Gateway.MemoryLimit = 0
	t.Run("running", func(t *testing.T) { // the gateway stops as it ends
		runGateway(t, cfg)
		// A heap of 40 MB live moves the limit above the floor.
		ballast := make([][]byte, 40)
		for i := range ballast {
			ballast[i] = make([]byte, 1<<20)
		}
		runtime.GC()
		waitFor(t, 10*time.Second, func() (bool, string) {
			l := debug.SetMemoryLimit(-1)
			return l >= autoLimit(40<<20) && l < before, fmt.Sprint("limit ", l)
		})
		runtime.KeepAlive(ballast)
	})
	if l := debug.SetMemoryLimit(-1); l != before {
		t.Errorf("limit after stop %d, want %d as before", l, before)
	}
}

func TestAutoLimit(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int64
	}{
		{0, 28 << 20},
		{14 << 20, 28 << 20}, // the floor binds
		{16 << 20, 31 << 20},
		{100 << 20, 157 << 20},
		{math.MaxUint64, 28<<20 + (1<<50-14<<20)*3/2},
	} {
		if got := autoLimit(tc.live); got != tc.want {
			t.Errorf("autoLimit(%d) = %d, want %d", tc.live, got, tc.want)
		}
	}
}

// runGateway runs a gateway on cfg until the test ends, when it must stop
// cleanly; it returns once the gateway is ready.
func runGateway(tb testing.TB, cfg Config) *Gateway {
	tb.Helper()
	g, stop := startGateway(tb, cfg)
	tb.Cleanup(func() {
		if err := stop(); err != nil {
			tb.Errorf("gateway Run: %v", err)
		}
	})
	return g
}

// startGateway runs a gateway on cfg until stop, which returns Run's
// error; it fails the test if Run returns on its own.
func startGateway(t testing.TB, cfg Config) (*Gateway, func() error) {
	t.Helper()
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("gateway Run returned during start: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("gateway not ready within 10s")
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
	})
	return g, func() error {
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("Run did not return within 30s")
		}
	}
}
