package ingest

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// denialLogEvery is the interval within which a denial cause is logged
// once; the next line says how many were suppressed. A flood of denied
// clients must not flood the log (issue 15: 200 denied publishes wrote
// 154 MB in 3 s).
const denialLogEvery = 10 * time.Second

// rateLimiter lets one event per key through per interval and counts the
// rest. Safe for concurrent use; its memory is bounded by the number of
// distinct keys, which are fixed strings (causes, mochi's messages).
type rateLimiter struct {
	every time.Duration
	mu    sync.Mutex
	keys  map[string]*rateKey
}

type rateKey struct {
	next       time.Time
	suppressed int
}

func newRateLimiter(every time.Duration) *rateLimiter {
	return &rateLimiter{every: every, keys: map[string]*rateKey{}}
}

// allow reports whether an event of key may be logged now, and how many
// were suppressed since the last one that was.
func (r *rateLimiter) allow(key string, now time.Time) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.keys[key]
	if k == nil {
		if len(r.keys) >= 1024 { // bounded: unknown keys beyond it pass
			return true, 0
		}
		k = &rateKey{}
		r.keys[key] = k
	}
	if now.Before(k.next) {
		k.suppressed++
		return false, 0
	}
	n := k.suppressed
	k.next, k.suppressed = now.Add(r.every), 0
	return true, n
}

// deny logs a refusal at Info, at most once per cause per denialLogEvery.
func (h *ingestHook) deny(cause string, args ...any) {
	ok, suppressed := h.denials.allow(cause, time.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	h.logger.Info("mqtt "+cause, args...)
}

// quietHandler is the slog.Handler given to mochi: it drops the attributes
// that carry whole packets (pk, packet, will: mochi logs a denied 3.1.1
// publish with its payload as decimal bytes) and rate-limits mochi's
// warnings and errors per message.
type quietHandler struct {
	next    slog.Handler
	limiter *rateLimiter
}

func newQuietHandler(next slog.Handler) *quietHandler {
	return &quietHandler{next: next, limiter: newRateLimiter(denialLogEvery)}
}

// packetAttr reports whether an attribute key carries a packet.
func packetAttr(key string) bool { return key == "pk" || key == "packet" || key == "will" }

func (q *quietHandler) Enabled(ctx context.Context, l slog.Level) bool { return q.next.Enabled(ctx, l) }

func (q *quietHandler) Handle(ctx context.Context, r slog.Record) error {
	var suppressed int
	if r.Level >= slog.LevelWarn {
		ok, n := q.limiter.allow(r.Message, r.Time)
		if !ok {
			return nil
		}
		suppressed = n
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if !packetAttr(a.Key) {
			out.AddAttrs(a)
		}
		return true
	})
	if suppressed > 0 {
		out.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return q.next.Handle(ctx, out)
}

func (q *quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	kept := as[:0:0]
	for _, a := range as {
		if !packetAttr(a.Key) {
			kept = append(kept, a)
		}
	}
	return &quietHandler{next: q.next.WithAttrs(kept), limiter: q.limiter}
}

func (q *quietHandler) WithGroup(name string) slog.Handler {
	return &quietHandler{next: q.next.WithGroup(name), limiter: q.limiter}
}
