package ingest

import (
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// deadlineConn records the deadlines set on it.
type deadlineConn struct {
	net.Conn
	mu         sync.Mutex
	deadlines  []time.Time
	readWrites int
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadlines = append(c.deadlines, t)
	return nil
}

func (c *deadlineConn) SetReadDeadline(time.Time) error  { c.readWrites++; return nil }
func (c *deadlineConn) SetWriteDeadline(time.Time) error { c.readWrites++; return nil }

func (c *deadlineConn) set() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.deadlines...)
}

// mochi moves a client's deadline forward before reading each packet; the
// socket's deadline is re-armed only once the asked-for one is an eighth
// of its span past it. Earlier deadlines, none, and any after a separate
// read or write deadline are applied at once.
func TestTrackedConnCoalescesDeadlines(t *testing.T) {
	raw := &deadlineConn{}
	c := &trackedConn{Conn: raw}
	now := time.Now()
	span := 8 * time.Second // slack: about 1s
	steps := []struct {
		name    string
		t       time.Time
		applied bool
	}{
		{"first", now.Add(span), true},
		{"100ms later", now.Add(span + 100*time.Millisecond), false},
		{"900ms later", now.Add(span + 900*time.Millisecond), false},
		{"1.1s later", now.Add(span + 1100*time.Millisecond), true},
		{"earlier", now.Add(time.Second), true},
		{"none", time.Time{}, true},
		{"again after none", now.Add(span), true},
		{"short span", now.Add(time.Second), true},
		{"short span, 10ms later", now.Add(time.Second + 10*time.Millisecond), true}, // a 1 s keep-alive: no slack
	}
	want := 0
	for _, s := range steps {
		if err := c.SetDeadline(s.t); err != nil {
			t.Fatal(err)
		}
		if s.applied {
			want++
		}
		if got := raw.set(); len(got) != want || (s.applied && !got[len(got)-1].Equal(s.t)) {
			t.Fatalf("%s: socket deadlines %v, want %d set, the last %v", s.name, got, want, s.t)
		}
	}
	c.SetReadDeadline(now.Add(time.Hour))
	c.SetDeadline(now.Add(span + 10*time.Millisecond)) // close to the last applied, but the read deadline differs now
	if got := raw.set(); len(got) != want+1 {
		t.Fatalf("a deadline after SetReadDeadline was not applied: %v", got)
	}
	if raw.readWrites != 1 {
		t.Errorf("SetReadDeadline reached the socket %d times, want 1", raw.readWrites)
	}
}

// A client that keeps sending within its keep-alive stays connected
// while the broker skips most deadline updates, and one that falls
// silent is dropped after 1.31 to 1.5 × the keep-alive.
func TestKeepAliveWithCoalescedDeadlines(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.MaxKeepAlive = 2 * time.Second // the client's 30 s is capped: dropped after 3 s of silence
	b := startBroker(t, cfg, openTestWAL(t))
	c := dialRaw(t, b.addr, 4, "keepalive")
	end := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(end) {
		c.publish("telemetry/ka/env", 0, 0, `{"temp":1}`)
		time.Sleep(50 * time.Millisecond) // the client's pace, not synchronisation
	}
	if _, err := c.conn.Write([]byte{0xC0, 0}); err != nil { // PINGREQ
		t.Fatalf("client dropped while sending every 50ms: %v", err)
	}
	last := time.Now()
	if pk, err := c.readErr(); err != nil || pk.FixedHeader.Type != 13 { // PINGRESP
		t.Fatalf("client dropped while sending every 50ms: %v %v", pk.FixedHeader.Type, err)
	}
	_, err := c.readErr()
	silent := time.Since(last)
	switch {
	case err == nil:
		t.Fatal("the broker sent a packet to a silent client")
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatal("a silent client was kept for 10s")
	case silent < 2500*time.Millisecond:
		t.Fatalf("a silent client was dropped after %s, before 1.31 × its 2s keep-alive", silent)
	}
}
