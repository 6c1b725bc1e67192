package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
)

// alertMsg is one message received on alerts/#.
type alertMsg struct {
	Topic    string
	Retained bool
	ID, Type string
	Value    float64
	StartNs  int64  `json:"start_ns"`
	Reason   string `json:"reason"`
}

// alertSubscriber collects what arrives on alerts/#.
type alertSubscriber struct {
	mu   sync.Mutex
	msgs []alertMsg
	c    paho.Client
}

func subscribeAlerts(t *testing.T, addr, id string, sub *alertSubscriber) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	tok := c.Subscribe("alerts/#", 1, func(_ paho.Client, m paho.Message) {
		var a alertMsg
		if err := json.Unmarshal(m.Payload(), &a); err != nil {
			t.Errorf("alert payload %q: %v", m.Payload(), err)
		}
		a.Topic, a.Retained = m.Topic(), m.Retained()
		sub.mu.Lock()
		sub.msgs = append(sub.msgs, a)
		sub.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	sub.c = c
}

func (s *alertSubscriber) snapshot() []alertMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// publishVitals publishes spo2 readings at event seconds [from, to) after
// base, one per second of event time, QoS 1, and waits for every PUBACK.
func publishVitals(t *testing.T, addr string, base time.Time, from, to int, value func(sec int) float64) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("patient-monitor").
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	for s := from; s < to; s++ {
		ts := base.Add(time.Duration(s) * time.Second).UnixMilli()
		tok := c.Publish("telemetry/pat-1/vitals", 1, false, fmt.Sprintf(`{"ts":%d,"spo2":%g}`, ts, value(s)))
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish second %d: %v", s, tok.Error())
		}
	}
}

// waitAlerts polls until cond holds for the messages received.
func waitAlerts(t *testing.T, sub *alertSubscriber, what string, cond func([]alertMsg) bool) {
	t.Helper()
	testutil.WaitFor(t, 20*time.Second, func() (bool, string) {
		msgs := sub.snapshot()
		return cond(msgs), fmt.Sprintf("alerts: %s: received %+v", what, msgs)
	})
}

// TestAlertsEndToEnd runs the built gateway with an SpO2 rule (< 90 for
// 15 s, clear above 92). A paho client publishes a patient's readings, a
// second one subscribes to alerts/#. The gateway is SIGKILLed twice: in
// the middle of the `for` period, and while the alert is firing. Live
// subscribers get exactly one firing and one resolved event of one alert;
// the alerts outbox (Kafka's source) holds exactly those two; GET
// /api/v1/alerts agrees; the latest event stays retained across the
// restart. Then SIGHUP reloads: an invalid rules file is rejected with
// its error, a valid one is taken.
func TestAlertsEndToEnd(t *testing.T) {
	bin, env := binary(t)
	dir := t.TempDir()
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	writeRules := func(s string) {
		if err := os.WriteFile(rules, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeRules(`rules:
  - name: spo2_low
    match: {measurement: vitals, field: spo2}
    op: "<"
    threshold: 90
    clear: 92
    for: 15s
    severity: critical
`)
	env = append(loopbackEnv(env, dir), "RUNNEL_ALERTS_RULES_FILE="+rules, "RUNNEL_CHECKPOINT_INTERVAL=20ms")
	// Event time: one reading per second from base. 97 until second 10,
	// 88 from 10 (pending; fires at 25, after 15 s), 91 from 30 (between
	// threshold and clear: still firing), 95 from 40 (resolves).
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	spo2 := func(s int) float64 {
		switch {
		case s < 10:
			return 97
		case s < 30:
			return 88
		case s < 40:
			return 91
		}
		return 95
	}

	var live alertSubscriber
	p, started := startGateway(t, []string{bin}, env)
	mqtt := started["mqtt_addr"].(string)
	subscribeAlerts(t, mqtt, "watcher-1", &live)
	publishVitals(t, mqtt, base, 0, 20, spo2) // pending since second 10
	p.kill()                                  // in the middle of the for period

	p, started = startGateway(t, []string{bin}, env)
	mqtt = started["mqtt_addr"].(string)
	var live2 alertSubscriber
	subscribeAlerts(t, mqtt, "watcher-2", &live2)
	publishVitals(t, mqtt, base, 20, 35, spo2) // fires at 25
	waitAlerts(t, &live2, "firing", func(m []alertMsg) bool { return len(m) >= 1 })
	p.kill() // while firing

	p, started = startGateway(t, []string{bin}, env)
	mqtt, httpAddr := started["mqtt_addr"].(string), started["http_addr"].(string)
	p.waitLog("wal replay done")
	var live3 alertSubscriber
	subscribeAlerts(t, mqtt, "watcher-3", &live3)
	// The restored retained message: the firing event, flagged retained.
	waitAlerts(t, &live3, "retained firing after the restart", func(m []alertMsg) bool { return len(m) >= 1 })
	publishVitals(t, mqtt, base, 35, 50, spo2) // resolves at 40
	waitAlerts(t, &live3, "resolved", func(m []alertMsg) bool { return len(m) >= 2 })

	var all []alertMsg
	for _, s := range []*alertSubscriber{&live, &live2, &live3} {
		all = append(all, s.snapshot()...)
	}
	var liveEvents []alertMsg
	for _, m := range all {
		if m.Topic != "alerts/spo2_low/vitals,device=pat-1" {
			t.Errorf("alert on topic %q", m.Topic)
		}
		if !m.Retained {
			liveEvents = append(liveEvents, m)
		}
	}
	if len(liveEvents) != 2 || liveEvents[0].Type != "firing" || liveEvents[1].Type != "resolved" || liveEvents[0].ID != liveEvents[1].ID {
		t.Fatalf("live alert events %+v, want one firing and one resolved of one alert", liveEvents)
	}
	if got, want := liveEvents[0].StartNs, base.Add(10*time.Second).UnixNano(); got != want {
		t.Errorf("alert start %d, want second 10 (%d)", got, want)
	}
	if r := live3.snapshot()[0]; !r.Retained || r.Type != "firing" || r.ID != liveEvents[0].ID {
		t.Errorf("after the restart the retained message is %+v, want the firing event", r)
	}

	// The API agrees: nothing active, the two events newest first.
	resp, err := http.Get("http://" + httpAddr + "/api/v1/alerts")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var api struct {
		Active []any
		Recent []alertMsg
	}
	if err := json.Unmarshal(body, &api); err != nil {
		t.Fatalf("GET /api/v1/alerts: %v: %s", err, body)
	}
	if len(api.Active) != 0 || len(api.Recent) != 2 || api.Recent[0].Type != "resolved" || api.Recent[1].Type != "firing" || api.Recent[0].ID != liveEvents[0].ID {
		t.Errorf("GET /api/v1/alerts = %s", body)
	}

	// SIGHUP: an invalid rules file is rejected, the old rules stay; a
	// valid one is taken.
	writeRules("rules:\n  - name: spo2_low\n    op: \"<\"\n    threshold: 90\n    clear: 80\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	rejected := p.waitLog("reload rejected: config invalid; the old alert rules stay in force")
	if e, _ := rejected["err"].(string); !strings.Contains(e, "alerts.rules[0].clear") {
		t.Errorf("reload error does not name the key: %q", e)
	}
	writeRules("rules:\n  - name: hr_high\n    match: {field: hr}\n    op: \">\"\n    threshold: 140\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog("alert rules reloaded")
	p.stop()

	// The alerts outbox, what Kafka gets, holds each event exactly once.
	l, err := wal.Open(filepath.Join(dir, "outbox", "alerts", "log"), wal.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var ids []string
	for r := l.NewReader(1); r.Next(); {
		rec, _, err := forward.DecodeRecord(r.Record())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	if len(ids) != 2 || ids[0] == ids[1] {
		t.Errorf("alerts outbox holds ids %v, want two distinct (firing, resolved)", ids)
	}
}

// TestReloadWhileFiringResolves runs the built gateway with an SpO2 rule,
// makes it fire, then changes the rule and sends SIGHUP: the alert ends
// with a resolved event carrying "rule changed" on MQTT (live, and as the
// retained state a new subscriber gets) and in the alerts outbox; and a
// checkpoint is written right after the reload. Before, the alert was
// dropped silently and its retained topic said firing for ever.
func TestReloadWhileFiringResolves(t *testing.T) {
	bin, env := binary(t)
	dir := t.TempDir()
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	writeRules := func(s string) {
		if err := os.WriteFile(rules, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeRules("rules:\n  - name: spo2_low\n    match: {measurement: vitals, field: spo2}\n    op: \"<\"\n    threshold: 90\n")
	env = append(loopbackEnv(env, dir), "RUNNEL_ALERTS_RULES_FILE="+rules, "RUNNEL_CHECKPOINT_INTERVAL=1h")
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Second)

	p, started := startGateway(t, []string{bin}, env)
	mqtt := started["mqtt_addr"].(string)
	var live alertSubscriber
	subscribeAlerts(t, mqtt, "watcher-1", &live)
	publishVitals(t, mqtt, base, 0, 3, func(int) float64 { return 85 })
	waitAlerts(t, &live, "firing", func(m []alertMsg) bool { return len(m) >= 1 })

	writeRules("rules:\n  - name: spo2_low\n    match: {measurement: vitals, field: spo2}\n    op: \"<\"\n    threshold: 80\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog("alert rules reloaded")
	waitAlerts(t, &live, "resolved by the reload", func(m []alertMsg) bool { return len(m) >= 2 })
	m := live.snapshot()
	if len(m) != 2 || m[0].Type != "firing" || m[1].Type != "resolved" || m[1].Reason != "rule changed" || m[1].ID != m[0].ID {
		t.Fatalf("live alert events %+v, want firing then resolved (rule changed) of one alert", m)
	}
	var later alertSubscriber
	subscribeAlerts(t, mqtt, "watcher-2", &later)
	waitAlerts(t, &later, "retained state", func(m []alertMsg) bool { return len(m) >= 1 })
	if r := later.snapshot()[0]; !r.Retained || r.Type != "resolved" {
		t.Fatalf("retained message after the reload %+v, want the resolved event", r)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "checkpoints"))
	if err != nil || len(ents) == 0 {
		t.Fatalf("no checkpoint after the reload (interval 1h): %v %v", ents, err)
	}
	p.stop()

	l, err := wal.Open(filepath.Join(dir, "outbox", "alerts", "log"), wal.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var types []string
	for r := l.NewReader(1); r.Next(); {
		rec, _, err := forward.DecodeRecord(r.Record())
		if err != nil {
			t.Fatal(err)
		}
		var a alertMsg
		if err := json.Unmarshal(rec.Value, &a); err != nil {
			t.Fatal(err)
		}
		types = append(types, a.Type+"/"+a.Reason)
	}
	if !slices.Equal(types, []string{"firing/", "resolved/rule changed"}) {
		t.Fatalf("alerts outbox holds %v, want firing then resolved (rule changed)", types)
	}
}
