package ingest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"

	"github.com/runnel-iot/runnel/wal"
)

func anon5(t *testing.T, addr, id string) *paho5.Client {
	t.Helper()
	c, code := connect5(t, addr, &paho5.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	if code != 0 {
		t.Fatalf("connect %s: %#x", id, code)
	}
	return c
}

// TestSubscriptionQuota checks mqtt.max_subscriptions: filters past it are
// refused in the SUBACK, re-subscribing to a held one still works.
func TestSubscriptionQuota(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.MaxSubscriptions = 3
	b := startBroker(t, cfg, openTestWAL(t))
	c := anon5(t, b.addr, "subs")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var subs []paho5.SubscribeOptions
	for i := range 5 {
		subs = append(subs, paho5.SubscribeOptions{Topic: fmt.Sprintf("cmd/%d", i), QoS: 1})
	}
	sa, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: subs})
	if sa == nil {
		t.Fatal(err)
	}
	want := []byte{1, 1, 1, 0x87, 0x87}
	if fmt.Sprint(sa.Reasons) != fmt.Sprint(want) {
		t.Errorf("SUBACK reasons %v, want %v", sa.Reasons, want)
	}
	sa, _ = c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: subs[:1]})
	if sa == nil || sa.Reasons[0] != 1 {
		t.Errorf("re-subscribe to a held filter: %+v", sa)
	}
}

// TestRetainedQuota checks the retained limits across client ids: the
// total bytes and the per-message cap; past them messages are delivered
// but not retained. Wills count too.
func TestRetainedQuota(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.MaxRetainedBytes = 2 * wal.KiB
	cfg.MaxRetainedMessageBytes = wal.KiB
	b := startBroker(t, cfg, openTestWAL(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	payload := make([]byte, 900)
	for i := range 4 { // a new client id each time: the per-client limit does not help
		c := anon5(t, b.addr, fmt.Sprintf("ret-%d", i))
		if _, err := c.Publish(ctx, &paho5.Publish{QoS: 1, Retain: true, Topic: fmt.Sprintf("state/%d", i), Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	c := anon5(t, b.addr, "ret-big")
	if _, err := c.Publish(ctx, &paho5.Publish{QoS: 1, Retain: true, Topic: "state/big", Payload: make([]byte, 1500)}); err != nil {
		t.Fatal(err)
	}
	clientRetained := func() (n, bytes int) {
		for topic, pk := range b.srv.Topics.Retained.GetAll() {
			if !strings.HasPrefix(topic, "$SYS") { // mochi's own
				n, bytes = n+1, bytes+len(pk.Payload)
			}
		}
		return n, bytes
	}
	waitUntil(t, "retained messages stored", func() bool { n, _ := clientRetained(); return n >= 2 })
	if n, total := clientRetained(); n != 2 || total > 2048 {
		t.Errorf("%d retained messages of %d bytes, want 2 within 2 KiB", n, total)
	}
	// A retained will past the total is refused at CONNECT (0x97).
	_, code := connect5(t, b.addr, &paho5.Connect{ClientID: "will", KeepAlive: 30, CleanStart: true,
		WillMessage: &paho5.WillMessage{Retain: true, Topic: "state/will", Payload: payload}})
	if code != 0x97 {
		t.Errorf("retained will past the limit: CONNACK %#x, want 0x97", code)
	}
}

// TestPendingConnects checks mqtt.max_pending_connects: sockets from one
// host that send nothing take at most half the slots; the next is closed
// at once, and a real client still gets in once they are gone.
func TestPendingConnects(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.MaxPendingConnects = 6 // 3 per host
	b := startBroker(t, cfg, openTestWAL(t))
	var idle []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
		t.Cleanup(func() { c.Close() })
	}
	waitUntil(t, "3 sockets pending", func() bool { return b.hook.conns.pending.Load() == 3 })
	c, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("a socket past max_pending_connects was not closed")
	}
	if n := b.hook.conns.refused.Load(); n != 1 {
		t.Errorf("refused %d, want 1", n)
	}
	for _, c := range idle {
		c.Close()
	}
	waitUntil(t, "pending sockets gone", func() bool { return b.hook.conns.pending.Load() == 0 })
	anon5(t, b.addr, "after")
}

// TestConnectionsPerSource checks mqtt.max_connections_per_source: a
// CONNECT from a host past it gets 0x9F.
func TestConnectionsPerSource(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.MaxConnectionsPerSource = 2
	b := startBroker(t, cfg, openTestWAL(t))
	anon5(t, b.addr, "s1")
	anon5(t, b.addr, "s2")
	_, code := connect5(t, b.addr, &paho5.Connect{ClientID: "s3", KeepAlive: 30, CleanStart: true})
	if code != 0x9F {
		t.Errorf("third connection from one host: CONNACK %#x, want 0x9F", code)
	}
}
