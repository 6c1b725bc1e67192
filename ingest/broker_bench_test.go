package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/runnel-iot/runnel/wal"
)

// startBareBroker is the baseline: a mochi broker whose only hook allows
// everything and stores nothing, acknowledging from the read loop.
func startBareBroker(b *testing.B) string {
	b.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		b.Fatal(err)
	}
	ln := listeners.NewTCP(listeners.Config{ID: "bare", Address: "127.0.0.1:0"})
	if err := srv.AddListener(ln); err != nil {
		b.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	return ln.Address()
}

// mqttPayload is one JSON message of n readings.
func mqttPayload(n int) []byte {
	var sb strings.Builder
	sb.WriteString("{")
	for i := range n {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `"f%d":%d.5`, i, 20+i)
	}
	sb.WriteString("}")
	return []byte(sb.String())
}

// publishLoad has each of pubs paho clients publish its share of total
// messages at qos, keeping at most window unacknowledged, and returns when
// every message is acknowledged (QoS 1) or written (QoS 0).
func publishLoad(b *testing.B, addr string, pubs, total, window int, qos byte, payload []byte) {
	b.Helper()
	clients := make([]paho.Client, pubs)
	for i := range clients {
		o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("bench-%d-%d", i, time.Now().UnixNano())).
			SetAutoReconnect(false).SetWriteTimeout(30 * time.Second)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("connect: %v", tok.Error())
		}
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	}()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, c := range clients {
		n := total / pubs
		if i < total%pubs {
			n++
		}
		wg.Go(func() {
			topic := fmt.Sprintf("telemetry/dev-%d/env", i)
			ring := make([]paho.Token, window)
			for k := range n {
				if t := ring[k%window]; t != nil {
					t.Wait()
				}
				ring[k%window] = c.Publish(topic, qos, false, payload)
			}
			for _, t := range ring {
				if t != nil && (!t.WaitTimeout(60*time.Second) || t.Error() != nil) {
					b.Errorf("publish: %v", t.Error())
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
}

// BenchmarkMQTT compares Runnel's broker (every telemetry message decoded
// and made durable in a real WAL, batch sync, before its PUBACK) with a
// bare mochi broker in the same run. Figures: msgs/s and readings/s.
// Targets (ingest issue): QoS 1 msgs/s ≥ 85 % of bare; 10 readings per
// message ≥ 5 × the readings/s of 1; 1,000 in flight ≥ 20 × 1 in flight.
func BenchmarkMQTT(b *testing.B) {
	type load struct {
		name           string
		pubs, window   int
		qos            byte
		readingsPerMsg int
		subscribed     bool // a QoS 0 subscriber to telemetry/# gets every message
	}
	var loads []load
	for _, qos := range []byte{0, 1} {
		for _, pubs := range []int{1, 4, 16} {
			loads = append(loads, load{fmt.Sprintf("qos%d/pubs=%d/readings=1", qos, pubs), pubs, 1000, qos, 1, false})
		}
	}
	loads = append(loads,
		load{"qos1/pubs=4/readings=10", 4, 1000, 1, 10, false},
		load{"qos1/pubs=1/inflight=1", 1, 1, 1, 1, false},
		load{"qos1/pubs=1/inflight=1000", 1, 1000, 1, 1, false},
		load{"qos1/pubs=4/readings=1/subscribed", 4, 1000, 1, 1, true},
	)
	for _, ld := range loads {
		for _, target := range []string{"bare", "runnel"} {
			b.Run(target+"/"+ld.name, func(b *testing.B) {
				var addr string
				var app *walAppender
				if target == "bare" {
					addr = startBareBroker(b)
				} else {
					app = openTestWAL(b)
					cfg := DefaultBrokerConfig()
					cfg.Addr = "127.0.0.1:0"
					stats, sink := &Stats{}, &rejectBox{}
					br, err := NewBroker(cfg, app, sink, stats, nil)
					if err != nil {
						b.Fatal(err)
					}
					if err := br.Start(); err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { br.Close() })
					addr = br.Addr("tcp").String()
				}
				if ld.subscribed {
					subscribeAll(b, addr)
				}
				start, cpu0 := time.Now(), processCPU()
				publishLoad(b, addr, ld.pubs, b.N, ld.window, ld.qos, mqttPayload(ld.readingsPerMsg))
				el := time.Since(start).Seconds()
				b.ReportMetric(float64(b.N)/el, "msgs/s")
				// The process's CPU (broker and paho clients alike) per
				// message: compare it between bare and runnel of one load.
				b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/msg")
				b.ReportMetric(float64(b.N*ld.readingsPerMsg)/el, "readings/s")
				if app != nil && ld.qos == 1 {
					if got := app.log.Stats().Records; got < uint64(b.N) {
						b.Fatalf("%d of %d acknowledged messages in the WAL", got, b.N)
					}
					b.ReportMetric(float64(app.log.Stats().Fsyncs)/el, "fsyncs/s")
				}
			})
		}
	}
}

// subscribeAll connects a paho client subscribed to telemetry/# at QoS 0
// for the rest of the benchmark.
func subscribeAll(b *testing.B, addr string) {
	b.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("bench-sub-%d", time.Now().UnixNano())).
		SetAutoReconnect(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("connect: %v", tok.Error())
	}
	b.Cleanup(func() { c.Disconnect(0) })
	if tok := c.Subscribe("telemetry/#", 0, func(paho.Client, paho.Message) {}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("subscribe: %v", tok.Error())
	}
}

// processCPU returns the user and system CPU time this process used, in
// nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// nullAppender takes every batch at once and stores nothing: the publish
// path's benchmarks measure the broker, not the disk.
type nullAppender struct{ readings atomic.Uint64 }

func (a *nullAppender) Append(_ context.Context, b *wal.Batch, done func(error)) error {
	a.readings.Add(uint64(len(b.Readings)))
	done(nil)
	return nil
}

func (a *nullAppender) TryAppend(b *wal.Batch, done func(error)) error {
	a.readings.Add(uint64(len(b.Readings)))
	done(nil)
	return nil
}

// qos0Packets are the bench's QoS 0 publishes, as mochi reads them: one
// per device topic, one small JSON reading each.
func qos0Packets(devices int) []packets.Packet {
	pks := make([]packets.Packet, devices)
	for i := range pks {
		pks[i] = packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish},
			TopicName:   fmt.Sprintf("telemetry/dev-%04d/env", i),
			Payload:     []byte(`{"ts":1700000000000,"temp":21.5}`),
		}
	}
	return pks
}

// injectTarget is a broker that publishes are injected into
// (Server.InjectPacket from a connected, non-inline client): the gateway's
// (runnel, storing into app) or the bare baseline's (allow-all ACL, a
// no-op OnPublish).
func injectTarget(tb testing.TB, target string, app Appender) (*mqtt.Server, *mqtt.Client) {
	tb.Helper()
	var srv *mqtt.Server
	if target == "bare" {
		srv = mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
		for _, h := range []mqtt.Hook{new(auth.AllowHook), new(noopPublishHook)} {
			if err := srv.AddHook(h, nil); err != nil {
				tb.Fatal(err)
			}
		}
	} else {
		cfg := DefaultBrokerConfig()
		cfg.Addr = "127.0.0.1:0"
		br, err := NewBroker(cfg, app, &rejectBox{}, &Stats{}, nil)
		if err != nil {
			tb.Fatal(err)
		}
		if err := br.Start(); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { br.Close() })
		srv = br.srv
	}
	cl := srv.NewClient(nil, "tcp", "bench-publisher", false)
	cl.Properties.ProtocolVersion = 4
	cl.State.Inflight.ResetReceiveQuota(1000)
	return srv, cl
}

// BenchmarkMQTTPublishPath is mochi's processing of one QoS 0 publish
// (topic checks, every hook mochi calls per packet, fan-out) with the
// gateway's hook and with the bare baseline's, on the bench's load: 1,000
// device topics round-robin, one small JSON reading each, nobody
// subscribed. No socket, no disk (readings go to a nullAppender), so the
// difference is the hook path's own cost; cpu-ns/msg counts the process's
// CPU, the coalescer's flusher included.
func BenchmarkMQTTPublishPath(b *testing.B) {
	pks := qos0Packets(1000)
	for _, target := range []string{"bare", "runnel"} {
		b.Run(target, func(b *testing.B) {
			srv, cl := injectTarget(b, target, &nullAppender{})
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			for i := range b.N {
				if err := srv.InjectPacket(cl, pks[i%len(pks)]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/msg")
		})
	}
}

// noopPublishHook is the bare baseline's publish hook (firmware-sim's
// bare broker has the same): it passes every publish on untouched.
type noopPublishHook struct{ mqtt.HookBase }

func (h *noopPublishHook) ID() string           { return "noop" }
func (h *noopPublishHook) Provides(b byte) bool { return b == mqtt.OnPublish }
func (h *noopPublishHook) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	return pk, nil
}
