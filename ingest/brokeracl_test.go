package ingest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/runnel-iot/runnel/internal/testutil"
)

// connect5 connects a paho.golang (MQTT 5) client and returns it with the
// CONNACK reason code (0 on success).
func connect5(t *testing.T, addr string, cp *paho5.Connect) (*paho5.Client, byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho5.NewClient(paho5.ClientConfig{ClientID: cp.ClientID, Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if ca == nil {
		conn.Close()
		t.Fatalf("connect %s: no CONNACK: %v", cp.ClientID, err)
	}
	if ca.ReasonCode == 0 {
		t.Cleanup(func() { c.Disconnect(&paho5.Disconnect{}) })
	} else {
		conn.Close()
	}
	return c, ca.ReasonCode
}

// connect3 connects a paho.mqtt.golang (3.1.1) client; nil error on success.
func connect3(addr, id, user, pw string, configure func(*paho.ClientOptions)) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(user).SetPassword(pw).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).SetCleanSession(false)
	if configure != nil {
		configure(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return c, fmt.Errorf("connect %s: timed out", id)
	}
	return c, tok.Error()
}

func aclBroker(t *testing.T) *testBroker {
	t.Helper()
	cfg := testBrokerConfig()
	cfg.Users = []BrokerUser{
		{Username: "sensor", PasswordHash: hash(t, "pw"), Publish: []string{"telemetry/%u/+", "+/+/+"}},
		{Username: "other", PasswordHash: hash(t, "pw"), Publish: []string{"telemetry/%u/+"}, Subscribe: []string{"cmd/%c/#"}},
		{Username: "ops", PasswordHash: hash(t, "pw"), Publish: []string{"alerts/#"}, Subscribe: []string{"alerts/#"}},
	}
	return startBroker(t, cfg, openTestWAL(t))
}

// TestWillACL checks that a will its user may not publish is refused at
// CONNECT: 0x87 for MQTT 5, 0x05 for 3.1.1; an allowed will connects.
func TestWillACL(t *testing.T) {
	b := aclBroker(t)
	forged := &paho5.WillMessage{Retain: true, QoS: 1, Topic: "alerts/spo2_low/vitals,device=pat-7", Payload: []byte(`{"state":"resolved"}`)}
	_, code := connect5(t, b.addr, &paho5.Connect{ClientID: "w5", KeepAlive: 30, CleanStart: true, UsernameFlag: true, Username: "sensor",
		PasswordFlag: true, Password: []byte("pw"), WillMessage: forged})
	if code != 0x87 {
		t.Errorf("v5 forged alert will: CONNACK %#x, want 0x87", code)
	}
	_, err := connect3(b.addr, "w3", "sensor", "pw", func(o *paho.ClientOptions) {
		o.SetBinaryWill(forged.Topic, forged.Payload, 1, true)
	})
	if err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Errorf("3.1.1 forged alert will: %v, want not Authorized (0x05)", err)
	}
	_, code = connect5(t, b.addr, &paho5.Connect{ClientID: "w5ok", KeepAlive: 30, CleanStart: true, UsernameFlag: true, Username: "other",
		PasswordFlag: true, Password: []byte("pw"), WillMessage: &paho5.WillMessage{Topic: "telemetry/other/status", Payload: []byte("gone")}})
	if code != 0 {
		t.Errorf("allowed will: CONNACK %#x, want success", code)
	}
	_, code = connect5(t, b.addr, &paho5.Connect{ClientID: "w5bad", KeepAlive: 30, CleanStart: true, UsernameFlag: true, Username: "other",
		PasswordFlag: true, Password: []byte("pw"), WillMessage: &paho5.WillMessage{Topic: "telemetry/sensor/status", Payload: []byte("gone")}})
	if code != 0x87 {
		t.Errorf("will as another device: CONNACK %#x, want 0x87", code)
	}
}

// TestClientIDTakeover checks that a user cannot take over the session of
// another user's client id, live or persisted; the same user can.
func TestClientIDTakeover(t *testing.T) {
	b := aclBroker(t)
	owner, err := connect3(b.addr, "dev-1", "other", "pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connect3(b.addr, "dev-1", "sensor", "pw", nil); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Errorf("takeover of a live session: %v, want not Authorized", err)
	}
	if !owner.IsConnectionOpen() {
		t.Error("the owner was disconnected by the refused takeover")
	}
	_, code := connect5(t, b.addr, &paho5.Connect{ClientID: "dev-1", KeepAlive: 30, UsernameFlag: true, Username: "sensor",
		PasswordFlag: true, Password: []byte("pw")})
	if code != 0x87 {
		t.Errorf("v5 takeover: CONNACK %#x, want 0x87", code)
	}
	owner.Disconnect(100) // the session persists (clean session off)
	if _, err := connect3(b.addr, "dev-1", "sensor", "pw", nil); err == nil {
		t.Error("takeover of a persisted session was allowed")
	}
	again, err := connect3(b.addr, "dev-1", "other", "pw", nil)
	if err != nil {
		t.Errorf("the owner reconnecting: %v", err)
	} else {
		again.Disconnect(100)
	}
}

// TestACLSubstitutionAndReserved checks %u/%c filters, the empty
// subscribe list, and that wildcards never reach reserved topics.
func TestACLSubstitutionAndReserved(t *testing.T) {
	b := aclBroker(t)
	c5 := func(id, user string) *paho5.Client {
		c, code := connect5(t, b.addr, &paho5.Connect{ClientID: id, KeepAlive: 30, CleanStart: true, UsernameFlag: true, Username: user,
			PasswordFlag: true, Password: []byte("pw")})
		if code != 0 {
			t.Fatalf("connect %s: %#x", user, code)
		}
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other, sensor, ops := c5("o-1", "other"), c5("s-1", "sensor"), c5("ops-1", "ops")
	for _, tc := range []struct {
		c     *paho5.Client
		name  string
		topic string
		want  byte
	}{
		{other, "other", "telemetry/other/env", 0},
		{other, "other", "telemetry/sensor/env", 0x87}, // %u: only as itself
		{sensor, "sensor", "alerts/spo2_low/x", 0x87},  // +/+/+ does not cover alerts
		{sensor, "sensor", "$SYS/broker/x", 0x87},      // answered, not dropped
		{ops, "ops", "alerts/manual/test", 0},          // literal alerts/ filter
	} {
		resp, err := tc.c.Publish(ctx, &paho5.Publish{QoS: 1, Topic: tc.topic, Payload: []byte(`{"v":1}`)})
		if resp == nil {
			t.Errorf("%s publishing on %s: no PUBACK: %v", tc.name, tc.topic, err)
			continue
		}
		if resp.ReasonCode != tc.want {
			t.Errorf("%s publishing on %s: reason %#x, want %#x", tc.name, tc.topic, resp.ReasonCode, tc.want)
		}
	}
	for _, tc := range []struct {
		c      *paho5.Client
		name   string
		filter string
		ok     bool
	}{
		{sensor, "sensor", "#", false},       // empty subscribe list: nothing
		{other, "other", "cmd/o-1/#", true},  // %c
		{other, "other", "cmd/s-1/#", false}, // not its client id
		{ops, "ops", "alerts/#", true},       // literal
		{ops, "ops", "$SYS/#", false},
	} {
		sa, err := tc.c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: tc.filter, QoS: 1}}})
		if sa == nil {
			t.Errorf("%s subscribing to %s: %v", tc.name, tc.filter, err)
			continue
		}
		if ok := len(sa.Reasons) == 1 && sa.Reasons[0] < 0x80; ok != tc.ok {
			t.Errorf("%s subscribing to %s: reasons %v, want ok=%v", tc.name, tc.filter, sa.Reasons, tc.ok)
		}
	}
}

// TestSysPublishAnswered3 checks that a 3.1.1 client publishing at QoS 1
// on $SYS is disconnected rather than left waiting for a PUBACK.
func TestSysPublishAnswered3(t *testing.T) {
	b := startBroker(t, testBrokerConfig(), openTestWAL(t))
	c := dialRaw(t, b.addr, 4, "sys-3")
	c.publish("$SYS/broker/uptime", 1, 7, "1")
	if _, err := c.readErr(); err == nil {
		t.Fatal("got a packet, want the connection closed")
	}
}

// TestNoPacketReadHook: the ingest hook must not provide OnPacketRead.
// mochi copies every inbound packet (800 bytes) into and out of each hook
// that provides it, which cost about 5 % of the broker's CPU under a QoS 0
// flood; the refusal of publishes on reserved topics is made in
// OnPacketProcessed instead (TestSysPublishAnswered3, TestEveryAckInOrder).
func TestNoPacketReadHook(t *testing.T) {
	b := startBroker(t, testBrokerConfig(), openTestWAL(t))
	for _, hk := range []mqtt.Hook{b.hook, b.hook.quota} {
		if hk.Provides(mqtt.OnPacketRead) {
			t.Errorf("hook %s provides OnPacketRead", hk.ID())
		}
	}
}

// TestDenialLogVolume floods the broker with denied 3.1.1 QoS 1 publishes
// of 64 KB: the log holds no payload bytes and stays small.
func TestDenialLogVolume(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.Users = []BrokerUser{{Username: "ro", PasswordHash: hash(t, "pw"), Publish: []string{"telemetry/ro/+"}}}
	var logs testutil.SyncBuffer
	stats := &Stats{}
	br, err := NewBroker(cfg, openTestWAL(t), nil, stats, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if err := br.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	addr := br.Addr("tcp").String()
	payload := bytes.Repeat([]byte("7"), 64<<10)
	const flood = 40
	for i := range flood {
		c, err := connect3(addr, fmt.Sprintf("ro-%d", i), "ro", "pw", func(o *paho.ClientOptions) { o.SetCleanSession(true) })
		if err != nil {
			t.Fatal(err)
		}
		tok := c.Publish("telemetry/other/env", 1, false, payload)
		tok.WaitTimeout(5 * time.Second)
		testutil.WaitFor(t, 10*time.Second, func() (bool, string) { return !c.IsConnectionOpen(), "denied client still connected" })
		c.Disconnect(10)
	}
	out := logs.String()
	if strings.Contains(out, "7777777777") || strings.Contains(out, "55 55 55") || strings.Contains(out, "pk=") {
		t.Errorf("the log holds payload bytes:\n%.2000s", out)
	}
	if len(out) > 64<<10 {
		t.Errorf("%d denied publishes wrote %d bytes of log, want under 64 KiB:\n%.3000s", flood, len(out), out)
	}
	t.Logf("%d denied 64 KB publishes: %d bytes of log", flood, len(out))
}
