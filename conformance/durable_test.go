package conformance

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// httpGet fetches a path of the gateway's HTTP API.
func httpGet(t *testing.T, tg target, path string) *http.Response {
	t.Helper()
	c := http.Client{Timeout: wait}
	resp, err := c.Get("http://" + tg.http + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	return resp
}

// storedReadings reads runnel_ingest_readings_total{listener="mqtt"}:
// readings stored durably in the WAL.
func storedReadings(t *testing.T, tg target) float64 {
	t.Helper()
	sc := bufio.NewScanner(httpGet(t, tg, "/metrics").Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "runnel_ingest_readings_total{") && strings.Contains(line, `listener="mqtt"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return v
		}
	}
	t.Fatal(`no runnel_ingest_readings_total{listener="mqtt"} in /metrics`)
	return 0
}

// TestDurableBeforeAck: the gateway deliberately differs from a plain
// broker by acknowledging a QoS 1/2 telemetry publish only once its
// readings are in the WAL (DESIGN, ingest package doc): when the PUBACK or
// PUBREC arrives, runnel_ingest_readings_total already counts them. The
// bare broker stores nothing; it has no such promise to check.
func TestDurableBeforeAck(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		if !tg.gateway {
			t.Skip("the bare broker stores nothing: durability before the ack is the gateway's own promise")
		}
		for _, version := range []byte{4, 5} {
			for qos := byte(1); qos <= 2; qos++ {
				t.Run(fmt.Sprintf("v%d/qos%d", version, qos), func(t *testing.T) {
					// Not parallel with each other: one counter, read before and after.
					topic := "telemetry/" + uniq("dev") + "/env"
					c, _ := dialRaw(t, tg, version, uniq("durable"), nil)
					before := storedReadings(t, tg)
					if ack := c.publish(topic, []byte(`{"a":1,"b":2,"c":3}`), qos, false, nil); ack.ReasonCode != 0 {
						t.Fatalf("ack %#x, want 0x00", ack.ReasonCode)
					}
					// Other tests store readings too: the counter can only
					// have grown by more.
					if after := storedReadings(t, tg); after < before+3 {
						t.Errorf("after the ack %v readings stored, want at least %v", after, before+3)
					}
				})
			}
		}
	})
}

// TestDeadLetter: on the gateway a telemetry payload with no usable
// reading is counted and kept in the dead-letter log (GET /api/v1/rejects)
// on every protocol version: a 3.1.1 client cannot be told (its PUBACK has
// no reason code), an MQTT 5 client also gets 0x99 (TestBadPayloadReason).
// The bare broker has no dead letters.
func TestDeadLetter(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		if !tg.gateway {
			t.Skip("the bare broker does not decode payloads and has no dead-letter log")
		}
		for _, version := range []byte{4, 5} {
			for _, bp := range badPayloads {
				t.Run(fmt.Sprintf("v%d/%s", version, bp.name), func(t *testing.T) {
					t.Parallel()
					id := uniq("dead")
					topic := "telemetry/" + uniq("dev") + "/env"
					c, _ := dialRaw(t, tg, version, id, nil)
					ack := c.publish(topic, []byte(bp.payload), 1, false, nil)
					if version == 4 && ack.ReasonCode != 0 {
						t.Errorf("3.1.1 PUBACK carries %#x", ack.ReasonCode)
					}
					var last string
					pollUntil(t, 5*time.Second, func() (bool, string) {
						var body struct {
							Rejects []struct {
								Topic string `json:"topic"`
							} `json:"rejects"`
						}
						resp := httpGet(t, tg, "/api/v1/rejects?listener=mqtt&source="+url.QueryEscape(id))
						if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
							t.Fatalf("decode /api/v1/rejects: %v", err)
						}
						last = fmt.Sprint(body.Rejects)
						return len(body.Rejects) == 1 && body.Rejects[0].Topic == topic, "rejects of " + id + ": " + last
					})
				})
			}
		}
	})
}

// TestQoS2Exchange: a QoS 2 telemetry publish is acknowledged (PUBREC)
// with success once stored; its PUBREL/PUBCOMP exchange completes
// [MQTT-4.3.3-8] [MQTT-4.3.3-9].
func TestQoS2Exchange(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		c, _ := dialRaw(t, tg, 5, uniq("q2"), nil)
		c.setAutoAck(false)
		pk := c.publishPacket("telemetry/"+uniq("dev")+"/env", []byte(`{"temp":1}`), 2, false, nil)
		c.send(pk)
		rec := c.waitFor("PUBREC", isAck(packets.Pubrec, pk.PacketID))
		if rec.ReasonCode != 0 {
			t.Fatalf("PUBREC %#x, want 0x00", rec.ReasonCode)
		}
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: pk.PacketID})
		if comp := c.waitFor("PUBCOMP", isAck(packets.Pubcomp, pk.PacketID)); comp.ReasonCode != 0 {
			t.Errorf("PUBCOMP %#x, want 0x00", comp.ReasonCode)
		}
	})
}
