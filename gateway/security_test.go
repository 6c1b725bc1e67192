package gateway

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/runnel-iot/runnel/ingest"
)

// TestSecureBinds checks which listeners secureBinds moves to loopback.
func TestSecureBinds(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	user := []ingest.BrokerUser{{Username: "dev", PasswordHash: string(hash)}}
	yes := true
	base := func() Config {
		c := DefaultConfig()
		c.UDP.Addr = ":8089"
		c.MQTT.WebSocketAddr = "0.0.0.0:8083"
		c.MQTT.TLS = ingest.BrokerTLSConfig{Addr: "[::]:8883", CertFile: "c.pem", KeyFile: "k.pem"}
		return c
	}
	type addrs struct{ mqtt, ws, tls, http, udp string }
	get := func(c Config) addrs {
		return addrs{c.MQTT.Addr, c.MQTT.WebSocketAddr, c.MQTT.TLS.Addr, c.HTTP.Addr, c.UDP.Addr}
	}
	loop := addrs{"127.0.0.1:1883", "127.0.0.1:8083", "127.0.0.1:8883", "127.0.0.1:8080", "127.0.0.1:8089"}
	open := addrs{":1883", "0.0.0.0:8083", "[::]:8883", ":8080", ":8089"}
	tests := []struct {
		name  string
		edit  func(*Config)
		want  addrs
		moved int
	}{
		{"nothing configured", func(*Config) {}, loop, 5},
		{"anonymous network", func(c *Config) { c.Security.AllowAnonymousNetwork = true }, open, 0},
		{"mqtt users", func(c *Config) { c.MQTT.Users = user },
			addrs{":1883", "0.0.0.0:8083", "[::]:8883", "127.0.0.1:8080", "127.0.0.1:8089"}, 2},
		{"mqtt users but anonymous on", func(c *Config) { c.MQTT.Users, c.MQTT.AllowAnonymous = user, &yes }, loop, 5},
		{"tls client certificates", func(c *Config) { c.MQTT.TLS.ClientCAFile = "ca.pem" },
			addrs{"127.0.0.1:1883", "127.0.0.1:8083", "[::]:8883", "127.0.0.1:8080", "127.0.0.1:8089"}, 4},
		{"http tokens", func(c *Config) { c.HTTP.Tokens = []string{"0123456789"} },
			addrs{"127.0.0.1:1883", "127.0.0.1:8083", "127.0.0.1:8883", ":8080", "127.0.0.1:8089"}, 4},
		{"write tokens alone do not open the api", func(c *Config) { c.HTTPWrite.Tokens = []string{"0123456789"} }, loop, 5},
		{"udp sources", func(c *Config) { c.UDP.AllowSources = []string{"10.0.0.0/8"} },
			addrs{"127.0.0.1:1883", "127.0.0.1:8083", "127.0.0.1:8883", "127.0.0.1:8080", ":8089"}, 4},
		{"explicit address moved", func(c *Config) { c.HTTP.Addr = "192.0.2.7:9000" },
			addrs{"127.0.0.1:1883", "127.0.0.1:8083", "127.0.0.1:8883", "127.0.0.1:9000", "127.0.0.1:8089"}, 5},
		{"loopback kept", func(c *Config) { c.HTTP.Addr, c.UDP.Addr = "[::1]:8080", "localhost:8089" },
			addrs{"127.0.0.1:1883", "127.0.0.1:8083", "127.0.0.1:8883", "[::1]:8080", "localhost:8089"}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.edit(&c)
			got, moved := c.secureBinds()
			if g := get(got); g != tt.want {
				t.Errorf("addresses %+v, want %+v", g, tt.want)
			}
			if len(moved) != tt.moved {
				t.Errorf("moved %d listeners (%v), want %d", len(moved), moved, tt.moved)
			}
			msg := secureBindsLog(moved)
			if (msg != "") != (tt.moved > 0) || (msg != "" && !strings.Contains(msg, "security.allow_anonymous_network: true")) {
				t.Errorf("log line %q", msg)
			}
		})
	}
}

// TestDefaultUDPOff checks that UDP is off unless configured.
func TestDefaultUDPOff(t *testing.T) {
	if a := DefaultConfig().UDP.Addr; a != "" {
		t.Errorf("default udp.addr %q, want off", a)
	}
}

// TestRequireCredentials checks the profiles' switch: no start without
// MQTT users and HTTP tokens.
func TestRequireCredentials(t *testing.T) {
	c := DefaultConfig()
	c.Gateway.ID = "gw"
	c.Security.RequireCredentials = true
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "security.require_credentials: this profile starts only with credentials: set mqtt.users") ||
		!strings.Contains(err.Error(), "http.tokens") {
		t.Fatalf("Validate = %v, want the require_credentials error", err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	c.MQTT.Users = []ingest.BrokerUser{{Username: "dev", PasswordHash: string(hash)}}
	c.HTTP.Tokens = []string{"0123456789"}
	if err := c.Validate(); err != nil {
		t.Fatalf("with credentials: %v", err)
	}
}

// TestResolvedBindsLoopback runs a gateway with the default addresses (on
// port 0) and no credentials: every bound address is loopback, and the log
// says how to open them.
func TestResolvedBindsLoopback(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Gateway.ID = "test-gw"
	cfg.Gateway.DataDir = t.TempDir()
	cfg.HTTP.Addr, cfg.MQTT.Addr, cfg.MQTT.WebSocketAddr, cfg.UDP.Addr = ":0", ":0", ":0", ":0"
	var logs syncBuffer
	g, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	runTestGateway(t, g)
	for name, a := range map[string]string{"http": g.Addr(), "mqtt": addrString(g.broker.Addr("tcp")), "udp": addrString(g.udpAddr())} {
		host, _, err := net.SplitHostPort(a)
		if err != nil || !net.ParseIP(host).IsLoopback() {
			t.Errorf("%s bound to %q, want loopback", name, a)
		}
	}
	if !strings.Contains(logs.String(), "listeners without credentials bound to loopback only") {
		t.Errorf("no loopback log line in:\n%s", logs.String())
	}
}

// TestHTTPTokensGuardWrite checks that http.tokens alone also guard the
// write endpoint.
func TestHTTPTokensGuardWrite(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTP.Tokens = []string{"api-token-1"}
	g := runGateway(t, cfg)
	post := func(token string) int {
		req, _ := http.NewRequest("POST", "http://"+g.Addr()+"/api/v2/write", bytes.NewReader([]byte("m,device=d v=1\n")))
		if token != "" {
			req.Header.Set("Authorization", "Token "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(""); code != http.StatusUnauthorized {
		t.Errorf("write without token: %d, want 401", code)
	}
	if code := post("api-token-1"); code != http.StatusNoContent {
		t.Errorf("write with the http token: %d, want 204", code)
	}
}

// runTestGateway runs g until the test ends, when it must stop cleanly; it
// returns once g is ready.
func runTestGateway(tb testing.TB, g *Gateway) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("gateway Run: %v", err)
		}
	})
	select {
	case <-g.Ready():
	case err := <-done:
		tb.Fatalf("gateway Run: %v", err)
	case <-time.After(10 * time.Second):
		tb.Fatal("gateway not ready within 10s")
	}
}

// TestStreamClientsBounded checks http.max_stream_clients: past it a live
// stream is refused with 503 and Retry-After.
func TestStreamClientsBounded(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTP.MaxStreamClients = 2
	g := runGateway(t, cfg)
	url := "http://" + g.Addr() + "/api/v1/stream"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d", resp.StatusCode)
		}
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		n := g.hub.Clients()
		return n == 2, fmt.Sprintf("%d clients", n)
	})
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third stream: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}
