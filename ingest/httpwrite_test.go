package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// startHTTPWrite serves the handler on a loopback httptest server.
func startHTTPWrite(t testing.TB, cfg HTTPWriteConfig, app Appender, sink RejectSink) (*httptest.Server, *Stats) {
	t.Helper()
	st := new(Stats)
	h, err := NewHTTPWrite(cfg, app, sink, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, st
}

type writeReq struct {
	method  string
	query   string
	body    []byte
	gzip    bool
	chunked bool // no Content-Length
	header  map[string]string
}

type writeResp struct {
	status int
	header http.Header
	body   []byte
}

func post(t testing.TB, srv *httptest.Server, r writeReq) writeResp {
	t.Helper()
	body := r.body
	if r.gzip {
		body = gzipBytes(t, body)
	}
	var rd io.Reader = bytes.NewReader(body)
	if r.chunked {
		rd = io.MultiReader(rd) // hides the length
	}
	method := r.method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, srv.URL+"/api/v2/write"+r.query, rd)
	if err != nil {
		t.Fatal(err)
	}
	if r.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return writeResp{status: resp.StatusCode, header: resp.Header, body: b}
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// errorBody decodes an error reply, checking it is JSON.
func errorBody(t testing.TB, r writeResp) invalidWrite {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("content type %q, body %s", ct, r.body)
	}
	var v invalidWrite
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("reply %s: %v", r.body, err)
	}
	return v
}

func TestHTTPWriteStoresBeforeNoContent(t *testing.T) {
	cases := []struct {
		query     string
		ts0, unit int64
	}{
		{"", 1700000000000000000, 1},
		{"?precision=ns", 1700000000000000000, 1},
		{"?precision=us", 1700000000000000, 1e3},
		{"?precision=ms&org=acme&bucket=b&rp=ignored", 1700000000000, 1e6},
		{"?precision=s", 1700000000, 1e9},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			app := openTestWAL(t)
			srv, st := startHTTPWrite(t, DefaultHTTPWriteConfig(), app, nil)
			body, want := envLines(500, tc.ts0, tc.unit, "")
			r := post(t, srv, writeReq{query: tc.query, body: []byte(body)})
			if r.status != http.StatusNoContent {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			// Acknowledged means durable: the WAL holds them now.
			sameReadings(t, walReadings(t, app.log), want)
			if got := st.Readings[ListenerHTTP].Load(); got != uint64(len(want)) {
				t.Errorf("readings counted %d, want %d", got, len(want))
			}
			if st.Messages[ListenerHTTP].Load() != 1 || st.Bytes[ListenerHTTP].Load() != uint64(len(body)) {
				t.Errorf("messages %d bytes %d", st.Messages[ListenerHTTP].Load(), st.Bytes[ListenerHTTP].Load())
			}
		})
	}
}

func TestHTTPWriteTelegrafRequest(t *testing.T) {
	app := openTestWAL(t)
	cfg := DefaultHTTPWriteConfig()
	cfg.Tokens = []string{"other", "s3cret-token"}
	srv, _ := startHTTPWrite(t, cfg, app, nil)
	body, want := envLines(1000, 1700000000000000000, 1, "")
	r := post(t, srv, writeReq{
		query: "?bucket=telegraf&org=acme",
		body:  []byte(body),
		gzip:  true,
		header: map[string]string{
			"Authorization": "Token s3cret-token",
			"User-Agent":    "Telegraf/1.30.0 Go/1.22.1",
			"Content-Type":  "text/plain; charset=utf-8",
		},
	})
	if r.status != http.StatusNoContent {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	sameReadings(t, walReadings(t, app.log), want)
}

func TestHTTPWriteAuth(t *testing.T) {
	cfg := DefaultHTTPWriteConfig()
	cfg.Tokens = []string{"alpha", "beta"}
	srv, _ := startHTTPWrite(t, cfg, openTestWAL(t), nil)
	body, _ := envLines(1, 1700000000000000000, 1, "")
	cases := []struct {
		auth string
		want int
	}{
		{"", http.StatusUnauthorized},
		{"Token gamma", http.StatusUnauthorized},
		{"Token alph", http.StatusUnauthorized},
		{"Basic YWxwaGE6", http.StatusUnauthorized},
		{"alpha", http.StatusUnauthorized},
		{"Token alpha", http.StatusNoContent},
		{"Bearer beta", http.StatusNoContent},
		{"token beta", http.StatusNoContent},
	}
	for _, tc := range cases {
		t.Run(tc.auth, func(t *testing.T) {
			r := post(t, srv, writeReq{body: []byte(body), header: map[string]string{"Authorization": tc.auth}})
			if r.status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
			if tc.want == http.StatusUnauthorized {
				if v := errorBody(t, r); v.Code != "unauthorized" {
					t.Errorf("code %q", v.Code)
				}
			}
		})
	}
}

func TestHTTPWriteTooLarge(t *testing.T) {
	cfg := DefaultHTTPWriteConfig()
	cfg.MaxBodyBytes = 64 * wal.KiB
	big, _ := envLines(2000, 1700000000000000000, 1, "")                                             // ~130 KB
	bomb := gzipBytes(t, bytes.Repeat([]byte("env,device=x temp=1 1700000000000000000\n"), 100_000)) // 4 MB, compresses ~300x
	gz := map[string]string{"Content-Encoding": "gzip"}
	cases := []struct {
		name string
		req  writeReq
	}{
		{"raw with length", writeReq{body: []byte(big)}},
		{"raw chunked", writeReq{body: []byte(big), chunked: true}},
		{"gzip bomb", writeReq{body: bomb, header: gz}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			app := openTestWAL(t)
			sink := new(rejectBox)
			srv, st := startHTTPWrite(t, cfg, app, sink)
			if tc.req.header != nil && len(tc.req.body) > int(cfg.MaxBodyBytes)/4 {
				t.Fatalf("bomb is %d bytes compressed: not small", len(tc.req.body))
			}
			r := post(t, srv, tc.req)
			if r.status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if v := errorBody(t, r); v.Code != "request too large" || !strings.Contains(v.Message, "max_body_bytes (64KiB)") {
				t.Errorf("reply %s", r.body)
			}
			if n := app.log.LastIndex(); n != 0 {
				t.Errorf("wal holds %d records, want none", n)
			}
			if st.Dropped[ListenerHTTP][DropTooLarge].Load() != 1 {
				t.Error("not counted as too large")
			}
			if rj := sink.list(); len(rj) != 1 || rj[0].Reason != "too_large" || rj[0].Topic != "/api/v2/write" {
				t.Errorf("rejects %+v", rj)
			}
		})
	}
}

func TestHTTPWriteBadLines(t *testing.T) {
	good := "env,device=a temp=1 1700000000000000000\n"
	bad := "env,device=b temp= 1700000000000000000\n"
	cases := []struct {
		name      string
		body      string
		stored    []wal.Reading
		line, col int
		rejected  int
		message   string
	}{
		{"partial", good + bad + "# comment\n" + "env,device=c temp=3i,hum=2 1700000000000000000\n" + "env,device=d temp=1 1700000000000000000 x\n",
			[]wal.Reading{
				{Series: "env,device=a", Field: "temp", Value: 1, TimeNs: 1700000000000000000},
				{Series: "env,device=c", Field: "temp", Value: 3, TimeNs: 1700000000000000000},
				{Series: "env,device=c", Field: "hum", Value: 2, TimeNs: 1700000000000000000},
			}, 2, 19, 2, "partial write: line 2, column 19: "},
		{"all bad", bad + "env temp 1\n", nil, 1, 19, 2, "nothing written: line 1, column 19: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			app := openTestWAL(t)
			sink := new(rejectBox)
			srv, st := startHTTPWrite(t, DefaultHTTPWriteConfig(), app, sink)
			r := post(t, srv, writeReq{query: "?org=o&bucket=b", body: []byte(tc.body)})
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			v := errorBody(t, r)
			if v.Code != "invalid" || v.Line != tc.line || v.Column != tc.col || v.Rejected != tc.rejected ||
				v.Accepted != len(tc.stored) || len(v.Errors) != tc.rejected || !strings.HasPrefix(v.Message, tc.message) {
				t.Errorf("reply %s", r.body)
			}
			for _, e := range v.Errors {
				if e.Line == 0 || e.Column == 0 || e.Reason != "syntax" || e.Message == "" {
					t.Errorf("error entry %+v", e)
				}
			}
			got := walReadings(t, app.log)
			if tc.stored == nil && len(got) != 0 {
				t.Fatalf("stored %v, want nothing", got)
			}
			if tc.stored != nil {
				sameReadings(t, got, tc.stored)
			}
			if st.Rejected[ListenerHTTP][ReasonSyntax].Load() != uint64(tc.rejected) {
				t.Errorf("syntax rejects %d", st.Rejected[ListenerHTTP][ReasonSyntax].Load())
			}
			rj := sink.list()
			if len(rj) != 1 || rj[0].Listener != "http" || rj[0].Topic != "/api/v2/write?org=o&bucket=b" ||
				rj[0].Source == "" || !strings.HasPrefix(rj[0].Error, fmt.Sprintf("line %d, column %d", tc.line, tc.col)) {
				t.Errorf("rejects %+v", rj)
			}
		})
	}
}

// refusingAppender fails every append: at once (Append returns the error)
// or later (done gets it), like a WAL that cannot write.
type refusingAppender struct {
	err   error
	later bool
}

func (a *refusingAppender) Append(ctx context.Context, b *wal.Batch, done func(error)) error {
	if a.later {
		done(a.err)
		return nil
	}
	return a.err
}

func (a *refusingAppender) TryAppend(b *wal.Batch, done func(error)) error {
	return a.Append(nil, b, done)
}

func TestHTTPWriteUnavailableWhenWALFails(t *testing.T) {
	body, rs := envLines(10, 1700000000000000000, 1, "")
	for _, app := range []*refusingAppender{
		{err: wal.ErrClosed},
		{err: errors.New("write segment: no space left on device"), later: true},
	} {
		t.Run(app.err.Error(), func(t *testing.T) {
			srv, st := startHTTPWrite(t, DefaultHTTPWriteConfig(), app, nil)
			r := post(t, srv, writeReq{body: []byte(body)})
			if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" {
				t.Fatalf("status %d retry-after %q: %s", r.status, r.header.Get("Retry-After"), r.body)
			}
			if v := errorBody(t, r); v.Code != "unavailable" || !strings.Contains(v.Message, app.err.Error()) {
				t.Errorf("reply %s", r.body)
			}
			if st.Dropped[ListenerHTTP][DropAppendFailed].Load() != uint64(len(rs)) || st.Readings[ListenerHTTP].Load() != 0 {
				t.Errorf("dropped %d stored %d", st.Dropped[ListenerHTTP][DropAppendFailed].Load(), st.Readings[ListenerHTTP].Load())
			}
		})
	}
}

func TestHTTPWriteRequestErrors(t *testing.T) {
	srv, _ := startHTTPWrite(t, DefaultHTTPWriteConfig(), openTestWAL(t), nil)
	line := []byte("env temp=1\n")
	cases := []struct {
		name   string
		req    writeReq
		status int
		code   string
		msg    string
	}{
		{"get", writeReq{method: http.MethodGet}, http.StatusMethodNotAllowed, "method not allowed", "use POST"},
		{"put", writeReq{method: http.MethodPut, body: line}, http.StatusMethodNotAllowed, "method not allowed", "use POST"},
		{"precision", writeReq{query: "?precision=h", body: line}, http.StatusBadRequest, "invalid", "want ns, us, ms or s"},
		{"encoding", writeReq{body: line, header: map[string]string{"Content-Encoding": "br"}}, http.StatusUnsupportedMediaType, "unsupported media type", `"br" is not supported`},
		{"not gzip", writeReq{body: line, header: map[string]string{"Content-Encoding": "gzip"}}, http.StatusBadRequest, "invalid", "gzip body:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, srv, tc.req)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			v := errorBody(t, r)
			if v.Code != tc.code || !strings.Contains(v.Message, tc.msg) {
				t.Errorf("reply %s", r.body)
			}
			if tc.status == http.StatusMethodNotAllowed && r.header.Get("Allow") != "POST" {
				t.Errorf("Allow %q", r.header.Get("Allow"))
			}
		})
	}
}

// TestHTTPWriteEmptyBody: a body with no line is a write with no usable
// reading: 400 no_readings (InfluxDB 2 also answers 400, "writing requires
// points"), nothing stored.
func TestHTTPWriteEmptyBody(t *testing.T) {
	app := openTestWAL(t)
	srv, _ := startHTTPWrite(t, DefaultHTTPWriteConfig(), app, nil)
	r := post(t, srv, writeReq{body: []byte("\n# nothing\n")})
	if r.status != http.StatusBadRequest {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if v := errorBody(t, r); len(v.Errors) != 1 || v.Errors[0].Reason != "no_readings" {
		t.Errorf("reply %s, want one no_readings error", r.body)
	}
	if app.log.LastIndex() != 0 {
		t.Error("empty write appended a batch")
	}
}

// TestHTTPWriteNoUsableReading: a body of string fields only holds no
// reading: 400 naming the line of the first string field and the fields,
// counted as no_readings and dead-lettered (it used to get 204, issue 16).
func TestHTTPWriteNoUsableReading(t *testing.T) {
	app := openTestWAL(t)
	rejects := &rejectBox{}
	srv, stats := startHTTPWrite(t, DefaultHTTPWriteConfig(), app, rejects)
	r := post(t, srv, writeReq{body: []byte("# status\nm,host=a state=\"ok\"\nm,host=b mode=\"auto\",state=\"x\"\n")})
	if r.status != http.StatusBadRequest {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	v := errorBody(t, r)
	if v.Line != 2 || len(v.Errors) != 1 || v.Errors[0].Reason != "no_readings" ||
		!strings.Contains(v.Message, `"state"`) || !strings.Contains(v.Message, `"mode"`) {
		t.Errorf("reply %s, want no_readings at line 2 naming the string fields", r.body)
	}
	if n := stats.Rejected[ListenerHTTP][ReasonNoReadings].Load(); n != 1 {
		t.Errorf("no_readings counted %d, want 1", n)
	}
	if got := rejects.list(); len(got) != 1 || got[0].Reason != "no_readings" {
		t.Errorf("dead letters %+v, want one no_readings", got)
	}
	if app.log.LastIndex() != 0 {
		t.Error("a write with no reading appended a batch")
	}
}

func TestHTTPWriteConfigValidate(t *testing.T) {
	cases := map[string]struct {
		mod  func(*HTTPWriteConfig)
		keys []string
	}{
		"defaults":    {func(*HTTPWriteConfig) {}, nil},
		"tokens":      {func(c *HTTPWriteConfig) { c.Tokens = []string{"a", "b"} }, nil},
		"tiny body":   {func(c *HTTPWriteConfig) { c.MaxBodyBytes = 10 }, []string{"max_body_bytes"}},
		"empty token": {func(c *HTTPWriteConfig) { c.Tokens = []string{"ok", ""} }, []string{"tokens[1]"}},
		"space token": {func(c *HTTPWriteConfig) { c.Tokens = []string{"a b"} }, []string{"tokens[0]"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := DefaultHTTPWriteConfig()
			tc.mod(&c)
			checkConfigKeys(t, c.Validate(), tc.keys)
		})
	}
	c := DefaultHTTPWriteConfig()
	c.Tokens = []string{"sec ret"}
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "sec ret") {
		t.Errorf("error %v repeats the token", err)
	}
}

// BenchmarkHTTPWrite posts 5,000-line bodies (10,000 readings) from 4
// concurrent clients over loopback to the handler on a real WAL (batch
// sync) and measures readings acknowledged per second; decode-only decodes
// the same bodies with 4 goroutines and no HTTP or WAL.
func BenchmarkHTTPWrite(b *testing.B) {
	const lines, clients = 5000, 4
	bodies := make([][]byte, 8)
	for i := range bodies {
		bodies[i] = benchLines(lines, i, 100) // a Telegraf batch from many devices
	}
	perBody := 2 * lines
	run := func(b *testing.B, work func(i int)) {
		b.SetBytes(int64(len(bodies[0])))
		b.ReportAllocs()
		var next atomic.Int64
		start := time.Now()
		b.ResetTimer()
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				for i := int(next.Add(1)); i <= b.N; i = int(next.Add(1)) {
					work(i)
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		b.ReportMetric(float64(b.N*perBody)/time.Since(start).Seconds(), "points/s")
	}
	b.Run("wal", func(b *testing.B) {
		srv, st := startHTTPWrite(b, DefaultHTTPWriteConfig(), openTestWAL(b), nil)
		srv.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = clients
		run(b, func(i int) {
			resp, err := srv.Client().Post(srv.URL+"/api/v2/write?precision=ns", "text/plain", bytes.NewReader(bodies[i%len(bodies)]))
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				b.Errorf("status %d", resp.StatusCode)
			}
		})
		if got := st.Readings[ListenerHTTP].Load(); got != uint64(b.N*perBody) {
			b.Errorf("stored %d, want %d", got, b.N*perBody)
		}
	})
	b.Run("decode-only", func(b *testing.B) {
		var pool = sync.Pool{New: func() any { return &httpWorker{dec: newLineDecoder()} }}
		run(b, func(i int) {
			wk := pool.Get().(*httpWorker)
			wk.readings = wk.dec.Decode(wk.readings[:0], "", bodies[i%len(bodies)], Options{NowNs: time.Now().UnixNano()}, &wk.res)
			if len(wk.readings) != perBody {
				b.Errorf("decoded %d", len(wk.readings))
			}
			pool.Put(wk)
		})
	})
}
