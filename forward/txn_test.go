package forward

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// eosConfig is testConfig in exactly_once mode.
func eosConfig(brokers []string) KafkaConfig {
	c := testConfig(brokers)
	c.Delivery = DeliveryExactlyOnce
	return c
}

func newEOSCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	return newCluster(t, append([]kfake.Opt{kfake.NumBrokers(3)}, opts...)...)
}

func readCommitted(t testing.TB, c *kfake.Cluster, topics ...string) *consumer {
	return startConsumerWith(t, c.ListenAddrs(), []kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadCommitted())}, topics...)
}

// exactlyOnce checks that every id prefix-<from..to-1> was consumed
// exactly once, in per-key order.
func exactlyOnce(t testing.TB, recs []got, prefix string, from, to int) {
	t.Helper()
	var mine []got
	for _, r := range recs {
		if len(r.id) > len(prefix) && r.id[:len(prefix)+1] == prefix+"-" {
			mine = append(mine, r)
		}
	}
	if d := duplicates(mine); len(d) > 0 {
		t.Errorf("%s: %d ids consumed more than once (read_committed), e.g. %v", prefix, len(d), firstKey(d))
	}
	if m := missingIDs(mine, prefix, from, to); len(m) > 0 {
		t.Errorf("%s: %d ids missing, first %s", prefix, len(m), m[0])
	}
	checkKeyOrder(t, mine)
}

func firstKey(m map[string]int) string {
	for k := range m {
		return k
	}
	return ""
}

// openOutboxes opens the three outboxes under dir.
func openOutboxes(t testing.TB, dir string) []*Outbox {
	var out []*Outbox
	for _, k := range []string{KindSummaries, KindAlerts, KindSketches} {
		out = append(out, openTestOutbox(t, dir, k, OutboxConfig{MaxBytes: 16 << 20}))
	}
	return out
}

// TestExactlyOnceForwards: three outboxes forwarded by transactional
// producers to a 3-broker cluster; a read_committed consumer sees every
// record once, in per-key order; the positions are committed in Kafka.
func TestExactlyOnceForwards(t *testing.T) {
	c := newEOSCluster(t)
	cfg := eosConfig(c.ListenAddrs())
	boxes := openOutboxes(t, t.TempDir())
	cons := readCommitted(t, c, testTopics...)
	r := startForwarder(t, cfg, boxes...)
	const n = 2000
	for i, o := range boxes {
		appendSeq(t, o, fmt.Sprintf("b%d", i), 0, n, 7, 50)
	}
	for i := range boxes {
		cons.waitIDs(t, 30*time.Second, fmt.Sprintf("b%d", i), 0, n)
	}
	waitFor(t, 10*time.Second, "committed positions", func() (bool, string) {
		st := r.f.Status()
		for _, o := range boxes {
			if st.Committed[o.Kind()] != n || st.Outboxes[o.Kind()].AckedIndex != n {
				return false, fmt.Sprintf("%+v", st)
			}
		}
		return true, ""
	})
	recs := cons.snapshot()
	for i := range boxes {
		exactlyOnce(t, recs, fmt.Sprintf("b%d", i), 0, n)
	}
	st := r.f.Status()
	if st.Delivery != DeliveryExactlyOnce || st.TxnCommitted == 0 || st.TxnRecords != 3*n || st.Fenced {
		t.Errorf("status: delivery %s, committed %d, records %d, fenced %v", st.Delivery, st.TxnCommitted, st.TxnRecords, st.Fenced)
	}
	t.Logf("%d transactions for %d records", st.TxnCommitted, st.TxnRecords)
}

// copyDir copies an outbox directory tree (a snapshot of the disk, as a
// crashed gateway would leave it).
func copyDir(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestExactlyOnceCrashAfterCommit: a gateway killed after Kafka committed
// but before the local position was written. Simulated by a snapshot of
// the outbox taken before forwarding: a new forwarder on it must resume
// from Kafka's committed position and send nothing again.
func TestExactlyOnceCrashAfterCommit(t *testing.T) {
	c := newEOSCluster(t)
	cfg := eosConfig(c.ListenAddrs())
	dir, snap := t.TempDir(), t.TempDir()
	o := openTestOutbox(t, dir, KindSummaries, OutboxConfig{MaxBytes: 16 << 20})
	const n = 500
	appendSeq(t, o, "s", 0, n, 5, 50)
	o.Close()
	copyDir(t, dir, snap) // the local position: 0
	o = openTestOutbox(t, dir, KindSummaries, OutboxConfig{MaxBytes: 16 << 20})
	r := startForwarder(t, cfg, o)
	waitFor(t, 20*time.Second, "committed", func() (bool, string) {
		st := r.f.Status()
		return st.Committed[KindSummaries] == n, fmt.Sprintf("%+v", st)
	})
	r.stop(t)

	o2 := openTestOutbox(t, snap, KindSummaries, OutboxConfig{MaxBytes: 16 << 20})
	if p := o2.position(); p != 0 {
		t.Fatalf("snapshot position %d, want 0", p)
	}
	appendSeq(t, o2, "s", n, n+100, 5, 50)
	r2 := startForwarder(t, cfg, o2)
	cons := readCommitted(t, c, testTopics[0])
	recs := cons.waitIDs(t, 20*time.Second, "s", 0, n+100)
	exactlyOnce(t, recs, "s", 0, n+100)
	st := r2.f.Status()
	if st.TxnRecords != 100 {
		t.Errorf("restarted forwarder sent %d records, want the 100 new ones only", st.TxnRecords)
	}
	if got := o2.Stats().AckedIndex; got != n+100 {
		t.Errorf("local position %d, want %d", got, n+100)
	}
}

// TestExactlyOnceCrashBeforeCommit: a gateway killed between produce and
// commit leaves an open transaction holding records. Simulated by a
// producer with the forwarder's transactional id that produces the
// outbox's records and is abandoned; a new forwarder fences it (its
// transaction is aborted) and sends them once.
func TestExactlyOnceCrashBeforeCommit(t *testing.T) {
	c := newEOSCluster(t)
	cfg := eosConfig(c.ListenAddrs())
	o := openTestOutbox(t, t.TempDir(), KindSummaries, OutboxConfig{MaxBytes: 16 << 20})
	const n = 300
	appendSeq(t, o, "s", 0, n, 5, 50)

	old, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.TransactionalID("runnel-"+cfg.ClientID+"-"+KindSummaries),
		kgo.TransactionTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		rec := (&sender{topic: testTopics[0]}).kafkaRecord(ptr(seqRecord("s", i, 5)))
		if err := old.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// Abandoned: no commit, no abort (the process died).

	cons := readCommitted(t, c, testTopics[0])
	r := startForwarder(t, cfg, o)
	recs := cons.waitIDs(t, 20*time.Second, "s", 0, n)
	waitFor(t, 10*time.Second, "committed", func() (bool, string) {
		st := r.f.Status()
		return st.Committed[KindSummaries] == n, fmt.Sprintf("%+v", st)
	})
	exactlyOnce(t, cons.snapshot(), "s", 0, n)
	_ = recs
}

func ptr[T any](v T) *T { return &v }

// TestExactlyOnceFenced: a second forwarder with the same client id (a
// second gateway process with the same id, on a copy of the disk) fences
// the first, which stops forwarding and says so in its Status; the second
// goes on, and records are seen once.
func TestExactlyOnceFenced(t *testing.T) {
	c := newEOSCluster(t)
	cfg := eosConfig(c.ListenAddrs())
	dir1, dir2 := t.TempDir(), t.TempDir()
	o1 := openTestOutbox(t, dir1, KindSummaries, OutboxConfig{MaxBytes: 16 << 20})
	appendSeq(t, o1, "s", 0, 200, 5, 50)
	o1.Close()
	copyDir(t, dir1, dir2)
	o1 = openTestOutbox(t, dir1, KindSummaries, OutboxConfig{MaxBytes: 16 << 20})
	r1 := startForwarder(t, cfg, o1)
	waitFor(t, 20*time.Second, "first committed", func() (bool, string) {
		st := r1.f.Status()
		return st.Committed[KindSummaries] == 200, fmt.Sprintf("%+v", st)
	})

	o2 := openTestOutbox(t, dir2, KindSummaries, OutboxConfig{MaxBytes: 16 << 20})
	r2 := startForwarder(t, cfg, o2)
	appendSeq(t, o2, "s", 200, 300, 5, 50)
	waitFor(t, 20*time.Second, "second committed", func() (bool, string) {
		st := r2.f.Status()
		return st.Committed[KindSummaries] == 300, fmt.Sprintf("%+v", st)
	})
	// The first one learns it was fenced at its next transaction.
	appendSeq(t, o1, "x", 0, 100, 5, 50)
	waitFor(t, 20*time.Second, "first fenced", func() (bool, string) {
		st := r1.f.Status()
		return st.Fenced, fmt.Sprintf("%+v", st)
	})
	st1 := r1.f.Status()
	if st1.TxnFenced != 1 || st1.FencedReason == "" || st1.Committed[KindSummaries] != 200 {
		t.Errorf("fenced status: %d fenced, reason %q, committed %d", st1.TxnFenced, st1.FencedReason, st1.Committed[KindSummaries])
	}
	t.Logf("fenced: %s", st1.FencedReason)
	// The second is unaffected.
	appendSeq(t, o2, "s", 300, 400, 5, 50)
	waitFor(t, 20*time.Second, "second committed after fencing", func() (bool, string) {
		st := r2.f.Status()
		return st.Committed[KindSummaries] == 400 && !st.Fenced, fmt.Sprintf("%+v", st)
	})
	cons := readCommitted(t, c, testTopics[0])
	recs := cons.waitIDs(t, 20*time.Second, "s", 0, 400)
	exactlyOnce(t, recs, "s", 0, 400)
	for _, r := range recs {
		if r.id[0] == 'x' {
			t.Fatalf("the fenced forwarder's record %s was committed", r.id)
		}
	}
}

// silentFor makes every broker answer nothing (connections stay open) from
// now for d: an outage of the uplink or a paused cluster.
func silentFor(c *kfake.Cluster, d time.Duration) *atomic.Int64 {
	until := time.Now().Add(d)
	var hits atomic.Int64
	c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if time.Now().Before(until) {
			hits.Add(1)
			return nil, nil, true
		}
		return nil, nil, false
	})
	return &hits
}

// midStream waits until f has committed a transaction: an outage that
// starts while the forwarder is still making its first connection finds
// no transaction to abort (a fixed 100 ms sleep saw that under load).
func midStream(t *testing.T, f *Forwarder) {
	waitFor(t, 30*time.Second, "a transaction committed", func() (bool, string) {
		st := f.Status()
		return st.TxnCommitted > 0, fmt.Sprintf("%+v", st)
	})
}

// TestExactlyOnceThroughFaults streams records into two outboxes while the
// 3-broker cluster misbehaves; a read_committed consumer must see every
// record exactly once, in per-key order, and the forwarder must never
// consider itself fenced.
func TestExactlyOnceThroughFaults(t *testing.T) {
	cases := []struct {
		name       string
		txnTimeout time.Duration
		// during injects the faults until stop; it closes started once
		// they are on (the stream waits for that at its halfway point).
		during func(t *testing.T, c *kfake.Cluster, f *Forwarder, started chan<- struct{}, stop <-chan struct{}) int64
		aborts bool // transactions must have been aborted
	}{
		{
			name: "error responses",
			during: func(t *testing.T, c *kfake.Cluster, f *Forwarder, started chan<- struct{}, stop <-chan struct{}) int64 {
				hits := faultEvery(c, 3, 8, func(req kmsg.Request) (kmsg.Response, error, bool) {
					return produceErrorResponse(req, kerr.UnknownServerError.Code), nil, true
				})
				close(started)
				<-stop
				return hits.Load()
			},
			aborts: true,
		},
		{
			name: "connections closed",
			during: func(t *testing.T, c *kfake.Cluster, f *Forwarder, started chan<- struct{}, stop <-chan struct{}) int64 {
				var seen, hits atomic.Int64
				c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
					c.KeepControl()
					if seen.Add(1)%7 != 0 || hits.Load() >= 6 {
						return nil, nil, false
					}
					hits.Add(1)
					return nil, errors.New("injected"), true
				})
				close(started)
				<-stop
				return hits.Load()
			},
		},
		{
			name: "broker outage and return",
			during: func(t *testing.T, c *kfake.Cluster, f *Forwarder, started chan<- struct{}, stop <-chan struct{}) int64 {
				midStream(t, f)
				hits := silentFor(c, 3*time.Second)
				close(started)
				<-stop
				return hits.Load()
			},
			aborts: true,
		},
		{
			name:       "transaction timeout while offline",
			txnTimeout: time.Second,
			during: func(t *testing.T, c *kfake.Cluster, f *Forwarder, started chan<- struct{}, stop <-chan struct{}) int64 {
				midStream(t, f)
				hits := silentFor(c, 4*time.Second)
				close(started)
				<-stop
				return hits.Load()
			},
			aborts: true,
		},
		{
			name: "coordinator and leaders move",
			during: func(t *testing.T, c *kfake.Cluster, f *Forwarder, started chan<- struct{}, stop <-chan struct{}) int64 {
				close(started)
				var n int64
				tick := time.NewTicker(30 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return n
					case <-tick.C:
					}
					n++
					switch n % 3 {
					case 0:
						c.RehashCoordinators()
					case 1:
						c.ShufflePartitionLeaders()
					default:
						if err := c.MoveTopicPartition(testTopics[0], int32(n%3), int32(n%3)); err != nil {
							t.Errorf("move: %v", err)
						}
					}
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newEOSCluster(t)
			cfg := eosConfig(c.ListenAddrs())
			cfg.RequestTimeout = 700 * time.Millisecond
			dir := t.TempDir()
			sums := openTestOutbox(t, dir, KindSummaries, OutboxConfig{MaxBytes: 16 << 20})
			alrt := openTestOutbox(t, dir, KindAlerts, OutboxConfig{MaxBytes: 16 << 20})
			f, err := New(cfg, []*Outbox{sums, alrt}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			f.txnTimeoutOverride = tc.txnTimeout
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- f.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
			cons := readCommitted(t, c, testTopics[0], testTopics[1])

			stop, started := make(chan struct{}), make(chan struct{})
			var injected int64
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				injected = tc.during(t, c, f, started, stop)
			}()
			const n = 3000
			for i := 0; i < n; i += 30 {
				if i == n/2 {
					select { // half the stream after the faults are on
					case <-started:
					case <-time.After(30 * time.Second):
						t.Fatal("the faults did not start within 30s")
					}
				}
				appendSeq(t, sums, "s", i, i+30, 13, 30)
				appendSeq(t, alrt, "a", i, i+30, 7, 30)
				time.Sleep(time.Millisecond) // a stream, not one burst: faults land mid-flow
			}
			waitFor(t, 60*time.Second, "outboxes committed", func() (bool, string) {
				st := f.Status()
				return st.Committed[KindSummaries] == n && st.Committed[KindAlerts] == n, fmt.Sprintf("%+v", st)
			})
			close(stop)
			wg.Wait()
			recs := cons.waitIDs(t, 20*time.Second, "s", 0, n)
			recs = append(recs, cons.waitIDs(t, 20*time.Second, "a", 0, n)...)
			recs = cons.snapshot()
			exactlyOnce(t, recs, "s", 0, n)
			exactlyOnce(t, recs, "a", 0, n)
			st := f.Status()
			t.Logf("injected %d faults; transactions committed %d aborted %d; retries %d errors %v; last error %q",
				injected, st.TxnCommitted, st.TxnAborted, st.Retries, st.Errors, st.LastError)
			if injected == 0 {
				t.Fatalf("no fault was injected")
			}
			if st.Fenced {
				t.Errorf("fenced: %s", st.FencedReason)
			}
			// The outage must have hit the forwarder: a transaction in
			// flight aborted, or the uplink probe found the link silent
			// and held the forwarder before one began. Which of the two
			// depends on where in its round the silence starts (the
			// probe alone was seen in about one run in four).
			if tc.aborts && st.TxnAborted == 0 && st.ProbeFailures == 0 {
				t.Errorf("the outage went unnoticed: no transaction aborted, no probe failed")
			}
			if s := sums.Stats(); s.Acked != n || s.Undeliverable != 0 || s.Dropped != 0 || s.AckedIndex != n {
				t.Errorf("outbox: %+v", s)
			}
		})
	}
}

// TestExactlyOnceRecordTooLarge: a record larger than a batch fails its
// transaction, which is aborted; it is then sent alone once more, and
// skipped and counted; its neighbours are committed once each, in order.
func TestExactlyOnceRecordTooLarge(t *testing.T) {
	c := newEOSCluster(t)
	cfg := eosConfig(c.ListenAddrs())
	cfg.BatchMaxBytes = 16 * 1024
	o := openTestOutbox(t, t.TempDir(), KindSummaries, OutboxConfig{MaxBytes: 16 << 20})
	cons := readCommitted(t, c, testTopics[0])
	appendSeq(t, o, "s", 0, 100, 3, 100)
	big := seqRecord("s", 100, 3)
	big.Value = make([]byte, 40*1024)
	if err := o.Append(context.Background(), []Record{big}); err != nil {
		t.Fatal(err)
	}
	appendSeq(t, o, "s", 101, 200, 3, 99)
	r := startForwarder(t, cfg, o)
	waitFor(t, 20*time.Second, "committed", func() (bool, string) {
		st := r.f.Status()
		return st.Committed[KindSummaries] == 200, fmt.Sprintf("%+v", st)
	})
	recs := cons.waitIDs(t, 10*time.Second, "s", 101, 200)
	recs = cons.snapshot()
	exactlyOnce(t, recs, "s", 0, 100)
	exactlyOnce(t, recs, "s", 101, 200)
	if len(missingIDs(recs, "s", 100, 101)) != 1 {
		t.Errorf("the oversized record was delivered")
	}
	st := r.f.Status()
	if s := o.Stats(); s.Undeliverable != 1 || s.Acked != 199 || st.Errors[ErrKindRecordTooLarge] == 0 || st.TxnAborted == 0 {
		t.Errorf("outbox %+v, errors %v, aborted %d", s, st.Errors, st.TxnAborted)
	}
}

// TestExactlyOnceDropOldest: while Kafka is silent a small drop_oldest
// outbox drops its oldest entries (counted); once Kafka answers, what is
// left is committed once each and no dropped entry is ever half-sent.
func TestExactlyOnceDropOldest(t *testing.T) {
	c := newEOSCluster(t)
	cfg := eosConfig(c.ListenAddrs())
	o := openTestOutbox(t, t.TempDir(), KindSummaries, smallOutbox(PolicyDropOldest))
	r := startForwarder(t, cfg, o)
	appendSeq(t, o, "s", 0, 10, 3, 10)
	waitFor(t, 20*time.Second, "first committed", func() (bool, string) {
		st := r.f.Status()
		return st.Committed[KindSummaries] == 10, fmt.Sprintf("%+v", st)
	})
	var silent atomic.Bool
	c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return nil, nil, silent.Load()
	})
	silent.Store(true)
	const n = 20000 // about 2 MiB: twice the quota
	appendSeq(t, o, "s", 10, n, 3, 100)
	if o.Stats().Dropped == 0 {
		t.Fatalf("nothing dropped: %+v", o.Stats())
	}
	silent.Store(false)
	waitFor(t, 30*time.Second, "committed", func() (bool, string) {
		st := r.f.Status()
		return st.Committed[KindSummaries] == n, fmt.Sprintf("%+v", st)
	})
	cons := readCommitted(t, c, testTopics[0])
	recs := cons.waitIDs(t, 20*time.Second, "s", n-100, n)
	recs = cons.snapshot()
	if d := duplicates(recs); len(d) > 0 {
		t.Errorf("%d ids more than once", len(d))
	}
	checkKeyOrder(t, recs)
	s := o.Stats()
	missing := len(missingIDs(recs, "s", 0, n))
	if uint64(missing) != s.Dropped || s.Acked+s.Dropped != n {
		t.Errorf("%d ids missing, %d dropped, %d acked of %d", missing, s.Dropped, s.Acked, n)
	}
}

// TestExactlyOnceNewDataDir: Kafka holds a position for this gateway id
// past the end of the outbox (the data directory was replaced): the new
// outbox's entries are sent, not skipped.
func TestExactlyOnceNewDataDir(t *testing.T) {
	c := newEOSCluster(t)
	cfg := eosConfig(c.ListenAddrs())
	o := openTestOutbox(t, t.TempDir(), KindSummaries, OutboxConfig{MaxBytes: 16 << 20})
	appendSeq(t, o, "old", 0, 300, 5, 100)
	r := startForwarder(t, cfg, o)
	waitFor(t, 20*time.Second, "committed", func() (bool, string) {
		st := r.f.Status()
		return st.Committed[KindSummaries] == 300, fmt.Sprintf("%+v", st)
	})
	r.stop(t)
	o.Close()

	o2 := openTestOutbox(t, t.TempDir(), KindSummaries, OutboxConfig{MaxBytes: 16 << 20})
	appendSeq(t, o2, "new", 0, 100, 5, 100)
	r2 := startForwarder(t, cfg, o2)
	cons := readCommitted(t, c, testTopics[0])
	recs := cons.waitIDs(t, 20*time.Second, "new", 0, 100)
	exactlyOnce(t, recs, "new", 0, 100)
	waitFor(t, 10*time.Second, "committed", func() (bool, string) {
		st := r2.f.Status()
		return st.Committed[KindSummaries] == 100, fmt.Sprintf("%+v", st)
	})
}

// TestExactlyOnceShutdownBounded: a round stuck on a silent broker does
// not hold the shutdown past the grace period, whatever request_timeout.
func TestExactlyOnceShutdownBounded(t *testing.T) {
	c := newEOSCluster(t)
	cfg := eosConfig(c.ListenAddrs())
	cfg.RequestTimeout = 30 * time.Second
	o := openTestOutbox(t, t.TempDir(), KindSummaries, OutboxConfig{MaxBytes: 16 << 20})
	r := startForwarder(t, cfg, o)
	appendSeq(t, o, "s", 0, 10, 3, 10)
	waitFor(t, 20*time.Second, "first committed", func() (bool, string) {
		st := r.f.Status()
		return st.Committed[KindSummaries] == 10, fmt.Sprintf("%+v", st)
	})
	var silent atomic.Bool
	c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return nil, nil, silent.Load()
	})
	silent.Store(true)
	appendSeq(t, o, "s", 10, 20, 3, 10)
	waitFor(t, 10*time.Second, "round in flight", func() (bool, string) {
		st := r.f.Status()
		return st.Sent == 20, fmt.Sprintf("sent %d", st.Sent)
	})
	start := time.Now()
	r.stop(t)
	if d := time.Since(start); d > shutdownGrace+3*time.Second {
		t.Errorf("Run returned %s after cancel, want within about %s", d, shutdownGrace)
	}
	silent.Store(false)
}
