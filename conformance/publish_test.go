package conformance

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
)

// kinds of topic: a telemetry topic the gateway decodes and stores before
// it acknowledges (its durable path), and a plain topic it only routes.
var topicKinds = []string{"telemetry", "plain"}

// topicOf returns a fresh topic of the kind and a payload that suits it.
func topicOf(kind string) (string, []byte) {
	if kind == "telemetry" {
		return "telemetry/" + uniq("dev") + "/env", []byte(`{"temp":21.5}`)
	}
	return "conf/" + uniq("plain") + "/data", []byte("hello")
}

func ptr[T any](v T) *T { return &v }

func wantUser() paho.UserProperties {
	// A repeated key and non-ASCII text: both must arrive as sent, in order.
	return paho.UserProperties{{Key: "k1", Value: "v1"}, {Key: "k2", Value: "v2"}, {Key: "k1", Value: "v3 ✓"}}
}

// checkProps compares what a subscriber got with what was sent.
func checkProps(t *testing.T, got *paho.Publish, respTopic string) {
	t.Helper()
	p := got.Properties
	if p == nil {
		t.Fatal("no properties at all")
	}
	if p.PayloadFormat == nil || *p.PayloadFormat != 1 {
		t.Errorf("payload format indicator %v, want 1 [MQTT-3.3.2-4]", p.PayloadFormat)
	}
	if p.ContentType != "application/json" {
		t.Errorf("content type %q, want application/json [MQTT-3.3.2-20]", p.ContentType)
	}
	if p.ResponseTopic != respTopic {
		t.Errorf("response topic %q, want %q [MQTT-3.3.2-15]", p.ResponseTopic, respTopic)
	}
	if !bytes.Equal(p.CorrelationData, []byte{0, 1, 0xfe}) {
		t.Errorf("correlation data %x, want 0001fe [MQTT-3.3.2-16]", p.CorrelationData)
	}
	if !slices.Equal(p.User, wantUser()) {
		t.Errorf("user properties %v, want %v unaltered and in order [MQTT-3.3.2-17] [MQTT-3.3.2-18]", p.User, wantUser())
	}
}

// TestPublishProperties: the payload format indicator, content type,
// response topic, correlation data and user properties of a PUBLISH reach
// subscribers unaltered [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16]
// [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20], live and for a retained
// message sent to a later subscriber, at every QoS.
func TestPublishProperties(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, kind := range topicKinds {
			for _, retained := range []bool{false, true} {
				for qos := byte(0); qos <= 2; qos++ {
					mode := "live"
					if retained {
						mode = "retained"
					}
					t.Run(fmt.Sprintf("%s/%s/qos%d", kind, mode, qos), func(t *testing.T) {
						t.Parallel()
						topic, payload := topicOf(kind)
						resp := topic + "/reply"
						sub := dialPaho(t, tg, uniq("sub"), nil)
						sub.subscribe(paho.SubscribeOptions{Topic: topic, QoS: 2})
						pub := dialPaho(t, tg, uniq("pub"), nil)
						pub.publish(&paho.Publish{Topic: topic, QoS: qos, Retain: retained, Payload: payload,
							Properties: &paho.PublishProperties{
								PayloadFormat: ptr(byte(1)), ContentType: "application/json",
								ResponseTopic: resp, CorrelationData: []byte{0, 1, 0xfe}, User: wantUser(),
							}})
						got := sub.next(topic)
						if !bytes.Equal(got.Payload, payload) {
							t.Errorf("payload %q, want %q", got.Payload, payload)
						}
						checkProps(t, got, resp)
						if !retained {
							return
						}
						// The live subscriber got it, so it is retained now.
						late := dialPaho(t, tg, uniq("late"), nil)
						late.subscribe(paho.SubscribeOptions{Topic: topic, QoS: 2})
						got = late.next(topic)
						if !got.Retain {
							t.Error("a retained message sent on subscription has RETAIN 0, want 1 (§3.3.1.3)")
						}
						checkProps(t, got, resp)
						pub.publish(&paho.Publish{Topic: topic, QoS: 0, Retain: true}) // clear it [MQTT-3.3.1-6]
					})
				}
			}
		}
	})
}

// TestUserProperties: user properties, repeated keys included, are
// forwarded unaltered and in order [MQTT-3.3.2-17] [MQTT-3.3.2-18]; a
// message without any arrives without any.
func TestUserProperties(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for qos := byte(0); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
				t.Parallel()
				topic, payload := topicOf("telemetry")
				sub := dialPaho(t, tg, uniq("sub"), nil)
				sub.subscribe(paho.SubscribeOptions{Topic: topic, QoS: 2})
				pub := dialPaho(t, tg, uniq("pub"), nil)
				pub.publish(&paho.Publish{Topic: topic, QoS: qos, Payload: payload})
				if got := sub.next(topic); got.Properties != nil && len(got.Properties.User) > 0 {
					t.Errorf("a message sent without user properties arrived with %v", got.Properties.User)
				}
				pub.publish(&paho.Publish{Topic: topic, QoS: qos, Payload: payload,
					Properties: &paho.PublishProperties{User: wantUser()}})
				got := sub.next(topic)
				if got.Properties == nil || !slices.Equal(got.Properties.User, wantUser()) {
					t.Errorf("user properties %+v, want %v", got.Properties, wantUser())
				}
			})
		}
	})
}

// TestRequestResponse: a requester names a response topic and correlation
// data; the responder answers on that topic with that data (§4.10,
// [MQTT-3.3.2-15] [MQTT-3.3.2-16]).
func TestRequestResponse(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for qos := byte(0); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
				t.Parallel()
				reqTopic, payload := topicOf("telemetry")
				respTopic := "conf/" + uniq("resp") + "/reply"
				responder := dialPaho(t, tg, uniq("responder"), nil)
				responder.subscribe(paho.SubscribeOptions{Topic: reqTopic, QoS: 2})
				requester := dialPaho(t, tg, uniq("requester"), nil)
				requester.subscribe(paho.SubscribeOptions{Topic: respTopic, QoS: 2})
				corr := []byte(uniq("corr"))
				requester.publish(&paho.Publish{Topic: reqTopic, QoS: qos, Payload: payload,
					Properties: &paho.PublishProperties{ResponseTopic: respTopic, CorrelationData: corr}})
				req := responder.next(reqTopic)
				if req.Properties == nil || req.Properties.ResponseTopic == "" {
					t.Fatal("the request arrived without its response topic")
				}
				responder.publish(&paho.Publish{Topic: req.Properties.ResponseTopic, QoS: qos, Payload: []byte("ok"),
					Properties: &paho.PublishProperties{CorrelationData: req.Properties.CorrelationData}})
				resp := requester.next(respTopic)
				if resp.Properties == nil || !bytes.Equal(resp.Properties.CorrelationData, corr) {
					t.Errorf("response correlation data %+v, want %q", resp.Properties, corr)
				}
			})
		}
	})
}

// TestMessageExpiryLive: a subscriber gets the message expiry interval
// minus the time the message waited in the server [MQTT-3.3.2-6]: with 60 s
// sent, between 1 and 60; a message sent without one arrives without one.
func TestMessageExpiryLive(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for qos := byte(0); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
				t.Parallel()
				topic, payload := topicOf("telemetry")
				sub := dialPaho(t, tg, uniq("sub"), nil)
				sub.subscribe(paho.SubscribeOptions{Topic: topic, QoS: 2})
				pub := dialPaho(t, tg, uniq("pub"), nil)
				pub.publish(&paho.Publish{Topic: topic, QoS: qos, Payload: payload,
					Properties: &paho.PublishProperties{MessageExpiry: ptr(uint32(60))}})
				got := sub.next(topic)
				if got.Properties == nil || got.Properties.MessageExpiry == nil {
					t.Fatal("no message expiry interval, want 1..60 [MQTT-3.3.2-6]")
				}
				if e := *got.Properties.MessageExpiry; e < 1 || e > 60 {
					t.Errorf("message expiry interval %d, want 1..60 [MQTT-3.3.2-6]", e)
				}
			})
		}
	})
}

// TestNoLocal: with No Local, a client does not get its own publishes
// back [MQTT-3.8.3-3], while other subscribers do.
func TestNoLocal(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for qos := byte(0); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
				t.Parallel()
				topic, payload := topicOf("telemetry")
				other, _ := dialRaw(t, tg, 5, uniq("other"), nil)
				other.mustSubscribe(0, packets.Subscription{Filter: topic, Qos: 2})
				self, _ := dialRaw(t, tg, 5, uniq("self"), nil)
				self.mustSubscribe(0, packets.Subscription{Filter: topic, Qos: 2, NoLocal: true})
				self.publish(topic, payload, qos, false, nil)
				other.waitFor("the message at the other subscriber", isPublishOn(topic))
				self.barrier(qos)
				if got := self.publishes(topic); len(got) > 0 {
					t.Errorf("the publisher got its own message back despite No Local: %s [MQTT-3.8.3-3]", describe(got))
				}
			})
		}
	})
}

// TestRetainAsPublished: live messages are forwarded with RETAIN as
// published when Retain As Published is 1 [MQTT-3.3.1-13] and with RETAIN
// 0 when it is 0 [MQTT-3.3.1-12].
func TestRetainAsPublished(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for qos := byte(0); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
				t.Parallel()
				topic, payload := topicOf("telemetry")
				rap, _ := dialRaw(t, tg, 5, uniq("rap"), nil)
				rap.mustSubscribe(0, packets.Subscription{Filter: topic, Qos: 2, RetainAsPublished: true})
				norap, _ := dialRaw(t, tg, 5, uniq("norap"), nil)
				norap.mustSubscribe(0, packets.Subscription{Filter: topic, Qos: 2})
				// mochi sends retained messages after the SUBACK: wait until
				// that is over, or the message below may come as retained.
				rap.barrier(0)
				norap.barrier(0)
				pub, _ := dialRaw(t, tg, 5, uniq("pub"), nil)
				pub.publish(topic, payload, qos, true, nil)
				if got := rap.waitFor("message", isPublishOn(topic)); !got.FixedHeader.Retain {
					t.Error("RETAIN 0 with Retain As Published 1, want 1 [MQTT-3.3.1-13]")
				}
				if got := norap.waitFor("message", isPublishOn(topic)); got.FixedHeader.Retain {
					t.Error("RETAIN 1 with Retain As Published 0, want 0 [MQTT-3.3.1-12]")
				}
				pub.publish(topic, nil, 0, true, nil)
			})
		}
	})
}

// TestRetainHandling: Retain Handling 0 sends the retained messages on
// every SUBSCRIBE [MQTT-3.3.1-9], 1 only when the subscription is new
// [MQTT-3.3.1-10], 2 never [MQTT-3.3.1-11].
func TestRetainHandling(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		topic, payload := topicOf("telemetry")
		pub, _ := dialRaw(t, tg, 5, uniq("pub"), nil)
		pub.mustSubscribe(0, packets.Subscription{Filter: topic})
		pub.publish(topic, payload, 0, true, nil)
		pub.waitFor("own retained message", isPublishOn(topic)) // it is stored now
		t.Cleanup(func() { pub.publish(topic, nil, 0, true, nil) })

		// count subscribes with rh and returns the retained messages sent.
		count := func(c *rawClient, rh byte) int {
			t.Helper()
			c.mustSubscribe(0, packets.Subscription{Filter: topic, Qos: 1, RetainHandling: rh})
			c.barrier(0)
			return len(c.publishes(topic))
		}
		c0, _ := dialRaw(t, tg, 5, uniq("rh0"), nil)
		if n := count(c0, 0); n != 1 {
			t.Errorf("retain handling 0, new subscription: %d retained messages, want 1 [MQTT-3.3.1-9]", n)
		}
		if n := count(c0, 0); n != 1 {
			t.Errorf("retain handling 0, existing subscription: %d retained messages, want 1 [MQTT-3.3.1-9]", n)
		}
		c1, _ := dialRaw(t, tg, 5, uniq("rh1"), nil)
		if n := count(c1, 1); n != 1 {
			t.Errorf("retain handling 1, new subscription: %d retained messages, want 1 [MQTT-3.3.1-10]", n)
		}
		if n := count(c1, 1); n != 0 {
			t.Errorf("retain handling 1, existing subscription: %d retained messages, want 0 [MQTT-3.3.1-10]", n)
		}
		c2, _ := dialRaw(t, tg, 5, uniq("rh2"), nil)
		if n := count(c2, 2); n != 0 {
			t.Errorf("retain handling 2: %d retained messages, want 0 [MQTT-3.3.1-11]", n)
		}
	})
}

// TestSubscriptionIdentifiers: a message matching several subscriptions
// of one client carries the identifier of each that has one
// [MQTT-3.3.4-3] [MQTT-3.3.4-4] (a multi-byte variable byte integer
// included); a subscription without one adds none.
func TestSubscriptionIdentifiers(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for qos := byte(0); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
				t.Parallel()
				dev := uniq("dev")
				topic := "telemetry/" + dev + "/env"
				sub, _ := dialRaw(t, tg, 5, uniq("sub"), nil)
				sub.mustSubscribe(7, packets.Subscription{Filter: "telemetry/" + dev + "/+", Qos: 2})
				sub.mustSubscribe(300, packets.Subscription{Filter: "telemetry/+/env", Qos: 2})
				plain, _ := dialRaw(t, tg, 5, uniq("plain"), nil)
				plain.mustSubscribe(0, packets.Subscription{Filter: topic, Qos: 2})
				pub, _ := dialRaw(t, tg, 5, uniq("pub"), nil)
				pub.publish(topic, []byte(`{"temp":1}`), qos, false, nil)
				// Other tests publish on telemetry/+/env too: take ours.
				ours := isPublishOn(topic)
				got := sub.waitFor("message", ours)
				ids := slices.Sorted(slices.Values(got.Properties.SubscriptionIdentifier))
				if !slices.Equal(ids, []int{7, 300}) {
					t.Errorf("subscription identifiers %v, want [7 300] [MQTT-3.3.4-4]", ids)
				}
				if got := plain.waitFor("message", ours); len(got.Properties.SubscriptionIdentifier) > 0 {
					t.Errorf("subscription identifiers %v on a subscription without one", got.Properties.SubscriptionIdentifier)
				}
			})
		}
	})
}

// TestSubscriptionIdentifierRetained: a retained message sent because of a
// new subscription carries that subscription's identifier [MQTT-3.3.4-3]
// (§3.8.2.1.2: the identifier is associated with the subscription and
// returned with any message it matches).
func TestSubscriptionIdentifierRetained(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		topic, payload := topicOf("telemetry")
		pub := storeRetained(t, tg, topic, payload, 0, nil)
		t.Cleanup(func() { pub.publish(topic, nil, 0, true, nil) })
		sub, _ := dialRaw(t, tg, 5, uniq("sub"), nil)
		sub.mustSubscribe(42, packets.Subscription{Filter: topic, Qos: 1})
		got := sub.waitFor("retained message", isPublishOn(topic))
		if !slices.Equal(got.Properties.SubscriptionIdentifier, []int{42}) {
			mochiDeviation(t, "server.go publishRetainedToClient passes the new subscription with its Identifier but without Identifiers, and publishToClient reads only Identifiers: retained messages come without the subscription identifier [MQTT-3.3.4-3]")
			t.Errorf("retained message with subscription identifiers %v, want [42] [MQTT-3.3.4-3]", got.Properties.SubscriptionIdentifier)
		}
	})
}
