package firmwaresim

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Report is the outcome of a run, printed as JSON at its end.
//
// Acknowledged counts what the client side saw complete: paho tokens of
// QoS 1/2 publishes and HTTP 204s. After an automatic reconnect a paho
// token can report success before the broker acknowledged (paho issue
// #563), so these counts are indicative: the gateway's own counts (its
// /metrics, the WAL) are the truth.
type Report struct {
	Scenario  Scenario  `json:"scenario"`
	Transport Transport `json:"transport"`
	Format    string    `json:"format"`
	QoS       int       `json:"qos"`
	Devices   int       `json:"devices"`
	Seed      uint64    `json:"seed"`
	// Sent is the number of messages handed to the transport.
	Sent int64 `json:"sent"`
	// ReadingsSent is the number of readings in them (before corruption).
	ReadingsSent int64 `json:"readings_sent"`
	BytesSent    int64 `json:"bytes_sent"`
	// Acknowledged: QoS 1/2 publishes whose token completed without error,
	// HTTP 204s. UDP and QoS 0 have no acknowledgement.
	Acknowledged int64 `json:"acknowledged"`
	// Rejected: publishes whose token reported an error (MQTT 3.1.1 cannot
	// carry a reason code: paho v3 has no v5), HTTP 4xx answers.
	Rejected int64 `json:"rejected"`
	// Errors counts every failure by kind (connect, publish,
	// ack_timeout, unacked_at_end, http_<status>, http_transport,
	// udp_write, ...).
	Errors map[string]int64 `json:"errors"`
	// Faults counts the messages each injected fault touched.
	Faults FaultCounts `json:"faults"`
	// Connects counts MQTT connections made, automatic reconnects
	// included.
	Connects int64 `json:"connects"`
	// DurationS is the wall time from the first tick to the end of the
	// drain, in seconds; Rate is Sent / DurationS (messages/s).
	DurationS float64 `json:"duration_s"`
	Rate      float64 `json:"rate"`
	// AckLatencyMs: from publish (or request) to acknowledgement.
	AckLatencyMs Latency `json:"ack_latency_ms"`
	// Interrupted is true when the run ended because ctx was cancelled
	// (SIGINT, SIGTERM) rather than by Duration or Count.
	Interrupted bool   `json:"interrupted"`
	Note        string `json:"note"`
}

// FaultCounts counts injected faults by kind.
type FaultCounts struct {
	Malformed       int64 `json:"malformed"`
	OutOfOrder      int64 `json:"out_of_order"`
	Late            int64 `json:"late"`
	HighCardinality int64 `json:"high_cardinality"`
	Burst           int64 `json:"burst"`
	// StormReconnects counts device reconnections forced by reconnect
	// storms.
	StormReconnects int64 `json:"storm_reconnects"`
}

// Latency summarises acknowledgement latencies in milliseconds. The
// percentiles come from a log-linear histogram (relative error ≤ 1/64);
// Max is exact.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

const reportNote = "acknowledged counts paho tokens and HTTP 204s as the client saw them; " +
	"after a reconnect a paho token may complete before the broker acked (paho #563): the gateway's own counts are the truth"

// histogram records durations in microseconds in log-linear buckets: exact
// below 64 µs, then 32 buckets per power of two (a bucket's middle is
// within 1/64 of any value in it), up to 2^40 µs (12 days). Fixed size, lock-free, whatever the
// number of messages.
type histogram struct {
	counts [histBuckets]atomic.Int64
	n      atomic.Int64
	max    atomic.Int64
}

const (
	histSubBits = 5
	histSub     = 1 << histSubBits
	histBuckets = (40-histSubBits)*histSub + 2*histSub
)

func histIndex(us int64) int {
	if us < 2*histSub {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - histSubBits - 1
	i := (e+1)*histSub + int(us>>e) - histSub
	return min(i, histBuckets-1)
}

// histValue is the middle of bucket i, in µs.
func histValue(i int) float64 {
	if i < 2*histSub {
		return float64(i)
	}
	e := i/histSub - 1
	m := i%histSub + histSub
	return (float64(m) + 0.5) * math.Ldexp(1, e)
}

func (h *histogram) record(d time.Duration) {
	us := d.Microseconds()
	h.counts[histIndex(us)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

func (h *histogram) summary() Latency {
	n := h.n.Load()
	l := Latency{Count: n, Max: float64(h.max.Load()) / 1000}
	if n == 0 {
		return l
	}
	q := func(p float64) float64 {
		rank := int64(math.Ceil(p * float64(n)))
		var c int64
		for i := range h.counts {
			c += h.counts[i].Load()
			if c >= rank {
				return math.Min(histValue(i), float64(h.max.Load())) / 1000
			}
		}
		return l.Max
	}
	l.P50, l.P90, l.P99 = q(0.50), q(0.90), q(0.99)
	return l
}

// stats are the live counters of a run.
type stats struct {
	sent, readings, bytes, acked, rejected, connects atomic.Int64
	malformed, ooo, late, hc, burst, storms          atomic.Int64
	errTotal                                         atomic.Int64
	lat                                              histogram

	mu   sync.Mutex
	errs map[string]int64
}

func (s *stats) err(kind string) {
	s.errTotal.Add(1)
	s.mu.Lock()
	if s.errs == nil {
		s.errs = make(map[string]int64)
	}
	s.errs[kind]++
	s.mu.Unlock()
}

func (s *stats) countSent(m *Message) {
	s.sent.Add(1)
	s.readings.Add(int64(m.Readings))
	s.bytes.Add(int64(len(m.Payload)))
	f := m.Faults
	for _, c := range [...]struct {
		bit Fault
		n   *atomic.Int64
	}{{FaultMalformed, &s.malformed}, {FaultOutOfOrder, &s.ooo}, {FaultLate, &s.late},
		{FaultHighCardinality, &s.hc}, {FaultBurst, &s.burst}} {
		if f&c.bit != 0 {
			c.n.Add(1)
		}
	}
}

func (s *stats) errorsCopy() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.errs))
	for k, v := range s.errs {
		out[k] = v
	}
	return out
}
