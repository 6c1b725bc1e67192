package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Tests of the QoS 1 delivery and acknowledgement paths (issue 16): a
// durable publish reaches subscribers as it was sent, every ack of a
// client takes one ordered path, and failures carry reason codes.

// write encodes and sends any packet the tests need (rawClient.send knows
// CONNECT and PUBLISH only).
func (c *rawClient) write(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.v
	pk.Mods.AllowResponseInfo = true // mochi's encoder writes Response Topic only with it
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1
		err = pk.PubrelEncode(&buf)
	default:
		c.t.Fatalf("cannot send %v", pk.FixedHeader.Type)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.t.Fatal(err)
	}
}

// next reads and decodes the next packet of any type the tests expect.
func (c *rawClient) next() packets.Packet {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	hb, err := c.r.ReadByte()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var pk packets.Packet
	if err := pk.FixedHeader.Decode(hb); err != nil {
		c.t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		c.t.Fatal(err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		c.t.Fatal(err)
	}
	pk.ProtocolVersion, pk.FixedHeader.Remaining = c.v, n
	switch pk.FixedHeader.Type {
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return pk
}

// subscribe subscribes and waits for the SUBACK (nothing else may arrive
// before it).
func (c *rawClient) subscribe(subs ...packets.Subscription) {
	c.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 900, Filters: subs}
	if id := subs[0].Identifier; id > 0 {
		pk.Properties.SubscriptionIdentifier = []int{id}
	}
	c.write(pk)
	if pk := c.next(); pk.FixedHeader.Type != packets.Suback {
		c.t.Fatalf("got %v, want SUBACK", packets.PacketNames[pk.FixedHeader.Type])
	}
}

// untilPublish reads until a PUBLISH on topic arrives and returns it with
// everything read before it; QoS 1 deliveries are acknowledged.
func (c *rawClient) untilPublish(topic string) (packets.Packet, []packets.Packet) {
	c.t.Helper()
	var before []packets.Packet
	for {
		pk := c.next()
		if pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos == 1 {
			c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		}
		if pk.FixedHeader.Type == packets.Publish && pk.TopicName == topic {
			return pk, before
		}
		before = append(before, pk)
	}
}

func publishPacket(topic string, qos byte, id uint16, retain bool, payload string, props packets.Properties) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName: topic, PacketID: id, Payload: []byte(payload), Properties: props}
}

// TestQoS1DeliveryKeepsThePublish: a QoS 1 publish, telemetry or not, is
// delivered after its PUBACK with every property as sent, its message
// expiry counted from receipt, the publisher as origin (no-local), the
// subscriber's own subscription identifier, and a topic alias resolved;
// the PUBACK carries none of the publisher's properties. It failed when
// the hook re-published with srv.Publish(topic, payload, retain, qos).
func TestQoS1DeliveryKeepsThePublish(t *testing.T) {
	b := startBroker(t, testBrokerConfig(), openTestWAL(t))
	for _, topic := range []string{"telemetry/dev1/env", "plain/dev1/data"} {
		t.Run(topic, func(t *testing.T) {
			sub := dialRaw(t, b.addr, 5, "sub-"+topic)
			sub.subscribe(packets.Subscription{Filter: topic, Qos: 1, Identifier: 7})
			pub := dialRaw(t, b.addr, 5, "pub-"+topic)
			pub.subscribe(packets.Subscription{Filter: topic, Qos: 1, NoLocal: true})
			props := packets.Properties{
				PayloadFormat: 1, PayloadFormatFlag: true, ContentType: "application/json",
				ResponseTopic: "reply/here", CorrelationData: []byte("c-1"), MessageExpiryInterval: 60,
				User:       []packets.UserProperty{{Key: "k", Val: "v"}},
				TopicAlias: 3, TopicAliasFlag: true,
			}
			pub.write(publishPacket(topic, 1, 1, false, `{"temp":1}`, props))
			// The second publish uses only the alias.
			props.TopicAlias, props.User = 3, []packets.UserProperty{{Key: "k", Val: "second"}}
			pub.write(publishPacket("", 1, 2, false, `{"temp":2}`, props))
			for id := uint16(1); id <= 2; id++ {
				ack := pub.next()
				if ack.FixedHeader.Type != packets.Puback || ack.PacketID != id || ack.ReasonCode != 0 {
					t.Fatalf("got %v id %d reason %#x, want PUBACK %d 0x00", packets.PacketNames[ack.FixedHeader.Type], ack.PacketID, ack.ReasonCode, id)
				}
				if len(ack.Properties.User) > 0 || ack.Properties.ContentType != "" {
					t.Errorf("PUBACK carries the publisher's properties: %+v", ack.Properties)
				}
			}
			for i, want := range []string{"v", "second"} {
				got, _ := sub.untilPublish(topic)
				p := got.Properties
				if string(got.Payload) != fmt.Sprintf(`{"temp":%d}`, i+1) || p.PayloadFormat != 1 || !p.PayloadFormatFlag ||
					p.ContentType != "application/json" || p.ResponseTopic != "reply/here" || string(p.CorrelationData) != "c-1" ||
					len(p.User) != 1 || p.User[0].Val != want {
					t.Errorf("delivery %d lost properties: payload %s props %+v", i+1, got.Payload, p)
				}
				if p.MessageExpiryInterval < 1 || p.MessageExpiryInterval > 60 {
					t.Errorf("message expiry %d, want 1..60 [MQTT-3.3.2-6]", p.MessageExpiryInterval)
				}
				if !slices.Equal(p.SubscriptionIdentifier, []int{7}) {
					t.Errorf("subscription identifiers %v, want [7] [MQTT-3.3.4-3]", p.SubscriptionIdentifier)
				}
			}
			// No-local: the publisher gets none of its own messages; a
			// barrier publish from another client comes first.
			other := dialRaw(t, b.addr, 5, "other-"+topic)
			other.write(publishPacket(topic, 1, 1, false, `{"temp":3}`, packets.Properties{}))
			if _, before := pub.untilPublish(topic); len(before) > 0 {
				t.Errorf("the publisher got %d packets before the barrier (its own messages?) [MQTT-3.8.3-3]", len(before))
			}
		})
	}
}

// TestQoS1RetainedKeepsExpiry: a retained QoS 1 publish is retained by
// mochi as sent (properties, v5 expiry), and an empty retained QoS 1
// publish on a telemetry topic clears it with PUBACK 0x00 [MQTT-3.3.1-6].
func TestQoS1RetainedKeepsExpiry(t *testing.T) {
	b := startBroker(t, testBrokerConfig(), openTestWAL(t))
	topic := "telemetry/ret/env"
	pub := dialRaw(t, b.addr, 5, "ret-pub")
	pub.write(publishPacket(topic, 1, 1, true, `{"temp":1}`, packets.Properties{MessageExpiryInterval: 30, ContentType: "application/json"}))
	if ack := pub.next(); ack.ReasonCode != 0 {
		t.Fatalf("PUBACK %#x", ack.ReasonCode)
	}
	var kept packets.Packet
	waitUntil(t, "the message retained", func() bool {
		var ok bool
		kept, ok = b.srv.Topics.Retained.Get(topic)
		return ok
	})
	if kept.Properties.ContentType != "application/json" || kept.ProtocolVersion != 5 || kept.Expiry == 0 ||
		kept.Expiry-kept.Created > 30 || kept.Origin != "ret-pub" {
		t.Fatalf("retained %+v: want its content type, v5 expiry within 30 s and origin ret-pub", kept)
	}
	pub.write(publishPacket(topic, 1, 2, true, "", packets.Properties{}))
	if ack := pub.next(); ack.PacketID != 2 || ack.ReasonCode != 0 {
		t.Fatalf("clearing publish: PUBACK %d %#x (%s), want 0x00", ack.PacketID, ack.ReasonCode, ack.Properties.ReasonString)
	}
	waitUntil(t, "the retained message cleared", func() bool {
		_, ok := b.srv.Topics.Retained.Get(topic)
		return !ok
	})
	if n := len(b.sink.list()); n != 0 {
		t.Errorf("%d dead letters for a retained-message deletion", n)
	}
}

// TestDeliverCountsExpiryFromReceipt: deliver reduces the message expiry
// by the time the publish spent being stored, and drops a message that
// expired meanwhile [MQTT-3.3.2-5].
func TestDeliverCountsExpiryFromReceipt(t *testing.T) {
	b := startBroker(t, testBrokerConfig(), openTestWAL(t))
	sub := dialRaw(t, b.addr, 5, "exp-sub")
	sub.subscribe(packets.Subscription{Filter: "exp/#", Qos: 1})
	ca := newClientAcks(b.hook, b.srv.NewClient(nil, mqtt.LocalListener, "exp-pub", true))
	now := time.Now().UnixNano()
	old := publishPacket("exp/old", 1, 1, false, "x", packets.Properties{MessageExpiryInterval: 1})
	ca.deliver(deliverable(old, now-int64(1500*time.Millisecond)))
	late := publishPacket("exp/late", 1, 2, false, "y", packets.Properties{MessageExpiryInterval: 10})
	ca.deliver(deliverable(late, now-int64(1500*time.Millisecond)))
	got, before := sub.untilPublish("exp/late")
	if len(before) > 0 {
		t.Errorf("an expired message was delivered: %+v", before)
	}
	if e := got.Properties.MessageExpiryInterval; e != 9 {
		t.Errorf("message expiry %d after 1.5 s of 10 s, want 9", e)
	}
}

// TestEveryAckInOrder: good, unusable, ACL-refused and reserved-topic
// QoS 1 publishes of one v5 client are acknowledged in publish order
// [MQTT-4.6.0-2], each with its reason code and a reason string.
func TestEveryAckInOrder(t *testing.T) {
	b := startBroker(t, testBrokerConfig(), openTestWAL(t))
	c := dialRaw(t, b.addr, 5, "order")
	cases := []struct {
		topic, payload string
		code           byte
	}{
		{"telemetry/o/env", `{"temp":1}`, 0},
		{"telemetry/o/env", `{}`, 0x99},
		{"alerts/o/fake", `x`, 0x87},
		{"telemetry/o/env", `{"temp":"hot"}`, 0x99},
		{"$SYS/o", `x`, 0x87},
		{"plain/o", `x`, 0},
		{"telemetry/o/env", `[]`, 0x99},
		{"telemetry/o/env", `{"temp":2}`, 0},
	}
	var all bytes.Buffer
	for i, tc := range cases {
		pk := publishPacket(tc.topic, 1, uint16(i+1), false, tc.payload, packets.Properties{})
		pk.ProtocolVersion = 5
		if err := pk.PublishEncode(&all); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.conn.Write(all.Bytes()); err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		ack := c.next()
		if ack.FixedHeader.Type != packets.Puback || ack.PacketID != uint16(i+1) || ack.ReasonCode != tc.code {
			t.Fatalf("ack %d: %v id %d reason %#x, want PUBACK id %d reason %#x (%s)", i+1,
				packets.PacketNames[ack.FixedHeader.Type], ack.PacketID, ack.ReasonCode, i+1, tc.code, tc.topic)
		}
		if tc.code != 0 && ack.Properties.ReasonString == "" {
			t.Errorf("ack %d: reason %#x without a reason string", i+1, tc.code)
		}
	}
}

// TestQoS2ReasonCodes: a v5 QoS 2 publish with no usable reading gets
// PUBREC 0x99 with a reason string, an ACL refusal PUBREC 0x87 (mochi would
// answer a hook's reason code with a PUBACK), a good one PUBREC 0x00
// without the publisher's user properties; and one whose append fails
// PUBREC 0x80 before the broker hangs up.
func TestQoS2ReasonCodes(t *testing.T) {
	b := startBroker(t, testBrokerConfig(), openTestWAL(t))
	c := dialRaw(t, b.addr, 5, "q2")
	user := packets.Properties{User: []packets.UserProperty{{Key: "secret", Val: "s"}}}
	for i, tc := range []struct {
		topic, payload string
		code           byte
	}{
		{"telemetry/q2/env", `{"temp":"hot"}`, 0x99},
		{"alerts/q2/fake", `x`, 0x87},
		{"telemetry/q2/env", `{"temp":1}`, 0},
	} {
		c.write(publishPacket(tc.topic, 2, uint16(i+1), false, tc.payload, user))
		rec := c.next()
		if rec.FixedHeader.Type != packets.Pubrec || rec.PacketID != uint16(i+1) || rec.ReasonCode != tc.code {
			t.Fatalf("%s: %v id %d reason %#x, want PUBREC reason %#x", tc.payload,
				packets.PacketNames[rec.FixedHeader.Type], rec.PacketID, rec.ReasonCode, tc.code)
		}
		if tc.code != 0 && rec.Properties.ReasonString == "" {
			t.Errorf("%s: PUBREC %#x without a reason string", tc.payload, tc.code)
		}
		if len(rec.Properties.User) > 0 {
			t.Errorf("%s: PUBREC echoes user properties %v", tc.payload, rec.Properties.User)
		}
		if tc.code == 0 {
			c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: rec.PacketID})
			if comp := c.next(); comp.FixedHeader.Type != packets.Pubcomp {
				t.Fatalf("got %v, want PUBCOMP", packets.PacketNames[comp.FixedHeader.Type])
			}
		}
	}

	failing := startBroker(t, testBrokerConfig(), &failingAppender{err: errors.New("no space left on device")})
	f := dialRaw(t, failing.addr, 5, "q2-fail")
	f.write(publishPacket("telemetry/q2/env", 2, 1, false, `{"temp":1}`, packets.Properties{}))
	if rec := f.next(); rec.FixedHeader.Type != packets.Pubrec || rec.ReasonCode != 0x80 {
		t.Fatalf("failed append: %v reason %#x, want PUBREC 0x80", packets.PacketNames[rec.FixedHeader.Type], rec.ReasonCode)
	}
}

// TestNoUsableReadingMQTT: `{}`, `[]` and `{"temp":"hot"}` hold no usable
// reading: over 3.1.1 they are acknowledged (no negative ack exists),
// counted as no_readings and dead-lettered; they are not delivered.
func TestNoUsableReadingMQTT(t *testing.T) {
	b := startBroker(t, testBrokerConfig(), openTestWAL(t))
	c := dialRaw(t, b.addr, 4, "v3-none")
	payloads := []string{`{}`, `[]`, `{"temp":"hot"}`}
	for i, p := range payloads {
		c.publish("telemetry/none/env", 1, uint16(i+1), p)
		if ack := c.read(); ack.PacketID != uint16(i+1) || ack.ReasonCode != 0 {
			t.Fatalf("%s: PUBACK id %d reason %#x", p, ack.PacketID, ack.ReasonCode)
		}
	}
	if n := b.stats.Rejected[ListenerMQTT][ReasonNoReadings].Load(); n != 3 {
		t.Errorf("no_readings counted %d, want 3", n)
	}
	rej := b.sink.list()
	if len(rej) != 3 {
		t.Fatalf("dead letters %+v, want 3", rej)
	}
	for _, r := range rej {
		if r.Reason != "no_readings" || r.Source != "v3-none" {
			t.Errorf("dead letter %+v, want reason no_readings from v3-none", r)
		}
	}
}

// TestSubscriberCacheSeesNewSubscriptions: a topic published on while
// nobody subscribed (the hook then skips mochi's fan-out and caches "no
// subscribers") is delivered, at QoS 0 and 1, to a subscription made
// afterwards, exact or by wildcard, and to a session resumed with its
// subscriptions.
func TestSubscriberCacheSeesNewSubscriptions(t *testing.T) {
	b := startBroker(t, testBrokerConfig(), openTestWAL(t))
	const topic = "telemetry/dev9/env"
	pub := dialRaw(t, b.addr, 5, "pub-cache")
	for i := range 3 {
		pub.write(publishPacket(topic, 0, 0, false, fmt.Sprintf(`{"temp":%d}`, i), packets.Properties{}))
	}
	pub.write(publishPacket(topic, 1, 1, false, `{"temp":3}`, packets.Properties{}))
	if ack := pub.next(); ack.FixedHeader.Type != packets.Puback {
		t.Fatalf("got %v, want PUBACK", packets.PacketNames[ack.FixedHeader.Type])
	}
	for _, filter := range []string{topic, "telemetry/+/env", "#"} {
		sub := dialRaw(t, b.addr, 5, "sub-cache-"+filter)
		sub.subscribe(packets.Subscription{Filter: filter, Qos: 1})
		pub.write(publishPacket(topic, 0, 0, false, `{"temp":10}`, packets.Properties{}))
		if got, _ := sub.untilPublish(topic); string(got.Payload) != `{"temp":10}` {
			t.Fatalf("%s: QoS 0 delivery %s", filter, got.Payload)
		}
		pub.write(publishPacket(topic, 1, 2, false, `{"temp":11}`, packets.Properties{}))
		if got, _ := sub.untilPublish(topic); string(got.Payload) != `{"temp":11}` {
			t.Fatalf("%s: QoS 1 delivery %s", filter, got.Payload)
		}
		sub.conn.Close()
	}
}
