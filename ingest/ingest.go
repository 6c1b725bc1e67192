package ingest

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/runnel-iot/runnel/wal"
)

// Appender is where ingest puts the readings it decoded: the readings WAL,
// behind the gateway, which also hands each durable batch on to the windows.
// Ingest declares it and never sees what is behind it.
type Appender interface {
	// Append queues a batch and calls done once it is durable (err nil) or
	// failed. It blocks while the WAL's pending budget is full (ctx cancels
	// the wait, and then done is never called) so a slow disk slows the
	// client that sent the batch. done runs on the WAL's goroutine, in WAL
	// order: it must not block. Append does not retain b after it returns.
	Append(ctx context.Context, b *wal.Batch, done func(err error)) error
	// TryAppend is Append for best-effort paths (UDP, MQTT QoS 0): it never
	// blocks, and returns ErrBusy when the WAL cannot take the batch now.
	TryAppend(b *wal.Batch, done func(err error)) error
}

// ErrBusy is returned by Appender.TryAppend when the WAL cannot take more
// right now; best-effort paths count the batch as dropped.
var ErrBusy = errors.New("wal busy: pending appends full")

// AppendSync appends b and waits until it is durable or failed.
func AppendSync(ctx context.Context, a Appender, b *wal.Batch) error {
	ch := make(chan error, 1)
	if err := a.Append(ctx, b, func(err error) { ch <- err }); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Listener names where a payload came in; it is the `listener` label of the
// ingest metrics.
type Listener uint8

const (
	ListenerMQTT Listener = iota
	ListenerUDP
	ListenerHTTP
	NumListeners
)

func (l Listener) String() string {
	switch l {
	case ListenerMQTT:
		return "mqtt"
	case ListenerUDP:
		return "udp"
	case ListenerHTTP:
		return "http"
	}
	return "unknown"
}

// Drop says why readings that decoded fine were still not stored.
type Drop uint8

const (
	// DropBusy: a best-effort path found the WAL's pending budget full.
	DropBusy Drop = iota
	// DropAppendFailed: the WAL failed the write; the client was not
	// acknowledged (MQTT QoS ≥ 1, HTTP) and should resend.
	DropAppendFailed
	// DropTooLarge: a payload over the listener's size limit.
	DropTooLarge
	// DropSourceDenied: a UDP datagram from a peer outside
	// udp.allow_sources (counted per datagram).
	DropSourceDenied
	// DropOverBudget: an HTTP write refused because the bodies and readings
	// of the writes in flight filled http_write.max_inflight_bytes (counted
	// per request; the client got 503 and retries).
	DropOverBudget
	NumDrops
)

func (d Drop) String() string {
	switch d {
	case DropBusy:
		return "wal_busy"
	case DropAppendFailed:
		return "append_failed"
	case DropTooLarge:
		return "too_large"
	case DropSourceDenied:
		return "source_denied"
	case DropOverBudget:
		return "over_budget"
	}
	return "unknown"
}

// Stats counts what every listener received, stored, rejected and dropped.
// All counters are atomics, safe for concurrent use, and only grow.
type Stats struct {
	Messages      [NumListeners]atomic.Uint64 // MQTT publishes, UDP datagrams, HTTP write requests
	Bytes         [NumListeners]atomic.Uint64 // payload bytes received
	Readings      [NumListeners]atomic.Uint64 // readings stored durably
	Rejected      [NumListeners][NumReasons]atomic.Uint64
	Dropped       [NumListeners][NumDrops]atomic.Uint64 // readings
	SkippedFields [NumListeners]atomic.Uint64           // string fields skipped (not readings)
	PrecisionLoss [NumListeners]atomic.Uint64           // integers beyond 2^53 stored as float64

	AuthFailures  atomic.Uint64 // MQTT logins refused: unknown user or wrong password
	AuthThrottled atomic.Uint64 // MQTT logins refused unchecked: the source was backing off
}

// CountResult adds a decode result's rejections, skips and precision losses.
func (s *Stats) CountResult(l Listener, r *Result) {
	for reason, n := range r.Rejected {
		if n > 0 {
			s.Rejected[l][reason].Add(uint64(n))
		}
	}
	if r.SkippedTotal > 0 {
		s.SkippedFields[l].Add(uint64(r.SkippedTotal))
	}
	if r.PrecisionLoss > 0 {
		s.PrecisionLoss[l].Add(uint64(r.PrecisionLoss))
	}
}

// Reject is one rejected payload or line as kept in the dead-letter log.
type Reject struct {
	TimeNs   int64  `json:"time_ns"`       // receive time
	Listener string `json:"listener"`      // mqtt, udp, http
	Source   string `json:"source"`        // MQTT client id, or the peer address
	Topic    string `json:"topic"`         // MQTT topic, or the HTTP path and query
	Reason   string `json:"reason"`        // a Reason or Drop name
	Error    string `json:"error"`         // the precise error, with position
	Raw      []byte `json:"raw,omitempty"` // the payload, cut to a limit
	RawBytes int    `json:"raw_bytes"`     // the payload's full length
	// The late log only: the origin of a late reading, the WAL index of
	// its batch and its position among that batch's late readings, so a
	// replay adds nothing the log already holds.
	WALIndex uint64 `json:"wal_index,omitempty"`
	WALSeq   int    `json:"wal_seq,omitempty"`
}

// RejectSink takes rejected payloads. Add must not block: the dead-letter
// log drops (and counts) what it cannot keep up with, so a flood of bad
// input never stalls ingest.
type RejectSink interface {
	Add(r Reject)
}
