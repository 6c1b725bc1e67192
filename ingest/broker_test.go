package ingest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/runnel-iot/runnel/wal"
)

// testBrokerConfig listens on a loopback port picked by the kernel.
func testBrokerConfig() BrokerConfig {
	c := DefaultBrokerConfig()
	c.Addr = "127.0.0.1:0"
	return c
}

type testBroker struct {
	*Broker
	addr  string
	stats *Stats
	sink  *rejectBox
}

func startBroker(t *testing.T, cfg BrokerConfig, app Appender) *testBroker {
	t.Helper()
	stats, sink := &Stats{}, &rejectBox{}
	b, err := NewBroker(cfg, app, sink, stats, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	a := b.Addr("tcp")
	if a == nil {
		a = b.Addr("tls")
	}
	return &testBroker{Broker: b, addr: a.String(), stats: stats, sink: sink}
}

// waitUntil waits for cond (see awaitCond), naming what it waits for.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	awaitCond(t, func() string { return "not yet: " + what }, cond)
}

func pahoClient(t *testing.T, addr, id string, configure func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	if configure != nil {
		configure(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publishWait(t *testing.T, c paho.Client, topic string, qos byte, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s qos %d: %v", topic, qos, tok.Error())
	}
}

func TestBrokerStoresEveryQoS(t *testing.T) {
	app := openTestWAL(t)
	b := startBroker(t, testBrokerConfig(), app)
	c := pahoClient(t, b.addr, "dev-1", nil)
	publishWait(t, c, "telemetry/pi-042/env", 1, `{"ts":1700000000000,"temp":21.5,"hum":40.1}`)
	// QoS 1 is acknowledged only once durable: the readings are in the WAL
	// when the PUBACK arrives.
	if got := walReadings(t, app.log); len(got) != 2 {
		t.Fatalf("after the PUBACK the WAL holds %d readings, want 2", len(got))
	}
	publishWait(t, c, "telemetry/pi-042/env", 2, `{"ts":1700000001000,"temp":21.6}`)
	if got := walReadings(t, app.log); len(got) != 3 {
		t.Fatalf("after PUBREC/PUBCOMP the WAL holds %d readings, want 3", len(got))
	}
	publishWait(t, c, "lp/plant1", 0, "env,device=pi-043 temp=19.5 1700000002000000000\n")
	waitUntil(t, "qos 0 reading stored", func() bool { return len(walReadings(t, app.log)) == 4 })
	got := walReadings(t, app.log)
	want := []wal.Reading{
		{Series: "env,device=pi-042", Field: "temp", Value: 21.5, TimeNs: 1700000000000000000},
		{Series: "env,device=pi-042", Field: "hum", Value: 40.1, TimeNs: 1700000000000000000},
		{Series: "env,device=pi-042", Field: "temp", Value: 21.6, TimeNs: 1700000001000000000},
		{Series: "env,device=pi-043", Field: "temp", Value: 19.5, TimeNs: 1700000002000000000},
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("reading %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if n := b.stats.Readings[ListenerMQTT].Load(); n != 4 {
		t.Errorf("readings counter %d, want 4", n)
	}
	// A topic with no decoder is routed, not stored.
	publishWait(t, c, "chat/hello", 1, "not telemetry")
	if n := len(walReadings(t, app.log)); n != 4 {
		t.Fatalf("a non-telemetry publish was stored (%d readings)", n)
	}
}

func TestBrokerDeliversDurableMessagesToSubscribers(t *testing.T) {
	app := openTestWAL(t)
	b := startBroker(t, testBrokerConfig(), app)
	got := make(chan string, 10)
	sub := pahoClient(t, b.addr, "dashboard", nil)
	if tok := sub.Subscribe("telemetry/#", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub := pahoClient(t, b.addr, "dev-1", nil)
	for i, qos := range []byte{0, 1, 2} {
		payload := fmt.Sprintf(`{"temp":%d}`, i)
		publishWait(t, pub, "telemetry/pi-1/env", qos, payload)
		select {
		case m := <-got:
			if m != payload {
				t.Fatalf("subscriber got %q, want %q", m, payload)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("subscriber got nothing for qos %d", qos)
		}
	}
}

// rawClient speaks MQTT over a socket with mochi's packet codec, to see
// exactly which packets the broker sends, in which order.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	v    byte
}

func dialRaw(t *testing.T, addr string, version byte, id string) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), v: version}
	name := "MQTT"
	if version == 3 {
		name = "MQIsdp"
	}
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: []byte(name), Clean: true, ClientIdentifier: id, Keepalive: 30}})
	if pk := c.read(); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("connect: got %v reason %#x", pk.FixedHeader.Type, pk.ReasonCode)
	}
	return c
}

func (c *rawClient) send(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.v
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	default:
		c.t.Fatalf("raw client cannot send %v", pk.FixedHeader.Type)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawClient) publish(topic string, qos byte, id uint16, payload string) {
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, PacketID: id, Payload: []byte(payload)})
}

// readErr reads one packet; io.EOF and friends when the broker hung up.
func (c *rawClient) readErr() (packets.Packet, error) {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	hb, err := c.r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	var pk packets.Packet
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return pk, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = c.v
	pk.FixedHeader.Remaining = n
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	return pk, err
}

func (c *rawClient) read() packets.Packet {
	c.t.Helper()
	pk, err := c.readErr()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return pk
}

func TestPubacksInReceiveOrderAndPipelined(t *testing.T) {
	app := openTestWAL(t)
	b := startBroker(t, testBrokerConfig(), app)
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			c := dialRaw(t, b.addr, v, fmt.Sprintf("raw-%d", v))
			const n = 1000
			before := app.log.Stats().Fsyncs
			// All 1,000 go out before any ack is read: the broker must take
			// them in flight, not one fsync each.
			go func() {
				for i := 1; i <= n; i++ {
					c.publish("telemetry/raw/env", 1, uint16(i), fmt.Sprintf(`{"seq":%d}`, i))
				}
			}()
			for i := 1; i <= n; i++ {
				pk := c.read()
				if pk.FixedHeader.Type != packets.Puback || pk.PacketID != uint16(i) || pk.ReasonCode != 0 {
					t.Fatalf("ack %d: got %v id %d reason %#x; want PUBACK id %d success", i, pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode, i)
				}
			}
			if fs := app.log.Stats().Fsyncs - before; fs >= n/2 {
				t.Errorf("%d fsyncs for %d messages in flight: not pipelined", fs, n)
			}
		})
	}
}

func TestV5ReasonCodeForUnusablePayload(t *testing.T) {
	app := openTestWAL(t)
	b := startBroker(t, testBrokerConfig(), app)
	c := dialRaw(t, b.addr, 5, "v5-bad")
	c.publish("telemetry/dev/env", 1, 1, `{"temp":`)                   // no usable reading
	c.publish("telemetry/dev/env", 1, 2, `{"temp":20,"hum":"damp"}`)   // one reading, a string skipped
	c.publish("telemetry/dev/env", 1, 3, `[{"temp":21},{"temp":[1]}]`) // one good, one bad
	pk := c.read()
	if pk.PacketID != 1 || pk.ReasonCode != packets.ErrPayloadFormatInvalid.Code || pk.Properties.ReasonString == "" {
		t.Fatalf("unusable payload: PUBACK id %d reason %#x %q; want 0x99 with a reason string", pk.PacketID, pk.ReasonCode, pk.Properties.ReasonString)
	}
	t.Logf("reason string: %s", pk.Properties.ReasonString)
	for _, id := range []uint16{2, 3} {
		if pk := c.read(); pk.PacketID != id || pk.ReasonCode != 0 {
			t.Fatalf("usable payload: PUBACK id %d reason %#x; want id %d success", pk.PacketID, pk.ReasonCode, id)
		}
	}
	if n := len(walReadings(t, app.log)); n != 2 {
		t.Fatalf("%d readings stored, want 2", n)
	}
	rej := b.sink.list()
	if len(rej) != 2 || rej[0].Source != "v5-bad" || rej[0].Topic != "telemetry/dev/env" || len(rej[0].Raw) == 0 {
		t.Fatalf("dead letters: %+v; want the two payloads with problems", rej)
	}
	if b.stats.Rejected[ListenerMQTT][ReasonSyntax].Load() == 0 {
		t.Fatal("syntax rejection not counted")
	}
	// 3.1.1 cannot be told: the bad payload is acknowledged, counted, kept.
	c3 := dialRaw(t, b.addr, 4, "v3-bad")
	c3.publish("telemetry/dev/env", 1, 9, `garbage`)
	if pk := c3.read(); pk.PacketID != 9 || pk.ReasonCode != 0 {
		t.Fatalf("3.1.1 bad payload: PUBACK id %d reason %#x", pk.PacketID, pk.ReasonCode)
	}
}

// failingAppender fails every append (as a full disk would), after an
// optional gate.
type failingAppender struct{ err error }

func (f *failingAppender) Append(ctx context.Context, b *wal.Batch, done func(error)) error {
	go done(f.err)
	return nil
}
func (f *failingAppender) TryAppend(b *wal.Batch, done func(error)) error {
	return f.Append(nil, b, done)
}

func TestFailedAppendIsNotAcknowledged(t *testing.T) {
	b := startBroker(t, testBrokerConfig(), &failingAppender{err: errors.New("no space left on device")})
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			c := dialRaw(t, b.addr, v, fmt.Sprintf("fail-%d", v))
			c.publish("telemetry/dev/env", 1, 7, `{"temp":20}`)
			if v == 5 {
				pk := c.read()
				if pk.FixedHeader.Type != packets.Puback || pk.ReasonCode < 0x80 {
					t.Fatalf("v5: got %v reason %#x, want a PUBACK with an error reason", pk.FixedHeader.Type, pk.ReasonCode)
				}
			}
			// Then the broker hangs up, so the client resends on reconnect.
			for {
				pk, err := c.readErr()
				if err != nil {
					break
				}
				if pk.FixedHeader.Type == packets.Puback && pk.ReasonCode == 0 {
					t.Fatal("failed append acknowledged with success")
				}
			}
		})
	}
	if n := b.stats.Dropped[ListenerMQTT][DropAppendFailed].Load(); n != 2 {
		t.Fatalf("append failures counted %d, want 2", n)
	}
}

// gatedAppender holds the completion of appends whose batch names a
// gated device until the gate opens; others pass through to the WAL.
type gatedAppender struct {
	*walAppender
	gate    chan struct{}
	device  string
	waiting atomic.Int64
}

func (g *gatedAppender) Append(ctx context.Context, b *wal.Batch, done func(error)) error {
	if len(b.Readings) > 0 && bytes.Contains([]byte(b.Readings[0].Series), []byte(g.device)) {
		g.waiting.Add(1)
		return g.walAppender.Append(ctx, b, func(err error) {
			go func() { <-g.gate; done(err) }()
		})
	}
	return g.walAppender.Append(ctx, b, done)
}

func TestSlowAppendSlowsOnlyItsClient(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.ReceiveMaximum = 4
	app := &gatedAppender{walAppender: openTestWAL(t), gate: make(chan struct{}), device: "slow"}
	b := startBroker(t, cfg, app)
	slow := dialRaw(t, b.addr, 4, "slow-client")
	// Six publishes: four fill the window, the fifth blocks the slow
	// client's read loop, the sixth waits in its socket.
	go func() {
		for i := 1; i <= 6; i++ {
			slow.publish("telemetry/slow/env", 1, uint16(i), `{"temp":1}`)
		}
	}()
	waitUntil(t, "the slow client's window full", func() bool { return app.waiting.Load() == 4 })
	fast := pahoClient(t, b.addr, "fast-client", nil)
	start := time.Now()
	for i := range 20 {
		publishWait(t, fast, "telemetry/fast/env", 1, fmt.Sprintf(`{"temp":%d}`, i))
	}
	t.Logf("fast client: 20 acknowledged publishes in %s while the slow one is stuck", time.Since(start))
	if app.waiting.Load() != 4 {
		t.Fatalf("the slow client got %d appends past a full window of 4", app.waiting.Load())
	}
	close(app.gate)
	for i := 1; i <= 6; i++ {
		if pk := slow.read(); pk.PacketID != uint16(i) {
			t.Fatalf("slow client ack %d has id %d", i, pk.PacketID)
		}
	}
}

func TestConnectDeadline(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.ConnectTimeout = 200 * time.Millisecond
	b := startBroker(t, cfg, openTestWAL(t))
	conn, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("the broker sent something to a socket that never sent CONNECT")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the broker kept a silent socket open for 10s")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("silent socket closed after %s", el)
	}
}

func hash(t *testing.T, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestAuthAndACL(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.Users = []BrokerUser{
		{Username: "sensor", PasswordHash: hash(t, "s3cret"), Publish: []string{"telemetry/+/+"}, Subscribe: []string{"cmd/#"}},
		{Username: "ops", PasswordHash: hash(t, "0ps"), Publish: []string{"alerts/#"}},
		{Username: "any", PasswordHash: hash(t, "any")},
	}
	app := openTestWAL(t)
	b := startBroker(t, cfg, app)
	connect := func(user, pw string) error {
		o := paho.NewClientOptions().AddBroker("tcp://" + b.addr).SetClientID("c-" + user + pw).
			SetUsername(user).SetPassword(pw).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
		c := paho.NewClient(o)
		tok := c.Connect()
		tok.WaitTimeout(10 * time.Second)
		if tok.Error() == nil {
			c.Disconnect(50)
		}
		return tok.Error()
	}
	for _, tc := range []struct {
		user, pw string
		ok       bool
	}{{"sensor", "s3cret", true}, {"sensor", "wrong", false}, {"nobody", "x", false}, {"", "", false}, {"sensor", "s3cret", true}} {
		if err := connect(tc.user, tc.pw); (err == nil) != tc.ok {
			t.Errorf("connect %q/%q: %v, want ok=%v", tc.user, tc.pw, err, tc.ok)
		}
	}
	// ACLs: a 3.1.1 client is disconnected on a denied QoS 1 publish;
	// mochi drops client publishes on $SYS without an ack. Either way the
	// publish is never acknowledged.
	denied := func(user, pw, topic string) bool {
		c := pahoClient(t, b.addr, "acl-"+user+topic, func(o *paho.ClientOptions) { o.SetUsername(user).SetPassword(pw) })
		tok := c.Publish(topic, 1, false, `{"v":1}`)
		acked := tok.WaitTimeout(3*time.Second) && tok.Error() == nil
		return !acked || !c.IsConnectionOpen()
	}
	for _, tc := range []struct {
		user, pw, topic string
		denied          bool
	}{
		{"sensor", "s3cret", "telemetry/dev/env", false},
		{"sensor", "s3cret", "lp/plant", true},      // outside its filters
		{"any", "any", "alerts/fake/alarm", true},   // reserved for the gateway
		{"any", "any", "$SYS/broker/uptime", true},  // reserved
		{"ops", "0ps", "alerts/manual/test", false}, // granted explicitly
		{"any", "any", "telemetry/dev2/env", false}, // no filters: anything else
	} {
		if got := denied(tc.user, tc.pw, tc.topic); got != tc.denied {
			t.Errorf("%s publishing on %s: denied=%v, want %v", tc.user, tc.topic, got, tc.denied)
		}
	}
	if n := len(walReadings(t, app.log)); n != 2 {
		t.Errorf("%d readings stored, want 2 (only the allowed telemetry)", n)
	}
}

// writeTestPKI writes a CA, a server certificate for 127.0.0.1 and a
// client certificate, all generated here, and returns their paths.
func writeTestPKI(t *testing.T) (caFile, certFile, keyFile, clientCert, clientKey string) {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "runnel test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		return write(name+".crt", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", kb)
	}
	caFile = write("ca.crt", "CERTIFICATE", caDER)
	certFile, keyFile = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	clientCert, clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return
}

func TestTLSListener(t *testing.T) {
	caFile, certFile, keyFile, clientCert, clientKey := writeTestPKI(t)
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, mutual := range []bool{false, true} {
		t.Run(fmt.Sprintf("client certs %v", mutual), func(t *testing.T) {
			cfg := testBrokerConfig()
			cfg.Addr = ""
			cfg.TLS = BrokerTLSConfig{Addr: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile}
			if mutual {
				cfg.TLS.ClientCAFile = caFile
			}
			app := openTestWAL(t)
			b := startBroker(t, cfg, app)
			dial := func(withCert bool) error {
				tc := &tls.Config{RootCAs: pool}
				if withCert {
					tc.Certificates = []tls.Certificate{cert}
				}
				o := paho.NewClientOptions().AddBroker("ssl://" + b.addr).SetClientID(fmt.Sprintf("tls-%v", withCert)).
					SetTLSConfig(tc).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
				c := paho.NewClient(o)
				tok := c.Connect()
				tok.WaitTimeout(10 * time.Second)
				if tok.Error() != nil {
					return tok.Error()
				}
				defer c.Disconnect(50)
				pt := c.Publish("telemetry/tls/env", 1, false, `{"temp":1}`)
				pt.WaitTimeout(10 * time.Second)
				return pt.Error()
			}
			if err := dial(true); err != nil {
				t.Fatalf("with a client certificate: %v", err)
			}
			if err := dial(false); (err != nil) != mutual {
				t.Fatalf("without a client certificate: %v (client certs required: %v)", err, mutual)
			}
			if n := len(walReadings(t, app.log)); n < 1 {
				t.Fatal("nothing stored over TLS")
			}
		})
	}
}

func TestBrokerConfigErrors(t *testing.T) {
	cases := map[string]struct {
		mod  func(*BrokerConfig)
		want string
	}{
		"bad codec":     {func(c *BrokerConfig) { c.Topics[0].Codec = "xml" }, `topics[0].codec: "xml" is not one of biosignal, json, line_protocol`},
		"bad filter":    {func(c *BrokerConfig) { c.Topics[0].Filter = "a/#/b" }, `topics[0].filter: "a/#/b" is not a valid topic filter`},
		"bad hash":      {func(c *BrokerConfig) { c.Users = []BrokerUser{{Username: "u", PasswordHash: "plain"}} }, "users[0].password_hash: is not a bcrypt hash"},
		"no listener":   {func(c *BrokerConfig) { c.Addr = "" }, "addr: no MQTT listener"},
		"half tls":      {func(c *BrokerConfig) { c.TLS.CertFile = "x.pem" }, "tls: cert_file and key_file must be set together"},
		"receive max":   {func(c *BrokerConfig) { c.ReceiveMaximum = 0 }, "receive_maximum: 0 is out of range 1 to 65535"},
		"big packets":   {func(c *BrokerConfig) { c.MaxPacketBytes = 1 << 30 }, "max_packet_bytes: 1GiB is out of range"},
		"lp precision":  {func(c *BrokerConfig) { c.LineProtocolPrecision = "h" }, `line_protocol_precision: "h" is not one of`},
		"biosignal cap": {func(c *BrokerConfig) { c.Biosignal.MaxSamples = 0 }, "biosignal.max_samples: 0 is out of range 1 to"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := DefaultBrokerConfig()
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if err := DefaultBrokerConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func TestMatchFilter(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"telemetry/+/+", "telemetry/a/b", true},
		{"telemetry/+/+", "telemetry/a", false},
		{"telemetry/+/+", "telemetry/a/b/c", false},
		{"lp/#", "lp", true},
		{"lp/#", "lp/x/y", true},
		{"#", "anything/at/all", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"alerts/#", "alerts", true},
	} {
		if got := matchFilter(tc.filter, tc.topic); got != tc.want {
			t.Errorf("matchFilter(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

// TestPahoV5ReasonCodes uses paho.golang, a real MQTT 5 client: an unusable
// payload is answered with PUBACK 0x99 and a reason string, a good one with
// success.
func TestPahoV5ReasonCodes(t *testing.T) {
	app := openTestWAL(t)
	b := startBroker(t, testBrokerConfig(), app)
	conn, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho5.NewClient(paho5.ClientConfig{ClientID: "paho-v5", Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho5.Connect{ClientID: "paho-v5", KeepAlive: 30, CleanStart: true}); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho5.Disconnect{})
	resp, err := c.Publish(ctx, &paho5.Publish{QoS: 1, Topic: "telemetry/v5/env", Payload: []byte(`{"temp":oops}`)})
	if resp == nil {
		t.Fatalf("no PUBACK: %v", err)
	}
	if resp.ReasonCode != 0x99 || resp.Properties == nil || resp.Properties.ReasonString == "" {
		t.Fatalf("PUBACK reason %#x %+v (err %v); want 0x99 with a reason string", resp.ReasonCode, resp.Properties, err)
	}
	t.Logf("paho.golang got reason 0x99: %q", resp.Properties.ReasonString)
	resp, err = c.Publish(ctx, &paho5.Publish{QoS: 1, Topic: "telemetry/v5/env", Payload: []byte(`{"temp":21.5}`)})
	if err != nil || resp.ReasonCode != 0 {
		t.Fatalf("good payload: %v, %+v", err, resp)
	}
	if n := len(walReadings(t, app.log)); n != 1 {
		t.Fatalf("%d readings stored, want 1", n)
	}
}

func TestWebSocketListener(t *testing.T) {
	cfg := testBrokerConfig()
	ws, err := net.Listen("tcp", "127.0.0.1:0") // find a free port for mochi's listener
	if err != nil {
		t.Fatal(err)
	}
	cfg.WebSocketAddr = ws.Addr().String()
	ws.Close()
	app := openTestWAL(t)
	startBroker(t, cfg, app)
	o := paho.NewClientOptions().AddBroker("ws://" + cfg.WebSocketAddr).SetClientID("ws-client").
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	var tok paho.Token
	waitUntil(t, "websocket listener up", func() bool {
		tok = c.Connect()
		return tok.WaitTimeout(5*time.Second) && tok.Error() == nil
	})
	defer c.Disconnect(50)
	publishWait(t, c, "telemetry/ws/env", 1, `{"temp":7}`)
	if n := len(walReadings(t, app.log)); n != 1 {
		t.Fatalf("%d readings over WebSocket, want 1", n)
	}
}

func TestRetainedPerClientLimit(t *testing.T) {
	cfg := testBrokerConfig()
	cfg.MaxRetained = 2
	b := startBroker(t, cfg, openTestWAL(t))
	pub := pahoClient(t, b.addr, "retainer", nil)
	for i := range 4 {
		tok := pub.Publish(fmt.Sprintf("status/dev/%d", i), 1, true, "on")
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	// A late subscriber sees only the retained messages within the limit.
	got := make(chan string, 10)
	sub := pahoClient(t, b.addr, "late", nil)
	if tok := sub.Subscribe("status/#", 1, func(_ paho.Client, m paho.Message) {
		if m.Retained() {
			got <- m.Topic()
		}
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	waitUntil(t, "two retained messages", func() bool { return len(got) >= 2 })
	// Give a third one a chance to arrive, bounded by a publish round trip.
	publishWait(t, pub, "status/other", 1, "x")
	if n := len(got); n != 2 {
		t.Fatalf("late subscriber got %d retained messages, want 2 (max_retained)", n)
	}
}

// TestQoS0PublishAllocs keeps mochi's processing of a QoS 0 telemetry
// publish, the gateway's hook included, free of allocations once the
// topic is known (the coalescer's batches are reused): a sensor flood
// runs it for every message. It once allocated the topic's series memo
// on every publish.
func TestQoS0PublishAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	app := &nullAppender{}
	srv, cl := injectTarget(t, "runnel", app)
	pks := qos0Packets(4)
	k := 0
	publish := func() {
		if err := srv.InjectPacket(cl, pks[k%len(pks)]); err != nil {
			t.Fatal(err)
		}
		k++
	}
	for range 2 * coalesceFlushAt { // every topic cached, batches allocated
		publish()
	}
	if allocs := testing.AllocsPerRun(1000, publish); allocs != 0 {
		t.Errorf("%v allocations per QoS 0 publish, want 0", allocs)
	}
	if app.readings.Load() == 0 {
		t.Error("no reading reached the appender")
	}
}
