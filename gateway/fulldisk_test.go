package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
)

func postLine(client *http.Client, addr, line string) (int, string, error) {
	resp, err := client.Post("http://"+addr+"/api/v2/write", "text/plain", strings.NewReader(line))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, resp.Header.Get("Retry-After"))
	return resp.StatusCode, b.String(), nil
}

// TestReadyzFullDisk: on a full disk /readyz answers 503 with the reason
// (the WAL cannot accept appends: no space left on device), the metrics say
// so, and the gateway is ready again once space returns; a restart on a
// full disk starts and waits instead of exiting (issue 14, problems 3 and
// 4).
func TestReadyzFullDisk(t *testing.T) {
	cfg := testConfig(t)
	cfg.Gateway.DataDir = testutil.Tmpfs(t, 16<<20)
	cfg.Checkpoint.Interval = 100 * time.Millisecond
	client := &http.Client{Timeout: 10 * time.Second}
	line := func(i int) string {
		return fmt.Sprintf("env,device=d1 temp=%d %d\n", i, 1700000000000000000+int64(i)*1e9)
	}

	g, stop := startGateway(t, cfg)
	if code, _, err := postLine(client, g.Addr(), line(1)); code != http.StatusNoContent {
		t.Fatalf("write = %d %v, want 204", code, err)
	}
	filler := testutil.Fill(t, cfg.Gateway.DataDir)
	big := strings.Repeat(line(2), 2000) // more than the last partly written page holds
	code, _, err := postLine(client, g.Addr(), big)
	if code == http.StatusNoContent || err != nil {
		t.Fatalf("write on a full disk = %d %v, want refused", code, err)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		code, body, err := get(client, "http://"+g.Addr()+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"reason":"wal cannot accept appends: write failed: `) &&
			strings.Contains(body, "no space left on device"), fmt.Sprint(code, body, err)
	})
	_, metrics, _ := get(client, "http://"+g.Addr()+"/metrics")
	for _, want := range []string{`runnel_wal_failing{log="readings"} 1`, "runnel_storage_held 1", "runnel_ready 0"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics on a full disk lack %q", want)
		}
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if code, _, err := postLine(client, g.Addr(), big); code != http.StatusNoContent {
		t.Fatalf("write once space returned = %d %v, want 204", code, err)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		code, body, err := get(client, "http://"+g.Addr()+"/readyz")
		return code == http.StatusOK, fmt.Sprint(code, body, err)
	})
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	// A restart on a full disk: the gateway starts and waits.
	filler = testutil.Fill(t, cfg.Gateway.DataDir)
	g, stop = startGateway(t, cfg)
	if code, _, err := postLine(client, g.Addr(), big); code == http.StatusNoContent || err != nil {
		t.Fatalf("write on a full disk after restart = %d %v, want refused", code, err)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		code, body, err := get(client, "http://"+g.Addr()+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "no space left on device"), fmt.Sprint(code, body, err)
	})
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if code, _, err := postLine(client, g.Addr(), big); code != http.StatusNoContent {
		t.Fatalf("write once space returned after restart = %d %v, want 204", code, err)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		code, body, err := get(client, "http://"+g.Addr()+"/readyz")
		return code == http.StatusOK, fmt.Sprint(code, body, err)
	})
	if err := stop(); err != nil {
		t.Fatalf("stop after restart: %v", err)
	}
}

// TestStartOnFullDisk: a gateway started where the data dir cannot be
// created (no inode left: a full disk) waits for space, saying so in the
// log, instead of exiting (a crash loop under a supervisor); it starts once
// space returns, and stops cleanly (issue 14, problem 3).
func TestStartOnFullDisk(t *testing.T) {
	root := testutil.TmpfsOpts(t, "size=16m,nr_inodes=64")
	cfg := testConfig(t)
	cfg.Gateway.DataDir = root + "/data"
	fill := testutil.FillInodes(t, root)
	var logs syncBuffer
	g, err := New(cfg, NewLogger(LogConfig{Level: "info", Format: "text"}, &logs))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	waitFor(t, 5*time.Second, func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("Run on a full disk returned %v, want it to wait", err)
		default:
		}
		l := logs.String()
		return strings.Contains(l, "cannot start on a full disk; waiting for space") && strings.Contains(l, "no space left on device"), l
	})
	if err := os.RemoveAll(fill); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("Run returned once space returned: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("not ready within 15s of space returning")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// TestReadyzOutboxFullDisk: an outbox that cannot write (full disk) makes
// /readyz 503 with the outbox and the error, and is metered.
func TestReadyzOutboxFullDisk(t *testing.T) {
	dir := testutil.Tmpfs(t, 1<<20)
	g, err := New(testConfig(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	box, err := forward.OpenOutbox(dir, forward.KindSummaries, forward.OutboxConfig{MaxBytes: 4 * wal.MiB}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	g.outboxes = []*forward.Outbox{box}
	g.walOpen.Store(true)
	g.httpUp.Store(true)
	g.mqttUp.Store(true)
	if r := g.readiness(); !r.Ready {
		t.Fatalf("readiness before the disk filled: %+v", r)
	}
	filler := testutil.Fill(t, dir)
	rec := forward.Record{Value: []byte(strings.Repeat("v", 8000)), ID: "x-1"}
	if err := box.Append(context.Background(), []forward.Record{rec}); err == nil {
		t.Fatal("append on a full disk succeeded")
	}
	r := g.readiness()
	if r.Ready || !strings.HasPrefix(r.Reason, "cannot store outputs: outbox summaries: write failed: ") || !strings.Contains(r.Reason, "no space left on device") {
		t.Errorf("readiness with a full outbox disk: %+v", r)
	}
	mrec := httptest.NewRecorder()
	g.handleMetrics(mrec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(mrec.Body.String(), `runnel_forward_outbox_failing{kind="summaries"} 1`+"\n") {
		t.Error("metrics lack runnel_forward_outbox_failing 1 for the summaries outbox")
	}
	os.Remove(filler)
	if err := box.Append(context.Background(), []forward.Record{rec}); err != nil {
		t.Fatal(err)
	}
	if r := g.readiness(); !r.Ready {
		t.Errorf("readiness once space returned: %+v", r)
	}
}
