package ingest

import (
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/runnel-iot/runnel/wal"
)

// TestDecoderRegistry checks that every format is found by its name, and
// that an unknown name is refused with the list of known ones.
func TestDecoderRegistry(t *testing.T) {
	if got, want := strings.Join(Codecs(), ","), "biosignal,json,line_protocol"; got != want {
		t.Fatalf("Codecs() = %s, want %s", got, want)
	}
	cfg := DecoderConfig{Biosignal: DefaultBiosignalConfig()}
	inputs := map[string]struct {
		topic string
		body  string
		want  int
	}{
		CodecJSON:         {"telemetry/dev-1/env", `{"ts":1700000000000,"temp":21.5,"hum":40}`, 2},
		CodecBiosignal:    {"biosignal/dev-1/ecg", `{"ts":1700000000000,"rate_hz":250,"samples":[0.1,0.2,0.3]}`, 3},
		CodecLineProtocol: {"", "env,device=dev-1 temp=21.5,hum=40i 1700000000000000000", 2},
	}
	for _, name := range Codecs() {
		in, ok := inputs[name]
		if !ok {
			t.Errorf("codec %q has no case here", name)
			continue
		}
		d, err := NewDecoder(name, cfg)
		if err != nil {
			t.Fatalf("NewDecoder(%q): %v", name, err)
		}
		var res Result
		got := d.Decode(nil, in.topic, []byte(in.body), Options{NowNs: 1700000000000000000}, &res)
		if len(got) != in.want || res.Problems() != 0 {
			t.Errorf("%s: %d readings, %d problems (%v), want %d and none", name, len(got), res.Problems(), res.Err(), in.want)
		}
	}
	if _, err := NewDecoder("xml", cfg); err == nil || !strings.Contains(err.Error(), `"xml" is not one of biosignal, json, line_protocol`) {
		t.Errorf("NewDecoder(xml): %v", err)
	}
	if _, err := NewDecoder(CodecBiosignal, DecoderConfig{}); err == nil {
		t.Error("a biosignal decoder with a zero config was built")
	}
}

// TestMQTTDecodeAllocs keeps the MQTT decode dispatch (a pooled decoder
// through the registry's interface) from adding allocations to the
// decoder's own (none for JSON and biosignal; line protocol's library
// allocates its tokenizer): the QoS 1 hot path runs it for every publish.
func TestMQTTDecodeAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	h, err := newIngestHook(DefaultBrokerConfig(), nil, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		codec, topic, body string
		own                float64 // the decoder's own allocations
	}{
		{CodecJSON, "telemetry/dev-1/env", `{"temp":21.5,"hum":40.1}`, 0},
		{CodecJSON, "telemetry/dev-1/env", `{"temp":21.5,"tags":{"site":"a"}}`, 0}, // the memo: no copy of the tags per message
		{CodecBiosignal, "biosignal/dev-1/ecg", `{"rate_hz":250,"samples":[0.1,0.2]}`, 0},
		{CodecLineProtocol, "lp/x", "env,device=dev-1 temp=21.5", 1},
	} {
		pk := packets.Packet{TopicName: tc.topic, Payload: []byte(tc.body)}
		var memo SeriesMemo
		pool := h.decoders[tc.codec]
		var dst []wal.Reading
		decode := func() { // as OnPublish does
			d := pool.Get().(*pooledDecoder)
			d.batch.Readings = h.decodeWith(d, pk.TopicName, pk.Payload, 1700000000000000000, &memo, d.batch.Readings[:0])
			dst = d.batch.Readings
			if len(dst) == 0 || d.res.Problems() != 0 {
				t.Fatalf("%s: %d readings, %v", tc.codec, len(dst), d.res.Err())
			}
			releaseDecoder(pool, d)
		}
		decode() // warm the pool and the intern cache
		if allocs := testing.AllocsPerRun(200, decode); allocs != tc.own {
			t.Errorf("%s: %v allocations per decode, want the decoder's own %v", tc.codec, allocs, tc.own)
		}
	}
}
