package ingest

// The InfluxDB-compatible write endpoint, POST /api/v2/write, so Telegraf's
// influxdb_v2 output and devices written for InfluxDB can point at Runnel
// unchanged. A 204 is sent only once the readings are durable in the WAL.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/runnel-iot/runnel/wal"
)

// HTTPWriteConfig configures the write endpoint (section `http_write`).
type HTTPWriteConfig struct {
	// MaxBodyBytes bounds a request body, both as sent and, for a gzip
	// body, once decompressed; a larger one is answered 413.
	MaxBodyBytes wal.ByteSize `yaml:"max_body_bytes"`
	// Tokens are the accepted API tokens (`Authorization: Token <t>` or
	// `Bearer <t>`); empty: no authentication.
	Tokens []string `yaml:"tokens"`
	// MaxFutureSkew rejects readings more than this far ahead of the
	// receive time; 0 means the decoder default (1m), a negative value
	// turns the check off.
	MaxFutureSkew time.Duration `yaml:"max_future_skew"`
}

// DefaultHTTPWriteConfig returns the defaults: 32 MiB bodies, no tokens,
// 1m of future skew.
func DefaultHTTPWriteConfig() HTTPWriteConfig {
	return HTTPWriteConfig{MaxBodyBytes: 32 * wal.MiB, MaxFutureSkew: DefaultMaxFutureSkew}
}

// Validate reports every invalid setting at once, joined with errors.Join;
// each is a *ConfigError with the key relative to the section. Token values
// are never repeated in the messages.
func (c HTTPWriteConfig) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if c.MaxBodyBytes < wal.KiB || c.MaxBodyBytes > wal.GiB {
		bad("max_body_bytes", "%s is out of range 1KiB to 1GiB (a body is held in memory while it is decoded)", c.MaxBodyBytes)
	}
	for i, t := range c.Tokens {
		key := "tokens[" + strconv.Itoa(i) + "]"
		switch {
		case t == "":
			bad(key, "empty token")
		case strings.IndexFunc(t, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
			bad(key, "token contains white space or control characters, which an Authorization header cannot carry")
		}
	}
	return errors.Join(errs...)
}

// HTTPWrite is the http.Handler of POST /api/v2/write, compatible with
// InfluxDB 2 and Telegraf's influxdb_v2 output:
//
//   - query parameters: precision=ns|us|ms|s (default ns); org, bucket and
//     any other parameter are accepted and ignored, as InfluxDB ignores
//     unknown ones;
//   - with Tokens configured, `Authorization: Token <t>` or `Bearer <t>`
//     (constant-time compare), else 401;
//   - `Content-Encoding: gzip` or identity; the body is bounded by
//     MaxBodyBytes as sent and once decompressed (a gzip bomb is cut off
//     at the limit and answered 413);
//   - all lines are decoded; bad lines are rejected alone (counted by
//     reason, sent to the reject sink as one Reject per request), good
//     lines are stored.
//
// Replies (errors are JSON with InfluxDB's `code` and `message`, which
// Telegraf logs):
//
//   - 204: every line stored, durable in the WAL;
//   - 400 `invalid`: some or all lines rejected; the good ones are durable
//     before the reply. Besides code and message the body has line and
//     column of the first problem, accepted (readings stored: one per
//     numeric field of a good line), rejected (lines rejected) and errors
//     (the first MaxErrors problems with line, column, reason, message).
//     Telegraf drops a batch answered 400, which is right: resending it
//     cannot fix it. Also for a bad precision, naming the allowed ones;
//   - 401 `unauthorized`, 405 `method not allowed` (with Allow: POST),
//     413 `request too large`, 415 `unsupported media type`;
//   - 503 `unavailable` with `Retry-After: 1`: the WAL failed or refused
//     the write; nothing of the request was acknowledged and it should be
//     resent whole.
//
// The handler blocks until the readings are durable (under wal.sync: batch,
// after the fsync), so a slow disk slows the writers, not memory; the
// request's context cancels the wait (the readings may still become
// durable; the client sees no 204). Safe for concurrent use: decoders and
// buffers come from a bounded free list (2×GOMAXPROCS kept), so decoders
// keep their warm intern caches across requests and garbage collections.
type HTTPWrite struct {
	cfg     HTTPWriteConfig
	app     Appender
	rejects RejectSink
	stats   *Stats
	logger  *slog.Logger
	tokens  [][sha256.Size]byte

	workers chan *httpWorker // free list; decoders keep warm intern caches
	gzips   sync.Pool        // *gzip.Reader
}

// httpWorker is the per-request state taken from the pool.
type httpWorker struct {
	dec      Decoder
	res      Result
	readings []wal.Reading
	body     bytes.Buffer
}

// Bounds on what a pooled worker keeps between requests, so one huge body
// does not pin its buffers for good.
const (
	keepBodyBytes = 4 << 20
	keepReadings  = 1 << 17
)

// NewHTTPWrite validates cfg and returns the handler, which appends to app,
// sends rejected lines to rejects and counts into stats (rejects, stats and
// logger may be nil). It starts no goroutine.
func NewHTTPWrite(cfg HTTPWriteConfig, app Appender, rejects RejectSink, stats *Stats, logger *slog.Logger) (*HTTPWrite, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("http write config: %w", err)
	}
	if app == nil {
		return nil, errors.New("new http write handler: nil appender")
	}
	if stats == nil {
		stats = new(Stats)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &HTTPWrite{cfg: cfg, app: app, rejects: rejects, stats: stats, logger: logger.With("listener", "http")}
	for _, t := range cfg.Tokens {
		h.tokens = append(h.tokens, sha256.Sum256([]byte(t)))
	}
	h.workers = make(chan *httpWorker, max(4, 2*runtime.GOMAXPROCS(0)))
	return h, nil
}

// ServeHTTP handles one write request; see HTTPWrite.
func (h *HTTPWrite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeInfluxError(w, http.StatusMethodNotAllowed, "method not allowed",
			"method "+r.Method+" not allowed: writes use POST")
		return
	}
	if !h.authorized(r.Header.Get("Authorization")) {
		w.Header().Set("WWW-Authenticate", `Token realm="runnel"`)
		writeInfluxError(w, http.StatusUnauthorized, "unauthorized", "unauthorized access")
		return
	}
	prec, err := ParsePrecision(r.URL.Query().Get("precision"))
	if err != nil {
		writeInfluxError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	wk := h.worker()
	defer h.put(wk)

	nowNs := time.Now().UnixNano()
	h.stats.Messages[ListenerHTTP].Add(1)
	if status, msg := h.readBody(w, r, &wk.body); status != 0 {
		h.refuse(w, r, nowNs, status, msg, wk.body.Bytes())
		return
	}
	body := wk.body.Bytes()
	h.stats.Bytes[ListenerHTTP].Add(uint64(len(body)))
	opt := Options{NowNs: nowNs, MaxFutureSkew: h.cfg.MaxFutureSkew, Precision: prec}
	wk.readings = wk.dec.Decode(wk.readings[:0], "", body, opt, &wk.res)
	res := &wk.res
	h.stats.CountResult(ListenerHTTP, res)
	if res.Problems() > 0 && h.rejects != nil {
		h.rejects.Add(resultReject(ListenerHTTP, nowNs, r.RemoteAddr, r.URL.RequestURI(), res, body))
	}
	if len(wk.readings) > 0 {
		if err := h.appendDurable(r.Context(), nowNs, wk.readings); err != nil {
			h.logger.Debug("http write not stored", "remote_addr", r.RemoteAddr, "readings", len(wk.readings), "err", err)
			w.Header().Set("Retry-After", "1")
			writeInfluxError(w, http.StatusServiceUnavailable, "unavailable",
				"write to wal failed: "+err.Error()+"; nothing was stored, retry")
			return
		}
	}
	if res.Problems() > 0 {
		writeInvalid(w, res, len(wk.readings))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// put returns a worker to the pool, dropping buffers grown by a huge body.
func (h *HTTPWrite) put(wk *httpWorker) {
	if wk.body.Cap() > keepBodyBytes {
		wk.body = bytes.Buffer{}
	}
	wk.body.Reset()
	if cap(wk.readings) > keepReadings {
		wk.readings = nil
	}
	wk.readings = wk.readings[:0] // its strings are the decoder's interned ones
	select {
	case h.workers <- wk:
	default: // more requests in flight than the list keeps
	}
}

// worker takes a worker from the free list, or makes one.
func (h *HTTPWrite) worker() *httpWorker {
	select {
	case wk := <-h.workers:
		return wk
	default:
		return &httpWorker{dec: newLineDecoder()}
	}
}

// authorized checks the Authorization header against the tokens. Every
// token is compared, by SHA-256 digest so neither content nor length leaks
// through timing.
func (h *HTTPWrite) authorized(header string) bool {
	if len(h.tokens) == 0 {
		return true
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !(strings.EqualFold(scheme, "Token") || strings.EqualFold(scheme, "Bearer")) {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	match := 0
	for i := range h.tokens {
		match |= subtle.ConstantTimeCompare(sum[:], h.tokens[i][:])
	}
	return match == 1
}

// readBody reads the (decompressed) body into buf. On failure it returns
// the HTTP status and message; buf then holds what was read.
func (h *HTTPWrite) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) (int, string) {
	limit := int64(h.cfg.MaxBodyBytes)
	if r.ContentLength > limit {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds max_body_bytes (%s)", r.ContentLength, h.cfg.MaxBodyBytes)
	}
	var src io.Reader = http.MaxBytesReader(w, r.Body, limit)
	gz := false
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		if r.ContentLength > 0 {
			buf.Grow(int(r.ContentLength))
		}
	case "gzip", "x-gzip":
		zr, _ := h.gzips.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(src)
		} else {
			err = zr.Reset(src)
		}
		if err != nil {
			return bodyReadError(err, h.cfg.MaxBodyBytes)
		}
		defer h.gzips.Put(zr)
		// One byte past the limit tells a body at the limit from a bomb.
		src, gz = io.LimitReader(zr, limit+1), true
	default:
		return http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q is not supported: use gzip or identity", enc)
	}
	if _, err := buf.ReadFrom(src); err != nil {
		return bodyReadError(err, h.cfg.MaxBodyBytes)
	}
	if gz && int64(buf.Len()) > limit {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("gzip body decompresses to more than max_body_bytes (%s)", h.cfg.MaxBodyBytes)
	}
	return 0, ""
}

func bodyReadError(err error, limit wal.ByteSize) (int, string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds max_body_bytes (%s)", limit)
	case errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum), errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadRequest, "gzip body: " + err.Error()
	}
	return http.StatusBadRequest, "read body: " + err.Error()
}

// refuse answers a request whose body could not be taken, counting it and
// keeping it as a dead letter when it is the payload's fault.
func (h *HTTPWrite) refuse(w http.ResponseWriter, r *http.Request, nowNs int64, status int, msg string, partial []byte) {
	reason := ""
	switch status {
	case http.StatusRequestEntityTooLarge:
		h.stats.Dropped[ListenerHTTP][DropTooLarge].Add(1)
		reason = DropTooLarge.String()
		writeInfluxError(w, status, "request too large", msg)
	case http.StatusUnsupportedMediaType:
		h.stats.Rejected[ListenerHTTP][ReasonSyntax].Add(1)
		reason = ReasonSyntax.String()
		writeInfluxError(w, status, "unsupported media type", msg)
	default:
		if strings.HasPrefix(msg, "gzip body:") {
			h.stats.Rejected[ListenerHTTP][ReasonSyntax].Add(1)
			reason = ReasonSyntax.String()
		}
		writeInfluxError(w, status, "invalid", msg)
	}
	if reason != "" && h.rejects != nil {
		size := len(partial)
		if r.ContentLength > int64(size) {
			size = int(min(r.ContentLength, int64(^uint(0)>>1)))
		}
		h.rejects.Add(Reject{
			TimeNs: nowNs, Listener: ListenerHTTP.String(), Source: r.RemoteAddr, Topic: r.URL.RequestURI(),
			Reason: reason, Error: msg, Raw: cutRaw(partial), RawBytes: size,
		})
	}
}

// appendDurable appends the readings as one batch and waits until they are
// durable or failed; the outcome is counted whether or not ctx ends first.
func (h *HTTPWrite) appendDurable(ctx context.Context, nowNs int64, readings []wal.Reading) error {
	st := h.stats
	n := uint64(len(readings))
	b := wal.Batch{IngestNs: nowNs, Readings: readings}
	ch := make(chan error, 1)
	err := h.app.Append(ctx, &b, func(err error) {
		if err != nil {
			st.Dropped[ListenerHTTP][DropAppendFailed].Add(n)
		} else {
			st.Readings[ListenerHTTP].Add(n)
		}
		ch <- err
	})
	if err != nil {
		st.Dropped[ListenerHTTP][DropAppendFailed].Add(n)
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// influxError is InfluxDB 2's error body; Telegraf reads code and message.
type influxError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeInfluxError(w http.ResponseWriter, status int, code, msg string) {
	writeJSONBody(w, status, influxError{Code: code, Message: msg})
}

// invalidWrite is the 400 body of a write with rejected lines.
type invalidWrite struct {
	Code     string      `json:"code"`
	Message  string      `json:"message"`
	Line     int         `json:"line"`
	Column   int         `json:"column"`
	Accepted int         `json:"accepted"`
	Rejected int         `json:"rejected"`
	Errors   []lineError `json:"errors"`
}

type lineError struct {
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func writeInvalid(w http.ResponseWriter, res *Result, accepted int) {
	v := invalidWrite{Code: "invalid", Accepted: accepted, Rejected: res.Problems(), Errors: make([]lineError, 0, len(res.Errors))}
	first := "rejected"
	if len(res.Errors) > 0 {
		e := res.Errors[0]
		v.Line, v.Column, first = e.Line, e.Column, e.Error()
	}
	if accepted > 0 {
		v.Message = fmt.Sprintf("partial write: %s (%d lines rejected, %d readings stored)", first, v.Rejected, accepted)
	} else {
		v.Message = fmt.Sprintf("nothing written: %s (%d lines rejected)", first, v.Rejected)
	}
	for _, e := range res.Errors {
		v.Errors = append(v.Errors, lineError{Line: e.Line, Column: e.Column, Reason: e.Reason.String(), Message: e.Error()})
	}
	writeJSONBody(w, http.StatusBadRequest, v)
}

func writeJSONBody(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("BUG: marshal write reply: " + err.Error())
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
