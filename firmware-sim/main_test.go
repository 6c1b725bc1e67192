package firmwaresim

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"

	"github.com/runnel-iot/runnel/ingest"
	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor is testutil.WaitFor.
var waitFor = testutil.WaitFor

// syncBuffer is a buffer safe for a writer and a polling reader.
type syncBuffer = testutil.SyncBuffer

// captured is one publish seen by the broker.
type captured struct {
	client, topic string
	payload       []byte
}

// brokerHook counts connects and keeps the publishes a broker receives.
// gate, when set, holds every publish until it is closed.
type brokerHook struct {
	mqtt.HookBase
	connects atomic.Int64
	gate     chan struct{}

	mu   sync.Mutex
	msgs []captured
}

func (h *brokerHook) ID() string { return "test-counter" }
func (h *brokerHook) Provides(b byte) bool {
	return b == mqtt.OnConnect || b == mqtt.OnPublish
}

func (h *brokerHook) OnConnect(*mqtt.Client, packets.Packet) error {
	h.connects.Add(1)
	return nil
}

func (h *brokerHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.gate != nil {
		<-h.gate
	}
	h.mu.Lock()
	h.msgs = append(h.msgs, captured{client: cl.ID, topic: pk.TopicName, payload: bytes.Clone(pk.Payload)})
	h.mu.Unlock()
	return pk, nil
}

func (h *brokerHook) received() []captured {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]captured(nil), h.msgs...)
}

// startBroker runs a bare broker on 127.0.0.1:0 with a brokerHook.
func startBroker(t *testing.T, gate chan struct{}) (*BareBroker, *brokerHook) {
	t.Helper()
	h := &brokerHook{gate: gate}
	b, err := StartBareBroker("127.0.0.1:0", nil, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, h
}

// testNow is the receive time given to the decoders: well after every
// simulated event time, with the future check off.
var decodeOpt = ingest.Options{NowNs: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(), MaxFutureSkew: -1}

// decoders decodes payloads as the gateway does.
type decoders struct {
	json *ingest.JSON
	bio  *ingest.Biosignal
	lp   *ingest.LineProtocol
}

func newDecoders(t testing.TB) *decoders {
	bio, err := ingest.NewBiosignal(ingest.DefaultBiosignalConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &decoders{json: ingest.NewJSON(), bio: bio, lp: ingest.NewLineProtocol()}
}

// decode decodes payload in format f (received on topic) and returns the
// readings and the decoder's report.
func (d *decoders) decode(f Format, topic string, payload []byte) ([]wal.Reading, ingest.Result) {
	var res ingest.Result
	var rs []wal.Reading
	switch f {
	case FormatJSON:
		rs = d.json.Decode(nil, topic, payload, decodeOpt, &res)
	case FormatBiosignal:
		rs = d.bio.Decode(nil, topic, payload, decodeOpt, &res)
	default:
		rs = d.lp.Decode(nil, payload, decodeOpt, &res)
	}
	return rs, res
}

// formatOfTopic maps an MQTT topic to its format, as the gateway's default
// topic table does.
func formatOfTopic(topic string) Format {
	switch {
	case strings.HasPrefix(topic, "telemetry/"):
		return FormatJSON
	case strings.HasPrefix(topic, "biosignal/"):
		return FormatBiosignal
	}
	return FormatLineProtocol
}

// tagValue returns the value of tag key in a series key (no escapes in
// simulated keys).
func tagValue(series, key string) string {
	for _, kv := range strings.Split(series, ",")[1:] {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
