package conformance

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// pahoClient is a paho.golang (MQTT 5) client and the messages it received.
type pahoClient struct {
	t    *testing.T
	c    *paho.Client
	msgs chan *paho.Publish
}

// dialPaho connects a paho.golang client with Clean Start; edit changes
// the CONNECT before it is sent.
func dialPaho(t *testing.T, tg target, id string, edit func(*paho.Connect)) *pahoClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", tg.addr, wait)
	if err != nil {
		t.Fatalf("dial %s: %v", tg.addr, err)
	}
	p := &pahoClient{t: t, msgs: make(chan *paho.Publish, 1024)}
	p.c = paho.NewClient(paho.ClientConfig{
		ClientID: id,
		Conn:     conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(r paho.PublishReceived) (bool, error) {
				select {
				case p.msgs <- r.Packet:
				default:
					t.Errorf("%s: more than %d messages unread", id, cap(p.msgs))
				}
				return true, nil
			},
		},
	})
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 60}
	if edit != nil {
		edit(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ca, err := p.c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		t.Fatalf("%s: connect: %v", id, err)
	}
	if ca.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK reason %#x", id, ca.ReasonCode)
	}
	t.Cleanup(func() {
		p.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		select {
		case <-p.c.Done():
		case <-time.After(wait):
			t.Errorf("%s: paho client did not stop", id)
		}
	})
	return p
}

func ctxWait(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// subscribe subscribes to one filter and fails unless it is granted.
func (p *pahoClient) subscribe(opt paho.SubscribeOptions) {
	p.t.Helper()
	sa, err := p.c.Subscribe(ctxWait(p.t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{opt}})
	if err != nil {
		p.t.Fatalf("subscribe %q: %v", opt.Topic, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		p.t.Fatalf("subscribe %q: SUBACK reasons %v", opt.Topic, sa.Reasons)
	}
}

// publish publishes and, for QoS 1/2, fails unless the ack has a success
// reason.
func (p *pahoClient) publish(pb *paho.Publish) {
	p.t.Helper()
	res, err := p.c.Publish(ctxWait(p.t), pb)
	if err != nil {
		p.t.Fatalf("publish %q at QoS %d: %v", pb.Topic, pb.QoS, err)
	}
	if pb.QoS > 0 && res.ReasonCode >= 0x80 {
		p.t.Fatalf("publish %q at QoS %d: reason %#x", pb.Topic, pb.QoS, res.ReasonCode)
	}
}

// next returns the next message received on topic (others are dropped).
func (p *pahoClient) next(topic string) *paho.Publish {
	p.t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		select {
		case m := <-p.msgs:
			if m.Topic == topic {
				return m
			}
		case <-deadline.C:
			p.t.Fatalf("no message on %q within %s", topic, wait)
		}
	}
}
