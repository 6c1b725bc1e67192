package conformance

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// wait bounds every wait on the broker: generous for a loaded 2-core CI
// machine under -race; a passing test never waits this long.
const wait = 10 * time.Second

// rawClient speaks MQTT packet by packet over TCP, encoded and decoded with
// mochi's packets package, for what paho will not send or hide: acks the
// test holds back, exact ack order, topic aliases, several subscription
// identifiers, oversized packets. Its methods are for the test goroutine
// only; a reader goroutine decodes every packet into a channel.
type rawClient struct {
	t       *testing.T
	id      string
	conn    net.Conn
	version byte // 4 (3.1.1) or 5
	in      chan packets.Packet
	done    chan struct{} // closed when the reader ends
	backlog []packets.Packet

	gateMu sync.Mutex
	gate   chan struct{} // non-nil: the reader waits for it to close

	wmu      sync.Mutex
	autoAck  bool // the reader answers PUBLISH QoS 1/2, PUBREC and PUBREL
	nextID   uint16
	marker   string // topic this client subscribed for barrier
	aliasesM sync.Mutex
	aliases  map[uint16]string // server-to-client topic aliases
}

// dialRaw connects and sends CONNECT (edited by opt) and returns the
// client and its CONNACK; the test fails if none comes.
func dialRaw(t *testing.T, tg target, version byte, id string, opt func(*packets.Packet)) (*rawClient, packets.Packet) {
	t.Helper()
	c := dialRawNoAck(t, tg, version, id, opt)
	ack := c.waitFor("CONNACK", isType(packets.Connack))
	return c, ack
}

func dialRawNoAck(t *testing.T, tg target, version byte, id string, opt func(*packets.Packet)) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", tg.addr, wait)
	if err != nil {
		t.Fatalf("dial %s: %v", tg.addr, err)
	}
	c := &rawClient{
		t: t, id: id, conn: conn, version: version, autoAck: true,
		in: make(chan packets.Packet, 8192), done: make(chan struct{}),
		aliases: map[uint16]string{},
	}
	go c.read()
	t.Cleanup(c.close)
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), ClientIdentifier: id, Clean: true, Keepalive: 60,
		},
	}
	if opt != nil {
		opt(&pk)
	}
	c.send(pk)
	return c
}

// pauseReading stops reading from the socket (after the packet being read
// now), so the server's writes to this client back up; resumeReading
// undoes it.
func (c *rawClient) pauseReading() {
	c.gateMu.Lock()
	c.gate = make(chan struct{})
	c.gateMu.Unlock()
}

func (c *rawClient) resumeReading() {
	c.gateMu.Lock()
	if c.gate != nil {
		close(c.gate)
		c.gate = nil
	}
	c.gateMu.Unlock()
}

// close drops the connection without DISCONNECT and waits for the reader.
func (c *rawClient) close() {
	c.resumeReading()
	c.conn.Close()
	<-c.done
}

func (c *rawClient) setAutoAck(on bool) {
	c.wmu.Lock()
	c.autoAck = on
	c.wmu.Unlock()
}

// send encodes and writes pk.
func (c *rawClient) send(pk packets.Packet) {
	c.t.Helper()
	if err := c.write(pk); err != nil {
		c.t.Fatalf("%s: send %s: %v", c.id, packets.PacketNames[pk.FixedHeader.Type], err)
	}
}

func (c *rawClient) write(pk packets.Packet) error {
	b, err := encode(c.version, pk)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = c.conn.Write(b)
	return err
}

// writeBytes writes pre-encoded packets in one write.
func (c *rawClient) writeBytes(b []byte) {
	c.t.Helper()
	if err := c.writeRaw(b); err != nil {
		c.t.Fatalf("%s: write: %v", c.id, err)
	}
}

// writeRaw is writeBytes for any goroutine: it returns the error.
func (c *rawClient) writeRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.conn.Write(b)
	return err
}

func encode(version byte, pk packets.Packet) ([]byte, error) {
	pk.ProtocolVersion = version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1
		err = pk.PubrelEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("no encoder for packet type %d", pk.FixedHeader.Type)
	}
	return buf.Bytes(), err
}

// read decodes packets until the connection ends.
func (c *rawClient) read() {
	defer close(c.done)
	defer close(c.in)
	r := bufio.NewReader(c.conn)
	for {
		c.gateMu.Lock()
		gate := c.gate
		c.gateMu.Unlock()
		if gate != nil {
			<-gate
		}
		pk, err := c.readPacket(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) {
				c.t.Logf("%s: read: %v", c.id, err)
			}
			return
		}
		c.in <- c.autoRespond(pk)
	}
}

func (c *rawClient) readPacket(r *bufio.Reader) (packets.Packet, error) {
	hb, err := r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return packets.Packet{}, err
		}
		n += int(b&0x7f) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return packets.Packet{}, errors.New("malformed remaining length")
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return packets.Packet{}, err
	}
	pk := packets.Packet{ProtocolVersion: c.version}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, fmt.Errorf("fixed header %#x: %w", hb, err)
	}
	pk.FixedHeader.Remaining = n
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
		pk.Payload = append([]byte(nil), pk.Payload...)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(body)
	case packets.Pingresp:
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Auth:
		err = pk.AuthDecode(body)
	default:
		err = fmt.Errorf("unexpected packet type %d from the server", pk.FixedHeader.Type)
	}
	if err != nil {
		return pk, fmt.Errorf("decode %s: %w", packets.PacketNames[pk.FixedHeader.Type], err)
	}
	return pk, nil
}

// autoRespond completes the server's QoS 1/2 flows when autoAck is on and
// resolves server-to-client topic aliases, so tests see full topic names
// in TopicName (the alias stays in Properties).
func (c *rawClient) autoRespond(pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Publish && pk.Properties.TopicAlias > 0 {
		c.aliasesM.Lock()
		if pk.TopicName != "" {
			c.aliases[pk.Properties.TopicAlias] = pk.TopicName
		} else {
			pk.TopicName = c.aliases[pk.Properties.TopicAlias]
		}
		c.aliasesM.Unlock()
	}
	c.wmu.Lock()
	on := c.autoAck
	c.wmu.Unlock()
	if !on {
		return pk
	}
	var ack packets.Packet
	switch {
	case pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos == 1:
		ack = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}
	case pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos == 2:
		ack = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID}
	case pk.FixedHeader.Type == packets.Pubrec && pk.ReasonCode < 0x80:
		ack = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: pk.PacketID}
	case pk.FixedHeader.Type == packets.Pubrel:
		ack = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID}
	default:
		return pk
	}
	_ = c.write(ack) // a failed write shows as the connection ending
	return pk
}

func isType(typ byte) func(packets.Packet) bool {
	return func(pk packets.Packet) bool { return pk.FixedHeader.Type == typ }
}

func isPublishOn(topic string) func(packets.Packet) bool {
	return func(pk packets.Packet) bool {
		return pk.FixedHeader.Type == packets.Publish && pk.TopicName == topic
	}
}

// waitFor returns the first packet, from the backlog and then the wire,
// that match accepts; the others stay in the backlog, in order. It fails
// the test after wait or when the connection ends.
func (c *rawClient) waitFor(what string, match func(packets.Packet) bool) packets.Packet {
	c.t.Helper()
	pk, err := c.tryWaitFor(match, wait)
	if err != nil {
		c.t.Fatalf("%s: waiting for %s: %v", c.id, what, err)
	}
	return pk
}

func (c *rawClient) tryWaitFor(match func(packets.Packet) bool, d time.Duration) (packets.Packet, error) {
	for i, pk := range c.backlog {
		if match(pk) {
			c.backlog = append(c.backlog[:i:i], c.backlog[i+1:]...)
			return pk, nil
		}
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case pk, ok := <-c.in:
			if !ok {
				return pk, fmt.Errorf("connection closed (backlog: %s)", describe(c.backlog))
			}
			if match(pk) {
				return pk, nil
			}
			c.backlog = append(c.backlog, pk)
		case <-deadline.C:
			return packets.Packet{}, fmt.Errorf("nothing within %s (backlog: %s)", d, describe(c.backlog))
		}
	}
}

// waitClosed waits for the server to end the connection and returns every
// packet received before the end (the backlog included).
func (c *rawClient) waitClosed() []packets.Packet {
	c.t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		select {
		case pk, ok := <-c.in:
			if !ok {
				out := c.backlog
				c.backlog = nil
				return out
			}
			c.backlog = append(c.backlog, pk)
		case <-deadline.C:
			c.t.Fatalf("%s: the server did not close the connection within %s (received: %s)", c.id, wait, describe(c.backlog))
		}
	}
}

// publishes removes and returns the backlog's PUBLISH packets on topic.
func (c *rawClient) publishes(topic string) []packets.Packet {
	var out, rest []packets.Packet
	for _, pk := range c.backlog {
		if pk.FixedHeader.Type == packets.Publish && pk.TopicName == topic {
			out = append(out, pk)
		} else {
			rest = append(rest, pk)
		}
	}
	c.backlog = rest
	return out
}

func describe(pks []packets.Packet) string {
	if len(pks) == 0 {
		return "nothing"
	}
	var b bytes.Buffer
	for i, pk := range pks {
		if i == 20 {
			fmt.Fprintf(&b, " … %d more", len(pks)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(packets.PacketNames[pk.FixedHeader.Type])
		switch pk.FixedHeader.Type {
		case packets.Publish:
			fmt.Fprintf(&b, "(%s q%d id%d %q)", pk.TopicName, pk.FixedHeader.Qos, pk.PacketID, pk.Payload)
		case packets.Puback, packets.Pubrec, packets.Pubrel, packets.Pubcomp:
			fmt.Fprintf(&b, "(id%d rc%#x)", pk.PacketID, pk.ReasonCode)
		case packets.Disconnect, packets.Connack:
			fmt.Fprintf(&b, "(rc%#x)", pk.ReasonCode)
		}
	}
	return b.String()
}

func (c *rawClient) newID() uint16 {
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	return c.nextID
}

// publishPacket builds a PUBLISH; props may be nil.
func (c *rawClient) publishPacket(topic string, payload []byte, qos byte, retain bool, props *packets.Properties) packets.Packet {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName:   topic,
		Payload:     payload,
	}
	if qos > 0 {
		pk.PacketID = c.newID()
	}
	if props != nil {
		pk.Properties = *props
	}
	return pk
}

// publish sends a PUBLISH and, for QoS 1/2, waits for its PUBACK/PUBREC
// and returns it (the reader completes QoS 2 with PUBREL while autoAck).
func (c *rawClient) publish(topic string, payload []byte, qos byte, retain bool, props *packets.Properties) packets.Packet {
	c.t.Helper()
	pk := c.publishPacket(topic, payload, qos, retain, props)
	c.send(pk)
	switch qos {
	case 1:
		return c.waitFor(fmt.Sprintf("PUBACK %d", pk.PacketID), isAck(packets.Puback, pk.PacketID))
	case 2:
		rec := c.waitFor(fmt.Sprintf("PUBREC %d", pk.PacketID), isAck(packets.Pubrec, pk.PacketID))
		if rec.ReasonCode < 0x80 && c.autoAcking() {
			c.waitFor(fmt.Sprintf("PUBCOMP %d", pk.PacketID), isAck(packets.Pubcomp, pk.PacketID))
		}
		return rec
	}
	return packets.Packet{}
}

func (c *rawClient) autoAcking() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.autoAck
}

func isAck(typ byte, id uint16) func(packets.Packet) bool {
	return func(pk packets.Packet) bool { return pk.FixedHeader.Type == typ && pk.PacketID == id }
}

// subscribe sends one SUBSCRIBE (with subscription identifier subID when
// non-zero) and returns its SUBACK.
func (c *rawClient) subscribe(subID int, subs ...packets.Subscription) packets.Packet {
	c.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: c.newID(), Filters: subs}
	if subID > 0 {
		pk.Properties.SubscriptionIdentifier = []int{subID}
	}
	c.send(pk)
	return c.waitFor("SUBACK", isAck(packets.Suback, pk.PacketID))
}

// mustSubscribe subscribes and fails the test unless every filter is granted.
func (c *rawClient) mustSubscribe(subID int, subs ...packets.Subscription) {
	c.t.Helper()
	ack := c.subscribe(subID, subs...)
	for i, rc := range ack.ReasonCodes {
		if rc >= 0x80 {
			c.t.Fatalf("%s: SUBSCRIBE %q refused with %#x", c.id, subs[i].Filter, rc)
		}
	}
}

// barrier returns once everything the server queued for this client before
// a publish of its own at qos has arrived: it publishes to a topic only
// this client subscribed (at QoS 0) and waits for that message. mochi
// handles one client's packets in order and sends each client's messages
// through one FIFO, and the gateway delivers one client's QoS 1 publishes
// in order too; so with the barrier at the QoS of what the test waits for,
// "not in the backlog after the barrier" means "not sent".
func (c *rawClient) barrier(qos byte) {
	c.t.Helper()
	if c.marker == "" {
		c.marker = "conf/marker/" + c.id
		c.mustSubscribe(0, packets.Subscription{Filter: c.marker, Qos: 0})
	}
	payload := []byte(uniq("barrier"))
	c.publish(c.marker, payload, qos, false, nil)
	c.waitFor("barrier message", func(pk packets.Packet) bool {
		return pk.FixedHeader.Type == packets.Publish && pk.TopicName == c.marker && bytes.Equal(pk.Payload, payload)
	})
}

// disconnect sends DISCONNECT with reason code rc and waits for the
// server to close the connection (it ends the session state of an expiry
// of 0 right after), so a reconnect comes after that.
func (c *rawClient) disconnect(rc byte) {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: rc})
	c.waitClosed()
}

// v5 sets MQTT 5 options on CONNECT: session expiry (seconds) and extra
// edits.
func sessionExpiry(s uint32) func(*packets.Packet) {
	return func(pk *packets.Packet) {
		pk.Properties.SessionExpiryInterval = s
		pk.Properties.SessionExpiryIntervalFlag = true
	}
}

// resume sets Clean Start to 0 and a session expiry.
func resume(s uint32) func(*packets.Packet) {
	return func(pk *packets.Packet) {
		pk.Connect.Clean = false
		sessionExpiry(s)(pk)
	}
}
