package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/runnel-iot/runnel/alerts"
)

// BenchmarkAlertLatency measures reading-to-alert latency: from the
// publish of a crossing reading (MQTT QoS 1, a raw-reading rule with no
// `for`) to the receipt of the firing event by a paho subscriber on
// alerts/#. Each op is one alert: the crossing reading, its firing event,
// then a clearing reading and its resolved event (not timed). idle: no
// other load; load: ingestRate readings/s of batched line protocol over
// POST /api/v2/write, on 10,000 series, at the same time.
//
//	go test -run '^$' -bench BenchmarkAlertLatency -benchtime 300x ./gateway/
func BenchmarkAlertLatency(b *testing.B) {
	for _, withLoad := range []bool{false, true} {
		name := map[bool]string{false: "idle", true: "load"}[withLoad]
		b.Run(name, func(b *testing.B) {
			above, clear := 100.0, 50.0
			g, stop := benchGateway(b, func(c *Config) {
				c.Alerts.Rules = []alerts.Rule{{Name: "probe_high", Match: alerts.Match{Measurement: "probe", Field: "v"},
					Op: ">", Threshold: &above, Clear: &clear, Severity: "critical"}}
			})
			defer stop()
			mqtt := "tcp://" + g.broker.Addr("tcp").String()
			events := make(chan string, 16)
			sub := paho.NewClient(paho.NewClientOptions().AddBroker(mqtt).SetClientID("bench-watch").SetAutoReconnect(false))
			if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				b.Fatal(tok.Error())
			}
			defer sub.Disconnect(0)
			if tok := sub.Subscribe("alerts/#", 1, func(_ paho.Client, m paho.Message) {
				var ev struct{ Type string }
				if json.Unmarshal(m.Payload(), &ev) == nil && !m.Retained() {
					events <- ev.Type
				}
			}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				b.Fatal(tok.Error())
			}
			pub := paho.NewClient(paho.NewClientOptions().AddBroker(mqtt).SetClientID("bench-probe").SetAutoReconnect(false))
			if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				b.Fatal(tok.Error())
			}
			defer pub.Disconnect(0)
			var lastTs int64
			send := func(v float64) {
				// Event time moves on strictly, so no probe reading is out
				// of order for the rule.
				lastTs = max(time.Now().UnixMilli(), lastTs+1)
				tok := pub.Publish("telemetry/probe-1/probe", 1, false, fmt.Sprintf(`{"ts":%d,"v":%g}`, lastTs, v))
				if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					b.Fatalf("publish: %v", tok.Error())
				}
			}
			await := func(want string) {
				select {
				case got := <-events:
					if got != want {
						b.Fatalf("alert event %q, want %q", got, want)
					}
				case <-time.After(10 * time.Second):
					b.Fatalf("no %s event within 10s", want)
				}
			}
			var load *ingestLoad
			if withLoad {
				base := "http://" + g.Addr()
				benchFeed(b, g, base, 10_000)
				load = &ingestLoad{url: base + "/api/v2/write", series: 10_000, client: &http.Client{Timeout: 10 * time.Second}}
				load.start(b)
				defer load.stop(b)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				send(150)
				await("firing")
				lat = append(lat, time.Since(t0))
				send(10)
				await("resolved")
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
			if load != nil {
				b.ReportMetric(load.rate(), "ingest-readings/s")
			}
		})
	}
}
