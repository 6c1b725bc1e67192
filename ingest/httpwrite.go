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
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unsafe"

	"github.com/runnel-iot/runnel/wal"
)

// HTTPWriteConfig configures the write endpoint (section `http_write`).
type HTTPWriteConfig struct {
	// MaxBodyBytes bounds a request body, both as sent and, for a gzip
	// body, once decompressed; a larger one is answered 413.
	MaxBodyBytes wal.ByteSize `yaml:"max_body_bytes"`
	// MaxInflightBytes bounds the memory of all writes in flight together:
	// their bodies as received (and decompressed) and their decoded
	// readings. A write that would pass it is answered 503 with
	// Retry-After, so many concurrent or slow writers cannot exhaust
	// memory. At least max_body_bytes plus 2MiB, so one write of the
	// largest size always fits.
	MaxInflightBytes wal.ByteSize `yaml:"max_inflight_bytes"`
	// ReadTimeout bounds the time to receive a whole request body (the
	// gateway's server bounds the headers to 10s); a slower client is
	// cut off, so a trickling body cannot hold memory.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// Tokens are the accepted API tokens (`Authorization: Token <t>` or
	// `Bearer <t>`); empty: no authentication. The gateway passes
	// http.tokens here when this is empty.
	Tokens []string `yaml:"tokens"`
	// TokensFile names a file of more tokens, one per line; the gateway's
	// loader reads it into Tokens.
	TokensFile string `yaml:"tokens_file"`
	// MaxFutureSkew rejects readings more than this far ahead of the
	// receive time; 0 means the decoder default (1m), a negative value
	// turns the check off.
	MaxFutureSkew time.Duration `yaml:"max_future_skew"`
}

// DefaultHTTPWriteConfig returns the defaults, sized for a small device:
// 16 MiB bodies, 20 MiB for all writes in flight, 30s to send a body, no
// tokens, 1m of future skew.
func DefaultHTTPWriteConfig() HTTPWriteConfig {
	return HTTPWriteConfig{
		MaxBodyBytes:     16 * wal.MiB,
		MaxInflightBytes: 20 * wal.MiB,
		ReadTimeout:      30 * time.Second,
		MaxFutureSkew:    DefaultMaxFutureSkew,
	}
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
	if c.MaxInflightBytes < c.MaxBodyBytes+inflightSlack || c.MaxInflightBytes > 4*wal.GiB {
		bad("max_inflight_bytes", "%s is out of range max_body_bytes + 2MiB (%s) to 4GiB (one write of the largest body and its decoded readings must fit)",
			c.MaxInflightBytes, c.MaxBodyBytes+inflightSlack)
	}
	if c.ReadTimeout < 100*time.Millisecond || c.ReadTimeout > 10*time.Minute {
		bad("read_timeout", "%s is out of range 100ms to 10m", c.ReadTimeout)
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
//   - 408 `request timeout`: the body did not arrive within ReadTimeout;
//   - 503 `unavailable` with `Retry-After: 1`: the writes in flight hold
//     MaxInflightBytes (nothing of this request was stored), or the WAL
//     failed or refused the write; the request should be resent whole (a
//     WAL failure after some chunks were stored makes the resend a
//     duplicate of those, which at-least-once delivery allows).
//
// Memory: nothing is allocated by the declared Content-Length. The handler
// waits for the first body bytes before it takes a worker; the body buffer
// then grows as bytes arrive, each growth charged first to one budget,
// MaxInflightBytes, shared by every write in flight (bodies, decompressed,
// and decoded readings). The body is decoded and appended in chunks of
// about 64 KiB of whole lines, so a request's decoded readings cost about
// 1 MiB whatever its size.
//
// The handler blocks until the readings are durable (under wal.sync: batch,
// after the fsync), so a slow disk slows the writers, not memory; the
// request's context cancels the wait (the readings may still become
// durable; the client sees no 204). Safe for concurrent use: decoders and
// buffers come from a bounded free list (2×GOMAXPROCS kept, each keeping at
// most 256 KiB of body and 8192 readings), so decoders keep their warm
// intern caches across requests and garbage collections.
type HTTPWrite struct {
	cfg     HTTPWriteConfig
	app     Appender
	rejects RejectSink
	stats   *Stats
	logger  *slog.Logger
	tokens  [][sha256.Size]byte

	workers chan *httpWorker // free list; decoders keep warm intern caches
	gzips   sync.Pool        // *gzip.Reader
	budget  byteBudget       // max_inflight_bytes
}

// httpWorker is the per-request state taken from the pool.
type httpWorker struct {
	dec      Decoder
	res      Result // one chunk's
	total    Result // the request's, merged over its chunks
	readings []wal.Reading
	body     []byte
	held     int64 // bytes of the in-flight budget this request holds
}

// Bounds on what a pooled worker keeps between requests, so one huge body
// does not pin its buffers for good (the pool holds 2×GOMAXPROCS workers).
const (
	keepBodyBytes = 256 << 10
	keepReadings  = 8192
)

const (
	// decodeChunkBytes is how much of a body is decoded and appended as one
	// batch: a request's decoded readings are bounded by it (a reading
	// takes at least 4 bytes of line protocol), not by the body size.
	decodeChunkBytes = 64 << 10
	// readingBytes is what one decoded reading costs in memory.
	readingBytes = int64(unsafe.Sizeof(wal.Reading{}))
	// minBodyBuf is the first buffer a body gets once its bytes arrive; it
	// doubles from there as they keep coming, never by the declared length.
	minBodyBuf = 16 << 10
	// gzipCost is charged to the budget for a gzip body: the inflater's
	// window and tables.
	gzipCost = 64 << 10
	// inflightSlack is the room max_inflight_bytes must leave above
	// max_body_bytes: a chunk's readings and the gzip inflater.
	inflightSlack = 2 * wal.MiB
)

// errOverBudget: the writes in flight hold max_inflight_bytes.
var errOverBudget = errors.New("writes in flight hold max_inflight_bytes")

// byteBudget is a counting semaphore of bytes that never blocks: acquire
// fails at once when the bytes are not free (the writer gets 503 and
// retries, as InfluxDB clients do).
type byteBudget struct {
	mu          sync.Mutex
	used, limit int64
}

func (b *byteBudget) acquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

func (b *byteBudget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

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
	h.budget.limit = int64(cfg.MaxInflightBytes)
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
	// The whole body must arrive within read_timeout (the server bounds
	// the headers): a trickling client cannot hold a worker for long. A
	// ResponseWriter without deadlines (tests' recorders) is left as is.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.cfg.ReadTimeout))

	nowNs := time.Now().UnixNano()
	h.stats.Messages[ListenerHTTP].Add(1)
	src, zr, status, msg := h.bodySource(w, r)
	if zr != nil {
		defer h.gzips.Put(zr)
	}
	if status != 0 {
		h.refuse(w, r, nowNs, status, msg, nil)
		return
	}
	// Wait for the first bytes before taking a worker or any budget: a
	// declared length allocates nothing.
	var first [512]byte
	n, err := io.ReadAtLeast(src, first[:], 1)
	if err != nil && err != io.EOF {
		status, msg := bodyReadError(err, h.cfg.MaxBodyBytes)
		h.refuse(w, r, nowNs, status, msg, first[:n])
		return
	}
	wk := h.worker()
	defer h.put(wk)
	if n > 0 {
		status, msg = h.readBody(src, first[:n], zr != nil, wk)
	} else {
		wk.body = wk.body[:0]
	}
	if status != 0 {
		h.refuse(w, r, nowNs, status, msg, wk.body)
		return
	}
	body := wk.body
	h.stats.Bytes[ListenerHTTP].Add(uint64(len(body)))
	opt := Options{NowNs: nowNs, MaxFutureSkew: h.cfg.MaxFutureSkew, Precision: prec}
	stored, err := h.decodeAppend(r.Context(), wk, opt)
	res := &wk.total
	if err == nil && res.requireReadings(body) {
		h.stats.Rejected[ListenerHTTP][ReasonNoReadings].Add(1)
	}
	if res.Problems() > 0 && h.rejects != nil {
		h.rejects.Add(resultReject(ListenerHTTP, nowNs, r.RemoteAddr, r.URL.RequestURI(), res, body))
	}
	if errors.Is(err, errOverBudget) {
		h.refuse(w, r, nowNs, http.StatusServiceUnavailable, err.Error(), nil)
		return
	}
	if err != nil {
		h.logger.Debug("http write not stored", "remote_addr", r.RemoteAddr, "err", err)
		w.Header().Set("Retry-After", "1")
		msg := "write to wal failed: " + err.Error() + "; retry the whole request"
		if stored > 0 {
			msg += " (part of it may be stored already: a retry may duplicate it)"
		} else {
			msg += " (nothing was stored)"
		}
		writeInfluxError(w, http.StatusServiceUnavailable, "unavailable", msg)
		return
	}
	if res.Problems() > 0 {
		writeInvalid(w, res, stored)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// InflightBytes returns the bytes of max_inflight_bytes that writes in
// flight hold now.
func (h *HTTPWrite) InflightBytes() int64 {
	h.budget.mu.Lock()
	defer h.budget.mu.Unlock()
	return h.budget.used
}

// hold charges n more bytes to the request's share of the budget.
func (h *HTTPWrite) hold(wk *httpWorker, n int64) bool {
	if n <= 0 {
		return true
	}
	if !h.budget.acquire(n) {
		return false
	}
	wk.held += n
	return true
}

// settle turns a reservation of the budget into what was allocated:
// the part not used is given back. Decode grows the slice by append,
// which may round past the reservation by a little; that is charged
// too (the budget may then run over by less than one chunk's slack,
// inflightSlack), so held stays what the request's buffers hold.
func (h *HTTPWrite) settle(wk *httpWorker, reserved, grown int64) {
	grown = max(grown, 0)
	switch {
	case grown < reserved:
		h.budget.release(reserved - grown)
	case grown > reserved:
		h.budget.mu.Lock()
		h.budget.used += grown - reserved
		h.budget.mu.Unlock()
	}
	wk.held += grown - reserved
}

// put releases the request's budget and returns its worker to the pool,
// dropping buffers grown by a huge body.
func (h *HTTPWrite) put(wk *httpWorker) {
	h.budget.release(wk.held)
	wk.held = 0
	if cap(wk.body) > keepBodyBytes {
		wk.body = nil
	}
	wk.body = wk.body[:0]
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

// bodySource returns the request body as a reader of decompressed bytes,
// bounded as configured, and whether it is gzip (the caller then puts zr
// back in the pool). On failure it returns the HTTP status and message.
func (h *HTTPWrite) bodySource(w http.ResponseWriter, r *http.Request) (src io.Reader, zr *gzip.Reader, status int, msg string) {
	limit := int64(h.cfg.MaxBodyBytes)
	if r.ContentLength > limit {
		return nil, nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds max_body_bytes (%s)", r.ContentLength, h.cfg.MaxBodyBytes)
	}
	src = http.MaxBytesReader(w, r.Body, limit)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		return src, nil, 0, ""
	case "gzip", "x-gzip":
		zr, _ = h.gzips.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(src)
		} else {
			err = zr.Reset(src)
		}
		if err != nil {
			if zr != nil {
				h.gzips.Put(zr)
			}
			status, msg = bodyReadError(err, h.cfg.MaxBodyBytes)
			return nil, nil, status, msg
		}
		// One byte past the limit tells a body at the limit from a bomb.
		return io.LimitReader(zr, limit+1), zr, 0, ""
	default:
		return nil, nil, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q is not supported: use gzip or identity", enc)
	}
}

// readBody reads the (decompressed) body into wk.body, starting with the
// bytes already read (first). The buffer grows only as bytes arrive,
// doubling from minBodyBuf, each growth charged to the budget first. On
// failure it returns the HTTP status and message; wk.body then holds what
// was read.
func (h *HTTPWrite) readBody(src io.Reader, first []byte, gz bool, wk *httpWorker) (int, string) {
	limit := int64(h.cfg.MaxBodyBytes)
	if gz && !h.hold(wk, gzipCost) {
		return http.StatusServiceUnavailable, errOverBudget.Error()
	}
	// Bytes have arrived: the body gets its first buffer (a pooled
	// worker's, or minBodyBuf), charged in full.
	if cap(wk.body) < minBodyBuf {
		wk.body = make([]byte, 0, minBodyBuf)
	}
	if !h.hold(wk, int64(cap(wk.body))) {
		return http.StatusServiceUnavailable, errOverBudget.Error()
	}
	wk.body = append(wk.body[:0], first...)
	for {
		if len(wk.body) == cap(wk.body) {
			c := int64(cap(wk.body))
			if c > limit { // only a gzip body gets here: limit+1 bytes
				break
			}
			nc := min(max(2*c, minBodyBuf), limit+1)
			if !h.hold(wk, nc-c) {
				return http.StatusServiceUnavailable, errOverBudget.Error()
			}
			nb := make([]byte, len(wk.body), nc)
			copy(nb, wk.body)
			wk.body = nb
		}
		n, err := src.Read(wk.body[len(wk.body):cap(wk.body)])
		wk.body = wk.body[:len(wk.body)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return bodyReadError(err, h.cfg.MaxBodyBytes)
		}
	}
	if gz && int64(len(wk.body)) > limit {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("gzip body decompresses to more than max_body_bytes (%s)", h.cfg.MaxBodyBytes)
	}
	return 0, ""
}

func bodyReadError(err error, limit wal.ByteSize) (int, string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds max_body_bytes (%s)", limit)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout, "body not received within http_write.read_timeout"
	case errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum), errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadRequest, "gzip body: " + err.Error()
	}
	return http.StatusBadRequest, "read body: " + err.Error()
}

// decodeAppend decodes the body in chunks of whole lines, about
// decodeChunkBytes each, and appends each chunk's readings as one batch, so
// a request's decoded readings never exceed one chunk's. Problems are
// merged into wk.total with line numbers and offsets of the whole body. It
// waits until every batch is durable and returns the readings stored, or
// the first failure (earlier batches may then be durable: a retry
// duplicates them, which at-least-once delivery allows).
func (h *HTTPWrite) decodeAppend(ctx context.Context, wk *httpWorker, opt Options) (int, error) {
	body := wk.body
	wk.total.Reset()
	done := make(chan error, len(body)/decodeChunkBytes+1)
	var (
		appended, stored int
		line             int
	)
	for off := 0; off < len(body); {
		end := len(body)
		if off+decodeChunkBytes < len(body) {
			if nl := bytes.IndexByte(body[off+decodeChunkBytes:], '\n'); nl >= 0 {
				end = off + decodeChunkBytes + nl + 1
			}
		}
		chunk := body[off:end]
		// At most one reading per 4 bytes ("a=1,"): the budget must hold
		// that worst case before the chunk decodes, but the slice grows
		// only to what the chunk holds (an ordinary line carries one
		// reading per 50 bytes or so), so the pooled slice serves the
		// next request instead of a worst-case one allocated per chunk.
		was := cap(wk.readings)
		reserve := int64(max(0, len(chunk)/4+2-was)) * readingBytes
		if !h.hold(wk, reserve) {
			return stored, errOverBudget
		}
		wk.readings = wk.dec.Decode(wk.readings[:0], "", chunk, opt, &wk.res)
		h.settle(wk, reserve, int64(cap(wk.readings)-was)*readingBytes)
		h.stats.CountResult(ListenerHTTP, &wk.res)
		mergeResult(&wk.total, &wk.res, line, off)
		line += bytes.Count(chunk, []byte{'\n'})
		off = end
		if len(wk.readings) == 0 {
			continue
		}
		n := uint64(len(wk.readings))
		st := h.stats
		b := wal.Batch{IngestNs: opt.NowNs, Readings: wk.readings}
		err := h.app.Append(ctx, &b, func(err error) {
			if err != nil {
				st.Dropped[ListenerHTTP][DropAppendFailed].Add(n)
			} else {
				st.Readings[ListenerHTTP].Add(n)
			}
			done <- err
		})
		if err != nil {
			st.Dropped[ListenerHTTP][DropAppendFailed].Add(n)
			return stored, err
		}
		appended++
		stored += int(n)
	}
	var first error
	for range appended {
		select {
		case err := <-done:
			if err != nil && first == nil {
				first = err
			}
		case <-ctx.Done():
			return stored, ctx.Err()
		}
	}
	return stored, first
}

// mergeResult adds a chunk's result to the request's: counts add up, and
// the first MaxErrors problems are kept with their line and offset in the
// whole body (the chunk starts after line lines, at byte off).
func mergeResult(total, chunk *Result, line, off int) {
	total.Readings += chunk.Readings
	for i, n := range chunk.Rejected {
		total.Rejected[i] += n
	}
	total.SkippedTotal += chunk.SkippedTotal
	total.PrecisionLoss += chunk.PrecisionLoss
	if total.skipAt == 0 && chunk.skipAt > 0 {
		total.skipAt = chunk.skipAt + off
	}
	for _, f := range chunk.Skipped {
		if len(total.Skipped) < MaxSkippedFields && !slices.ContainsFunc(total.Skipped, func(t FieldCount) bool { return t.Field == f.Field }) {
			total.Skipped = append(total.Skipped, f)
		}
	}
	for _, e := range chunk.Errors {
		if len(total.Errors) >= MaxErrors {
			break
		}
		e.Line += line
		if e.Offset >= 0 {
			e.Offset += off
		}
		total.Errors = append(total.Errors, e)
	}
}

// refuse answers a request whose body could not be taken, counting it and
// keeping it as a dead letter when it is the payload's fault.
func (h *HTTPWrite) refuse(w http.ResponseWriter, r *http.Request, nowNs int64, status int, msg string, partial []byte) {
	reason := ""
	switch status {
	case http.StatusServiceUnavailable:
		// Over the in-flight budget: not the payload's fault, no dead
		// letter; the client retries.
		h.stats.Dropped[ListenerHTTP][DropOverBudget].Add(1)
		w.Header().Set("Retry-After", "1")
		writeInfluxError(w, status, "unavailable", msg+"; retry later")
		return
	case http.StatusRequestTimeout:
		writeInfluxError(w, status, "request timeout", msg)
		return
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
