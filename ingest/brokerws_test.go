package ingest

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func wsBroker(t *testing.T, configure func(*BrokerConfig)) string {
	t.Helper()
	cfg := testBrokerConfig()
	cfg.WebSocketAddr = "127.0.0.1:0"
	configure(&cfg)
	b := startBroker(t, cfg, openTestWAL(t))
	return b.Addr("ws").String()
}

// TestWebSocketConnectDeadline checks that an upgraded WebSocket that never
// sends CONNECT is closed after connect_timeout (mochi's listener held it).
func TestWebSocketConnectDeadline(t *testing.T) {
	addr := wsBroker(t, func(c *BrokerConfig) { c.ConnectTimeout = 300 * time.Millisecond })
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial("ws://"+addr+"/mqtt", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil {
		t.Fatal("got a message, want the connection closed")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("silent WebSocket closed after %s, want about 300ms", el)
	}
}

// TestWebSocketOrigin checks the Origin allow-list: a cross-origin browser
// upgrade is refused with 403, a listed origin, the same origin and a
// request without Origin (a device) are accepted.
func TestWebSocketOrigin(t *testing.T) {
	addr := wsBroker(t, func(c *BrokerConfig) { c.WebSocketOrigins = []string{"https://dash.example"} })
	for origin, ok := range map[string]bool{
		"https://evil.example": false,
		"https://dash.example": true,
		"http://" + addr:       true,
		"":                     true,
	} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
		c, resp, err := d.Dial("ws://"+addr+"/mqtt", h)
		if c != nil {
			c.Close()
		}
		switch {
		case ok && err != nil:
			t.Errorf("origin %q: %v, want an upgrade", origin, err)
		case !ok && (resp == nil || resp.StatusCode != http.StatusForbidden):
			t.Errorf("origin %q: %v, want 403", origin, err)
		}
	}
}

// TestWebSocketCounted checks that WebSocket sockets count against
// max_pending_connects as TCP ones do.
func TestWebSocketCounted(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.WebSocketAddr = "127.0.0.1:0"
	cfg.MaxPendingConnects = 1
	b := startBroker(t, cfg, openTestWAL(t))
	first, err := net.Dial("tcp", b.Addr("ws").String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	waitUntil(t, "one socket pending", func() bool { return b.hook.conns.pending.Load() == 1 })
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
	if c, _, err := d.Dial("ws://"+b.Addr("ws").String()+"/mqtt", nil); err == nil {
		c.Close()
		t.Error("a WebSocket past max_pending_connects was upgraded")
	}
}
