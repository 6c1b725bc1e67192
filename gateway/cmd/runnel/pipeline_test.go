package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// postReading writes one reading over HTTP (one WAL record).
func postReading(t *testing.T, httpAddr string, v int, ts time.Time) {
	t.Helper()
	body := fmt.Sprintf("env,device=torn v=%d %d\n", v, ts.UnixNano())
	resp, err := http.Post("http://"+httpAddr+"/api/v2/write", "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write: %s", resp.Status)
	}
}

// windowCount sums the counts of the tumbling 5m windows of the test series.
func windowCount(t *testing.T, httpAddr string) uint64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/api/v1/windows?series=env,device=torn&field=v&size=5m&kind=tumbling&last=100")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Windows []struct{ Count uint64 }
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, w := range out.Windows {
		n += w.Count
	}
	return n
}

// TestLostTailAfterCleanStop is the reproduction of issue 14's problem 2
// against the built binary: 50 readings, a clean stop, the last 150 bytes
// of the newest WAL segment cut, a restart, 20 more readings: the windows
// count 70 (not 67: new readings reused indexes the checkpoint covered),
// and the loss is logged.
func TestLostTailAfterCleanStop(t *testing.T) {
	bin, env := binary(t)
	dir := t.TempDir()
	env = loopbackEnv(env, dir)
	base := time.Now().Add(-30 * time.Minute).Truncate(5 * time.Minute)

	p, started := startGateway(t, []string{bin}, env)
	for i := range 50 {
		postReading(t, started["http_addr"].(string), i, base.Add(time.Duration(i)*time.Second))
	}
	p.stop()

	walDir := filepath.Join(dir, "wal")
	ents, err := os.ReadDir(walDir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, e := range ents {
		if len(e.Name()) == 20 {
			segs = append(segs, e.Name())
		}
	}
	slices.Sort(segs)
	seg := filepath.Join(walDir, segs[len(segs)-1])
	fi, err := os.Stat(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(seg, fi.Size()-150); err != nil {
		t.Fatal(err)
	}

	p, started = startGateway(t, []string{bin}, env)
	defer p.stop()
	p.waitLog("wal replay done")
	httpAddr := started["http_addr"].(string)
	if n := windowCount(t, httpAddr); n != 50 {
		t.Fatalf("window count %d after the restart, want the checkpoint's 50", n)
	}
	for i := 50; i < 70; i++ {
		postReading(t, httpAddr, i, base.Add(time.Duration(i)*time.Second))
	}
	deadline := time.Now().Add(20 * time.Second)
	for n := windowCount(t, httpAddr); n != 70; n = windowCount(t, httpAddr) {
		if time.Now().After(deadline) {
			t.Fatalf("window count %d after 20 more readings, want 70", n)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	if !strings.Contains(p.logText(), "its tail was lost") {
		t.Fatalf("the lost tail is not logged:\n%s", p.logText())
	}
}

// lateLog is what GET /api/v1/late answers: the late readings listed
// (newest first) and how many this process added.
type lateLog struct {
	Total   uint64
	Rejects []struct{ Error string }
}

func getLate(t *testing.T, httpAddr string) lateLog {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/api/v1/late?limit=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out lateLog
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func lateCount(t *testing.T, httpAddr string) int { return len(getLate(t, httpAddr).Rejects) }

// TestReplayKeepsLateLogExact: late readings in the late log, then
// SIGKILL before any checkpoint covers them; the replay at restart must
// not add them again (it did, on every replay).
func TestReplayKeepsLateLogExact(t *testing.T) {
	bin, env := binary(t)
	dir := t.TempDir()
	env = append(loopbackEnv(env, dir), "RUNNEL_CHECKPOINT_INTERVAL=1h")
	base := time.Now().Add(-30 * time.Minute).Truncate(5 * time.Minute)

	p, started := startGateway(t, []string{bin}, env)
	httpAddr := started["http_addr"].(string)
	postReading(t, httpAddr, 1, base.Add(100*time.Second))
	postReading(t, httpAddr, 2, base.Add(10*time.Second)) // late
	postReading(t, httpAddr, 3, base.Add(20*time.Second)) // late
	deadline := time.Now().Add(20 * time.Second)
	for n := lateCount(t, httpAddr); n != 2; n = lateCount(t, httpAddr) {
		if time.Now().After(deadline) {
			t.Fatalf("late log lists %d readings, want 2", n)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	p.kill()

	p, started = startGateway(t, []string{bin}, env)
	defer p.stop()
	p.waitLog("wal replay done")
	httpAddr = started["http_addr"].(string)
	postReading(t, httpAddr, 4, base.Add(30*time.Second)) // late, after the restart
	deadline = time.Now().Add(20 * time.Second)
	l := getLate(t, httpAddr)
	for len(l.Rejects) == 0 || !strings.HasPrefix(l.Rejects[0].Error, "value 4 ") {
		if time.Now().After(deadline) {
			t.Fatalf("the late reading written after the restart is not listed: %+v", l)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
		l = getLate(t, httpAddr)
	}
	// The log is in order: the replay's additions come before it.
	if l.Total != 1 || len(l.Rejects) != 3 {
		t.Fatalf("after the replay and one more late reading: %d added by this process, %d listed; want 1 and 3", l.Total, len(l.Rejects))
	}
}
