package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// The bench's own load generators. The per-device tick model of Run gives
// every device its own connection and a schedule; the load is
// different: a few connections (a bridge, a PLC) each carrying many
// devices' readings as fast as the acknowledgements allow. So these are
// tight loops, each bounded: at most MaxInFlight unacknowledged QoS 1
// messages per connection, one HTTP request per writer, and UDP is
// best-effort by nature.

// loadCounters is what a load has done so far: items sent and, where the
// protocol acknowledges, acknowledged.
type loadCounters interface {
	counts() (sent, acked int64)
}

// mqttLoadConfig configures a mqttLoad.
type mqttLoadConfig struct {
	addr       string
	clientID   string // prefix; publisher p is <clientID><p>
	publishers int
	inflight   int // QoS 1: unacknowledged messages per publisher
	devices    int
	qos        byte
	drain      time.Duration // finish waits this long at most for acks
	// rate paces QoS 1 publishing at this many messages/s in all (split
	// evenly over the publishers); 0 publishes as fast as the in-flight
	// bound lets.
	rate float64
}

// mqttLoad is Publishers paho clients publishing one small JSON reading
// per message, telemetry/<device>/env {"ts":<ms>,"temp":<v>}. Publisher p
// carries the devices d with d % publishers == p, round robin, so each
// device's readings travel on one connection, in event-time order.
type mqttLoad struct {
	cfg     mqttLoadConfig
	clients []paho.Client

	sent, acked, failed, unacked, lost atomic.Int64

	stopGen   context.CancelFunc
	stopDrain context.CancelFunc
	wg        sync.WaitGroup // publishers and ackers
}

func (l *mqttLoad) counts() (int64, int64) { return l.sent.Load(), l.acked.Load() }

// benchDevice is the id of device d in the bench loads.
func benchDevice(d int) string { return fmt.Sprintf("dev-%04d", d) }

// newBenchClient returns a paho client that does not reconnect on its
// own: a lost connection in a benchmark is a failure to report, and paho
// can complete tokens before the broker acked after a reconnect (paho
// issue #563), which would count acks that never happened. addr is the
// host:port of a child the bench started.
func newBenchClient(addr, id string, lost *atomic.Int64) paho.Client {
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).
		SetProtocolVersion(4).SetKeepAlive(30 * time.Second).SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).SetAutoReconnect(false).SetConnectRetry(false).
		SetOrderMatters(false).
		SetConnectionLostHandler(func(paho.Client, error) { lost.Add(1) })
	return paho.NewClient(o)
}

// waitToken waits for a paho token, at most timeout and until ctx ends.
func waitToken(ctx context.Context, t paho.Token, timeout time.Duration) error {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-tm.C:
		return fmt.Errorf("no answer within %v", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startMQTTLoad connects the publishers and starts publishing; finish
// stops it. ctx bounds the connects and the publishing.
func startMQTTLoad(ctx context.Context, cfg mqttLoadConfig) (*mqttLoad, error) {
	l := &mqttLoad{cfg: cfg}
	for p := range cfg.publishers {
		c := newBenchClient(cfg.addr, cfg.clientID+strconv.Itoa(p), &l.lost)
		if err := waitToken(ctx, c.Connect(), 10*time.Second); err != nil {
			l.disconnect()
			return nil, fmt.Errorf("connect publisher %d to %s: %w", p, cfg.addr, err)
		}
		l.clients = append(l.clients, c)
	}
	genCtx, stopGen := context.WithCancel(ctx)
	drainCtx, stopDrain := context.WithCancel(context.WithoutCancel(ctx))
	l.stopGen, l.stopDrain = stopGen, stopDrain
	for p, c := range l.clients {
		var topics []string
		for d := p; d < cfg.devices; d += cfg.publishers {
			topics = append(topics, "telemetry/"+benchDevice(d)+"/env")
		}
		if cfg.qos == 0 {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.publishQoS0(genCtx, c, topics)
			}()
			continue
		}
		window := make(chan paho.Token, cfg.inflight)
		slots := make(chan struct{}, cfg.inflight)
		l.wg.Add(2)
		go func() {
			defer l.wg.Done()
			l.publishQoS1(genCtx, c, topics, window, slots)
		}()
		go func() {
			defer l.wg.Done()
			l.ack(drainCtx, window, slots)
		}()
	}
	return l, nil
}

// benchReading appends one JSON reading to buf.
func benchReading(buf []byte, tsMs int64, k int) []byte {
	buf = append(buf, `{"ts":`...)
	buf = strconv.AppendInt(buf, tsMs, 10)
	buf = append(buf, `,"temp":`...)
	buf = strconv.AppendFloat(buf, 15+float64(k%200)/10, 'f', 1, 64)
	return append(buf, '}')
}

// publishQoS1 takes a slot per message (the in-flight bound), publishes
// and hands the token to the acker in send order, which is the order the
// broker acks in [MQTT-4.6.0-2].
func (l *mqttLoad) publishQoS1(ctx context.Context, c paho.Client, topics []string, window chan<- paho.Token, slots chan<- struct{}) {
	defer close(window)
	var every time.Duration // per publisher, when paced
	if l.cfg.rate > 0 {
		every = time.Duration(float64(time.Second) * float64(l.cfg.publishers) / l.cfg.rate)
	}
	start := time.Now()
	for k := 0; ; k++ {
		if every > 0 {
			// Pacing the generator, not synchronisation: sleep only when
			// a millisecond or more ahead, so timer granularity does not
			// slow the rate.
			if d := time.Until(start.Add(time.Duration(k) * every)); d >= time.Millisecond {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		// paho keeps the payload until the PUBACK: a fresh slice each.
		payload := benchReading(make([]byte, 0, 40), time.Now().UnixMilli(), k)
		window <- c.Publish(topics[k%len(topics)], 1, false, payload) // never blocks: slots bound it
		l.sent.Add(1)
	}
}

// ack awaits each token in turn, never past drainCtx, and frees its slot.
func (l *mqttLoad) ack(drainCtx context.Context, window <-chan paho.Token, slots <-chan struct{}) {
	for tok := range window {
		select {
		case <-tok.Done():
			if tok.Error() == nil {
				l.acked.Add(1)
			} else {
				l.failed.Add(1)
			}
		case <-drainCtx.Done():
			l.unacked.Add(1)
		}
		<-slots
	}
}

// publishQoS0 publishes as fast as the connection takes it: paho's
// Publish blocks until its writer goroutine took the message, and that
// writer blocks on the socket, so TCP flow control paces the loop.
func (l *mqttLoad) publishQoS0(ctx context.Context, c paho.Client, topics []string) {
	var buf []byte
	for k := 0; ctx.Err() == nil; k++ {
		buf = benchReading(buf[:0], time.Now().UnixMilli(), k)
		tok := c.Publish(topics[k%len(topics)], 0, false, bytes.Clone(buf))
		select {
		case <-tok.Done():
			if tok.Error() != nil {
				l.failed.Add(1)
				if !c.IsConnectionOpen() {
					return
				}
				continue
			}
		default:
		}
		l.sent.Add(1)
	}
}

// finish stops publishing, waits at most cfg.drain for outstanding
// acknowledgements and disconnects.
func (l *mqttLoad) finish() {
	l.stopGen()
	t := time.AfterFunc(l.cfg.drain, l.stopDrain)
	l.wg.Wait()
	t.Stop()
	l.stopDrain()
	l.disconnect()
}

func (l *mqttLoad) disconnect() {
	var wg sync.WaitGroup
	for _, c := range l.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Disconnect(250)
		}()
	}
	wg.Wait()
}

// udpLoad sends line protocol datagrams of linesPer lines, as fast as
// the socket takes them (best effort: nothing is acknowledged).
type udpLoad struct {
	datagrams, lines, errs atomic.Int64
	stop                   context.CancelFunc
	wg                     sync.WaitGroup
}

func (u *udpLoad) counts() (int64, int64) { return u.lines.Load(), 0 }

func startUDPLoad(ctx context.Context, addr string, senders, linesPer, devices int) (*udpLoad, error) {
	u := &udpLoad{}
	var conns []net.Conn
	for range senders {
		c, err := net.Dial("udp", addr)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("udp %s: %w", addr, err)
		}
		conns = append(conns, c)
	}
	ctx, u.stop = context.WithCancel(ctx)
	for s, c := range conns {
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			defer c.Close()
			var buf []byte
			for k := s; ctx.Err() == nil; k += senders {
				buf = buf[:0]
				ts := time.Now().UnixNano()
				for i := range linesPer {
					buf = appendBenchLine(buf, benchDevice((k*linesPer+i)%devices), float64(k%200)/10, ts)
				}
				if _, err := c.Write(buf); err != nil {
					u.errs.Add(1) // e.g. ECONNREFUSED: an ICMP error of an earlier datagram
					continue
				}
				u.datagrams.Add(1)
				u.lines.Add(int64(linesPer))
			}
		}()
	}
	return u, nil
}

func (u *udpLoad) finish() {
	u.stop()
	u.wg.Wait()
}

// appendBenchLine appends `env,device=<dev> temp=<v> <ns>\n`.
func appendBenchLine(buf []byte, dev string, v float64, tsNs int64) []byte {
	buf = append(buf, "env,device="...)
	buf = append(buf, dev...)
	buf = append(buf, " temp="...)
	buf = strconv.AppendFloat(buf, v, 'f', 1, 64)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, tsNs, 10)
	return append(buf, '\n')
}

// httpBody builds writer w's k-th request body into buf: the body, its
// line count, and false when the writer has nothing more to send.
type httpBody func(w, k int, buf []byte) ([]byte, int, bool)

// httpLoad is writers goroutines, each POSTing one body at a time to
// /api/v2/write and waiting for the answer (204: the lines are durable).
type httpLoad struct {
	lines, acked, requests, failed atomic.Int64
	firstErr                       atomic.Value // string
	stopGen, stopDrain             context.CancelFunc
	wg                             sync.WaitGroup
}

func (h *httpLoad) counts() (int64, int64) { return h.lines.Load(), h.acked.Load() }

func (b *bench) startHTTPLoad(ctx context.Context, base string, writers int, body httpBody) *httpLoad {
	h := &httpLoad{}
	genCtx, stopGen := context.WithCancel(ctx)
	drainCtx, stopDrain := context.WithCancel(context.WithoutCancel(ctx))
	h.stopGen, h.stopDrain = stopGen, stopDrain
	url := base + "/api/v2/write?precision=ns"
	for w := range writers {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			var buf []byte
			for k := 0; genCtx.Err() == nil; k++ {
				var n int
				var ok bool
				if buf, n, ok = body(w, k, buf[:0]); !ok {
					return
				}
				h.lines.Add(int64(n))
				h.post(drainCtx, b.hc, url, buf, n)
			}
		}()
	}
	return h
}

func (h *httpLoad) post(ctx context.Context, hc *http.Client, url string, body []byte, n int) {
	h.requests.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		h.fail(err.Error())
		return
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := hc.Do(req)
	if err != nil {
		h.fail(err.Error())
		return
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		h.fail(fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(msg)))
		return
	}
	h.acked.Add(int64(n))
}

func (h *httpLoad) fail(msg string) {
	h.failed.Add(1)
	h.firstErr.CompareAndSwap(nil, msg)
}

// finish stops the writers and waits (at most drain) for their requests.
func (h *httpLoad) finish(drain time.Duration) {
	h.stopGen()
	t := time.AfterFunc(drain, h.stopDrain)
	h.wg.Wait()
	t.Stop()
	h.stopDrain()
}
