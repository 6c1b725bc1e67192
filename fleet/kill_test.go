package fleet

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// buildRunnel builds the runnel binary once per test.
func buildRunnel(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "runnel")
	cmd := exec.Command("go", "build", "-o", bin, "./gateway/cmd/runnel")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startBinary runs `runnel fleet` as a child process against brokers.
func startBinary(t *testing.T, bin string, brokers []string, instance string) (*exec.Cmd, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := fmt.Sprintf(`fleet:
  instance: %s
  brokers: [%s]
  group_by: [site]
  grace: 2s
  session_timeout: 2s
  transaction_timeout: 5s
  http: %s
`, instance, strings.Join(brokers, ", "), addr)
	path := filepath.Join(t.TempDir(), instance+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs testutil.SyncBuffer
	cmd := exec.Command(bin, "fleet", "-config", path)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
				if code := cmd.ProcessState.ExitCode(); code != 0 {
					t.Errorf("instance %s: exit %d after SIGTERM, want 0", instance, code)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("instance %s did not stop within 20s of SIGTERM", instance)
				cmd.Process.Kill()
				<-done
			}
		}
		if t.Failed() {
			t.Logf("instance %s log:\n%s", instance, logs.String())
		}
	})
	return cmd, addr
}

// metric reads one metric of a running instance; -1 when unreachable.
func metric(addr, name string) int {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return -1
}

func waitMetric(t *testing.T, addr, name string, atLeast int) {
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, func() (bool, string) {
		n := metric(addr, name)
		return n >= atLeast, fmt.Sprintf("%s %s = %d, want >= %d", addr, name, n, atLeast)
	})
}

// TestFleetKillAndScale: three `runnel fleet` processes share the work;
// one is killed with SIGKILL mid-stream and a fourth joins later. A
// read_committed consumer of runnel.fleet sees every fleet window, each
// record (key, revision) exactly once, no window ever counting a record
// twice, and the final records with the brute-force totals.
func TestFleetKillAndScale(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs four processes")
	}
	bin := buildRunnel(t)
	c := newCluster(t)
	brokers := c.ListenAddrs()
	s := newSimSites(2, 3, 48, 6, 12)
	recs := s.records(t)
	e := s.expect("site")
	out := collect(t, brokers)

	var procs []*exec.Cmd
	var addrs []string
	for _, id := range []string{"a", "b", "c"} {
		p, addr := startBinary(t, bin, brokers, id)
		procs, addrs = append(procs, p), append(addrs, addr)
	}
	third := len(recs) / 3
	produce(t, brokers, recs[:third])
	testutil.WaitFor(t, 60*time.Second, func() (bool, string) {
		n := len(out.latest(t))
		return n > 0, fmt.Sprintf("%d fleet windows out", n)
	})
	// One instance is killed while it owns merge partitions and has
	// merged records.
	victim := -1
	testutil.WaitFor(t, 60*time.Second, func() (bool, string) {
		for i, a := range addrs {
			if metric(a, "runnel_fleet_merged_total") > 0 && metric(a, "runnel_fleet_owned_partitions") > 0 {
				victim = i
				return true, ""
			}
		}
		return false, "no instance has merged records yet"
	})
	if err := procs[victim].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	procs[victim].Wait()
	produce(t, brokers, recs[third:2*third])
	_, addrD := startBinary(t, bin, brokers, "d")
	// d joins and takes partitions, restoring their state from the changelog.
	waitMetric(t, addrD, "runnel_fleet_owned_partitions", 1)
	waitMetric(t, addrD, "runnel_fleet_restores_total", 1)
	// The same records again, as an at-least-once gateway resends them.
	var again []*kgo.Record
	for _, r := range recs[third-20 : third+20] {
		again = append(again, &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers})
	}
	produce(t, brokers, append(again, recs[2*third:]...))

	got := waitComplete(t, out, s, e, 120*time.Second)
	// b's partitions were taken over by restoring the changelog, not by
	// re-reading the input from its start.
	restored := 0
	for _, a := range append(slices.Delete(slices.Clone(addrs), victim, victim+1), addrD) {
		restored += max(0, metric(a, "runnel_fleet_restored_records_total"))
	}
	if restored == 0 {
		t.Error("no instance restored any changelog record after the kill")
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	seen := map[string]int{}
	for _, r := range out.recs {
		id, _ := header(r, "runnel-id")
		seen[id]++
		if seen[id] == 2 {
			t.Errorf("record %s (runnel-id %s) seen twice", r.Key, id)
		}
		var o Output
		if err := json.Unmarshal(r.Value, &o); err != nil {
			t.Fatal(err)
		}
		if vs, ok := e.values[string(r.Key)]; ok && o.Summary.Count > uint64(len(vs)) {
			t.Errorf("%s revision %d counts %d readings, more than the %d there are", r.Key, o.Revision, o.Summary.Count, len(vs))
		}
	}
	for k, vs := range e.values {
		o := got[k].Summary
		sum, mn, mx := 0.0, vs[0], vs[0]
		for _, v := range vs {
			sum, mn, mx = sum+v, min(mn, v), max(mx, v)
		}
		if o.Sum != sum || o.Min != mn || o.Max != mx {
			t.Errorf("%s: sum/min/max %v/%v/%v, want %v/%v/%v", k, o.Sum, o.Min, o.Max, sum, mn, mx)
		}
	}
	t.Logf("%d records on runnel.fleet for %d fleet windows", len(out.recs), len(got))
}
