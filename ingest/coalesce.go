package ingest

import (
	"sync"

	"github.com/runnel-iot/runnel/wal"
)

// coalescer gathers the readings of best-effort publishes (MQTT QoS 0),
// from every client, into shared batches appended with TryAppend. A sensor
// flood publishes one reading per message: appended one by one, each costs
// a WAL record (encoding, framing, checksum, a queue entry) and, in the
// pipeline, a record read and decode, which made a QoS 0 message cost the
// gateway about 1.8 × what it costs bare mochi. Gathered, those costs are
// paid per batch.
//
// No publish waits for a batch to fill: a flusher goroutine appends what
// is there as soon as it is woken, so a lone publish is appended at once,
// as before, and batches grow only while the flusher is busy appending the
// previous one or waits for a CPU, that is when publishes arrive faster
// than it appends. The flusher drains until nothing is gathered, and only
// the publish that finds it idle wakes it. A publish that brings the batch to flushAt readings
// appends it itself, on its own goroutine, as every publish did before:
// the gathered readings stay bounded (flushAt plus one publish) whatever
// the scheduler does with the flusher, and a publisher never blocks on it.
//
// The best-effort contract is unchanged: a batch the WAL cannot take now
// is dropped and counted, as one publish was. Gathered readings live in
// memory until appended, as queued WAL appends do, so a crash of the
// process loses only what also was not written before (the WAL writer's
// queue), and a power cut at most the last second.
//
// A batch carries the receive time of its earliest publish as its ingest
// time: the gateway's processing time only takes the largest ingest time
// seen, and ingest-to-applied latency is then measured from the oldest
// reading of the batch.
type coalescer struct {
	app      Appender
	stats    *Stats
	listener Listener
	flushAt  int

	mu     sync.Mutex
	cur    *wal.Batch   // gathering; IngestNs: its earliest publish's receive time
	free   []*wal.Batch // appended batches, for reuse (at most maxFree)
	closed bool
	// idle: the flusher found nothing to append and waits for a kick. Only
	// the add that ends it sends one, so a flood's publishes touch no
	// channel (a send per publish, even a failing one, locked the channel
	// each time) while the flusher drains what they gather.
	idle bool

	kick     chan struct{} // 1-slot: readings were added while the flusher was idle
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// coalesceFlushAt is the batch size at which a publisher appends the
// gathered readings itself (about 48 bytes a reading, strings shared with
// the decoders' intern caches): large enough that the per-record costs
// are amortised, small enough to keep memory and the WAL record small.
const coalesceFlushAt = 1024

// coalesceKeepCap is the largest batch capacity kept for reuse: a huge
// single payload's array is let go.
const coalesceKeepCap = 2 * coalesceFlushAt

// maxFree bounds the batches kept for reuse: one per goroutine appending
// at once (the flusher, publishers at flushAt) is plenty.
const maxFree = 8

func newCoalescer(app Appender, stats *Stats, l Listener, flushAt int) *coalescer {
	return &coalescer{app: app, stats: stats, listener: l, flushAt: flushAt, cur: new(wal.Batch),
		kick: make(chan struct{}, 1), stop: make(chan struct{})}
}

// start starts the flusher goroutine, which close stops.
func (c *coalescer) start() { c.wg.Go(c.run) }

// add gathers readings received at nowNs for the next append, or appends
// them with what is gathered when that reaches flushAt. It never blocks on
// the WAL; false means the coalescer is closed and the readings were not
// taken: the caller drops and counts them. The readings are copied; their
// strings must not alias a reused buffer (decoders intern them).
func (c *coalescer) add(readings []wal.Reading, nowNs int64) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	b := c.cur
	if len(b.Readings) == 0 || nowNs < b.IngestNs {
		b.IngestNs = nowNs
	}
	b.Readings = append(b.Readings, readings...)
	if len(b.Readings) >= c.flushAt {
		c.cur = c.newBatchLocked()
		c.mu.Unlock()
		c.append(b)
		return true
	}
	wake := c.idle
	c.idle = false
	c.mu.Unlock()
	if wake {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// run appends what is gathered until nothing is, then waits for a kick.
func (c *coalescer) run() {
	for {
		if c.flush() {
			continue
		}
		select {
		case <-c.kick:
		case <-c.stop:
			return
		}
	}
}

// flush appends the gathered readings and reports whether there were
// any; when there were none, the flusher is idle from then on.
func (c *coalescer) flush() bool {
	c.mu.Lock()
	b := c.cur
	if len(b.Readings) == 0 {
		c.idle = true
		c.mu.Unlock()
		return false
	}
	c.cur = c.newBatchLocked()
	c.mu.Unlock()
	c.append(b)
	return true
}

func (c *coalescer) newBatchLocked() *wal.Batch {
	if n := len(c.free); n > 0 {
		b := c.free[n-1]
		c.free = c.free[:n-1]
		return b
	}
	return new(wal.Batch)
}

// append appends b as one batch, counts the outcome, and keeps b for
// reuse (TryAppend encoded it before it returned).
func (c *coalescer) append(b *wal.Batch) {
	n, l := uint64(len(b.Readings)), c.listener
	err := c.app.TryAppend(b, func(err error) {
		if err != nil {
			c.stats.Dropped[l][DropAppendFailed].Add(n)
			return
		}
		c.stats.Readings[l].Add(n)
	})
	if err != nil {
		c.stats.Dropped[l][DropBusy].Add(n)
	}
	clear(b.Readings) // let go of the strings
	if cap(b.Readings) > coalesceKeepCap {
		b.Readings = nil
	}
	b.Readings = b.Readings[:0]
	c.mu.Lock()
	if len(c.free) < maxFree {
		c.free = append(c.free, b)
	}
	c.mu.Unlock()
}

// close refuses later adds, stops the flusher and appends what is still
// gathered. Callers stop the publishers first. Idempotent.
func (c *coalescer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.stopOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
	c.flush()
}
