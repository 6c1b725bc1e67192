package firmwaresim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// conn is one device's way to the gateway.
type conn interface {
	// send hands m to the transport. The ack, when not nil, completes when
	// the gateway answered (or the attempt failed); a nil ack means
	// nothing will be acknowledged (UDP). An error is a failure of kind
	// errKind known at once.
	send(ctx context.Context, m *Message) (a ack, errKind string)
	// ready makes sure the device is connected, trying at most once per
	// second; it reports whether sending makes sense.
	ready(ctx context.Context) bool
	// reconnect drops the connection and makes a new one.
	reconnect(ctx context.Context) error
	close()
}

// ack is an acknowledgement to wait for.
type ack interface {
	done() <-chan struct{}
	// result is valid once done is closed: acked, or the error kind and
	// whether it counts as rejected.
	result() (acked bool, errKind string, rejected bool)
}

// ---- MQTT ----

type mqttConn struct {
	c       paho.Client
	qos     byte
	timeout time.Duration
	st      *stats

	lastTry time.Time // of ready's connect attempts; device goroutine only
}

func newMQTTConn(opt *Options, clientID string, st *stats) (*mqttConn, error) {
	u, err := brokerURL(opt.Broker)
	if err != nil {
		return nil, err
	}
	o := paho.NewClientOptions().
		AddBroker(u).
		SetClientID(clientID).
		SetCleanSession(true).
		SetProtocolVersion(4).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(5 * time.Second).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetOnConnectHandler(func(paho.Client) { st.connects.Add(1) })
	if opt.Username != "" {
		o.SetUsername(opt.Username).SetPassword(opt.Password)
	}
	return &mqttConn{c: paho.NewClient(o), qos: opt.QoS, timeout: 10 * time.Second, st: st}, nil
}

// waitToken waits for t within the connect timeout and ctx.
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

func (c *mqttConn) connect(ctx context.Context) error {
	c.lastTry = time.Now()
	return waitToken(ctx, c.c.Connect(), c.timeout)
}

func (c *mqttConn) ready(ctx context.Context) bool {
	if c.c.IsConnected() { // also true while paho reconnects on its own
		return true
	}
	if time.Since(c.lastTry) < time.Second {
		return false
	}
	if err := c.connect(ctx); err != nil {
		if ctx.Err() == nil {
			c.st.err("connect")
		}
		return false
	}
	return true
}

func (c *mqttConn) reconnect(ctx context.Context) error {
	c.c.Disconnect(50)
	return c.connect(ctx)
}

func (c *mqttConn) close() { c.c.Disconnect(250) }

func (c *mqttConn) send(_ context.Context, m *Message) (ack, string) {
	return &tokenAck{t: c.c.Publish(m.Topic, c.qos, false, m.Payload), qos: c.qos}, ""
}

type tokenAck struct {
	t   paho.Token
	qos byte
}

func (a *tokenAck) done() <-chan struct{} { return a.t.Done() }

func (a *tokenAck) result() (bool, string, bool) {
	err := a.t.Error()
	switch {
	case err == nil:
		return a.qos > 0, "", false
	case errors.Is(err, paho.ErrNotConnected):
		return false, "not_connected", true
	case strings.Contains(err.Error(), "connection lost"):
		// paho offers no sentinel for "connection lost before Publish
		// completed" (messageids.go cleanUp): its text is all there is.
		return false, "connection_lost", true
	case strings.Contains(err.Error(), "timeout"):
		return false, "publish_timeout", true
	}
	return false, "publish", true
}

// ---- UDP ----

// maxDatagram is the largest UDP payload over IPv4.
const maxDatagram = 65507

type udpConn struct{ c net.Conn }

func (u *udpConn) ready(context.Context) bool      { return true }
func (u *udpConn) reconnect(context.Context) error { return nil }
func (u *udpConn) close()                          {}
func (u *udpConn) send(_ context.Context, m *Message) (ack, string) {
	if len(m.Payload) > maxDatagram {
		return nil, "udp_too_large"
	}
	if _, err := u.c.Write(m.Payload); err != nil {
		return nil, "udp_write"
	}
	return nil, ""
}

// udpPool spreads devices over a few sockets: one per device would cost a
// file descriptor each for no gain, the gateway keys devices by tag.
type udpPool struct{ conns []net.Conn }

func newUDPPool(addr string, devices int) (*udpPool, error) {
	p := &udpPool{}
	for range min(devices, 16) {
		c, err := net.Dial("udp", addr)
		if err != nil {
			p.close()
			return nil, fmt.Errorf("udp %s: %w", addr, err)
		}
		p.conns = append(p.conns, c)
	}
	return p, nil
}

func (p *udpPool) conn(i int) conn { return &udpConn{c: p.conns[i%len(p.conns)]} }

func (p *udpPool) close() {
	for _, c := range p.conns {
		c.Close()
	}
}

// ---- HTTP ----

// httpSink posts line protocol to /api/v2/write. Each request runs in a
// goroutine of its own, at most MaxInFlight per device; the sink owns them
// and close waits for them.
type httpSink struct {
	url, token string
	client     *http.Client
	wg         sync.WaitGroup
}

func newHTTPSink(opt *Options) *httpSink {
	conns := min(opt.Devices*opt.MaxInFlight, 256)
	return &httpSink{
		url:   strings.TrimSuffix(opt.HTTPURL, "/") + "/api/v2/write?precision=ns",
		token: opt.HTTPToken,
		client: &http.Client{
			Timeout:   opt.AckTimeout,
			Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: 30 * time.Second},
		},
	}
}

func (h *httpSink) close() {
	h.wg.Wait()
	h.client.CloseIdleConnections()
}

type httpConn struct{ h *httpSink }

func (c httpConn) ready(context.Context) bool      { return true }
func (c httpConn) reconnect(context.Context) error { return nil }
func (c httpConn) close()                          {}

type httpAck struct {
	ch       chan struct{}
	acked    bool
	rejected bool
	kind     string
}

func (a *httpAck) done() <-chan struct{}        { return a.ch }
func (a *httpAck) result() (bool, string, bool) { return a.acked, a.kind, a.rejected }

func (c httpConn) send(ctx context.Context, m *Message) (ack, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.h.url, bytes.NewReader(m.Payload))
	if err != nil {
		return nil, "http_request"
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	if c.h.token != "" {
		req.Header.Set("Authorization", "Token "+c.h.token)
	}
	a := &httpAck{ch: make(chan struct{})}
	c.h.wg.Add(1)
	go func() {
		defer c.h.wg.Done()
		defer close(a.ch)
		resp, err := c.h.client.Do(req)
		if err != nil {
			a.kind = "http_transport"
			if ctx.Err() != nil {
				a.kind = "unacked_at_end"
			}
			return
		}
		// Drain (bounded) so the connection is reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		switch {
		case resp.StatusCode/100 == 2:
			a.acked = true
		case resp.StatusCode/100 == 4:
			a.kind, a.rejected = "http_"+strconv.Itoa(resp.StatusCode), true
		default:
			a.kind = "http_" + strconv.Itoa(resp.StatusCode)
		}
	}()
	return a, ""
}
