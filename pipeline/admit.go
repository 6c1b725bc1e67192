package pipeline

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Admission keeps the windows and alerts fresh under a saturating load.
// The stream shares the CPU with the clients' goroutines; when ingest
// outruns it, the WAL between them grows into a backlog, and every
// reading waits behind it before it is queryable or can fire an alert
// (tens to hundreds of milliseconds under make bench's saturating QoS 1
// load). Admit, called by ingest before each blocking append (MQTT QoS 1
// and 2, HTTP), waits while the stream is more than admitLag records
// behind the WAL's durable end, so a fast client is slowed to the pace
// the stream keeps, and its wait shows as acknowledgement latency, where
// the client's own flow control handles it, instead of as stale windows.
//
// The wait is bounded (admitWait per append) and skipped while the WAL is
// replayed or the stream is held by a storage error: those backlogs are
// the WAL's to absorb, within its own bounds, as before. Best-effort
// appends (UDP, MQTT QoS 0) are never held: they are dropped when the WAL
// is busy, and a wait would only turn into drops.
// admitLag is a few milliseconds of applying at a saturating MQTT rate
// (one record per publish); 1,024 (about 40 ms at 26,000/s on the 2-core
// VM) left the query latency where it was.
const admitLag = 128

var admitWait = 100 * time.Millisecond // a variable for tests

type admission struct {
	applied atomic.Uint64 // the stream's applied index
	waiters atomic.Int32
	mu      sync.Mutex
	ch      chan struct{} // closed when the stream catches up to admitLag
	waits   atomic.Uint64 // appends that waited
}

// Admit waits, at most admitWait or until ctx ends, while the stream is
// more than admitLag records behind the WAL. Safe for concurrent use.
func (p *Pipeline) Admit(ctx context.Context) {
	a := &p.adm
	if !p.behind() || !p.replayed.Load() {
		return
	}
	if ok, _ := p.Health(); !ok {
		return
	}
	a.waiters.Add(1)
	defer a.waiters.Add(-1)
	a.waits.Add(1)
	t := time.NewTimer(admitWait)
	defer t.Stop()
	for p.behind() {
		a.mu.Lock()
		if a.ch == nil {
			a.ch = make(chan struct{})
		}
		ch := a.ch
		a.mu.Unlock()
		if !p.behind() { // caught up before the channel was set up
			return
		}
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (p *Pipeline) behind() bool {
	return p.log.LastIndex() > p.adm.applied.Load()+admitLag
}

// applied records the stream's progress and lets the waiting appends go
// once it is within admitLag of the WAL's end (on the stream goroutine).
func (p *Pipeline) admitApplied(idx uint64) {
	a := &p.adm
	a.applied.Store(idx)
	if a.waiters.Load() == 0 || p.behind() {
		return
	}
	p.admitAll()
}

// admitAll lets every waiting append go.
func (p *Pipeline) admitAll() {
	a := &p.adm
	a.mu.Lock()
	if a.ch != nil {
		close(a.ch)
		a.ch = nil
	}
	a.mu.Unlock()
}
