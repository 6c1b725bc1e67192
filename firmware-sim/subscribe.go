package firmwaresim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// SubscribeOptions configure Subscribe.
type SubscribeOptions struct {
	Broker             string // host:port or tcp://host:port
	Topic              string // a topic filter, e.g. alerts/#
	QoS                byte
	Username, Password string
	ClientID           string // "" : firmware-sim-sub-<unix nanoseconds>
	// Count ends Subscribe after this many messages; 0: until ctx ends.
	Count int
}

// Subscribe prints every message on opt.Topic to out, one line each:
//
//	<topic> retained=<true|false> <payload>
//
// Topic and payload are printed as they are when they are printable UTF-8
// on one line, else Go-quoted, so one message is always one line. It
// returns nil when ctx ends or Count messages were printed.
func Subscribe(ctx context.Context, opt SubscribeOptions, out io.Writer) error {
	u, err := brokerURL(opt.Broker)
	if err != nil {
		return fmt.Errorf("broker %q: %w", opt.Broker, err)
	}
	if opt.Topic == "" {
		return errors.New("empty topic filter")
	}
	if opt.QoS > 2 {
		return fmt.Errorf("qos %d: want 0, 1 or 2", opt.QoS)
	}
	if opt.ClientID == "" {
		opt.ClientID = "firmware-sim-sub-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	var (
		mu   sync.Mutex
		n    int
		full = make(chan struct{})
	)
	handler := func(_ paho.Client, m paho.Message) {
		mu.Lock()
		defer mu.Unlock()
		if opt.Count > 0 && n >= opt.Count {
			return
		}
		fmt.Fprintf(out, "%s retained=%t %s\n", printable([]byte(m.Topic())), m.Retained(), printable(m.Payload()))
		n++
		if n == opt.Count {
			close(full)
		}
	}
	o := paho.NewClientOptions().AddBroker(u).SetClientID(opt.ClientID).SetCleanSession(true).
		SetAutoReconnect(true).SetConnectTimeout(10 * time.Second).SetOrderMatters(true)
	if opt.Username != "" {
		o.SetUsername(opt.Username).SetPassword(opt.Password)
	}
	// Resubscribe after every (re)connect: a clean session forgets it.
	// paho runs this handler in a goroutine of its own, so it may wait.
	subscribed := make(chan error, 1)
	o.SetOnConnectHandler(func(c paho.Client) {
		tok := c.Subscribe(opt.Topic, opt.QoS, handler)
		err := waitToken(ctx, tok, 10*time.Second)
		if st, ok := tok.(*paho.SubscribeToken); ok && err == nil && st.Result()[opt.Topic] == 0x80 {
			err = errors.New("the broker refused the subscription (SUBACK 0x80)")
		}
		select {
		case subscribed <- err:
		default:
		}
	})
	c := paho.NewClient(o)
	if err := waitToken(ctx, c.Connect(), 10*time.Second); err != nil {
		return fmt.Errorf("connect to %s: %w", opt.Broker, err)
	}
	defer c.Disconnect(250)
	select {
	case err := <-subscribed:
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("subscribe %s: %w", opt.Topic, err)
		}
	case <-ctx.Done():
		return nil
	}
	select {
	case <-ctx.Done():
	case <-full:
	}
	return nil
}

// printable returns b as is when it is valid UTF-8 without control
// characters, else quoted.
func printable(b []byte) string {
	if !utf8.Valid(b) {
		return strconv.Quote(string(b))
	}
	for _, r := range string(b) {
		if unicode.IsControl(r) {
			return strconv.Quote(string(b))
		}
	}
	return string(b)
}
