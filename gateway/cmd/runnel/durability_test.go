package main

import (
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/runnel-iot/runnel/wal"
)

// TestAcknowledgedPublishesSurviveSIGKILL publishes QoS 1 messages to the
// built gateway, SIGKILLs it right after the last PUBACK, restarts it, and
// finds every acknowledged reading in the WAL.
func TestAcknowledgedPublishesSurviveSIGKILL(t *testing.T) {
	bin, env := binary(t)
	dir := t.TempDir()
	env = loopbackEnv(env, dir)
	p, started := startGateway(t, []string{bin}, env)
	addr, _ := started["mqtt_addr"].(string)
	if addr == "" {
		t.Fatalf("start line lacks mqtt_addr: %v", started)
	}
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("durability").
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	const n = 2000
	toks := make([]paho.Token, n)
	for i := range toks {
		toks[i] = c.Publish(fmt.Sprintf("telemetry/dev-%d/env", i%10), 1, false, fmt.Sprintf(`{"seq":%d}`, i))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	p.kill() // right after the last PUBACK
	c.Disconnect(0)

	// The restarted gateway repairs and reopens the WAL; stop it cleanly
	// and read the WAL directly.
	p2, _ := startGateway(t, []string{bin}, env)
	p2.stop()
	l, err := wal.Open(dir+"/wal", wal.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	seen := make([]bool, n)
	r := l.NewReader(1)
	var b wal.Batch
	for r.Next() {
		if err := wal.DecodeBatch(r.Record(), &b); err != nil {
			t.Fatal(err)
		}
		for _, rd := range b.Readings {
			if rd.Field == "seq" {
				seen[int(rd.Value)] = true
			}
		}
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	for i, ok := range seen {
		if !ok {
			t.Fatalf("acknowledged reading seq=%d missing after SIGKILL and restart", i)
		}
	}
}
