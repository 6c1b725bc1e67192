package torture

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// The suite's readings: measurement "tort", one series per writer
// (device mq-<n> over MQTT, ht-<n> over HTTP), field "v". Every value is
// unique within a case, so the ledger knows which readings each copy in
// the WAL, a window or Kafka stands for. Event times rise by 1 ms per
// reading of a device from base, so no reading is ever late and every
// series' readings fall in one 1h window.
const (
	measurement = "tort"
	field       = "v"
)

// ledger is the accounting: every value sent, and which were acknowledged.
type ledger struct {
	next atomic.Int64 // last value handed out

	mu    sync.Mutex
	acked map[int64]string // value -> series
	sent  map[int64]string
	tsMs  map[int64]int64 // value -> event time (ms)
}

func newLedger() *ledger {
	return &ledger{acked: map[int64]string{}, sent: map[int64]string{}, tsMs: map[int64]int64{}}
}

func (l *ledger) value(series string, tsMs int64) int64 {
	v := l.next.Add(1)
	l.mu.Lock()
	l.sent[v] = series
	l.tsMs[v] = tsMs
	l.mu.Unlock()
	return v
}

func (l *ledger) ack(vs ...int64) {
	l.mu.Lock()
	for _, v := range vs {
		l.acked[v] = l.sent[v]
	}
	l.mu.Unlock()
}

// snapshot returns a copy of the acknowledged values.
func (l *ledger) snapshot() map[int64]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[int64]string, len(l.acked))
	for v, s := range l.acked {
		out[v] = s
	}
	return out
}

func (l *ledger) counts() (sent, acked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sent), len(l.acked)
}

// target is where the writers send: the current gateway's addresses. It
// changes at every restart; writers that lose their gateway wait for the
// next one.
type target struct {
	mu      sync.Mutex
	mqtt    string
	http    string
	changed chan struct{}
}

func newTarget() *target { return &target{changed: make(chan struct{})} }

func (t *target) set(mqtt, http string) {
	t.mu.Lock()
	t.mqtt, t.http = mqtt, http
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

func (t *target) get() (mqtt, http string, changed <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mqtt, t.http, t.changed
}

// load runs the writers until stop is closed.
type load struct {
	l      *ledger
	tgt    *target
	baseMs int64
	stop   chan struct{}
	wg     sync.WaitGroup
}

// startLoad starts mqttWriters QoS 1 publishers and httpWriters line
// protocol writers against tgt.
func startLoad(l *ledger, tgt *target, baseMs int64, mqttWriters, httpWriters int) *load {
	ld := &load{l: l, tgt: tgt, baseMs: baseMs, stop: make(chan struct{})}
	for i := range mqttWriters {
		ld.wg.Go(func() { ld.mqttWriter(fmt.Sprintf("mq-%d", i)) })
	}
	for i := range httpWriters {
		ld.wg.Go(func() { ld.httpWriter(fmt.Sprintf("ht-%d", i)) })
	}
	return ld
}

// end stops the writers and waits for them.
func (ld *load) end() {
	close(ld.stop)
	ld.wg.Wait()
}

func (ld *load) stopped() bool {
	select {
	case <-ld.stop:
		return true
	default:
		return false
	}
}

// await blocks until the target changes or the load stops.
func (ld *load) await(changed <-chan struct{}) {
	select {
	case <-changed:
	case <-ld.stop:
	case <-time.After(200 * time.Millisecond): // re-read the target: a restart may have come and gone
	}
}

// mqttWriter publishes QoS 1 readings of one device, up to 32 in flight,
// over one connection at a time; a value counts as acknowledged when its
// PUBACK came back on that connection (no automatic reconnect, so paho's
// tokens mean what they say).
func (ld *load) mqttWriter(device string) {
	series := measurement + ",device=" + device
	topic := "telemetry/" + device + "/" + measurement
	var seq int64
	for !ld.stopped() {
		addr, _, changed := ld.tgt.get()
		if addr == "" {
			ld.await(changed)
			continue
		}
		o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("torture-" + device).
			SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(2 * time.Second).
			SetCleanSession(true).SetWriteTimeout(5 * time.Second)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
			ld.await(changed)
			continue
		}
		type pending struct {
			v   int64
			tok paho.Token
		}
		var window []pending
		settle := func(p pending) bool {
			if !p.tok.WaitTimeout(10*time.Second) || p.tok.Error() != nil {
				return false
			}
			ld.l.ack(p.v)
			return true
		}
		ok := true
		for ok && !ld.stopped() && c.IsConnectionOpen() {
			seq++
			v := ld.l.value(series, ld.baseMs+seq)
			payload := fmt.Sprintf(`{"ts":%d,"%s":%d}`, ld.baseMs+seq, field, v)
			window = append(window, pending{v, c.Publish(topic, 1, false, payload)})
			if len(window) == 32 {
				ok = settle(window[0])
				window = window[1:]
			}
		}
		for _, p := range window {
			if ok {
				ok = settle(p)
			}
		}
		c.Disconnect(0)
	}
}

// httpWriter posts batches of 50 line-protocol readings of one device,
// one request at a time; a 204 acknowledges the whole batch.
func (ld *load) httpWriter(device string) {
	series := measurement + ",device=" + device
	client := &http.Client{Timeout: 10 * time.Second}
	var seq int64
	var body bytes.Buffer
	for !ld.stopped() {
		_, addr, changed := ld.tgt.get()
		if addr == "" {
			ld.await(changed)
			continue
		}
		body.Reset()
		vs := make([]int64, 0, 50)
		for range 50 {
			seq++
			v := ld.l.value(series, ld.baseMs+seq)
			vs = append(vs, v)
			fmt.Fprintf(&body, "%s %s=%d %d\n", series, field, v, ld.baseMs+seq)
		}
		resp, err := client.Post("http://"+addr+"/api/v2/write?precision=ms", "text/plain", &body)
		if err != nil {
			ld.await(changed)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusNoContent {
			ld.l.ack(vs...)
		} else {
			ld.await(changed)
		}
	}
}
