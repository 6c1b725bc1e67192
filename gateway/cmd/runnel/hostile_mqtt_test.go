package main

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestHostileMQTTMemory attacks the built binary's broker with the
// defaults: one client asking for 2,000 subscriptions, 40 client ids each
// retaining 200 KB, and 200 sockets that never send CONNECT. Each is
// refused past its quota; a legitimate QoS 1 publisher keeps its round
// trip p99 under 1 s; the gateway's peak RSS stays within 128 MiB.
func TestHostileMQTTMemory(t *testing.T) {
	bin, env := binary(t)
	p, started := startGateway(t, []string{bin}, loopbackEnv(env, t.TempDir()))
	defer p.stop()
	addr := started["mqtt_addr"].(string)
	pid := p.cmd.Process.Pid
	connect := func(id string) paho.Client {
		o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetAutoReconnect(false).
			SetConnectTimeout(10 * time.Second)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", id, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(10) })
		return c
	}

	// 2,000 subscriptions from one client: the quota (100) holds.
	subs := connect("subscriber")
	granted := 0
	for batch := range 20 {
		filters := map[string]byte{}
		for i := range 100 {
			filters[fmt.Sprintf("flood/%d/%d", batch, i)] = 1
		}
		tok := subs.SubscribeMultiple(filters, nil)
		tok.WaitTimeout(10 * time.Second)
		for _, code := range tok.(*paho.SubscribeToken).Result() {
			if code < 0x80 {
				granted++
			}
		}
	}
	if granted > 100 {
		t.Errorf("%d subscriptions granted to one client, want at most 100", granted)
	}

	// 40 client ids retaining 200 KB each: 8 MB asked, 4 MiB kept at most.
	payload := bytes.Repeat([]byte("r"), 200_000)
	for i := range 40 {
		c := connect(fmt.Sprintf("retainer-%d", i))
		tok := c.Publish(fmt.Sprintf("state/%d", i), 1, true, payload)
		tok.WaitTimeout(10 * time.Second)
		c.Disconnect(10)
	}

	// A legitimate QoS 1 publisher, connected before the sockets flood.
	legit := connect("legit")

	// 200 sockets that never send CONNECT from one host: at most 32 (half
	// of max_pending_connects) are kept.
	var idle []net.Conn
	for range 200 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()

	var rtt []time.Duration
	for i := range 50 {
		start := time.Now()
		tok := legit.Publish("telemetry/legit/env", 1, false, fmt.Sprintf(`{"temp":%d}`, i))
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("legitimate publish %d: %v", i, tok.Error())
		}
		rtt = append(rtt, time.Since(start))
	}
	slices.Sort(rtt)
	p99 := rtt[len(rtt)*99/100]
	peak := vmHWM(t, pid)
	t.Logf("granted %d of 2000 subscriptions; legitimate QoS 1 p99 %s; VmHWM %d MiB", granted, p99, peak>>20)
	if p99 > time.Second {
		t.Errorf("legitimate QoS 1 round trip p99 %s, want under 1s", p99)
	}
	if peak > 128<<20 {
		t.Errorf("peak RSS %d MiB, want at most 128 MiB", peak>>20)
	}
}
