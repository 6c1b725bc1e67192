package conformance

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// badPayloads hold no usable reading for a telemetry topic: the gateway's
// README promises PUBACK 0x99 (Payload format invalid) with a reason
// string for them over MQTT 5. Bare mochi does not look at payloads and
// acks them 0x00: that difference is the gateway's purpose, not a defect.
var badPayloads = []struct {
	name    string
	payload string
}{
	{name: "syntax", payload: `{"temp":`},
	{name: "not-json", payload: `hello`},
	{name: "empty-object", payload: `{}`},
	{name: "string-field", payload: `{"temp":"hot"}`},
	{name: "empty-array", payload: `[]`},
}

// TestBadPayloadReason: on the gateway a QoS 1/2 telemetry publish with no
// usable reading gets PUBACK/PUBREC 0x99 (Payload format invalid) with a
// reason string (the README; issue 16: "v5 failures carry reason codes on
// every QoS"; a v5 server may report failure in the ack [MQTT-3.4.2-1]
// [MQTT-3.5.2-1], §3.4.2.1); a good one gets 0x00. Bare mochi does not
// decode and acks every payload 0x00.
func TestBadPayloadReason(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, bp := range badPayloads {
			for qos := byte(1); qos <= 2; qos++ {
				t.Run(fmt.Sprintf("%s/qos%d", bp.name, qos), func(t *testing.T) {
					t.Parallel()
					ackName := packets.PacketNames[packets.Puback]
					if qos == 2 {
						ackName = packets.PacketNames[packets.Pubrec]
					}
					c, _ := dialRaw(t, tg, 5, uniq("bad"), nil)
					topic := "telemetry/" + uniq("dev") + "/env"
					if ack := c.publish(topic, []byte(`{"temp":21.5}`), qos, false, nil); ack.ReasonCode != 0 {
						t.Fatalf("good payload: %s %#x, want 0x00", ackName, ack.ReasonCode)
					}
					ack := c.publish(topic, []byte(bp.payload), qos, false, nil)
					switch {
					case !tg.gateway && ack.ReasonCode != 0:
						t.Errorf("bare broker: %s %#x, want 0x00 (it does not decode)", ackName, ack.ReasonCode)
					case tg.gateway && ack.ReasonCode != 0x99:
						t.Errorf("%s %#x, want 0x99 (Payload format invalid)", ackName, ack.ReasonCode)
					case tg.gateway && ack.Properties.ReasonString == "":
						t.Errorf("%s 0x99 without a reason string", ackName)
					}
				})
			}
		}
	})
}

// TestAckOrder: PUBACKs go out in the order of the PUBLISH packets
// [MQTT-4.6.0-2], whatever their reason codes, also while the server has
// messages queued for the same client. One write carries 60 QoS 1
// telemetry publishes mixing good and bad payloads, each after four 16 KiB
// QoS 0 messages to a topic the client subscribed itself; the client reads
// nothing until the write is done, so deliveries to it back up while the
// acks are written.
func TestAckOrder(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, version := range []byte{4, 5} {
			t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
				t.Parallel()
				dev := uniq("dev")
				flood := "conf/" + dev + "/flood"
				c, _ := dialRaw(t, tg, version, uniq("order"), nil)
				c.mustSubscribe(0, packets.Subscription{Filter: "telemetry/" + dev + "/+", Qos: 1},
					packets.Subscription{Filter: flood, Qos: 0})
				var b bytes.Buffer
				var ids []uint16
				add := func(pk packets.Packet) {
					enc, err := encode(version, pk)
					if err != nil {
						t.Fatal(err)
					}
					b.Write(enc)
				}
				for i := range 60 {
					for range 4 {
						add(c.publishPacket(flood, bytes.Repeat([]byte("f"), 16<<10), 0, false, nil))
					}
					payload := fmt.Sprintf(`{"temp":%d}`, i)
					if i%3 == 1 {
						payload = badPayloads[i%len(badPayloads)].payload
					}
					pk := c.publishPacket("telemetry/"+dev+"/env", []byte(payload), 1, false, nil)
					add(pk)
					ids = append(ids, pk.PacketID)
				}
				// Write while not reading; resume after the write or after a
				// second, so a broker that stops reading while its writes to
				// this client are blocked cannot deadlock the test.
				c.pauseReading()
				written := make(chan error, 1)
				go func() { written <- c.writeRaw(b.Bytes()) }()
				select {
				case err := <-written:
					written <- err
				case <-time.After(time.Second):
				}
				c.resumeReading()
				if err := <-written; err != nil {
					t.Fatalf("write: %v", err)
				}
				var got []uint16
				for len(got) < len(ids) {
					ack := c.waitFor(fmt.Sprintf("PUBACK %d of %d", len(got)+1, len(ids)), isType(packets.Puback))
					got = append(got, ack.PacketID)
				}
				for i := range ids {
					if got[i] != ids[i] {
						t.Fatalf("PUBACK packet ids %v, want %v: out of publish order [MQTT-4.6.0-2]", got, ids)
					}
				}
			})
		}
	})
}

// TestAckNoUserProperties: PUBACK and PUBREC do not echo the publisher's
// user properties. The spec allows user properties on acks but never asks
// for the publisher's; Runnel requires none (issue 16: some clients reject
// them). mochi echoes them by default (Compatibilities.
// NoInheritedPropertiesOnAck is false), so the bare broker is skipped.
func TestAckNoUserProperties(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, kind := range topicKinds {
			for qos := byte(1); qos <= 2; qos++ {
				t.Run(fmt.Sprintf("%s/qos%d", kind, qos), func(t *testing.T) {
					t.Parallel()
					bareDeviation(t, tg, "mochi's default Compatibilities.NoInheritedPropertiesOnAck=false copies the publisher's properties into PUBACK/PUBREC (allowed by the spec, refused by Runnel)")
					topic, payload := topicOf(kind)
					c, _ := dialRaw(t, tg, 5, uniq("pub"), nil)
					props := &packets.Properties{User: []packets.UserProperty{{Key: "secret", Val: "s3"}}, ContentType: "application/json"}
					ack := c.publish(topic, payload, qos, false, props)
					if len(ack.Properties.User) > 0 || ack.Properties.ContentType != "" {
						t.Errorf("%s carries the publisher's properties: user %v content type %q",
							packets.PacketNames[ack.FixedHeader.Type], ack.Properties.User, ack.Properties.ContentType)
					}
				})
			}
		}
	})
}

// TestSharedSubscription: a message to a shared subscription goes to
// exactly one session of the group (§4.8.2), retained messages are not
// sent when a shared subscription is made (§4.8.2), and No Local on a
// shared subscription is a protocol error [MQTT-3.8.3-4].
func TestSharedSubscription(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for qos := byte(0); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
				t.Parallel()
				topic, _ := topicOf("telemetry")
				filter := "$share/" + uniq("g") + "/" + topic
				pub := storeRetained(t, tg, topic, []byte(`{"temp":0}`), 0, nil)
				t.Cleanup(func() { pub.publish(topic, nil, 0, true, nil) })
				members := make([]*rawClient, 3)
				for i := range members {
					members[i], _ = dialRaw(t, tg, 5, uniq("member"), nil)
					members[i].mustSubscribe(0, packets.Subscription{Filter: filter, Qos: 2})
					members[i].barrier(0)
					if got := members[i].publishes(topic); len(got) > 0 {
						t.Errorf("a retained message was sent on a shared subscription: %s (§4.8.2)", describe(got))
					}
				}
				const n = 30
				for i := range n {
					pub.publish(topic, fmt.Appendf(nil, `{"temp":%d}`, i+1), qos, false, nil)
				}
				// pub subscribed to the topic itself: once it has all n, the
				// server has routed all n.
				for range n {
					pub.waitFor("own message", func(pk packets.Packet) bool { return isPublishOn(topic)(pk) && len(pk.Payload) > 0 })
				}
				seen := map[string]int{}
				total := 0
				deadline := time.Now().Add(wait)
				for total < n && time.Now().Before(deadline) {
					for _, m := range members { // round robin, a short wait on each
						if pk, err := m.tryWaitFor(isPublishOn(topic), 20*time.Millisecond); err == nil {
							seen[string(pk.Payload)]++
							total++
						}
					}
				}
				// Then catch duplicates still on their way.
				for _, m := range members {
					m.barrier(0)
					for _, pk := range m.publishes(topic) {
						seen[string(pk.Payload)]++
					}
				}
				if len(seen) != n {
					t.Errorf("%d distinct messages reached the group, want %d", len(seen), n)
				}
				for p, k := range seen {
					if k != 1 {
						t.Errorf("message %s reached the group %d times, want once (§4.8.2)", p, k)
					}
				}
			})
		}
		t.Run("no-local", func(t *testing.T) {
			t.Parallel()
			c, _ := dialRaw(t, tg, 5, uniq("nl"), nil)
			ack := c.subscribe(0, packets.Subscription{Filter: "$share/" + uniq("g") + "/conf/x", Qos: 1, NoLocal: true})
			if len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] < 0x80 {
				t.Fatalf("No Local on a shared subscription granted: SUBACK %v, want DISCONNECT 0x82 [MQTT-3.8.3-4]", ack.ReasonCodes)
			}
			// A protocol error is answered with DISCONNECT 0x82 (§4.13);
			// 0x82 is not among SUBACK's reason codes (§3.9.3).
			mochiDeviation(t, "server.go processSubscribe answers No Local on a shared subscription with SUBACK reason 0x82 (not a SUBACK reason code, §3.9.3) instead of DISCONNECT 0x82 (Protocol Error) [MQTT-3.8.3-4]")
			t.Errorf("SUBACK %#x and the connection kept, want DISCONNECT 0x82", ack.ReasonCodes)
		})
	})
}

// TestReservedTopics: the gateway deliberately differs from a plain broker
// here: alerts/# carries its own alert publishes, so a client without an
// explicit publish grant is refused and the message is not delivered: an
// MQTT 5 client gets PUBACK 0x87 (Not authorized), a 3.1.1 client, which
// cannot be told, is disconnected (mochi's answer to an unauthorised QoS 1
// publish, allowed by [MQTT-3.3.5-2]). Bare mochi routes it like any
// topic. Subscribing to alerts/# is allowed on both.
func TestReservedTopics(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, version := range []byte{4, 5} {
			t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
				t.Parallel()
				topic := "alerts/" + uniq("rule") + "/fired"
				sub, _ := dialRaw(t, tg, 5, uniq("sub"), nil)
				sub.mustSubscribe(0, packets.Subscription{Filter: topic, Qos: 1})
				pub, _ := dialRaw(t, tg, version, uniq("pub"), nil)
				if !tg.gateway {
					if ack := pub.publish(topic, []byte(`{"fake":true}`), 1, false, nil); ack.ReasonCode != 0 {
						t.Errorf("bare broker: PUBACK %#x, want 0x00", ack.ReasonCode)
					}
					sub.waitFor("message", isPublishOn(topic))
					return
				}
				if version == 5 {
					if ack := pub.publish(topic, []byte(`{"fake":true}`), 1, false, nil); ack.ReasonCode != 0x87 {
						t.Errorf("publish to %s: PUBACK %#x, want 0x87 (Not authorized)", topic, ack.ReasonCode)
					}
					pub.barrier(1)
				} else {
					pub.send(pub.publishPacket(topic, []byte(`{"fake":true}`), 1, false, nil))
					got := pub.waitClosed()
					for _, pk := range got {
						if pk.FixedHeader.Type == packets.Puback {
							t.Errorf("3.1.1 publish to %s acknowledged: %s", topic, describe(got))
						}
					}
					if hasDisconnect(got, 0) {
						t.Run("no-disconnect-packet", func(t *testing.T) {
							mochiDeviation(t, "server.go DisconnectClient writes a DISCONNECT packet to 3.1.1 clients too; in 3.1.1 only the client sends DISCONNECT (§3.14)")
							t.Errorf("a 3.1.1 client was sent %s", describe(got))
						})
					}
				}
				// A delivery would have been routed before the refusal; the
				// barrier makes sure none is still queued for sub.
				sub.barrier(1)
				if got := sub.publishes(topic); len(got) > 0 {
					t.Errorf("a client's publish to the reserved %s was delivered: %s", topic, describe(got))
				}
			})
		}
	})
}
