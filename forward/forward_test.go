package forward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestForwardDeliversEachRecordOnce(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	cfg := testConfig(c.ListenAddrs())
	sums := openTestOutbox(t, dir, KindSummaries, cfg.Outbox.Summaries)
	alerts := openTestOutbox(t, dir, KindAlerts, cfg.Outbox.Alerts)
	r := startForwarder(t, cfg, sums, alerts)
	cons := startConsumer(t, c.ListenAddrs(), testTopics...)

	const n = 3000
	appendSeq(t, sums, "s", 0, n, 17, 100)
	// An alert with its own topic override, a nil key and an empty value.
	alert := Record{Topic: "runnel.sketches", Value: []byte{}, ID: "a-0000000", Headers: []Header{{Key: "severity", Value: []byte("critical")}, {Key: "nil", Value: nil}}}
	if err := alerts.Append(context.Background(), []Record{alert}); err != nil {
		t.Fatal(err)
	}
	recs := cons.waitIDs(t, 20*time.Second, "s", 0, n)
	recs = cons.waitIDs(t, 10*time.Second, "a", 0, 1)
	if d := duplicates(recs); len(d) != 0 {
		t.Errorf("duplicates on a healthy uplink: %v", d)
	}
	byID := map[string]got{}
	for _, g := range recs {
		byID[g.id] = g
	}
	for i := 0; i < n; i++ {
		want := seqRecord("s", i, 17)
		g := byID[want.ID]
		if g.key != string(want.Key) || g.value != string(want.Value) {
			t.Fatalf("record %s: key %q value %q, want %q %q", want.ID, g.key, g.value, want.Key, want.Value)
		}
		if len(g.headers) != 2 || g.headers[0].Key != IDHeader || g.headers[1].Key != "schema" || string(g.headers[1].Value) != "summary/v1" {
			t.Fatalf("record %s: headers %v", want.ID, g.headers)
		}
	}
	a := byID["a-0000000"]
	if a.key != "" || len(a.headers) != 3 || string(a.headers[1].Value) != "critical" || a.headers[2].Value != nil {
		t.Errorf("alert: %+v", a)
	}
	checkKeyOrder(t, recs)

	waitFor(t, 5*time.Second, "outboxes drained", func() (bool, string) {
		st := r.f.Status()
		s := st.Outboxes[KindSummaries]
		return s.Depth == 0 && s.AckedIndex == n && st.Outboxes[KindAlerts].Depth == 0, fmt.Sprintf("%+v", st)
	})
	st := r.f.Status()
	if !st.Enabled || !st.Connected || st.Acked != n+1 || st.Sent != n+1 || st.Retries != 0 || len(st.Errors) != 0 {
		t.Errorf("status: %+v", st)
	}
	if st.WireRecords != n+1 || st.WireBytes == 0 || st.WireBytes >= st.RawBytes {
		t.Errorf("wire: %d records, %d bytes (%d raw): want all records, compressed", st.WireRecords, st.WireBytes, st.RawBytes)
	}
	if st.Outboxes[KindSummaries].Appended != n || st.Outboxes[KindSummaries].Acked != n {
		t.Errorf("summaries outbox: %+v", st.Outboxes[KindSummaries])
	}
	_ = bytes.Equal
	_ = kfake.Ports
	_ = kgo.NewOffset
}

func TestForwardSurvivesOutage(t *testing.T) {
	c := newCluster(t)
	addrs := c.ListenAddrs()
	port := portOf(t, addrs[0])
	cfg := testConfig(addrs)
	cfg.RequestTimeout = time.Second
	sums := openTestOutbox(t, t.TempDir(), KindSummaries, cfg.Outbox.Summaries)
	r := startForwarder(t, cfg, sums)

	appendSeq(t, sums, "s", 0, 500, 11, 50)
	waitFor(t, 10*time.Second, "first 500 acknowledged", func() (bool, string) {
		s := sums.Stats()
		return s.AckedIndex == 500, fmt.Sprintf("%+v", s)
	})
	c.Close()

	// The uplink is gone: appends go on, at disk speed.
	start := time.Now()
	for i := 500; i < 1500; i += 50 {
		t0 := time.Now()
		appendSeq(t, sums, "s", i, i+50, 11, 50)
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("append during the outage took %s", d)
		}
	}
	t.Logf("1000 records appended during the outage in %s", time.Since(start))
	waitFor(t, 10*time.Second, "failed attempts counted", func() (bool, string) {
		st := r.f.Status()
		return st.Retries > 0 && !st.Connected && st.LastError != "", fmt.Sprintf("%+v", st)
	})
	if d := sums.Stats().Depth; d != 1000 {
		t.Errorf("depth during the outage %d, want 1000", d)
	}

	// A new cluster on the same port: the backlog drains into it.
	c2 := newCluster(t, kfake.Ports(port))
	cons := startConsumer(t, c2.ListenAddrs(), testTopics[0])
	recs := cons.waitIDs(t, 30*time.Second, "s", 500, 1500)
	checkKeyOrder(t, recs)
	waitFor(t, 5*time.Second, "drained", func() (bool, string) {
		s := sums.Stats()
		return s.Depth == 0 && s.AckedIndex == 1500, fmt.Sprintf("%+v", s)
	})
	st := r.f.Status()
	if !st.Connected || st.Errors[ErrKindTimeout]+st.Errors[ErrKindNetwork] == 0 {
		t.Errorf("status after recovery: %+v", st)
	}
	t.Logf("errors during the outage: %v, retries %d", st.Errors, st.Retries)
}

func portOf(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestForwardRestart stops the forwarder and the outbox mid-stream and
// reopens them: every id arrives, and only entries after the persisted
// acknowledged position can be duplicated.
func TestForwardRestart(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	cfg := testConfig(c.ListenAddrs())
	cons := startConsumer(t, c.ListenAddrs(), testTopics[0])

	o1, err := OpenOutbox(dir, KindSummaries, cfg.Outbox.Summaries, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r1 := startForwarder(t, cfg, o1)
	const half, n = 3000, 6000
	appendSeq(t, o1, "s", 0, 1000, 9, 50)
	waitFor(t, 10*time.Second, "first 1000 acknowledged", func() (bool, string) {
		s := o1.Stats()
		return s.AckedIndex == 1000, fmt.Sprintf("%+v", s)
	})
	// Stop while a round is in flight; appends go on without a forwarder.
	appendSeq(t, o1, "s", 1000, 1500, 9, 500)
	r1.stop(t)
	appendSeq(t, o1, "s", 1500, half, 9, 50)
	if err := o1.Close(); err != nil {
		t.Fatal(err)
	}

	o2 := openTestOutbox(t, dir, KindSummaries, cfg.Outbox.Summaries)
	acked := o2.Stats().AckedIndex
	if acked < 1000 || acked >= half {
		t.Fatalf("persisted acknowledged position %d after a stop mid-stream (1000 to 1500 in flight, %d appended)", acked, half)
	}
	appendSeq(t, o2, "s", half, n, 9, 50)
	startForwarder(t, cfg, o2)
	recs := cons.waitIDs(t, 20*time.Second, "s", 0, n)
	checkKeyOrder(t, recs)
	for id := range duplicates(recs) {
		seq, _ := strconv.Atoi(id[2:])
		if uint64(seq+1) <= acked {
			t.Errorf("%s (index %d) duplicated, though the persisted position %d covers it", id, seq+1, acked)
		}
	}
	t.Logf("stopped at acknowledged index %d; %d ids duplicated", acked, len(duplicates(recs)))
}

// TestForwardCrash snapshots the outbox directory while it is being
// forwarded, as a crash would leave it, and forwards the snapshot: every
// id arrives, duplicates only after the snapshot's persisted position.
func TestForwardCrash(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	cfg := testConfig(c.ListenAddrs())
	cons := startConsumer(t, c.ListenAddrs(), testTopics[0])
	o := openTestOutbox(t, dir, KindSummaries, cfg.Outbox.Summaries)
	r := startForwarder(t, cfg, o)
	const n = 4000
	crash := t.TempDir()
	copied := false
	for i := 0; i < n; i += 500 {
		appendSeq(t, o, "s", i, i+500, 9, 500)
		if i == 2000 {
			// The forwarder is busy with this append's round, and the
			// persisted position trails what Kafka acknowledged.
			copyTree(t, filepath.Join(dir, KindSummaries), filepath.Join(crash, KindSummaries))
			copied = true
		}
		if i == 1000 {
			waitFor(t, 10*time.Second, "position persisted", func() (bool, string) {
				o.mu.Lock()
				defer o.mu.Unlock()
				return o.persisted == 1500, fmt.Sprintf("persisted %d, acknowledged %d", o.persisted, o.done)
			})
		}
	}
	cons.waitIDs(t, 20*time.Second, "s", 0, n)
	r.stop(t)
	if !copied {
		t.Fatal("no snapshot taken")
	}

	// The snapshot is what a crash would have left on disk.
	oc := openTestOutbox(t, crash, KindSummaries, cfg.Outbox.Summaries)
	s := oc.Stats()
	last := s.LastIndex
	t.Logf("snapshot: acknowledged index %d, last index %d", s.AckedIndex, last)
	if s.AckedIndex < 1500 || last < 2500 {
		t.Fatalf("snapshot lost what was persisted: %+v", s)
	}
	before := len(cons.snapshot())
	startForwarder(t, cfg, oc)
	waitFor(t, 20*time.Second, "snapshot forwarded", func() (bool, string) {
		s := oc.Stats()
		return s.Depth == 0, fmt.Sprintf("%+v", s)
	})
	waitFor(t, 10*time.Second, "resent records consumed", func() (bool, string) {
		got := len(cons.snapshot()) - before
		return uint64(got) == last-s.AckedIndex, fmt.Sprintf("%d of %d", got, last-s.AckedIndex)
	})
	for id, cnt := range duplicates(cons.snapshot()) {
		seq, _ := strconv.Atoi(id[2:])
		if uint64(seq+1) <= s.AckedIndex {
			t.Errorf("%s (index %d) sent %d times, though the snapshot's persisted position %d covers it", id, seq+1, cnt, s.AckedIndex)
		}
	}
}

func copyTree(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file renamed away mid-copy, as a crash might
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o750)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		return os.WriteFile(dst, data, 0o640)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestForwardSASL(t *testing.T) {
	c := newCluster(t, kfake.EnableSASL(), kfake.Superuser(SASLPlain, "gw", "right"))
	dir := t.TempDir()
	cfg := testConfig(c.ListenAddrs())
	cfg.SASL = SASLConfig{Mechanism: SASLPlain, Username: "gw", Password: "wrong"}
	o := openTestOutbox(t, dir, KindAlerts, cfg.Outbox.Alerts)
	appendSeq(t, o, "a", 0, 100, 3, 100)
	r := startForwarder(t, cfg, o)
	// kfake closes the connection on a failed SASL handshake where Kafka
	// answers SASL_AUTHENTICATION_FAILED (counted as auth, see
	// TestClassify), so here the refusal shows as failed attempts.
	waitFor(t, 15*time.Second, "failed attempts counted", func() (bool, string) {
		st := r.f.Status()
		return st.Retries >= 2 && len(st.Errors) > 0 && !st.Connected && st.LastError != "", fmt.Sprintf("%+v", st)
	})
	if s := o.Stats(); s.Acked != 0 || s.Depth != 100 {
		t.Fatalf("delivered with a wrong password: %+v", s)
	}
	r.stop(t)

	cfg.SASL.Password = "right"
	r = startForwarder(t, cfg, o)
	waitFor(t, 15*time.Second, "delivered", func() (bool, string) {
		s := o.Stats()
		return s.Depth == 0 && s.Acked == 100, fmt.Sprintf("%+v", s)
	})
	if !r.f.Status().Connected {
		t.Errorf("not connected after delivering")
	}
}

// TestForwardRecordTooLarge: a record larger than a batch is dropped and
// counted after one lone retry; its neighbours are delivered in order.
func TestForwardRecordTooLarge(t *testing.T) {
	c := newCluster(t)
	cfg := testConfig(c.ListenAddrs())
	cfg.BatchMaxBytes = 16 * 1024
	o := openTestOutbox(t, t.TempDir(), KindSummaries, cfg.Outbox.Summaries)
	cons := startConsumer(t, c.ListenAddrs(), testTopics[0])
	appendSeq(t, o, "s", 0, 100, 3, 100)
	big := seqRecord("s", 100, 3)
	big.Value = make([]byte, 40*1024)
	if err := o.Append(context.Background(), []Record{big}); err != nil {
		t.Fatal(err)
	}
	appendSeq(t, o, "s", 101, 200, 3, 99)
	r := startForwarder(t, cfg, o)
	waitFor(t, 15*time.Second, "drained", func() (bool, string) {
		s := o.Stats()
		return s.Depth == 0, fmt.Sprintf("%+v", s)
	})
	recs := cons.waitIDs(t, 10*time.Second, "s", 101, 200)
	if missing := missingIDs(recs, "s", 0, 100); len(missing) != 0 {
		t.Errorf("missing %v", missing)
	}
	if !slices.ContainsFunc(missingIDs(recs, "s", 100, 101), func(string) bool { return true }) {
		t.Errorf("the oversized record was delivered")
	}
	checkKeyOrder(t, recs)
	st := r.f.Status()
	if s := o.Stats(); s.Undeliverable != 1 || s.Acked != 199 || st.Errors[ErrKindRecordTooLarge] == 0 {
		t.Errorf("outbox %+v, errors %v", s, st.Errors)
	}
}

func TestForwardDisabled(t *testing.T) {
	o := openTestOutbox(t, t.TempDir(), KindSketches, smallOutbox(""))
	f, err := New(DefaultKafkaConfig(), []*Outbox{o}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	appendSeq(t, o, "k", 0, 10, 2, 10)
	if st := f.Status(); st.Enabled || st.Connected || st.Outboxes[KindSketches].Depth != 10 {
		t.Errorf("status: %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestNewRefuses(t *testing.T) {
	dir := t.TempDir()
	a := openTestOutbox(t, dir, KindAlerts, smallOutbox(""))
	other := openTestOutbox(t, dir, "custom", smallOutbox(""))
	cfg := testConfig([]string{"127.0.0.1:9092"})
	if _, err := New(cfg, []*Outbox{a, a}, nil); err == nil {
		t.Error("two outboxes of one kind accepted")
	}
	if _, err := New(cfg, []*Outbox{other}, nil); err == nil {
		t.Error("an outbox kind without a topic accepted")
	}
	bad := cfg
	bad.TLS = TLSConfig{Enabled: true, CAFile: filepath.Join(dir, "missing.pem")}
	_, err := New(bad, []*Outbox{a}, nil)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.ConfigKey() != "tls.ca_file" {
		t.Errorf("missing CA file: %v", err)
	}
	bad = cfg
	bad.Compression = "brotli"
	if _, err := New(bad, nil, nil); !errors.As(err, &ce) || ce.Key != "compression" {
		t.Errorf("bad compression: %v", err)
	}
	f, err := New(cfg, []*Outbox{a}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, []*Outbox{a}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	waitFor(t, 5*time.Second, "outbox attached", func() (bool, string) { return a.attached.Load(), "" })
	if err := g.Run(ctx); err == nil {
		t.Error("a second forwarder drained the same outbox")
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}
