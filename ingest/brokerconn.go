package ingest

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// connTracker counts the broker's sockets, so that one host or a crowd of
// silent sockets cannot take every client slot:
//
//   - pending: sockets accepted that have not yet sent CONNECT; past
//     mqtt.max_pending_connects a new socket is closed at once (nothing can
//     be said to a client before its CONNECT), and each pending socket has
//     mqtt.connect_timeout to send it;
//   - per source: open sockets per remote host; a CONNECT from a host past
//     mqtt.max_connections_per_source is refused with 0x9F (connection
//     rate exceeded; 3.1.1: server unavailable).
//
// Safe for concurrent use.
type connTracker struct {
	maxPending, maxPerSource int
	pending                  atomic.Int64
	refused                  atomic.Uint64 // sockets closed at accept: too many pending

	mu        sync.Mutex
	sources   map[string]int // open sockets per host
	pendingBy map[string]int // sockets without CONNECT per host
}

func newConnTracker(maxPending, maxPerSource int) *connTracker {
	return &connTracker{maxPending: maxPending, maxPerSource: maxPerSource, sources: map[string]int{}, pendingBy: map[string]int{}}
}

// trackedConn is an accepted socket, counted until it closes.
type trackedConn struct {
	net.Conn
	t         *connTracker
	src       string
	connected atomic.Bool
	closed    atomic.Bool

	dlMu    sync.Mutex
	applied time.Time     // the deadline the socket has (zero: none, or unknown)
	slack   time.Duration // how much later a deadline may be asked for and not applied
}

// deadlineSlackDiv sets how stale a socket's deadline may be: an eighth
// of the span it was set for.
const deadlineSlackDiv = 8

// SetDeadline applies t unless it lies less than an eighth of the
// applied deadline's span after it. mochi calls it before reading every
// packet (now + 1.5 × keep-alive); setting a socket deadline re-arms a
// runtime timer each time (about 4 % of the gateway's CPU in a QoS 0
// flood). The socket then times out up to an eighth early: an idle
// client is dropped after 1.31 to 1.5 × its keep-alive instead of 1.5,
// still after the keep-alive within which a client must send something
// [MQTT-3.1.2-22] (spans under minCoalescedSpan are applied every time).
// Any earlier deadline, no deadline (zero), or one further out is applied
// at once.
func (c *trackedConn) SetDeadline(t time.Time) error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	if !t.IsZero() && !c.applied.IsZero() && !t.Before(c.applied) && t.Sub(c.applied) < c.slack {
		return nil
	}
	err := c.Conn.SetDeadline(t)
	c.applied, c.slack = t, 0
	if err != nil {
		c.applied = time.Time{}
	} else if span := time.Until(t); span >= minCoalescedSpan {
		c.slack = span / deadlineSlackDiv
	}
	return err
}

// minCoalescedSpan: shorter deadlines are applied every time. mochi's
// span is keep-alive + keep-alive/2 in whole seconds, so a 1 s keep-alive
// gets 1 s, which an early timeout would cut below the keep-alive itself.
const minCoalescedSpan = 2 * time.Second

// SetReadDeadline and SetWriteDeadline pass through; the deadlines then
// differ, so the next SetDeadline is applied in full.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	c.forgetDeadline()
	return c.Conn.SetReadDeadline(t)
}

func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	c.forgetDeadline()
	return c.Conn.SetWriteDeadline(t)
}

func (c *trackedConn) forgetDeadline() {
	c.dlMu.Lock()
	c.applied, c.slack = time.Time{}, 0
	c.dlMu.Unlock()
}

// accept counts a new socket, or returns nil when too many are pending
// (the caller closes it).
//
// One host may hold at most half the pending slots, so silent sockets
// from one host cannot lock the others out.
func (t *connTracker) accept(c net.Conn) *trackedConn {
	src := c.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(src); err == nil {
		src = host
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending.Load() >= int64(t.maxPending) || t.pendingBy[src] >= max(1, t.maxPending/2) {
		t.refused.Add(1)
		return nil
	}
	t.pending.Add(1)
	t.pendingBy[src]++
	t.sources[src]++
	return &trackedConn{Conn: c, t: t, src: src}
}

// donePending ends a socket's pending state; called under t.mu.
func (t *connTracker) donePending(src string) {
	t.pending.Add(-1)
	if t.pendingBy[src]--; t.pendingBy[src] <= 0 {
		delete(t.pendingBy, src)
	}
}

// markConnected ends the socket's pending state (its CONNECT arrived) and
// reports whether its source is within the per-source limit.
func (c *trackedConn) markConnected() bool {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	if c.connected.CompareAndSwap(false, true) && !c.closed.Load() {
		c.t.donePending(c.src)
	}
	return c.t.sources[c.src] <= c.t.maxPerSource
}

func (c *trackedConn) Close() error {
	c.t.mu.Lock()
	if c.closed.CompareAndSwap(false, true) {
		if !c.connected.Load() {
			c.t.donePending(c.src)
		}
		if c.t.sources[c.src]--; c.t.sources[c.src] <= 0 {
			delete(c.t.sources, c.src)
		}
	}
	c.t.mu.Unlock()
	return c.Conn.Close()
}

// trackedOf finds the trackedConn under a client's connection (plain, or
// under TLS); nil for connections not accepted by a tracked listener.
func trackedOf(cl *mqtt.Client) *trackedConn {
	conn := cl.Net.Conn
	if ws, ok := conn.(*wsConn); ok {
		conn = ws.Conn
	}
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	c, _ := conn.(*trackedConn)
	return c
}

// Accept back-off, as net/http's Server.Serve: a failing Accept (EMFILE
// when file descriptors run out) is retried after 5ms, doubling to 1s,
// instead of ending the listener for good.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// acceptLoop accepts until ln is closed (closed reports that), retrying
// failures with back-off; onFail is told of each failure and of recovery
// (nil). It hands each socket to handle.
func acceptLoop(ln net.Listener, closed func() bool, onFail func(error), handle func(net.Conn)) {
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if closed() || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, acceptRetryMin), acceptRetryMax)
			onFail(err)
			time.Sleep(delay) // back-off before retrying a failed accept, as net/http does
			continue
		}
		if delay != 0 {
			delay = 0
			onFail(nil)
		}
		handle(conn)
	}
}
