package ingest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
)

// heldAppender records every TryAppend (a copy of the batch) and holds
// the first one until release is closed, as a busy WAL encoder would
// take its time; busy makes every TryAppend refuse with ErrBusy.
type heldAppender struct {
	failingAppender // Append: not used by the coalescer
	release         chan struct{}
	busy            bool

	mu      sync.Mutex
	batches []wal.Batch
	entered chan struct{} // closed when the first TryAppend began
	first   atomic.Bool
}

func newHeldAppender() *heldAppender {
	return &heldAppender{release: make(chan struct{}), entered: make(chan struct{})}
}

func (a *heldAppender) TryAppend(b *wal.Batch, done func(error)) error {
	if a.first.CompareAndSwap(false, true) { // only the first is held; the others go on
		close(a.entered)
		<-a.release
	}
	if a.busy {
		return ErrBusy
	}
	a.mu.Lock()
	a.batches = append(a.batches, wal.Batch{IngestNs: b.IngestNs, Readings: slices.Clone(b.Readings)})
	a.mu.Unlock()
	done(nil)
	return nil
}

func (a *heldAppender) got() []wal.Batch {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.batches)
}

func reading(i int) []wal.Reading {
	return []wal.Reading{{Series: fmt.Sprintf("env,device=d%d", i), Field: "temp", Value: float64(i), TimeNs: int64(i)}}
}

// While the appender is busy with one batch, the publishes that arrive
// meanwhile, from any client, are gathered into the next one: a flood of
// one-reading QoS 0 publishes costs the WAL and the pipeline a record per
// gathered batch, not per publish. The batch's ingest time is its earliest
// publish's.
func TestCoalescerGathersWhileAppending(t *testing.T) {
	app, stats := newHeldAppender(), &Stats{}
	c := newCoalescer(app, stats, ListenerMQTT, 100)
	c.start()
	defer c.close()

	if !c.add(reading(0), 1000) {
		t.Fatal("first add refused")
	}
	<-app.entered // the flusher holds reading 0 in TryAppend
	for i := 1; i <= 10; i++ {
		if !c.add(reading(i), int64(2000-i)) {
			t.Fatalf("add %d refused", i)
		}
	}
	close(app.release)
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		n := stats.Readings[ListenerMQTT].Load()
		return n == 11, fmt.Sprintf("%d of 11 readings appended", n)
	})
	got := app.got()
	if len(got) != 2 {
		t.Fatalf("%d batches, want 2 (one held, one gathered while it was): %+v", len(got), got)
	}
	if len(got[0].Readings) != 1 || got[0].IngestNs != 1000 {
		t.Errorf("first batch %+v, want reading 0 at ingest time 1000", got[0])
	}
	if len(got[1].Readings) != 10 || got[1].IngestNs != 1990 {
		t.Errorf("second batch: %d readings at ingest time %d, want 10 at 1990 (the earliest)", len(got[1].Readings), got[1].IngestNs)
	}
	for i, r := range got[1].Readings {
		if r.Value != float64(i+1) {
			t.Fatalf("second batch reading %d is %v, want the publishes in arrival order", i, r)
		}
	}
}

// The gathered readings are bounded whatever becomes of the flusher: the
// publish that brings them to flushAt appends them itself, at once, on its
// own goroutine, while the flusher is still busy.
func TestCoalescerAppendsInlineAtFlushAt(t *testing.T) {
	app, stats := newHeldAppender(), &Stats{}
	c := newCoalescer(app, stats, ListenerMQTT, 3)
	c.start()
	defer c.close()

	c.add(reading(0), 1)
	<-app.entered // the flusher is held with reading 0
	for i := 1; i <= 3; i++ {
		if !c.add(reading(i), int64(10+i)) {
			t.Fatalf("add %d refused", i)
		}
	}
	got := app.got()
	if len(got) != 1 || len(got[0].Readings) != 3 || got[0].IngestNs != 11 {
		t.Fatalf("appended while the flusher is held: %+v; want readings 1-3 appended by the third add, at ingest time 11", got)
	}
	if n := c.gathered(); n != 0 {
		t.Errorf("%d readings still gathered", n)
	}
	close(app.release)
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		n := stats.Readings[ListenerMQTT].Load()
		return n == 4, fmt.Sprintf("%d of 4 readings appended", n)
	})
}

// A batch the WAL cannot take now is dropped and counted, reading by
// reading, as a best-effort publish always was.
func TestCoalescerBusyCountsDropped(t *testing.T) {
	app, stats := newHeldAppender(), &Stats{}
	app.busy = true
	close(app.release)
	c := newCoalescer(app, stats, ListenerMQTT, 100)
	c.start()
	defer c.close()
	c.add(append(reading(0), reading(1)...), 1)
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		n := stats.Dropped[ListenerMQTT][DropBusy].Load()
		return n == 2, fmt.Sprintf("%d of 2 readings counted dropped", n)
	})
	if n := stats.Readings[ListenerMQTT].Load(); n != 0 {
		t.Errorf("%d readings counted stored", n)
	}
}

// close appends what is gathered before it returns (shutdown drains the
// appends in flight before the WAL closes), and refuses later adds.
func TestCoalescerCloseFlushes(t *testing.T) {
	app, stats := newHeldAppender(), &Stats{}
	c := newCoalescer(app, stats, ListenerMQTT, 100)
	c.start()
	c.add(reading(0), 1)
	<-app.entered
	c.add(reading(1), 1)
	c.add(reading(2), 1)
	closed := make(chan struct{})
	go func() {
		c.close()
		close(closed)
	}()
	close(app.release)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("close did not return")
	}
	if n := stats.Readings[ListenerMQTT].Load(); n != 3 {
		t.Errorf("%d of 3 readings appended by the time close returned", n)
	}
	if c.add(reading(3), 1) {
		t.Error("add after close accepted")
	}
	// Never started: close still appends what was gathered.
	app2 := newHeldAppender()
	close(app2.release)
	c2 := newCoalescer(app2, stats, ListenerMQTT, 100)
	c2.add(reading(4), 1)
	c2.close()
	if got := app2.got(); len(got) != 1 {
		t.Errorf("unstarted coalescer: %d batches appended at close, want 1", len(got))
	}
}

// gathered is the number of readings waiting for the flusher.
func (c *coalescer) gathered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur.Readings)
}

// Through the broker: QoS 0 publishes of two clients that arrive while the
// WAL is busy with an earlier one reach it as one append, every reading
// kept; the broker's Close appends what is still gathered.
func TestBrokerGathersQoS0Publishes(t *testing.T) {
	app := newHeldAppender()
	b := startBroker(t, testBrokerConfig(), app)
	c1, c2 := dialRaw(t, b.addr, 4, "gather-1"), dialRaw(t, b.addr, 5, "gather-2")
	c1.publish("telemetry/d0/env", 0, 0, `{"temp":0}`)
	<-app.entered
	for i := 1; i <= 6; i++ {
		c := c1
		if i%2 == 0 {
			c = c2
		}
		c.publish(fmt.Sprintf("telemetry/d%d/env", i), 0, 0, fmt.Sprintf(`{"temp":%d,"hum":%d}`, i, i))
	}
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		n := b.hook.qos0.gathered()
		return n == 12, fmt.Sprintf("%d of 12 readings gathered", n)
	})
	close(app.release)
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		n := b.stats.Readings[ListenerMQTT].Load()
		return n == 13, fmt.Sprintf("%d of 13 readings stored", n)
	})
	got := app.got()
	if len(got) != 2 || len(got[1].Readings) != 12 {
		t.Fatalf("appends: %+v; want 2, the second with the 12 readings gathered meanwhile", got)
	}
	seen := map[string]bool{}
	for _, r := range got[1].Readings {
		seen[r.Series+" "+r.Field] = true
	}
	for i := 1; i <= 6; i++ {
		for _, f := range []string{"temp", "hum"} {
			if k := fmt.Sprintf("env,device=d%d %s", i, f); !seen[k] {
				t.Errorf("reading %s missing from %+v", k, got[1].Readings)
			}
		}
	}

	// Close appends what the last publishes left gathered.
	app2 := newHeldAppender()
	close(app2.release)
	b2 := startBroker(t, testBrokerConfig(), app2)
	b2.hook.qos0.stopOnce.Do(func() { close(b2.hook.qos0.stop) }) // no flusher: only Close can append
	b2.hook.qos0.wg.Wait()
	c3 := dialRaw(t, b2.addr, 4, "gather-3")
	c3.publish("telemetry/d9/env", 0, 0, `{"temp":9}`)
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		n := b2.hook.qos0.gathered()
		return n == 1, fmt.Sprintf("%d of 1 reading gathered", n)
	})
	b2.Close()
	if n := b2.stats.Readings[ListenerMQTT].Load(); n != 1 {
		t.Errorf("%d of 1 gathered reading stored by Close", n)
	}
}

// TestBrokerSeriesMemoFollowsTags: a topic's remembered series key
// (SeriesMemo in the subscriber cache) follows its device's tags when
// they change, back and forth, and when they are dropped.
func TestBrokerSeriesMemoFollowsTags(t *testing.T) {
	app := openTestWAL(t)
	b := startBroker(t, testBrokerConfig(), app)
	c := dialRaw(t, b.addr, 5, "memo")
	bodies := []string{
		`{"temp":1,"tags":{"site":"a"}}`,
		`{"temp":2,"tags":{"site":"a"}}`,
		`{"temp":3,"tags":{"site":"b"}}`,
		`{"temp":4,"tags":{"site":"a"}}`,
		`{"temp":5}`,
		`{"temp":6,"tags":{"site":"a"}}`,
	}
	want := []string{"env,device=m1,site=a", "env,device=m1,site=a", "env,device=m1,site=b",
		"env,device=m1,site=a", "env,device=m1", "env,device=m1,site=a"}
	for i, body := range bodies {
		c.publish("telemetry/m1/env", 1, uint16(i+1), body)
		if ack := c.next(); ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != 0 {
			t.Fatalf("publish %d: %v reason %#x", i+1, packets.PacketNames[ack.FixedHeader.Type], ack.ReasonCode)
		}
	}
	got := walReadings(t, app.log)
	if len(got) != len(want) {
		t.Fatalf("%d readings in the WAL, want %d: %+v", len(got), len(want), got)
	}
	for i, r := range got {
		if r.Series != want[i] || r.Value != float64(i+1) {
			t.Errorf("reading %d: %s %v, want %s %d", i, r.Series, r.Value, want[i], i+1)
		}
	}
}

// Publishes that arrive while the flusher is appending do not signal it
// (it takes what they gathered when it is done): a flood's publishes touch
// no channel. Once it has drained everything, the next publish wakes it.
func TestCoalescerSignalsOnlyAnIdleFlusher(t *testing.T) {
	app, stats := newHeldAppender(), &Stats{}
	c := newCoalescer(app, stats, ListenerMQTT, 100)
	c.start()
	defer c.close()

	c.add(reading(0), 1)
	<-app.entered // the flusher is busy with reading 0
	for i := 1; i <= 5; i++ {
		c.add(reading(i), int64(10+i))
	}
	if n := len(c.kick); n != 0 {
		t.Errorf("%d kicks pending while the flusher was busy, want none", n)
	}
	close(app.release)
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		n := stats.Readings[ListenerMQTT].Load()
		return n == 6, fmt.Sprintf("%d of 6 readings appended", n)
	})
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.idle, "the flusher has not gone idle"
	})
	c.add(reading(6), 20) // a lone publish after the flood: appended at once
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		n := stats.Readings[ListenerMQTT].Load()
		return n == 7, fmt.Sprintf("%d of 7 readings appended", n)
	})
}
