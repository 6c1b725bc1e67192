package pipeline

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
)

// gateLog is a Log whose readers stop before each record while closed.
type gateLog struct {
	Log
	closed *atomic.Bool
	open   chan struct{}
}

func (g gateLog) NewReader(from uint64) Reader {
	return &gateReader{Reader: g.Log.NewReader(from), g: g}
}

type gateReader struct {
	Reader
	g gateLog
}

func (r *gateReader) Next() bool {
	if r.g.closed.Load() {
		<-r.g.open
	}
	return r.Reader.Next()
}

// TestAdmitWaitsForAStreamBehind: while the stream is more than admitLag
// records behind the WAL, Admit (ingest's call before a blocking append)
// waits, and it returns as soon as the stream has caught up; a stream
// within admitLag, or a replay, makes no one wait.
func TestAdmitWaitsForAStreamBehind(t *testing.T) {
	defer func(d time.Duration) { admitWait = d }(admitWait)
	admitWait = time.Minute // the test releases it, not the timer
	const s = "env,device=a"
	base := int64(3600 * 1000)
	var closed atomic.Bool
	open := make(chan struct{})
	r := newRig(t)
	r.wrap = func(l Log) Log { return gateLog{Log: l, closed: &closed, open: open} }
	r.start()
	r.waitApplied(r.append(batch(base, s, base)))
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) { return r.p.Replayed(), "not replayed" })

	// Within admitLag: no wait.
	r.p.Admit(context.Background())
	if n := r.p.Stats().AdmitWaits; n != 0 {
		t.Fatalf("%d admit waits with the stream caught up", n)
	}

	closed.Store(true) // the stream stops before its next record
	var last uint64
	recs := make([][]byte, admitLag+10)
	for i := range recs {
		recs[i] = batch(base+1+int64(i), s, base+1+int64(i))
	}
	last = r.append(recs...)
	admitted := make(chan struct{})
	go func() {
		r.p.Admit(context.Background())
		close(admitted)
	}()
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		n := r.p.Stats().AdmitWaits
		return n == 1, fmt.Sprintf("%d admit waits", n)
	})
	select {
	case <-admitted:
		t.Fatal("Admit returned while the stream was over admitLag behind")
	default:
	}
	closed.Store(false)
	close(open)
	select {
	case <-admitted:
	case <-time.After(20 * time.Second):
		t.Fatal("Admit still waits after the stream caught up")
	}
	r.waitApplied(last)
}
