package conformance

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
)

// v3Client is a paho.mqtt.golang (MQTT 3.1.1) client and what it received.
type v3Client struct {
	t    *testing.T
	c    paho3.Client
	msgs chan paho3.Message
}

func dialV3(t *testing.T, tg target, id string, clean bool) *v3Client {
	t.Helper()
	v := &v3Client{t: t, msgs: make(chan paho3.Message, 1024)}
	opts := paho3.NewClientOptions().AddBroker("tcp://" + tg.addr).SetClientID(id).
		SetProtocolVersion(4).SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(wait).SetKeepAlive(60 * time.Second).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ paho3.Client, m paho3.Message) {
			select {
			case v.msgs <- m:
			default:
				t.Errorf("%s: more than %d messages unread", id, cap(v.msgs))
			}
		})
	v.c = paho3.NewClient(opts)
	v.done(v.c.Connect(), "connect")
	t.Cleanup(func() { v.c.Disconnect(100) })
	return v
}

// done waits for a token and fails the test on its error.
func (v *v3Client) done(tok paho3.Token, what string) {
	v.t.Helper()
	if !tok.WaitTimeout(wait) {
		v.t.Fatalf("%s: no answer within %s", what, wait)
	}
	if err := tok.Error(); err != nil {
		v.t.Fatalf("%s: %v", what, err)
	}
}

// subscribe subscribes with the default handler (nil callback), so
// messages of a resumed session reach msgs too.
func (v *v3Client) subscribe(filter string, qos byte) {
	v.t.Helper()
	v.done(v.c.Subscribe(filter, qos, nil), "subscribe "+filter)
}

func (v *v3Client) publish(topic string, qos byte, retain bool, payload []byte) {
	v.t.Helper()
	v.done(v.c.Publish(topic, qos, retain, payload), fmt.Sprintf("publish %s at QoS %d", topic, qos))
}

// barrier returns once the broker has fully handled what this client sent
// before: it publishes to a topic only this client subscribed and waits
// for that message (mochi handles one client's packets in order). After a
// SUBSCRIBE, this makes sure the broker's sending of retained messages for
// it is over, which mochi does after the SUBACK.
func (v *v3Client) barrier() {
	v.t.Helper()
	r := v.c.OptionsReader()
	marker := "conf/marker/" + r.ClientID()
	v.subscribe(marker, 0)
	v.publish(marker, 0, false, []byte("barrier"))
	v.next(marker)
}

func (v *v3Client) next(topic string) paho3.Message {
	v.t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		select {
		case m := <-v.msgs:
			if m.Topic() == topic {
				return m
			}
		case <-deadline.C:
			v.t.Fatalf("no message on %q within %s", topic, wait)
		}
	}
}

// TestV311PublishSubscribe (MQTT 3.1.1): a message reaches a subscriber
// with its payload, at the minimum of the published QoS and the granted
// one [MQTT-3.8.4-6], with RETAIN 0 when live [MQTT-3.3.1-9].
func TestV311PublishSubscribe(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, kind := range topicKinds {
			for qos := byte(0); qos <= 2; qos++ {
				t.Run(fmt.Sprintf("%s/qos%d", kind, qos), func(t *testing.T) {
					t.Parallel()
					topic, payload := topicOf(kind)
					sub2 := dialV3(t, tg, uniq("sub"), true)
					sub2.subscribe(topic, 2)
					sub0 := dialV3(t, tg, uniq("sub"), true)
					sub0.subscribe(topic, 0)
					sub2.barrier()
					sub0.barrier()
					pub := dialV3(t, tg, uniq("pub"), true)
					pub.publish(topic, qos, true, payload)
					for _, c := range []struct {
						v       *v3Client
						granted byte
					}{{sub2, 2}, {sub0, 0}} {
						m := c.v.next(topic)
						if !bytes.Equal(m.Payload(), payload) {
							t.Errorf("payload %q, want %q", m.Payload(), payload)
						}
						if want := min(qos, c.granted); m.Qos() != want {
							t.Errorf("granted QoS %d: delivered at QoS %d, want %d [MQTT-3.8.4-6]", c.granted, m.Qos(), want)
						}
						if m.Retained() {
							t.Error("a live message arrived with RETAIN 1 [MQTT-3.3.1-9]")
						}
					}
					// Retained: a new subscriber gets it with RETAIN 1 [MQTT-3.3.1-8].
					late := dialV3(t, tg, uniq("late"), true)
					late.subscribe(topic, 2)
					if m := late.next(topic); !m.Retained() || !bytes.Equal(m.Payload(), payload) {
						t.Errorf("retained message: RETAIN %v payload %q, want RETAIN 1 and %q [MQTT-3.3.1-8]", m.Retained(), m.Payload(), payload)
					}
					pub.publish(topic, 0, true, nil) // clear it [MQTT-3.3.1-10]
				})
			}
		}
	})
}

// TestV311PersistentSession (MQTT 3.1.1): with Clean Session 0, the
// subscriptions and the QoS 1/2 messages that arrive while the client is
// away are kept and delivered when it reconnects [MQTT-3.1.2-4]
// [MQTT-3.1.2-5], with Session Present 1 [MQTT-3.2.2-2].
func TestV311PersistentSession(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for qos := byte(1); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
				t.Parallel()
				topic, payload := topicOf("telemetry")
				id := uniq("persist")
				sub := dialV3(t, tg, id, false)
				sub.subscribe(topic, 2)
				sub.c.Disconnect(100)
				pub := dialV3(t, tg, uniq("pub"), true)
				pub.publish(topic, qos, false, payload)
				// The publish is acknowledged; on the gateway the delivery to
				// the stored session follows the PUBACK, so it may still be on
				// its way when the subscriber is back: both end in its queue.
				sub = dialV3(t, tg, id, false)
				if m := sub.next(topic); !bytes.Equal(m.Payload(), payload) || m.Qos() != qos {
					t.Errorf("queued message %q at QoS %d, want %q at %d [MQTT-3.1.2-5]", m.Payload(), m.Qos(), payload, qos)
				}
			})
		}
	})
}
