package ingest

import (
	"sync"

	"github.com/runnel-iot/runnel/wal"
)

// coalescer gathers the readings of best-effort publishes (MQTT QoS 0),
// from every client, into shared batches that one goroutine appends with
// TryAppend. A sensor flood publishes one reading per message: appended one
// by one, each costs a WAL record (encoding, framing, checksum, a queue
// entry) and, in the pipeline, a record read and decode, which made a
// QoS 0 message cost the gateway about 1.8 × what it costs bare mochi.
// Gathered, those costs are paid per batch.
//
// No publish waits for a batch to fill: the flusher appends what is there
// as soon as it is woken, so a lone publish is appended at once, as before,
// and batches grow only while the flusher is busy appending the previous
// one, that is exactly when publishes arrive faster than it appends.
//
// The best-effort contract is unchanged: a publish is taken only if the
// gathered readings are under maxReadings (else refused at once: the caller
// drops and counts it, never blocking a socket reader); a batch the WAL
// cannot take now is dropped and counted, as one publish was. Gathered
// readings live in memory until appended, as queued WAL appends do, so a
// crash of the process loses only what also was not written before (the
// WAL writer's queue), and a power cut at most the last second.
//
// A batch carries the receive time of its earliest publish as its ingest
// time: the gateway's processing time only takes the largest ingest time
// seen, and ingest-to-applied latency is then measured from the oldest
// reading of the batch.
type coalescer struct {
	app         Appender
	stats       *Stats
	listener    Listener
	maxReadings int

	mu     sync.Mutex
	cur    wal.Batch // gathering; IngestNs: its earliest publish's receive time
	closed bool

	kick     chan struct{} // 1-slot, coalescing: readings were added
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	spare wal.Batch // the batch being appended; the flusher's (close's once stopped)
}

// coalesceMaxReadings bounds the readings gathered and not yet appended
// (about 48 bytes each, strings shared with the decoders' intern caches):
// the flusher empties the batch every time it runs, so the bound is met
// only when it cannot run for tens of milliseconds at a flood's rate.
const coalesceMaxReadings = 8192

// coalesceKeepCap is the largest batch capacity kept between flushes: a
// burst's larger array is let go.
const coalesceKeepCap = 1024

func newCoalescer(app Appender, stats *Stats, l Listener, maxReadings int) *coalescer {
	return &coalescer{app: app, stats: stats, listener: l, maxReadings: maxReadings,
		kick: make(chan struct{}, 1), stop: make(chan struct{})}
}

// start starts the flusher goroutine, which close stops.
func (c *coalescer) start() { c.wg.Go(c.run) }

// add gathers readings received at nowNs for the next append. It never
// blocks on the WAL; false means they were not taken (the gathered batch is
// full, or the coalescer is closed): the caller drops and counts them. The
// readings are copied; their strings must not alias a reused buffer
// (decoders intern them).
func (c *coalescer) add(readings []wal.Reading, nowNs int64) bool {
	c.mu.Lock()
	if c.closed || len(c.cur.Readings)+len(readings) > c.maxReadings {
		c.mu.Unlock()
		return false
	}
	if len(c.cur.Readings) == 0 || nowNs < c.cur.IngestNs {
		c.cur.IngestNs = nowNs
	}
	c.cur.Readings = append(c.cur.Readings, readings...)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return true
}

func (c *coalescer) run() {
	for {
		select {
		case <-c.kick:
			c.flush()
		case <-c.stop:
			return
		}
	}
}

// flush appends the gathered readings as one batch. Called by the flusher
// goroutine, or by close once it has exited.
func (c *coalescer) flush() {
	c.mu.Lock()
	c.cur, c.spare = c.spare, c.cur
	c.mu.Unlock()
	b := &c.spare
	if n := uint64(len(b.Readings)); n > 0 {
		l := c.listener
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
	}
	// TryAppend encoded the batch before it returned: reuse it.
	clear(b.Readings) // let go of the strings
	if cap(b.Readings) > coalesceKeepCap {
		b.Readings = nil
	}
	b.Readings = b.Readings[:0]
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
