package ingest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// startHTTPWriteHandler is startHTTPWrite returning the handler too.
func startHTTPWriteHandler(t *testing.T, cfg HTTPWriteConfig) (*HTTPWrite, *httptest.Server, *Stats, *walAppender) {
	t.Helper()
	app := openTestWAL(t)
	st := new(Stats)
	h, err := NewHTTPWrite(cfg, app, nil, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv, st, app
}

// rawWrite opens a connection and sends a write request's headers with the
// declared length and the first part of its body; the caller closes it.
func rawWrite(t *testing.T, srv *httptest.Server, declared int, part []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /api/v2/write HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", declared)
	t.Cleanup(func() { c.Close() }) // before the server's Close
	if _, err := c.Write(part); err != nil {
		t.Fatal(err)
	}
	return c
}

func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestHTTPWriteDeclaredLengthAllocatesNothing is the attack of 20
// connections declaring the largest body and sending one byte: the
// gateway must not allocate by the declared length.
func TestHTTPWriteDeclaredLengthAllocatesNothing(t *testing.T) {
	cfg := DefaultHTTPWriteConfig()
	cfg.MaxBodyBytes = 4 * wal.MiB
	cfg.MaxInflightBytes = 64 * wal.MiB // the budget is not what stops it here
	h, srv, st, _ := startHTTPWriteHandler(t, cfg)
	before := heapAlloc()
	const conns = 20
	for range conns {
		rawWrite(t, srv, int(cfg.MaxBodyBytes), []byte("m"))
	}
	awaitCond(t, func() string { return fmt.Sprintf("%d requests in the handler", st.Messages[ListenerHTTP].Load()) },
		func() bool { return st.Messages[ListenerHTTP].Load() == conns })
	// Each handler has its first byte (or is about to): wait until they
	// have all taken their share, then measure.
	awaitCond(t, func() string { return fmt.Sprintf("%d bytes held", h.InflightBytes()) },
		func() bool { return h.InflightBytes() >= conns*minBodyBuf })
	grown := int64(heapAlloc()) - int64(before)
	if limit := int64(8 * wal.MiB); grown > limit { // declared: 20 × 4 MiB
		t.Errorf("heap grew by %d bytes for %d one-byte bodies, want under %d", grown, conns, limit)
	}
	if held := h.InflightBytes(); held > conns*64<<10 {
		t.Errorf("%d bytes of the budget held by %d one-byte bodies", held, conns)
	}
}

// TestHTTPWriteBodyReadTimeout checks that a body trickling slower than
// read_timeout is cut off with 408.
func TestHTTPWriteBodyReadTimeout(t *testing.T) {
	cfg := DefaultHTTPWriteConfig()
	cfg.ReadTimeout = 200 * time.Millisecond
	h, srv, _, _ := startHTTPWriteHandler(t, cfg)
	c := rawWrite(t, srv, 1000, []byte("m,device=d v=1"))
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no reply to a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("status %d, want 408", resp.StatusCode)
	}
	awaitCond(t, func() string { return fmt.Sprint(h.InflightBytes()) }, func() bool { return h.InflightBytes() == 0 })
}

// TestHTTPWriteInflightBudget checks that bodies in flight beyond
// max_inflight_bytes are answered 503 with Retry-After, counted, and that
// the budget is given back.
func TestHTTPWriteInflightBudget(t *testing.T) {
	cfg := DefaultHTTPWriteConfig()
	cfg.MaxBodyBytes = wal.MiB
	cfg.MaxInflightBytes = 3 * wal.MiB
	h, srv, st, _ := startHTTPWriteHandler(t, cfg)
	line := "m,device=d v=1 1700000000000000000\n"
	part := []byte(strings.Repeat(line, 700<<10/len(line)))
	var stalled []net.Conn
	for range 2 {
		c := rawWrite(t, srv, int(cfg.MaxBodyBytes), part)
		stalled = append(stalled, c)
	}
	awaitCond(t, func() string { return fmt.Sprint(h.InflightBytes()) }, func() bool { return h.InflightBytes() >= int64(2*wal.MiB) })
	r := post(t, srv, writeReq{body: part})
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("third body: status %d, Retry-After %q: %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	if v := errorBody(t, r); !strings.Contains(v.Message, "max_inflight_bytes") {
		t.Errorf("reply %s", r.body)
	}
	if n := st.Dropped[ListenerHTTP][DropOverBudget].Load(); n != 1 {
		t.Errorf("over_budget drops %d, want 1", n)
	}
	for _, c := range stalled {
		c.Close()
	}
	awaitCond(t, func() string { return fmt.Sprint(h.InflightBytes()) }, func() bool { return h.InflightBytes() == 0 })
	if r := post(t, srv, writeReq{body: part}); r.status != http.StatusNoContent {
		t.Errorf("after the budget is free: status %d: %s", r.status, r.body)
	}
}

// TestHTTPWriteDecodesInChunks checks that a large body is decoded and
// appended in chunks (several WAL batches), with problems reported at
// their line in the whole body.
func TestHTTPWriteDecodesInChunks(t *testing.T) {
	_, srv, st, app := startHTTPWriteHandler(t, DefaultHTTPWriteConfig())
	const lines, bad = 10000, 9000
	var b strings.Builder
	for i := 1; i <= lines; i++ {
		if i == bad {
			b.WriteString("m,device=d v=oops\n")
			continue
		}
		fmt.Fprintf(&b, "m,device=d v=%d 1700000000%09d\n", i, i)
	}
	r := post(t, srv, writeReq{body: []byte(b.String())})
	if r.status != http.StatusBadRequest {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	v := errorBody(t, r)
	if v.Line != bad || len(v.Errors) != 1 || v.Errors[0].Line != bad || v.Accepted != lines-1 {
		t.Errorf("reply line %d errors %+v accepted %d, want line %d and %d accepted", v.Line, v.Errors, v.Accepted, bad, lines-1)
	}
	if !strings.Contains(v.Message, fmt.Sprintf("line %d,", bad)) {
		t.Errorf("message %q does not name line %d", v.Message, bad)
	}
	if n := st.Readings[ListenerHTTP].Load(); n != lines-1 {
		t.Errorf("stored %d readings, want %d", n, lines-1)
	}
	if n := app.log.LastIndex(); n < 2 {
		t.Errorf("%d WAL batches for a %d-byte body, want several chunks", n, b.Len())
	}
	if got := len(walReadings(t, app.log)); got != lines-1 {
		t.Errorf("wal holds %d readings, want %d", got, lines-1)
	}
}

// TestHTTPWriteReusesBuffers checks that a steady stream of ordinary
// writes (1000 lines, as Telegraf sends) reuses the pooled body and
// readings buffers: the decoded readings are sized by the lines the body
// holds, not by the worst case of one reading per 4 bytes (which for a
// 56 KB body is a 660 KB slice, over what the pool keeps, so it was
// allocated anew for every request). The budget still holds the worst
// case while a chunk decodes, and gives it all back.
func TestHTTPWriteReusesBuffers(t *testing.T) {
	// The WAL's own buffers are not the handler's: a sink that counts.
	var sink readingCounter
	h, err := NewHTTPWrite(DefaultHTTPWriteConfig(), &sink, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for d := range 10 {
		for s := range 100 {
			fmt.Fprintf(&b, "fwd,device=fd-%03d,sensor=s-%03d v=%d 1700000000%09d\n", d, s, s, d)
		}
	}
	body := b.String()
	write := func() {
		req := httptest.NewRequest(http.MethodPost, "/api/v2/write", strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	for range 5 {
		write() // warm the pool and the decoder's intern cache
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 20
	for range n {
		write()
	}
	runtime.ReadMemStats(&after)
	perReq := (after.TotalAlloc - before.TotalAlloc) / n
	if limit := uint64(len(body)); perReq > limit {
		t.Errorf("%d bytes allocated per %d-byte write, want under %d (buffers not reused)", perReq, len(body), limit)
	}
	if held := h.InflightBytes(); held != 0 {
		t.Errorf("%d bytes of the budget held after the writes", held)
	}
	if got, want := sink.readings.Load(), int64(25*1000); got != want {
		t.Errorf("%d readings appended, want %d", got, want)
	}
}

// readingCounter takes every batch at once and only counts its readings.
type readingCounter struct{ readings atomic.Int64 }

func (a *readingCounter) Append(_ context.Context, b *wal.Batch, done func(error)) error {
	a.readings.Add(int64(len(b.Readings)))
	done(nil)
	return nil
}

func (a *readingCounter) TryAppend(b *wal.Batch, done func(error)) error {
	return a.Append(context.Background(), b, done)
}
