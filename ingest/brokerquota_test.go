package ingest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"

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
// refused in the SUBACK with 0x97 (quota exceeded), re-subscribing to a
// held one still works.
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
	want := []byte{1, 1, 1, 0x97, 0x97}
	if fmt.Sprint(sa.Reasons) != fmt.Sprint(want) {
		t.Errorf("SUBACK reasons %v, want %v", sa.Reasons, want)
	}
	sa, _ = c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: subs[:1]})
	if sa == nil || sa.Reasons[0] != 1 {
		t.Errorf("re-subscribe to a held filter: %+v", sa)
	}
	// A 3.1.1 client has no 0x97: its SUBACK says failure (0x80).
	c3, err := connect3(b.addr, "subs3", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Disconnect(100)
	filters := map[string]byte{"a/1": 1, "a/2": 1, "a/3": 1, "a/4": 1}
	tok := c3.SubscribeMultiple(filters, nil)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("3.1.1 subscribe: no SUBACK")
	}
	refused := 0
	for _, code := range tok.(*paho.SubscribeToken).Result() {
		if code == 0x80 {
			refused++
		} else if code != 1 {
			t.Errorf("3.1.1 SUBACK code %#x", code)
		}
	}
	if refused != 1 {
		t.Errorf("3.1.1: %d filters refused, want 1", refused)
	}
}

// TestSubscriptionQuotaDelivers checks that a client holding
// max_subscriptions wildcard filters still gets the messages they match:
// the quota applies to SUBSCRIBE, not to deliveries.
func TestSubscriptionQuotaDelivers(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.MaxSubscriptions = 1
	b := startBroker(t, cfg, openTestWAL(t))
	got := make(chan string, 4)
	sub := pahoClient(t, b.addr, "full", nil)
	tok := sub.Subscribe("cmd/+", 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub := pahoClient(t, b.addr, "pub", nil)
	publishWait(t, pub, "cmd/a", 1, "x")
	select {
	case topic := <-got:
		if topic != "cmd/a" {
			t.Errorf("got %q", topic)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a client at its subscription quota got no message")
	}
}

// offlineInflight returns the number and payload bytes of the messages
// queued for a client id's session.
func offlineInflight(b *testBroker, id string) (n, bytes int) {
	cl, ok := b.srv.Clients.Get(id)
	if !ok {
		return 0, 0
	}
	for _, pk := range cl.State.Inflight.GetAll(false) {
		n, bytes = n+1, bytes+len(pk.Payload)
	}
	return n, bytes
}

// TestQueuedBytesQuota checks mqtt.max_queued_bytes: an offline session
// queues messages until it holds that many payload bytes, then misses the
// rest; once it reconnects and drains, it gets messages again.
func TestQueuedBytesQuota(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.MaxQueuedBytes = 4 * wal.KiB
	b := startBroker(t, cfg, openTestWAL(t))
	c, err := connect3(b.addr, "off", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok := c.Subscribe("cmd/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal("subscribe", tok.Error())
	}
	c.Disconnect(100)
	waitUntil(t, "session offline", func() bool {
		cl, ok := b.srv.Clients.Get("off")
		return ok && cl.Closed()
	})
	pub := pahoClient(t, b.addr, "pub", nil)
	payload := strings.Repeat("x", 1024)
	for range 20 {
		publishWait(t, pub, "cmd/off", 1, payload)
	}
	// Deliveries happen after each PUBACK: wait for the last to be queued
	// or refused.
	waitUntil(t, "deliveries done", func() bool { n, _ := offlineInflight(b, "off"); return n >= 4 })
	publishWait(t, pub, "cmd/sync", 0, "")
	n, bytes := offlineInflight(b, "off")
	if bytes > 4*1024+1024 || n < 4 {
		t.Errorf("offline session holds %d messages of %d bytes, want 4-5 within max_queued_bytes (4 KiB) plus one message", n, bytes)
	}
	// Back online, the session drains and takes messages again.
	backOnline(t, b, pub, "off", payload, "no delivery after the queue drained")
}

// TestOfflineQueuedBytesTotal checks mqtt.max_offline_queued_bytes: the
// offline sessions together queue at most that many payload bytes (plus
// one message), however many there are, each within max_queued_bytes.
func TestOfflineQueuedBytesTotal(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.MaxQueuedBytes = 4 * wal.KiB
	cfg.MaxOfflineQueuedBytes = 8 * wal.KiB
	b := startBroker(t, cfg, openTestWAL(t))
	var ids []string
	for i := range 5 {
		id := fmt.Sprintf("off%d", i)
		ids = append(ids, id)
		c, err := connect3(b.addr, id, "", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok := c.Subscribe("cmd/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal("subscribe", tok.Error())
		}
		c.Disconnect(100)
		waitUntil(t, id+" offline", func() bool {
			cl, ok := b.srv.Clients.Get(id)
			return ok && cl.Closed()
		})
	}
	total := func() (n, bytes int) {
		for _, id := range ids {
			m, b := offlineInflight(b, id)
			n, bytes = n+m, bytes+b
		}
		return n, bytes
	}
	pub := pahoClient(t, b.addr, "pub", nil)
	payload := strings.Repeat("x", 1024)
	for range 20 {
		publishWait(t, pub, "cmd/x", 1, payload)
	}
	// Deliveries happen after each PUBACK: a QoS 0 publish after them all
	// goes through the same queues last.
	publishWait(t, pub, "cmd/sync", 0, "")
	waitUntil(t, "deliveries queued", func() bool { n, _ := total(); return n >= 8 })
	if n, bytes := total(); bytes > 8*1024+1024 {
		t.Errorf("5 offline sessions hold %d messages of %d bytes together, want at most max_offline_queued_bytes (8 KiB) plus one message", n, bytes)
	}
	// A session back online drains and is served again.
	backOnline(t, b, pub, "off4", payload, "no delivery to a session back online while the others stay full")
}

// backOnline reconnects the offline session id, waits until its queue
// drained, and fails with failMsg unless a QoS 1 publish on cmd/after then
// reaches it.
func backOnline(t *testing.T, b *testBroker, pub paho.Client, id, payload, failMsg string) {
	t.Helper()
	got := make(chan string, 32)
	c2, err := connect3(b.addr, id, "", "", func(o *paho.ClientOptions) {
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- m.Topic() })
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Disconnect(100)
	waitUntil(t, "queue drained", func() bool { n, _ := offlineInflight(b, id); return n == 0 })
	publishWait(t, pub, "cmd/after", 1, payload)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case topic := <-got:
			if topic == "cmd/after" {
				return
			}
		case <-deadline:
			t.Fatal(failMsg)
		}
	}
}

// TestOfflineSessionCap checks mqtt.max_offline_sessions: past it the
// session that has been offline longest is expired, its subscriptions and
// queue with it.
func TestOfflineSessionCap(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.MaxOfflineSessions = 3
	b := startBroker(t, cfg, openTestWAL(t))
	for i := range 5 {
		id := fmt.Sprintf("p%d", i)
		c, err := connect3(b.addr, id, "", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok := c.Subscribe("cmd/"+id, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal("subscribe", tok.Error())
		}
		c.Disconnect(100)
		waitUntil(t, id+" offline", func() bool {
			cl, ok := b.srv.Clients.Get(id)
			return !ok || cl.Closed()
		})
	}
	offline := func() []string {
		var ids []string
		for id, cl := range b.srv.Clients.GetAll() {
			if cl.Closed() && !cl.Net.Inline {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		return ids
	}
	waitUntil(t, "3 offline sessions", func() bool { return len(offline()) == 3 })
	if got := fmt.Sprint(offline()); got != "[p2 p3 p4]" {
		t.Errorf("offline sessions %s, want the newest three [p2 p3 p4]", got)
	}
	if subs := b.srv.Topics.Subscribers("cmd/p0"); len(subs.Subscriptions) != 0 {
		t.Errorf("an expired session's subscription is still routed: %v", subs.Subscriptions)
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
// TestRetainedQuotaPendingWills checks that retained wills charged at
// CONNECT still count while their clients are connected: a full count is
// recounted from mochi's store, where those wills are not yet, and must
// not forget them, or retained messages and then the wills together pass
// max_retained_bytes.
func TestRetainedQuotaPendingWills(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.MaxRetainedBytes = 4 * wal.KiB
	cfg.MaxRetainedMessageBytes = wal.KiB
	b := startBroker(t, cfg, openTestWAL(t))
	payload := make([]byte, 1000)
	var wills []net.Conn
	for i := range 3 {
		conn, err := net.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		wills = append(wills, conn)
		defer conn.Close()
		c := paho5.NewClient(paho5.ClientConfig{ClientID: fmt.Sprintf("will-%d", i), Conn: conn})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ca, err := c.Connect(ctx, &paho5.Connect{ClientID: fmt.Sprintf("will-%d", i), KeepAlive: 30, CleanStart: true,
			WillMessage: &paho5.WillMessage{Retain: true, Topic: fmt.Sprintf("state/will/%d", i), Payload: payload}})
		cancel()
		if ca == nil || ca.ReasonCode != 0 {
			t.Fatalf("connect with a retained will: %v, %v", ca, err)
		}
	}
	// 3 KB of wills charged: one 1000-byte retained message still fits,
	// the rest must not.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub := anon5(t, b.addr, "ret")
	for i := range 6 {
		if _, err := pub.Publish(ctx, &paho5.Publish{QoS: 1, Retain: true, Topic: fmt.Sprintf("state/r/%d", i), Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	for _, conn := range wills {
		conn.Close() // no DISCONNECT: the wills go
	}
	clientRetained := func() (n, bytes int) {
		for topic, pk := range b.srv.Topics.Retained.GetAll() {
			if strings.HasPrefix(topic, "state/") {
				n, bytes = n+1, bytes+len(pk.Payload)
			}
		}
		return n, bytes
	}
	waitUntil(t, "wills retained", func() bool {
		for i := range 3 {
			if _, ok := b.srv.Topics.Retained.Get(fmt.Sprintf("state/will/%d", i)); !ok {
				return false
			}
		}
		return true
	})
	if n, total := clientRetained(); total > 4*1024 {
		t.Errorf("%d retained messages and wills of %d bytes, want at most max_retained_bytes (4 KiB)", n, total)
	}
}

// TestRetainedQuotaChargedNotStored checks that a retained publish charged
// in OnPublish counts before mochi has stored it: when the count says
// full it is recounted from mochi's store, and a concurrent publisher's
// message, charged but not stored yet, must not be forgotten there (the
// attack suite's 4 concurrent retainers kept 4,200,000 bytes against
// 4 MiB).
func TestRetainedQuotaChargedNotStored(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.MaxRetainedBytes = 4 * wal.KiB
	cfg.MaxRetainedMessageBytes = wal.KiB
	b := startBroker(t, cfg, openTestWAL(t))
	// As OnPublish does for 5 publishers at once, before mochi stores any.
	charged := 0
	for i := range 5 {
		if b.hook.allowRetainTopic(fmt.Sprintf("pub-%d", i), fmt.Sprintf("state/%d", i), 1000) {
			charged++
		}
	}
	if charged != 4 {
		t.Errorf("%d retained messages of 1000 bytes charged before any is stored, want 4 within 4 KiB", charged)
	}
}

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
