package main

// The hostile-client suite of issue 15: every attack the issue lists, run
// against the built binary while a legitimate QoS 1 client keeps doing
// round trips. Each attack asserts its refusal (status or reason code),
// the legitimate client's round-trip p99 during the attack (< 1 s), and
// records the gateway's peak RSS during it (VmHWM, reset before each
// attack through /proc/<pid>/clear_refs); the peak across the suite is
// bounded per profile: 128 MiB with the defaults, 96 MiB with the
// Raspberry Pi profile. Attackers dial from their own loopback addresses
// (127.0.0.0/8 is all loopback on Linux), so per-source limits and login
// back-off hit them and not the legitimate client on 127.0.0.1.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/runnel-iot/runnel/internal/testutil"
)

// attackGW is the gateway under attack and the credentials `runnel init`
// generated for it.
type attackGW struct {
	p                    *gatewayProc
	pid                  int
	mqtt, http, udp, ws  string
	adminPW, device      string
	devicePW, apiToken   string
	maxPacket            int
	legit                *legitClient
	peak                 int64
	peaks                []string // "attack: N MiB", for the log
	maxSubs, maxStreams  int
	retainedBudget       int
	queuedBytes, offline int
}

// initGateway writes a config with `runnel init` (from profile, if set),
// changes it so the privilege attacks have their targets (the device user
// gets an empty subscribe list; the write endpoint keeps only http.tokens),
// and starts the binary on loopback ports with UDP behind an allow-list
// that excludes loopback and a WebSocket listener.
func initGateway(t *testing.T, bin string, env []string, profile string) *attackGW {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "gateway.yaml")
	args := []string{"init", "-o", cfgFile}
	if profile != "" {
		args = append(args, "-profile", profile)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("runnel init: %v\n%s", err, out)
	}
	secret := func(label string) string {
		m := regexp.MustCompile(regexp.QuoteMeta(label) + `\s+(\S+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("runnel init output lacks %q:\n%s", label, out)
		}
		return string(m[1])
	}
	g := &attackGW{adminPW: secret("mqtt user admin:"), device: "device-1", devicePW: secret("mqtt user device-1:"),
		apiToken: secret("http token (API):")}
	writeToken := secret("http write token:")
	b, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		indent := l[:len(l)-len(strings.TrimLeft(l, " "))]
		switch {
		case strings.Contains(l, writeToken):
			lines[i] = indent + "tokens: []" // http.tokens alone guard the write endpoint
		case strings.Contains(l, `subscribe: ["cmd/%u/#"]`):
			lines[i] = indent + "subscribe: []" // an empty list allows nothing
		}
	}
	if err := os.WriteFile(cfgFile, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	e := append(env, "RUNNEL_DATA_DIR="+t.TempDir(), "RUNNEL_GATEWAY_ID=attack-gw",
		"RUNNEL_HTTP_ADDR=127.0.0.1:0", "RUNNEL_MQTT_ADDR=127.0.0.1:0", "RUNNEL_MQTT_WEBSOCKET_ADDR=127.0.0.1:0",
		"RUNNEL_UDP_ADDR=127.0.0.1:0", "RUNNEL_UDP_ALLOW_SOURCES=10.99.0.0/16")
	// startGateway appends "run"; the flag goes after it (sh execs, so the
	// pid is runnel's).
	p, started := startGateway(t, []string{"sh", "-c", `exec "$0" "$2" -config "$1"`, bin, cfgFile}, e)
	g.p, g.pid = p, p.cmd.Process.Pid
	g.mqtt, g.http, g.udp = started["mqtt_addr"].(string), started["http_addr"].(string), started["udp_addr"].(string)
	m := regexp.MustCompile(`"msg":"mqtt listening",[^}]*"listener":"ws","addr":"([^"]+)"`).FindStringSubmatch(p.logText())
	if m == nil {
		t.Fatalf("no WebSocket listener in the log:\n%s", p.logText())
	}
	g.ws = m[1]
	// The limits the assertions use: the profile's, else the defaults.
	g.maxPacket, g.maxSubs, g.maxStreams, g.retainedBudget, g.queuedBytes, g.offline = 256<<10, 100, 64, 4<<20, 1<<20, 64
	if profile != "" {
		pb, _ := os.ReadFile(profile)
		if m := regexp.MustCompile(`max_packet_bytes: (\d+)KiB`).FindSubmatch(pb); m != nil {
			n, _ := strconv.Atoi(string(m[1]))
			g.maxPacket = n << 10
		}
	}
	return g
}

// dialFrom dials addr from a loopback source address.
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// connect5From connects an MQTT 5 client from src; it returns the CONNACK
// reason code (the client is closed at the end of the test).
func connect5From(t *testing.T, src, addr string, cp *paho5.Connect) (*paho5.Client, *paho5.Connack) {
	t.Helper()
	conn, err := dialFrom(src, addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho5.NewClient(paho5.ClientConfig{ClientID: cp.ClientID, Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if ca == nil {
		conn.Close()
		t.Fatalf("connect %s from %s: no CONNACK: %v", cp.ClientID, src, err)
	}
	t.Cleanup(func() { conn.Close() })
	return c, ca
}

func (g *attackGW) user5(id, user, pw string) *paho5.Connect {
	return &paho5.Connect{ClientID: id, KeepAlive: 30, CleanStart: true, Username: user, UsernameFlag: true,
		Password: []byte(pw), PasswordFlag: true}
}

// connect3From connects an MQTT 3.1.1 client from src.
func connect3From(src, addr, id, user, pw string, configure func(*paho.ClientOptions)) (paho.Client, error) {
	c, _, err := connect3Session(src, addr, id, user, pw, configure)
	return c, err
}

// connect3Session is connect3From, also returning CONNACK's session present.
func connect3Session(src, addr, id, user, pw string, configure func(*paho.ClientOptions)) (paho.Client, bool, error) {
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(user).SetPassword(pw).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).
		SetDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second})
	if configure != nil {
		configure(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return c, false, fmt.Errorf("connect %s: timed out", id)
	}
	return c, tok.(*paho.ConnectToken).SessionPresent(), tok.Error()
}

// legitClient publishes QoS 1 telemetry and receives it on its own
// subscription, one round trip after the other, recording each.
type legitClient struct {
	c    paho.Client
	got  chan string
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	rtt  []time.Duration
}

func startLegit(t *testing.T, g *attackGW) *legitClient {
	t.Helper()
	l := &legitClient{got: make(chan string, 16), stop: make(chan struct{}), done: make(chan struct{})}
	topic := "telemetry/legit/env"
	c, err := connect3From("127.0.0.1", g.mqtt, "legit", "admin", g.adminPW, func(o *paho.ClientOptions) {
		o.SetCleanSession(true)
	})
	if err != nil {
		t.Fatal(err)
	}
	l.c = c
	if tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { l.got <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("legit subscribe: %v", tok.Error())
	}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			payload := fmt.Sprintf(`{"seq":%d}`, i)
			start := time.Now()
			tok := c.Publish(topic, 1, false, payload)
			rtt := 5 * time.Second // a lost round trip counts as 5 s
			if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
				timeout := time.After(5*time.Second - time.Since(start))
			wait:
				for {
					select {
					case p := <-l.got:
						if p == payload {
							rtt = time.Since(start)
							break wait
						}
					case <-timeout:
						break wait
					case <-l.stop:
						return
					}
				}
			}
			l.mu.Lock()
			l.rtt = append(l.rtt, rtt)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(l.stop); <-l.done; c.Disconnect(10) })
	return l
}

func (l *legitClient) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.rtt)
}

// p99 returns the 99th percentile of the round trips since from, after
// waiting for at least 5 of them.
func (l *legitClient) p99(t *testing.T, from int) (time.Duration, int) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
		return l.count() >= from+5, "legitimate round trips during the attack"
	})
	l.mu.Lock()
	rtt := slices.Clone(l.rtt[from:])
	l.mu.Unlock()
	slices.Sort(rtt)
	return rtt[(len(rtt)-1)*99/100], len(rtt)
}

// resetHWM resets the process's VmHWM to its current RSS.
func resetHWM(t *testing.T, pid int) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatalf("reset VmHWM: %v", err)
	}
}

// attack runs one attack in the suite's frame: it resets the peak RSS,
// runs fn, then checks the legitimate client's round-trip p99 during it
// and records the peak RSS.
func (g *attackGW) attack(t *testing.T, name string, fn func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		resetHWM(t, g.pid)
		from := g.legit.count()
		start := time.Now()
		fn(t)
		p99, n := g.legit.p99(t, from)
		peak := vmHWM(t, g.pid)
		g.peak = max(g.peak, peak)
		g.peaks = append(g.peaks, fmt.Sprintf("%-28s %4d MiB  legit p99 %6.1f ms (%d round trips)  %.1fs",
			name, peak>>20, float64(p99.Microseconds())/1000, n, time.Since(start).Seconds()))
		if p99 > time.Second {
			t.Errorf("legitimate QoS 1 round trip p99 %s during the attack, want under 1s", p99)
		}
	})
}

// TestAttackSuite runs the suite against the binary with the defaults
// (a `runnel init` config) and with the Raspberry Pi profile.
func TestAttackSuite(t *testing.T) {
	bin, env := binary(t)
	bomb := gzipBomb()
	for _, prof := range []struct {
		name, profile string
		limit         int64
	}{
		{"defaults", "", 128 << 20},
		{"raspberry-pi", "../../../configs/raspberry-pi.yaml", 96 << 20},
	} {
		t.Run(prof.name, func(t *testing.T) {
			g := initGateway(t, bin, env, prof.profile)
			defer g.p.stop()
			g.legit = startLegit(t, g)
			runAttacks(t, g, bomb)
			if prof.profile == "" {
				g.attack(t, "secure_default_netns", func(t *testing.T) { attackSecureDefault(t, bin, env) })
			}
			t.Logf("peak RSS per attack (%s):\n%s", prof.name, strings.Join(g.peaks, "\n"))
			t.Logf("peak RSS across the suite: %d MiB (limit %d MiB)", g.peak>>20, prof.limit>>20)
			if g.peak > prof.limit {
				t.Errorf("peak RSS %d MiB across the suite, want at most %d MiB", g.peak>>20, prof.limit>>20)
			}
		})
	}
}

func gzipBomb() []byte {
	var raw bytes.Buffer
	for raw.Len() < 32<<20 {
		raw.WriteString("env,device=bomb temp=1 1700000000000000000\n")
	}
	var zb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zb, gzip.BestCompression)
	zw.Write(raw.Bytes())
	zw.Close()
	return zb.Bytes()
}

func runAttacks(t *testing.T, g *attackGW, bomb []byte) {
	auth := "Authorization: Bearer " + g.apiToken + "\r\n"

	// --- Memory ---
	g.attack(t, "http_20x_declared_32MiB", func(t *testing.T) {
		var conns []net.Conn
		for range 20 {
			conns = append(conns, hostileWrite(t, g.http, 32<<20, auth, []byte("m")))
		}
		for _, c := range conns {
			if code := readStatus(t, c); code != http.StatusRequestEntityTooLarge {
				t.Errorf("Content-Length 32 MiB and one byte: status %d, want 413", code)
			}
			c.Close()
		}
	})
	g.attack(t, "http_8_gzip_bombs", func(t *testing.T) {
		codes := make(chan int, 8)
		var wg sync.WaitGroup
		for range 8 {
			c := hostileWrite(t, g.http, len(bomb), auth+"Content-Encoding: gzip\r\n", nil)
			wg.Go(func() {
				defer c.Close()
				if _, err := c.Write(bomb); err != nil {
					codes <- -1
					return
				}
				_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					codes <- -1
					return
				}
				resp.Body.Close()
				codes <- resp.StatusCode
			})
		}
		wg.Wait()
		close(codes)
		for code := range codes {
			if code != http.StatusRequestEntityTooLarge && code != http.StatusServiceUnavailable {
				t.Errorf("gzip bomb (%d bytes inflating to 32 MiB): status %d, want 413 or 503", len(bomb), code)
			}
		}
	})
	g.attack(t, "http_8_writers_30MB", func(t *testing.T) {
		// Chunked (no declared length), so the gateway reads until a
		// limit stops it: max_body_bytes, or the in-flight byte budget.
		var line bytes.Buffer
		for line.Len() < 1<<20 {
			line.WriteString("env,device=big temp=21.5 1700000000000000000\n")
		}
		chunk := line.Bytes()
		codes := make(chan string, 8)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				var rs []io.Reader
				for range 30 {
					rs = append(rs, bytes.NewReader(chunk))
				}
				req, _ := http.NewRequest("POST", "http://"+g.http+"/api/v2/write", io.NopCloser(io.MultiReader(rs...)))
				req.Header.Set("Authorization", "Bearer "+g.apiToken)
				resp, err := (&http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{}}).Do(req)
				if err != nil {
					codes <- err.Error()
					return
				}
				resp.Body.Close()
				codes <- strconv.Itoa(resp.StatusCode)
			})
		}
		wg.Wait()
		close(codes)
		for code := range codes {
			if code != "413" && code != "503" {
				t.Errorf("30 MB body: %s, want 413 or 503", code)
			}
		}
	})
	g.attack(t, "mqtt_200k_subscriptions", func(t *testing.T) {
		c, ca := connect5From(t, "127.0.0.10", g.mqtt, g.user5("subflood", "admin", g.adminPW))
		if ca.ReasonCode != 0 {
			t.Fatalf("CONNACK %#x", ca.ReasonCode)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		granted, quota := 0, 0
		for batch := range 200 {
			subs := make([]paho5.SubscribeOptions, 1000)
			for i := range subs {
				subs[i] = paho5.SubscribeOptions{Topic: fmt.Sprintf("flood/%d/%d", batch, i), QoS: 1}
			}
			sa, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: subs})
			if sa == nil {
				t.Fatalf("SUBSCRIBE %d: %v", batch, err)
			}
			for _, r := range sa.Reasons {
				switch {
				case r < 0x80:
					granted++
				case r == 0x97:
					quota++
				}
			}
		}
		if granted > g.maxSubs || granted+quota != 200_000 {
			t.Errorf("200,000 subscriptions: %d granted, %d refused 0x97; want at most %d granted, the rest 0x97", granted, quota, g.maxSubs)
		}
		c.Disconnect(&paho5.Disconnect{})
	})
	g.attack(t, "mqtt_retained_many_ids", func(t *testing.T) {
		payload := bytes.Repeat([]byte("r"), 60_000)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for i := range 100 { // 6 MB asked, across 100 client ids
			c, ca := connect5From(t, "127.0.0.11", g.mqtt, g.user5(fmt.Sprintf("retainer-%d", i), "admin", g.adminPW))
			if ca.ReasonCode != 0 {
				t.Fatalf("CONNACK %#x", ca.ReasonCode)
			}
			if _, err := c.Publish(ctx, &paho5.Publish{QoS: 1, Retain: true, Topic: fmt.Sprintf("state/r/%d", i), Payload: payload}); err != nil {
				t.Fatal(err)
			}
			c.Disconnect(&paho5.Disconnect{})
		}
		n, bytes := retainedUnder(t, g, "state/r")
		if bytes > g.retainedBudget {
			t.Errorf("%d retained messages of %d bytes kept, want at most max_retained_bytes (%d)", n, bytes, g.retainedBudget)
		}
		if n == 0 {
			t.Error("no retained message kept at all")
		}
	})
	g.attack(t, "mqtt_retained_wills", func(t *testing.T) {
		payload := bytes.Repeat([]byte("w"), 60_000)
		accepted, refused := 0, 0
		for i := range 50 {
			cp := g.user5(fmt.Sprintf("will-%d", i), "admin", g.adminPW)
			cp.WillMessage = &paho5.WillMessage{Retain: true, QoS: 1, Topic: fmt.Sprintf("state/w/%d", i), Payload: payload}
			_, ca := connect5From(t, "127.0.0.12", g.mqtt, cp)
			switch ca.ReasonCode {
			case 0:
				accepted++
			case 0x97:
				refused++
			default:
				t.Errorf("retained will: CONNACK %#x, want 0 or 0x97", ca.ReasonCode)
			}
		}
		// The retained store is already full from the previous attack.
		if refused == 0 || accepted*len(payload) > g.retainedBudget {
			t.Errorf("retained wills: %d accepted, %d refused 0x97; want refusals within max_retained_bytes", accepted, refused)
		}
	})
	g.attack(t, "mqtt_offline_sessions_queued", func(t *testing.T) {
		const sessions = 100
		for i := range sessions {
			id := fmt.Sprintf("q-%d", i)
			c, err := connect3From("127.0.0.13", g.mqtt, id, "admin", g.adminPW, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tok := c.Subscribe("q/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("subscribe: %v", tok.Error())
			}
			c.Disconnect(10)
		}
		pub, err := connect3From("127.0.0.14", g.mqtt, "q-pub", "admin", g.adminPW, func(o *paho.ClientOptions) { o.SetCleanSession(true) })
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Disconnect(10)
		payload := bytes.Repeat([]byte("q"), 100_000)
		for range 60 { // 6 MB, queued for 100 sessions: 600 MB without quotas
			if tok := pub.Publish("q/x", 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
		// The oldest session was expired past max_offline_sessions. (What
		// one session keeps, max_queued_bytes, is TestQueuedBytesQuota's.)
		old, present, err := connect3Session("127.0.0.13", g.mqtt, "q-0", "admin", g.adminPW, nil)
		if err != nil {
			t.Fatal(err)
		}
		if present {
			t.Error("the session offline longest survived past max_offline_sessions")
		}
		// Leave no persistent session behind for the next attacks.
		old.Disconnect(10)
		for i := range sessions {
			c, err := connect3From("127.0.0.13", g.mqtt, fmt.Sprintf("q-%d", i), "admin", g.adminPW, func(o *paho.ClientOptions) { o.SetCleanSession(true) })
			if err == nil {
				c.Disconnect(10)
			}
		}
	})
	g.attack(t, "sse_3000_streams", func(t *testing.T) {
		var open []net.Conn
		defer func() {
			for _, c := range open {
				c.Close()
			}
		}()
		ok, busy := 0, 0
		for range 3000 {
			c, err := net.Dial("tcp", g.http)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "GET /api/v1/stream HTTP/1.1\r\nHost: x\r\n%s\r\n", auth)
			switch code := readStatus(t, c); code {
			case http.StatusOK:
				ok++
				open = append(open, c)
			case http.StatusServiceUnavailable:
				busy++
				c.Close()
			default:
				t.Fatalf("SSE stream: status %d", code)
			}
		}
		if ok > g.maxStreams || ok+busy != 3000 {
			t.Errorf("3,000 SSE streams: %d served, %d refused 503; want at most %d served", ok, busy, g.maxStreams)
		}
	})

	// --- Privilege ---
	g.attack(t, "will_on_alerts", func(t *testing.T) {
		cp := g.user5("pat-7-will", g.device, g.devicePW)
		cp.WillMessage = &paho5.WillMessage{Retain: true, QoS: 1, Topic: "alerts/spo2_low/vitals,device=pat-7", Payload: []byte(`{"state":"resolved"}`)}
		if _, ca := connect5From(t, "127.0.0.20", g.mqtt, cp); ca.ReasonCode != 0x87 {
			t.Errorf("a device's retained will on alerts/: CONNACK %#x, want 0x87", ca.ReasonCode)
		}
	})
	g.attack(t, "client_id_takeover", func(t *testing.T) {
		victim, ca := connect5From(t, "127.0.0.21", g.mqtt, g.user5("ward-monitor", "admin", g.adminPW))
		if ca.ReasonCode != 0 {
			t.Fatalf("CONNACK %#x", ca.ReasonCode)
		}
		if _, ca := connect5From(t, "127.0.0.22", g.mqtt, g.user5("ward-monitor", g.device, g.devicePW)); ca.ReasonCode != 0x87 {
			t.Errorf("another user's client id: CONNACK %#x, want 0x87", ca.ReasonCode)
		}
		victim.Disconnect(&paho5.Disconnect{})
	})
	g.attack(t, "empty_subscribe_list", func(t *testing.T) {
		c, ca := connect5From(t, "127.0.0.23", g.mqtt, g.user5("dev-sub", g.device, g.devicePW))
		if ca.ReasonCode != 0 {
			t.Fatalf("CONNACK %#x", ca.ReasonCode)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sa, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{
			{Topic: "#"}, {Topic: "$SYS/#"}, {Topic: "alerts/#"}, {Topic: "cmd/" + g.device + "/x"}}})
		if sa == nil {
			t.Fatal(err)
		}
		if fmt.Sprint(sa.Reasons) != fmt.Sprint([]byte{0x87, 0x87, 0x87, 0x87}) {
			t.Errorf("user with an empty subscribe list: SUBACK %x, want all 0x87", sa.Reasons)
		}
		c.Disconnect(&paho5.Disconnect{})
	})
	g.attack(t, "acl_percent_u", func(t *testing.T) {
		c, ca := connect5From(t, "127.0.0.24", g.mqtt, g.user5("dev-pub", g.device, g.devicePW))
		if ca.ReasonCode != 0 {
			t.Fatalf("CONNACK %#x", ca.ReasonCode)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for topic, want := range map[string]byte{"telemetry/pat-8/spo2": 0x87, "telemetry/" + g.device + "/spo2": 0} {
			resp, err := c.Publish(ctx, &paho5.Publish{QoS: 1, Topic: topic, Payload: []byte(`{"v":97}`)})
			if resp == nil {
				t.Fatalf("publish %s: %v", topic, err)
			}
			if resp.ReasonCode != want {
				t.Errorf("device publishing on %s: PUBACK %#x, want %#x", topic, resp.ReasonCode, want)
			}
		}
		c.Disconnect(&paho5.Disconnect{})
	})
	g.attack(t, "udp_allow_list", func(t *testing.T) {
		c, err := net.Dial("udp", g.udp)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		before := metric(t, g, `runnel_ingest_dropped_readings_total{listener="udp",reason="source_denied"}`)
		for i := range 100 {
			fmt.Fprintf(c, "spo2,device=pat-%d value=70\n", i)
		}
		testutil.WaitFor(t, 20*time.Second, func() (bool, string) {
			n := metric(t, g, `runnel_ingest_dropped_readings_total{listener="udp",reason="source_denied"}`)
			return n >= before+100, fmt.Sprintf("%v datagrams refused, want 100 more than %v", n, before)
		})
		if n := metric(t, g, `runnel_ingest_readings_total{listener="udp"}`); n != 0 {
			t.Errorf("%v UDP readings stored from a source outside allow_sources", n)
		}
	})
	g.attack(t, "http_tokens_alone", func(t *testing.T) {
		resp, err := http.Post("http://"+g.http+"/api/v2/write", "text/plain", strings.NewReader("spo2,device=pat-7 value=70\n"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("write without a token, http.tokens set alone: %d, want 401", resp.StatusCode)
		}
	})

	// --- Availability ---
	g.attack(t, "emfile", func(t *testing.T) { attackEMFILE(t, g) })
	g.attack(t, "idle_sockets_1000", func(t *testing.T) {
		closed := closedSockets(t, "127.0.0.30", g.mqtt, 1000, nil)
		if closed < 1000-32 {
			t.Errorf("1,000 idle sockets from one host: %d closed at once, want all but half of max_pending_connects (32)", closed)
		}
		connectOK(t, g, "127.0.0.31")
	})
	g.attack(t, "websocket_no_connect", func(t *testing.T) {
		upgrade := []byte("GET /mqtt HTTP/1.1\r\nHost: " + g.ws + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n")
		closed := closedSockets(t, "127.0.0.32", g.ws, 100, upgrade)
		if closed < 100-32 {
			t.Errorf("100 WebSockets that never send CONNECT: %d closed at once, want all but 32", closed)
		}
		connectOK(t, g, "127.0.0.33")
	})
	g.attack(t, "denied_publish_log_volume", func(t *testing.T) {
		before := len(g.p.logText())
		payload := bytes.Repeat([]byte{'x'}, g.maxPacket-1024)
		for i := range 30 {
			lost := make(chan struct{}, 1)
			c, err := connect3From("127.0.0.34", g.mqtt, fmt.Sprintf("flood-%d", i), g.device, g.devicePW, func(o *paho.ClientOptions) {
				o.SetCleanSession(true).SetConnectionLostHandler(func(paho.Client, error) { lost <- struct{}{} })
			})
			if err != nil {
				t.Fatal(err)
			}
			c.Publish("alerts/spo2_low/x", 1, false, payload)
			select {
			case <-lost: // 3.1.1 has no negative PUBACK: the broker disconnects
			case <-time.After(10 * time.Second):
				t.Fatal("a denied QoS 1 publish from a 3.1.1 client was neither answered nor ended")
			}
		}
		grew := len(g.p.logText()) - before
		if grew > 32<<10 || strings.Contains(g.p.logText()[before:], "120,120,120") {
			t.Errorf("30 denied %d-byte publishes wrote %d bytes of log, want under 32 KiB and no payload", len(payload), grew)
		}
	})
	g.attack(t, "sys_qos1_answered", func(t *testing.T) {
		c, ca := connect5From(t, "127.0.0.35", g.mqtt, g.user5("sys-pub", "admin", g.adminPW))
		if ca.ReasonCode != 0 {
			t.Fatalf("CONNACK %#x", ca.ReasonCode)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := c.Publish(ctx, &paho5.Publish{QoS: 1, Topic: "$SYS/broker/uptime", Payload: []byte("1")})
		if resp == nil || resp.ReasonCode != 0x87 {
			t.Errorf("QoS 1 publish to $SYS: %+v, %v; want PUBACK 0x87", resp, err)
		}
		c.Disconnect(&paho5.Disconnect{})
	})

	// --- Authentication ---
	g.attack(t, "login_timing", func(t *testing.T) {
		// Each attempt from its own source, so back-off does not engage.
		var unknown, known []time.Duration
		for i := range 12 {
			for j, user := range []string{"nobody", g.device} {
				src := fmt.Sprintf("127.0.1.%d", 2*i+j+1)
				start := time.Now()
				_, ca := connect5From(t, src, g.mqtt, g.user5(fmt.Sprintf("timing-%d", i), user, "wrong-password"))
				d := time.Since(start)
				if ca.ReasonCode != 0x86 {
					t.Fatalf("bad login: CONNACK %#x, want 0x86", ca.ReasonCode)
				}
				if user == "nobody" {
					unknown = append(unknown, d)
				} else {
					known = append(known, d)
				}
			}
		}
		slices.Sort(unknown)
		slices.Sort(known)
		u, k := unknown[len(unknown)/2], known[len(known)/2]
		t.Logf("median refusal: unknown user %s, known user %s", u, k)
		if diff := max(u, k) - min(u, k); float64(diff) > 0.2*float64(max(u, k)) {
			t.Errorf("unknown user refused in %s, known user in %s: more than 20 %% apart", u, k)
		}
	})
	g.attack(t, "login_backoff", func(t *testing.T) {
		before := metric(t, g, "runnel_mqtt_auth_throttled_total")
		for i := range 6 {
			connect5From(t, "127.0.2.1", g.mqtt, g.user5(fmt.Sprintf("guess-%d", i), g.device, "guess"))
		}
		// Even the right password is refused while the source backs off.
		if _, ca := connect5From(t, "127.0.2.1", g.mqtt, g.user5("guess-right", g.device, g.devicePW)); ca.ReasonCode != 0x86 {
			t.Errorf("right password from a source backing off: CONNACK %#x, want 0x86", ca.ReasonCode)
		}
		if n := metric(t, g, "runnel_mqtt_auth_throttled_total"); n <= before {
			t.Errorf("runnel_mqtt_auth_throttled_total %v, want above %v", n, before)
		}
		connectOK(t, g, "127.0.2.2") // another host is not affected
	})
}

// retainedUnder subscribes to prefix/# and returns the retained messages
// delivered and their payload bytes; a marker published after the SUBACK
// comes after every retained message on the same queue.
func retainedUnder(t *testing.T, g *attackGW, prefix string) (n, size int) {
	t.Helper()
	got := make(chan paho.Message, 256)
	c, err := connect3From("127.0.0.15", g.mqtt, "retained-reader", "admin", g.adminPW, func(o *paho.ClientOptions) {
		o.SetCleanSession(true).SetOrderMatters(true)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(10)
	if tok := c.Subscribe(prefix+"/#", 0, func(_ paho.Client, m paho.Message) { got <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := c.Publish(prefix+"/zz-marker", 0, false, "m"); !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("publish marker")
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-got:
			if m.Topic() == prefix+"/zz-marker" {
				return n, size
			}
			if m.Retained() {
				n, size = n+1, size+len(m.Payload())
			}
		case <-deadline:
			t.Fatal("no marker after the retained messages")
		}
	}
}

// closedSockets opens n sockets from src that send at most hello and never
// an MQTT CONNECT, and returns how many the gateway closed within 10 s
// (the rest wait for connect_timeout). All are closed on return.
func closedSockets(t *testing.T, src, addr string, n int, hello []byte) int {
	t.Helper()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := dialFrom(src, addr)
		if err != nil {
			t.Fatal(err)
		}
		if hello != nil {
			c.Write(hello)
		}
		conns = append(conns, c)
	}
	results := make(chan bool, n)
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range conns {
		go func() {
			_ = c.SetReadDeadline(deadline)
			buf := make([]byte, 512)
			for {
				if _, err := c.Read(buf); err != nil {
					var ne net.Error
					results <- !(errors.As(err, &ne) && ne.Timeout())
					return
				}
			}
		}()
	}
	closed := 0
	for range n {
		if <-results {
			closed++
		}
	}
	return closed
}

// connectOK checks that a new client from src still connects.
func connectOK(t *testing.T, g *attackGW, src string) {
	t.Helper()
	c, ca := connect5From(t, src, g.mqtt, g.user5("after-"+src, "admin", g.adminPW))
	if ca.ReasonCode != 0 {
		t.Errorf("a client after the attack: CONNACK %#x, want 0", ca.ReasonCode)
	}
	c.Disconnect(&paho5.Disconnect{})
}

// metric returns one sample of the gateway's /metrics.
func metric(t *testing.T, g *attackGW, name string) float64 {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+g.http+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+g.apiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return v
		}
	}
	t.Fatalf("no metric %s (status %d)", name, resp.StatusCode)
	return 0
}

// attackEMFILE lowers the running gateway's descriptor limit (prlimit
// --pid) to what it uses plus a few, opens sockets until accept fails,
// and checks that the MQTT listener says so, retries, and accepts again
// once the sockets are gone and the limit is back.
func attackEMFILE(t *testing.T, g *attackGW) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		if os.Getenv("REQUIRE_TEST_TOOLS") != "" {
			t.Fatal("prlimit not found and REQUIRE_TEST_TOOLS is set")
		}
		t.Skip("prlimit not found")
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", g.pid))
	if err != nil {
		t.Fatal(err)
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", g.pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`Max open files\s+(\d+)`).FindSubmatch(limits)
	if m == nil {
		t.Fatalf("no open files limit in:\n%s", limits)
	}
	soft, _ := strconv.ParseUint(string(m[1]), 10, 64)
	set := func(soft uint64) {
		out, err := exec.Command(prlimit, "--pid", strconv.Itoa(g.pid), fmt.Sprintf("--nofile=%d:", soft)).CombinedOutput()
		if err != nil {
			t.Fatalf("prlimit: %v: %s", err, out)
		}
	}
	failing := strings.Count(g.p.logText(), "mqtt listener cannot accept; retrying with back-off")
	again := strings.Count(g.p.logText(), "mqtt listener accepting again")
	set(uint64(len(fds) + 12))
	restored := false
	restore := func() {
		if !restored {
			restored = true
			set(soft)
		}
	}
	defer restore()
	var socks []net.Conn
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	// From several hosts, so the per-host pending bound does not close
	// them first.
	for i := range 40 {
		c, err := dialFrom(fmt.Sprintf("127.0.3.%d", i%4+1), g.mqtt)
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, c)
	}
	testutil.WaitFor(t, 20*time.Second, func() (bool, string) {
		return strings.Count(g.p.logText(), "mqtt listener cannot accept; retrying with back-off") > failing,
			"the listener logs its accept failures"
	})
	for _, c := range socks {
		c.Close()
	}
	socks = nil
	restore()
	testutil.WaitFor(t, 20*time.Second, func() (bool, string) {
		return strings.Count(g.p.logText(), "mqtt listener accepting again") > again, "the listener accepts again"
	})
	connectOK(t, g, "127.0.3.9")
}

// attackSecureDefault runs `runnel run` with no config inside a network
// namespace and dials its non-loopback address: every listener refuses
// (the full test, with the open switch as control, is
// TestSecureDefaultNetns).
func attackSecureDefault(t *testing.T, bin string, env []string) {
	ns, addr := makeNetns(t)
	e := append(env, "RUNNEL_DATA_DIR="+t.TempDir(), "RUNNEL_GATEWAY_ID=netns-gw", "RUNNEL_UDP_ADDR=:8089")
	p, _ := startGateway(t, []string{"ip", "netns", "exec", ns, bin}, e)
	defer p.stop()
	for _, port := range []string{"8080", "1883"} {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, port), 5*time.Second)
		if c != nil {
			c.Close()
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %s:%s of a gateway with no config: %v, want connection refused", addr, port, err)
		}
	}
	t.Logf("gateway in the namespace: VmHWM %d MiB", vmHWM(t, p.cmd.Process.Pid)>>20)
}
