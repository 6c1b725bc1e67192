package conformance

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestSessionResume: a client that reconnects with Clean Start 0 within
// its session expiry finds its session [MQTT-3.2.2-3]; the server resends
// the unacknowledged QoS 1 PUBLISH with the same packet id and DUP set, or
// the unanswered QoS 2 PUBREL [MQTT-4.4.0-1] [MQTT-3.3.1-1], and then the
// messages that arrived while it was away [MQTT-3.1.2-23].
func TestSessionResume(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for qos := byte(1); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
				t.Parallel()
				topic, _ := topicOf("telemetry")
				id := uniq("resumer")
				sub, ack := dialRaw(t, tg, 5, id, sessionExpiry(60))
				if ack.SessionPresent {
					t.Fatal("Clean Start 1: CONNACK session present 1, want 0 [MQTT-3.2.2-2]")
				}
				sub.setAutoAck(false)
				sub.mustSubscribe(0, packets.Subscription{Filter: topic, Qos: qos})
				pub, _ := dialRaw(t, tg, 5, uniq("pub"), nil)
				pub.publish(topic, []byte(`{"temp":1}`), qos, false, nil)
				first := sub.waitFor("first message", isPublishOn(topic))
				if qos == 2 {
					// Half way: PUBREC sent, PUBREL received, no PUBCOMP.
					sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: first.PacketID})
					sub.waitFor("PUBREL", isAck(packets.Pubrel, first.PacketID))
				}
				sub.close()
				pub.publish(topic, []byte(`{"temp":2}`), qos, false, nil)
				pub.barrier(qos) // the second message is routed (queued for the session)

				sub, ack = dialRaw(t, tg, 5, id, resume(60))
				if !ack.SessionPresent {
					t.Fatal("Clean Start 0 within the session expiry: CONNACK session present 0, want 1 [MQTT-3.2.2-3]")
				}
				if qos == 2 {
					sub.waitFor(fmt.Sprintf("resent PUBREL %d [MQTT-4.4.0-1]", first.PacketID), isAck(packets.Pubrel, first.PacketID))
				}
				want := 2 // QoS 1: the resent message and the queued one
				if qos == 2 {
					want = 1 // the first is past PUBREC: only the queued one
				}
				var order []string
				for len(order) < want {
					pk := sub.waitFor("resent or queued message", isPublishOn(topic))
					order = append(order, string(pk.Payload))
					if pk.FixedHeader.Qos != qos {
						t.Errorf("message %s at QoS %d, want %d", pk.Payload, pk.FixedHeader.Qos, qos)
					}
					if string(pk.Payload) == `{"temp":1}` && (pk.PacketID != first.PacketID || !pk.FixedHeader.Dup) {
						t.Errorf("resent %s, want packet id %d and DUP 1 [MQTT-4.4.0-1] [MQTT-3.3.1-1]", describe([]packets.Packet{pk}), first.PacketID)
					}
				}
				if qos == 1 {
					t.Run("order", func(t *testing.T) {
						mochiDeviation(t, "on resume, client.go ResendInflightMessages sends the session's messages in inflight.go GetAll order, by Created in whole seconds: two messages of the same second come out in map order [MQTT-4.6.0-1]")
						if order[0] != `{"temp":1}` {
							t.Errorf("messages after resume in order %v, want the resent one first [MQTT-4.6.0-1]", order)
						}
					})
				}
			})
		}
	})
}

// TestSessionExpiry: with Session Expiry Interval 0 (absent) the session
// ends with the connection; with 1 s it is gone once that has passed
// [MQTT-3.1.2-23]; a reconnect with Clean Start 0 then finds no session
// [MQTT-3.2.2-3]. mochi sweeps expired sessions once a second with whole
// seconds, so the 1 s case waits a fixed 3.5 s: nothing announces an
// expired session, and probing it would renew it.
func TestSessionExpiry(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, expiry := range []uint32{0, 1} {
			t.Run(fmt.Sprintf("%ds", expiry), func(t *testing.T) {
				t.Parallel()
				if expiry == 0 {
					mochiDeviation(t, "with Session Expiry 0, server.go attachClient closes the socket (processDisconnect) before it deletes the session, after the OnDisconnect hooks: a client that reconnects at once can still find its old session (session present 1) [MQTT-3.1.2-23]; the gateway's OnDisconnect hook makes the window wide enough to hit every time")
				}
				id := uniq("expiring")
				c, _ := dialRaw(t, tg, 5, id, func(pk *packets.Packet) {
					if expiry > 0 {
						sessionExpiry(expiry)(pk)
					}
				})
				c.mustSubscribe(0, packets.Subscription{Filter: "conf/" + id + "/x", Qos: 1})
				c.disconnect(0)
				if expiry > 0 {
					time.Sleep(3500 * time.Millisecond) // the expiry itself: see the comment above
				}
				_, ack := dialRaw(t, tg, 5, id, resume(60))
				if ack.SessionPresent {
					t.Errorf("reconnect after a session expiry of %d s: session present 1, want 0 [MQTT-3.1.2-23] [MQTT-3.2.2-3]", expiry)
				}
			})
		}
	})
}

// TestWillDelay: a Will Message with a Will Delay Interval is published
// once that interval has passed after the connection was lost, not before
// (§3.1.3.2.2); a reconnect within the delay cancels it [MQTT-3.1.3-9]; a
// normal DISCONNECT (0x00) discards it [MQTT-3.1.2-10].
func TestWillDelay(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		watchTopic := "conf/" + uniq("will")
		watch, _ := dialRaw(t, tg, 5, uniq("watch"), nil)
		watch.mustSubscribe(0, packets.Subscription{Filter: watchTopic + "/#", Qos: 1})
		withWill := func(name string, delay uint32) func(*packets.Packet) {
			return func(pk *packets.Packet) {
				sessionExpiry(30)(pk)
				pk.Connect.WillFlag = true
				pk.Connect.WillQos = 1
				pk.Connect.WillTopic = watchTopic + "/" + name
				pk.Connect.WillPayload = []byte(name + " gone")
				pk.Connect.WillProperties.WillDelayInterval = delay
			}
		}
		// reconnecting drops its connection, then comes back at once.
		recID := uniq("rec")
		rec, _ := dialRaw(t, tg, 5, recID, withWill("reconnected", 2))
		// polite disconnects normally: its will is discarded.
		polite, _ := dialRaw(t, tg, 5, uniq("polite"), withWill("polite", 0))
		polite.disconnect(0)
		rec.close()
		dialRaw(t, tg, 5, recID, func(pk *packets.Packet) { resume(30)(pk); withWill("reconnected", 2)(pk); pk.Connect.Clean = false })
		// dropped loses its connection for good, after the others.
		dropped, _ := dialRaw(t, tg, 5, uniq("dropped"), withWill("dropped", 2))
		lost := time.Now()
		dropped.close()
		got := watch.waitFor("the will of the dropped client", isPublishOn(watchTopic+"/dropped"))
		if d := time.Since(lost); d < 1900*time.Millisecond {
			t.Errorf("will published %s after the connection was lost, before its delay of 2 s (§3.1.3.2.2)", d)
		}
		if !bytes.Equal(got.Payload, []byte("dropped gone")) {
			t.Errorf("will payload %q", got.Payload)
		}
		// The other wills were due no later than this one.
		watch.barrier(1)
		if got := watch.publishes(watchTopic + "/reconnected"); len(got) > 0 {
			t.Errorf("will sent though its client reconnected within the delay: %s [MQTT-3.1.3-9]", describe(got))
		}
		if got := watch.publishes(watchTopic + "/polite"); len(got) > 0 {
			t.Errorf("will sent after a normal DISCONNECT: %s [MQTT-3.1.2-10]", describe(got))
		}
	})
}

// TestMessageExpiryQueued: a message queued for an offline session whose
// expiry interval passes before the client is back is not delivered
// [MQTT-3.3.2-5]; one without expiry is. mochi sweeps expired queued
// messages once a second with whole seconds; the test waits a fixed 3.5 s
// for a 1 s expiry (probing the session would deliver the message).
func TestMessageExpiryQueued(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for qos := byte(1); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
				t.Parallel()
				topic, _ := topicOf("telemetry")
				id := uniq("away")
				sub, _ := dialRaw(t, tg, 5, id, sessionExpiry(60))
				sub.mustSubscribe(0, packets.Subscription{Filter: topic, Qos: qos})
				sub.disconnect(0)
				pub, _ := dialRaw(t, tg, 5, uniq("pub"), nil)
				pub.publish(topic, []byte(`{"temp":1}`), qos, false, &packets.Properties{MessageExpiryInterval: 1})
				pub.publish(topic, []byte(`{"temp":2}`), qos, false, nil)
				time.Sleep(3500 * time.Millisecond) // the expiry itself: see the comment above
				sub, ack := dialRaw(t, tg, 5, id, resume(60))
				if !ack.SessionPresent {
					t.Fatal("session present 0 after 3.5 s of a 60 s session expiry")
				}
				sub.waitFor("the message without expiry", func(pk packets.Packet) bool {
					return isPublishOn(topic)(pk) && string(pk.Payload) == `{"temp":2}`
				})
				sub.barrier(0)
				if got := sub.publishes(topic); len(got) > 0 {
					t.Errorf("a queued message delivered after its 1 s expiry: %s [MQTT-3.3.2-5]", describe(got))
				}
			})
		}
	})
}
