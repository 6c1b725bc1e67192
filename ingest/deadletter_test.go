package ingest

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/runnel-iot/runnel/wal"
)

func openTestDeadLetters(t testing.TB, dir string, cfg DeadLetterConfig, hook func()) *DeadLetters {
	t.Helper()
	d, err := openDeadLetters(dir, cfg, nil, hook)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// awaitWritten waits until n rejects are on disk.
func awaitWritten(t testing.TB, d *DeadLetters, n uint64) {
	t.Helper()
	awaitCond(t, func() string { return fmt.Sprintf("written %d of %d", d.written.Load(), n) },
		func() bool { return d.written.Load() >= n })
}

func testReject(i int, listener, reason, source string, at time.Time) Reject {
	return Reject{
		TimeNs: at.UnixNano(), Listener: listener, Source: source, Topic: "t",
		Reason: reason, Error: fmt.Sprintf("line %d, column 3: bad", i),
		Raw: []byte(fmt.Sprintf("payload %d", i)), RawBytes: 9 + len(fmt.Sprint(i)),
	}
}

func TestDeadLettersRecentFilters(t *testing.T) {
	d := openTestDeadLetters(t, t.TempDir(), DefaultDeadLetterConfig(), nil)
	t0 := time.Unix(1700000000, 0)
	listeners := []string{"mqtt", "udp", "http"}
	reasons := []string{"syntax", "bad_tag"}
	for i := range 60 {
		d.Add(testReject(i, listeners[i%3], reasons[i%2], fmt.Sprintf("dev-%d", i%5), t0.Add(time.Duration(i)*time.Second)))
	}
	awaitWritten(t, d, 60)
	cases := []struct {
		name  string
		limit int
		f     RejectFilter
		want  []int // indexes, newest first
	}{
		{"newest", 3, RejectFilter{}, []int{59, 58, 57}},
		{"listener", 4, RejectFilter{Listener: "udp"}, []int{58, 55, 52, 49}},
		{"reason and listener", 3, RejectFilter{Listener: "mqtt", Reason: "bad_tag"}, []int{57, 51, 45}},
		{"source", 100, RejectFilter{Source: "dev-4", Since: t0.Add(40 * time.Second)}, []int{59, 54, 49, 44}},
		{"since", 100, RejectFilter{Since: t0.Add(57 * time.Second)}, []int{59, 58, 57}},
		{"no match", 10, RejectFilter{Source: "dev-9"}, nil},
		{"zero limit", 0, RejectFilter{}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := d.Recent(tc.limit, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var idx []int
			for _, r := range got {
				var i int
				fmt.Sscanf(string(r.Raw), "payload %d", &i)
				want := testReject(i, listeners[i%3], reasons[i%2], fmt.Sprintf("dev-%d", i%5), t0.Add(time.Duration(i)*time.Second))
				if r.Error != want.Error || r.Topic != "t" || r.TimeNs != want.TimeNs || r.RawBytes != want.RawBytes {
					t.Errorf("record %+v, want %+v", r, want)
				}
				idx = append(idx, i)
			}
			if fmt.Sprint(idx) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", idx, tc.want)
			}
		})
	}
}

func TestDeadLettersCutRawAndReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dead")
	cfg := DefaultDeadLetterConfig()
	cfg.MaxRawBytes = 16
	d, err := OpenDeadLetters(dir, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw := bytes.Repeat([]byte("x"), 3000)
	d.Add(Reject{Listener: "http", Reason: "syntax", Raw: raw, RawBytes: 5000})
	d.Add(Reject{Listener: "udp", Reason: "too_large", Raw: raw})
	raw[0] = 'y' // Add copied it
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d.Add(Reject{}) // after Close: dropped, no panic
	if d.Count() != 3 || d.Dropped() != 1 {
		t.Errorf("count %d dropped %d", d.Count(), d.Dropped())
	}

	d = openTestDeadLetters(t, dir, cfg, nil)
	got, err := d.Recent(10, RejectFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Listener != "udp" || got[1].Listener != "http" {
		t.Fatalf("after reopen: %+v", got)
	}
	for i, want := range []int{3000, 5000} {
		if string(got[i].Raw) != "xxxxxxxxxxxxxxxx" || got[i].RawBytes != want || got[i].TimeNs == 0 {
			t.Errorf("record %d: raw %q raw_bytes %d time %d", i, got[i].Raw, got[i].RawBytes, got[i].TimeNs)
		}
	}
}

func TestDeadLettersQueueFullDropsWithoutBlocking(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	first := true
	hook := func() {
		if first {
			first = false
			entered <- struct{}{}
			<-release
		}
	}
	cfg := DefaultDeadLetterConfig()
	cfg.Queue = 4
	d := openTestDeadLetters(t, t.TempDir(), cfg, hook)
	d.Add(testReject(0, "udp", "syntax", "a", time.Now()))
	<-entered // the writer holds reject 0 and is stuck on the disk

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= 1000; i++ {
			d.Add(testReject(i, "udp", "syntax", "a", time.Now()))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Add blocked on a stuck writer")
	}
	if d.Dropped() != 1000-4 || d.Count() != 1001 {
		t.Errorf("dropped %d count %d, want 996 and 1001", d.Dropped(), d.Count())
	}
	close(release)
	awaitWritten(t, d, 5)
	got, err := d.Recent(100, RejectFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || string(got[0].Raw) != "payload 4" || string(got[4].Raw) != "payload 0" {
		t.Errorf("kept %d: %+v", len(got), got)
	}
}

func TestDeadLettersRetentionBoundsDisk(t *testing.T) {
	cfg := DefaultDeadLetterConfig()
	cfg.RetentionBytes = 256 * wal.KiB
	cfg.Queue = 1 << 14
	dir := t.TempDir()
	d := openTestDeadLetters(t, dir, cfg, nil)
	seg := deadLetterWALConfig(cfg).SegmentBytes
	raw := bytes.Repeat([]byte("env,device=x temp=oops 1\n"), 60) // 1.5 KB, cut to 1 KiB
	const n = 3000                                                // ~4 MB of records
	maxDisk := int64(0)
	for i := range n {
		r := testReject(i, "udp", "syntax", "a", time.Now())
		r.Raw = raw
		d.Add(r)
		if i%100 == 0 {
			maxDisk = max(maxDisk, d.Stats().DiskBytes)
		}
	}
	awaitWritten(t, d, n-d.Dropped())
	st := d.Stats()
	bound := int64(cfg.RetentionBytes + seg + deadLetterGroupBytes + 2*wal.KiB) // one segment, one group and its last record
	if max(maxDisk, st.DiskBytes) > bound || st.RemovedSegments == 0 {
		t.Errorf("disk %d (max seen %d), removed %d segments; want at most %d", st.DiskBytes, maxDisk, st.RemovedSegments, bound)
	}
	got, err := d.Recent(5, RejectFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || len(got[0].Raw) != 1024 || got[0].RawBytes != len(raw) {
		t.Fatalf("recent after retention: %d records", len(got))
	}
	// A filter that matches nothing reads a bounded amount and returns.
	if got, err := d.Recent(5, RejectFilter{Source: "nobody"}); err != nil || len(got) != 0 {
		t.Errorf("got %d, %v", len(got), err)
	}
}

func TestDeadLetterConfigValidate(t *testing.T) {
	cases := map[string]struct {
		mod  func(*DeadLetterConfig)
		keys []string
	}{
		"defaults":  {func(*DeadLetterConfig) {}, nil},
		"no raw":    {func(c *DeadLetterConfig) { c.MaxRawBytes = 0 }, nil},
		"tiny":      {func(c *DeadLetterConfig) { c.RetentionBytes = wal.KiB }, []string{"retention_bytes"}},
		"raw":       {func(c *DeadLetterConfig) { c.MaxRawBytes = 8 * wal.KiB }, []string{"max_raw_bytes"}},
		"queue":     {func(c *DeadLetterConfig) { c.Queue = 0 }, []string{"queue"}},
		"two wrong": {func(c *DeadLetterConfig) { c.MaxRawBytes, c.Queue = -1, -1 }, []string{"max_raw_bytes", "queue"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := DefaultDeadLetterConfig()
			tc.mod(&c)
			checkConfigKeys(t, c.Validate(), tc.keys)
		})
	}
	if err := deadLetterWALConfig(DefaultDeadLetterConfig()).Validate(); err != nil {
		t.Errorf("wal config: %v", err)
	}
}

// TestDeadLettersAsSink runs the UDP listener into a real dead-letter log.
func TestDeadLettersAsSink(t *testing.T) {
	d := openTestDeadLetters(t, t.TempDir(), DefaultDeadLetterConfig(), nil)
	u, _ := startUDP(t, udpTestConfig(), openTestWAL(t), d)
	c := dialUDP(t, u.Addr())
	if _, err := c.Write([]byte("env temp=1 1\nenv temp=x 1\n")); err != nil {
		t.Fatal(err)
	}
	awaitWritten(t, d, 1)
	got, err := d.Recent(1, RejectFilter{Listener: "udp", Source: c.LocalAddr().String()})
	if err != nil || len(got) != 1 || got[0].Reason != "syntax" || got[0].Error[:15] != "line 2, column " {
		t.Fatalf("got %+v, %v", got, err)
	}
}

// TestDeadLettersAddOwnsTopic: an MQTT reject's Topic is mochi's
// TopicName, an unsafe string over the packet's read buffer (payload
// included); a queued reject must not keep that buffer alive (a flood of
// bad 256 KiB publishes would pin queue × 256 KiB while the log catches up).
func TestDeadLettersAddOwnsTopic(t *testing.T) {
	d := &DeadLetters{cfg: DefaultDeadLetterConfig(), queue: make(chan Reject, 1)}
	buf := append([]byte("telemetry/x/y"), make([]byte, 60_000)...)
	topic := unsafe.String(&buf[0], len("telemetry/x/y")) // as mochi decodes it
	d.Add(Reject{Topic: topic, Raw: buf[13:20]})
	buf[0] = 'X'
	if r := <-d.queue; r.Topic != "telemetry/x/y" {
		t.Errorf("queued reject's topic %q changed with the packet buffer: it aliases (and pins) it", r.Topic)
	}
}
