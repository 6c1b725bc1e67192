package torture

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lateness is the allowed lateness the suite's gateways run with.
const lateness = int64(100 * time.Millisecond)

// config is the suite's gateway config: 1s windows (closed often, so
// summaries flow to Kafka) and 1h windows (one per series over a whole
// case, so its count and sum can be set against the WAL), no sliding
// windows or groups, and one alert rule on the suite's field.
const config = `
windows:
  tumbling: [1s, 1h]
  sliding: []
  groups: []
  allowed_lateness: 100ms
  idle_timeout: 1h
  series_ttl: 2h
alerts:
  rules_file: %s
`

const rulesFiring = `
rules:
  - name: tort_high
    match: {measurement: tort, field: v}
    op: ">"
    threshold: 0
    for: 0s
    severity: warning
`

const rulesChanged = `
rules:
  - name: tort_high
    match: {measurement: tort, field: v}
    op: "<"
    threshold: 0
    for: 0s
    severity: warning
`

// bench is one case's world: a data dir, a Kafka, the ledger and the load.
type bench struct {
	t       *testing.T
	dir     string
	config  string
	rules   string
	kafka   *kafka
	ledger  *ledger
	target  *target
	load    *load
	extra   []string
	rng     *rand.Rand
	excused map[int64]string
}

func newBench(t *testing.T, dir string, extra ...string) *bench {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfgDir := t.TempDir()
	b := &bench{t: t, dir: dir, kafka: startKafka(t), ledger: newLedger(), target: newTarget(),
		rules: filepath.Join(cfgDir, "rules.yaml"), config: filepath.Join(cfgDir, "gateway.yaml"),
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1)), excused: map[int64]string{}}
	b.writeRules(rulesFiring)
	if err := os.WriteFile(b.config, []byte(fmt.Sprintf(config, b.rules)), 0o600); err != nil {
		t.Fatal(err)
	}
	b.extra = append([]string{"RUNNEL_KAFKA_BROKERS=" + b.kafka.addr(), "RUNNEL_KAFKA_LINGER=5ms",
		"RUNNEL_KAFKA_REQUEST_TIMEOUT=3s", "RUNNEL_KAFKA_BACKOFF_MAX=1s"}, extra...)
	t.Logf("case %s: seed-free random timing; data in %s", t.Name(), dir)
	return b
}

func (b *bench) writeRules(s string) {
	if err := os.WriteFile(b.rules, []byte(s), 0o600); err != nil {
		b.t.Fatal(err)
	}
}

// startGateway starts the gateway (with a random checkpoint interval)
// and points the writers at it.
func (b *bench) startGateway() *proc {
	b.t.Helper()
	interval := []string{"50ms", "200ms", "1s", "5s", "30s"}[b.rng.IntN(5)]
	p := start(b.t, baseEnv(b.dir, append(b.extra, "RUNNEL_CHECKPOINT_INTERVAL="+interval)...), b.config)
	b.target.set(p.addr("mqtt_addr"), p.addr("http_addr"))
	return p
}

// startLoad starts the writers (2 MQTT QoS 1, 1 HTTP) on the current
// and every later gateway.
func (b *bench) startLoad() {
	now := time.Now().UnixMilli()
	base := now - 30*60*1000
	base -= base % (3600 * 1000) // every reading of a case in one 1h window
	b.load = startLoad(b.ledger, b.target, base, 2, 1)
}

// pause lets the load run for a random time in [lo, hi).
func (b *bench) pause(lo, hi time.Duration) {
	time.Sleep(lo + time.Duration(b.rng.Int64N(int64(hi-lo)))) // the fault's timing is the point: a random moment
}

// excuse marks every value sent so far as excused from the exactly-once
// check and from the windows' equality to the WAL (the case is about to
// damage the WAL on purpose: what the damaged records held may be missing
// from the WAL, yet already counted in windows a checkpoint covers).
func (b *bench) excuse() {
	b.ledger.mu.Lock()
	for v, s := range b.ledger.sent {
		b.excused[v] = s
	}
	b.ledger.mu.Unlock()
}

// finish stops the load, drains the gateway p into Kafka, stops it and
// runs every check; it returns the counts for the case's log line.
func (b *bench) finish(p *proc) {
	t := b.t
	t.Helper()
	b.load.end()
	b.target.set("", "")
	b.kafka.paused.Store(false)
	p.waitReady(60 * time.Second)
	p.stop()
	c := readWAL(t, b.dir)
	checkAcked(t, b.ledger.snapshot(), c, b.excused)
	b.ledger.mu.Lock()
	lost := lostWindows(c, b.excused, b.ledger.tsMs)
	b.ledger.mu.Unlock()
	checkOutboxes(t, b.dir)

	// A restart replays from the last checkpoint: its windows must equal
	// the WAL, and it drains what is left to Kafka.
	p = b.startGateway()
	p.waitLog("wal replay done", 60*time.Second)
	p.waitReady(60 * time.Second)
	checkWindows(t, p.addr("http_addr"), c, damaged(c, b.excused))
	want := expectedWindows(c)
	records, dups := checkKafka(t, b.kafka, want, lost, 60*time.Second)
	p.stop()
	sent, acked := b.ledger.counts()
	expected := 0
	for _, ws := range want {
		expected += len(ws)
	}
	t.Logf("%s: %d readings sent, %d acknowledged (%d excused by deliberate damage), %d in the WAL; "+
		"%d closed 1s windows expected in Kafka, %d summary records consumed, %d duplicates (at-least-once)",
		t.Name(), sent, acked, len(b.excused), len(c.copies), expected, records, dups)
}

// TestKillLoop SIGKILLs the gateway at random moments under load, with
// the load reaching it during replay and after ready and a random
// checkpoint interval each round.
func TestKillLoop(t *testing.T) {
	requireSuite(t)
	b := newBench(t, "")
	b.startLoad()
	n := rounds(5, 30)
	for i := range n {
		p := b.startGateway()
		if i%2 == 0 {
			p.waitLog("wal replay done", 60*time.Second) // this round's kill comes after replay
		}
		b.pause(200*time.Millisecond, 2*time.Second)
		p.kill()
	}
	b.finish(b.startGateway())
}

// segments returns the readings WAL's segment files, oldest first.
func segments(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "wal", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, f := range files {
		base := filepath.Base(f)
		if len(base) == 20 && strings.Trim(base, "0123456789") == "" {
			segs = append(segs, f)
		}
	}
	sort.Strings(segs)
	if len(segs) == 0 {
		t.Fatalf("no WAL segments in %s", dir)
	}
	return segs
}

// recordEnds returns the offsets at which the records of a tidwall/wal
// segment end (uvarint length, then the data).
func recordEnds(data []byte) []int {
	var ends []int
	for off := 0; off < len(data); {
		n, w := binary.Uvarint(data[off:])
		if w <= 0 || off+w+int(n) > len(data) {
			break
		}
		off += w + int(n)
		ends = append(ends, off)
	}
	return ends
}

// TestTornTail cuts the newest WAL segment at a random offset (on a
// record boundary every other round) after a clean stop or a kill, and
// flips bits in old and newest segments; the gateway must start, and
// every reading acknowledged after the damage must be stored and counted
// once, the windows equal to the WAL.
func TestTornTail(t *testing.T) {
	requireSuite(t)
	b := newBench(t, "")
	b.startLoad()
	n := rounds(4, 12)
	for i := range n {
		p := b.startGateway()
		p.waitReady(60 * time.Second)
		b.pause(500*time.Millisecond, 2*time.Second)
		if i%2 == 0 {
			p.stop()
		} else {
			p.kill()
		}
		b.excuse()
		segs := segments(t, b.dir)
		seg := segs[len(segs)-1]
		data, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case i%4 == 3 && len(segs) > 1: // a bit flip in an older segment
			old := segs[b.rng.IntN(len(segs)-1)]
			od, err := os.ReadFile(old)
			if err != nil || len(od) == 0 {
				t.Fatalf("read %s: %v", old, err)
			}
			od[b.rng.IntN(len(od))] ^= 1 << b.rng.IntN(8)
			os.WriteFile(old, od, 0o644)
			t.Logf("round %d: flipped a bit in %s", i, filepath.Base(old))
		case i%4 == 2 && len(data) > 0: // a bit flip in the newest segment
			data[b.rng.IntN(len(data))] ^= 1 << b.rng.IntN(8)
			os.WriteFile(seg, data, 0o644)
			t.Logf("round %d: flipped a bit in the newest segment", i)
		default:
			ends := recordEnds(data)
			cut := b.rng.IntN(len(data) + 1)
			if i%2 == 0 && len(ends) > 1 {
				cut = ends[len(ends)-2-b.rng.IntN(min(len(ends)-1, 5))] // drop 1 to 5 whole records
			}
			os.Truncate(seg, int64(cut))
			t.Logf("round %d: cut the newest segment from %d to %d bytes", i, len(data), cut)
		}
	}
	// Readings acknowledged after the last damage must all be kept.
	p := b.startGateway()
	p.waitReady(60 * time.Second)
	b.pause(time.Second, 2*time.Second)
	b.finish(p)
}

// requireRoot skips (or fails under REQUIRE_TEST_TOOLS=1) without root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("REQUIRE_TEST_TOOLS") == "1" {
			t.Fatal("the full-disk cases need root (tmpfs mounts)")
		}
		t.Skip("the full-disk cases need root (tmpfs mounts)")
	}
}

// mountTmpfs mounts a tmpfs of size bytes on dir until the test ends.
func mountTmpfs(t *testing.T, dir string, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("REQUIRE_TEST_TOOLS") == "1" {
			t.Fatalf("mount tmpfs on %s: %v %s", dir, err, out)
		}
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

func remount(t *testing.T, dir, size string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,size="+size, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s: %v %s", dir, err, out)
	}
}

// fill writes a file into dir until the file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	name := filepath.Join(dir, "ballast")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if err == syscall.ENOSPC || strings.Contains(err.Error(), "no space") {
				return name
			}
			t.Fatal(err)
		}
	}
}

// TestDiskFull fills, in turn, the file system under the data dir, the
// checkpoints dir and the outbox dir while the gateway runs under load;
// the gateway must stay up (or come back), hold, and resume on its own
// once space returns, losing no acknowledged reading. Kills in between.
func TestDiskFull(t *testing.T) {
	requireSuite(t)
	requireRoot(t)
	for _, sub := range []string{".", "checkpoints", "outbox"} {
		t.Run(map[string]string{".": "data"}[sub]+strings.Trim(sub, "."), func(t *testing.T) {
			dir := t.TempDir()
			mnt := filepath.Join(dir, sub)
			mountTmpfs(t, mnt, "48m")
			b := newBench(t, dir)
			b.startLoad()
			p := b.startGateway()
			p.waitReady(60 * time.Second)
			b.pause(500*time.Millisecond, time.Second)
			ballast := fill(t, mnt)
			// The gateway runs on a full disk: for a while, and through a kill.
			b.pause(2*time.Second, 4*time.Second)
			if !p.alive() {
				t.Errorf("the gateway exited on a full %s: %v\n%s", sub, p.err, tail(p.logText(), 20))
			} else {
				code, body := p.readyz()
				t.Logf("readyz on a full %s: %d %s", sub, code, body)
				// A full data dir stops the WAL accepting; a full outbox holds
				// the stream: either way the gateway is not ready, and says why.
				if sub != "checkpoints" && code != http.StatusServiceUnavailable {
					t.Errorf("readyz on a full %s: %d %s, want 503 with a reason", sub, code, body)
				}
				p.kill()
			}
			p = start(t, baseEnv(b.dir, append(b.extra, "RUNNEL_CHECKPOINT_INTERVAL=200ms")...), b.config)
			b.target.set(p.addr("mqtt_addr"), p.addr("http_addr"))
			b.pause(time.Second, 2*time.Second)
			if !p.alive() {
				t.Fatalf("the gateway does not start on a full %s: %v\n%s", sub, p.err, tail(p.logText(), 20))
			}
			os.Remove(ballast)
			remount(t, mnt, "256m")
			b.pause(time.Second, 2*time.Second)
			b.finish(p)
		})
	}
}

// TestKafkaSilent makes Kafka silent (it reads requests and answers
// none) for a while, with kills in between, then lets it answer again:
// every closed window reaches Kafka.
func TestKafkaSilent(t *testing.T) {
	requireSuite(t)
	b := newBench(t, "")
	b.startLoad()
	p := b.startGateway()
	p.waitReady(60 * time.Second)
	b.pause(time.Second, 2*time.Second)
	b.kafka.paused.Store(true)
	silent := time.Duration(rounds(8, 30)) * time.Second
	end := time.Now().Add(silent)
	for time.Now().Before(end) {
		b.pause(time.Second, 3*time.Second)
		p.kill()
		p = b.startGateway()
	}
	b.kafka.paused.Store(false)
	b.pause(time.Second, 2*time.Second)
	b.finish(p)
}

// TestReloadWhileFiring changes the alert rules with SIGHUP while the
// rule fires, then kills the gateway so the replay runs under the new
// rules: nothing counted twice, no outbox id twice, every reading kept.
func TestReloadWhileFiring(t *testing.T) {
	requireSuite(t)
	b := newBench(t, "")
	b.startLoad()
	for i := range rounds(2, 6) {
		p := b.startGateway()
		p.waitReady(60 * time.Second)
		b.pause(500*time.Millisecond, time.Second)
		if i%2 == 0 {
			b.writeRules(rulesChanged)
		} else {
			b.writeRules(rulesFiring)
		}
		p.signal(syscall.SIGHUP)
		p.waitLog("alert rules reloaded", 30*time.Second)
		b.pause(200*time.Millisecond, time.Second)
		p.kill()
	}
	b.finish(b.startGateway())
}
