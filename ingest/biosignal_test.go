package ingest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/runnel-iot/runnel/wal"
)

func samplesJSON(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d.5", i)
	}
	return b.String()
}

func TestBiosignalTimestamps(t *testing.T) {
	d, err := NewBiosignal(DefaultBiosignalConfig())
	if err != nil {
		t.Fatal(err)
	}
	const ts = int64(1_700_000_000_000) * 1e6
	for _, c := range []struct {
		rate string
		n    int
		at   map[int]int64 // index → offset from ts
	}{
		{"250", 251, map[int]int64{0: 0, 1: 4e6, 2: 8e6, 249: 996e6, 250: 1e9}},
		{"360", 721, map[int]int64{0: 0, 1: 2777777, 2: 5555555, 3: 8333333, 359: 997222222, 360: 1e9, 720: 2e9}},
		{"0.5", 3, map[int]int64{1: 2e9, 2: 4e9}},
		{"3.3", 34, map[int]int64{33: 1e10}},
	} {
		body := `{"ts":1700000000000,"rate_hz":` + c.rate + `,"samples":[` + samplesJSON(c.n) + `]}`
		var res Result
		got := d.Decode(nil, "biosignal/pi-042/ecg", []byte(body), Options{NowNs: testNow + 100e9}, &res)
		if len(got) != c.n || res.Problems() != 0 {
			t.Fatalf("rate %s: %d readings, %v", c.rate, len(got), res.Err())
		}
		for i, want := range c.at {
			if got[i].TimeNs != ts+want || got[i].Value != float64(i)+0.5 ||
				got[i].Series != "ecg,device=pi-042" || got[i].Field != "value" {
				t.Errorf("rate %s sample %d: %+v, want offset %d", c.rate, i, got[i], want)
			}
		}
	}
}

func TestBiosignal(t *testing.T) {
	const ts = int64(1_700_000_000_000) * 1e6
	const s = "ecg,device=pi-042"
	cases := []struct {
		name     string
		body     string
		max      int
		want     []wal.Reading
		errs     []string
		rejected map[Reason]int
	}{
		{name: "tags and key order", body: `{"samples":[1,2],"tags":{"lead":"II"},"rate_hz":250,"ts":1700000000000,"extra":{"x":[1]}}`,
			want: []wal.Reading{r("ecg,device=pi-042,lead=II", "value", 1, ts), r("ecg,device=pi-042,lead=II", "value", 2, ts+4e6)}},
		{name: "no ts ends at receive time", body: `{"rate_hz":250,"samples":[1,2,3]}`,
			want: []wal.Reading{r(s, "value", 1, testNow-8e6), r(s, "value", 2, testNow-4e6), r(s, "value", 3, testNow)}},
		{name: "bad samples alone", body: `{"ts":1700000000000,"rate_hz":250,"samples":[1,null,"x",1e999,5]}`,
			want: []wal.Reading{r(s, "value", 1, ts), r(s, "value", 5, ts+16e6)},
			errs: []string{`line 1, column 48, element 1, field "samples": null is not a number`,
				`line 1, column 53, element 2, field "samples": string is not a number`,
				`line 1, column 57, element 3, field "samples": number 1e999 out of float64 range`},
			rejected: map[Reason]int{ReasonBadFieldType: 2, ReasonOutOfRange: 1}},
		{name: "future suffix", body: `{"ts":1700000059000,"rate_hz":1,"samples":[1,2,3,4]}`,
			want:     []wal.Reading{r(s, "value", 1, testNow+59e9), r(s, "value", 2, testNow+60e9)},
			errs:     []string{`element 2, field "samples": event time 2023-11-14T22:14:21Z is 1m1s after the receive time (max skew 1m0s); 2 samples from here rejected`},
			rejected: map[Reason]int{ReasonFutureTimestamp: 2}},
		{name: "missing rate", body: `{"samples":[1]}`,
			errs:     []string{`field "rate_hz": required member missing`},
			rejected: map[Reason]int{ReasonMissingField: 1}},
		{name: "missing samples", body: `{"rate_hz":1}`,
			errs:     []string{`field "samples": required member missing`},
			rejected: map[Reason]int{ReasonMissingField: 1}},
		{name: "rate zero", body: `{"rate_hz":0,"samples":[1]}`,
			errs:     []string{`line 1, column 12, field "rate_hz": rate 0 Hz out of range (0, 100000]`},
			rejected: map[Reason]int{ReasonOutOfRange: 1}},
		{name: "rate too high", body: `{"rate_hz":100000.5,"samples":[1]}`,
			errs:     []string{`line 1, column 12, field "rate_hz": rate 100000.5 Hz out of range (0, 100000]`},
			rejected: map[Reason]int{ReasonOutOfRange: 1}},
		{name: "rate not a number", body: `{"rate_hz":"250","samples":[1]}`,
			errs:     []string{`line 1, column 12, field "rate_hz": rate_hz must be a number, got string`},
			rejected: map[Reason]int{ReasonBadFieldType: 1}},
		{name: "samples not an array", body: `{"rate_hz":1,"samples":{}}`,
			errs:     []string{`line 1, column 24, field "samples": samples must be an array of numbers, got object`},
			rejected: map[Reason]int{ReasonBadFieldType: 1}},
		{name: "too many samples", max: 3, body: `{"rate_hz":1,"samples":[1,2,3,4,null]}`,
			errs:     []string{`field "samples": 5 samples exceed the maximum of 3 per message`},
			rejected: map[Reason]int{ReasonOutOfRange: 1}},
		{name: "max samples exactly", max: 3, body: `{"rate_hz":1,"ts":0,"samples":[1,2,3]}`,
			want: []wal.Reading{r(s, "value", 1, 0), r(s, "value", 2, 1e9), r(s, "value", 3, 2e9)}},
		{name: "empty samples", body: `{"rate_hz":1,"samples":[]}`},
		{name: "syntax", body: `{"rate_hz":1,"samples":[1,2`,
			errs:     []string{`line 1, column 28: unexpected end of JSON input`},
			rejected: map[Reason]int{ReasonSyntax: 1}},
		{name: "array body", body: `[1]`,
			errs:     []string{`line 1, column 1: expected an object, got array`},
			rejected: map[Reason]int{ReasonBadFieldType: 1}},
		{name: "bad tag", body: `{"rate_hz":1,"samples":[1],"tags":{"a":1}}`,
			errs:     []string{`line 1, column 40, field "tags.a": tag value must be a string, got number`},
			rejected: map[Reason]int{ReasonBadTag: 1}},
		{name: "ts overflow", body: `{"rate_hz":1,"samples":[1],"ts":9223372036855}`,
			errs:     []string{`line 1, column 33, field "ts": timestamp 9223372036855 ms out of range`},
			rejected: map[Reason]int{ReasonOutOfRange: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultBiosignalConfig()
			if c.max > 0 {
				cfg.MaxSamples = c.max
			}
			d, err := NewBiosignal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var res Result
			got := d.Decode(nil, "biosignal/pi-042/ecg", []byte(c.body), Options{NowNs: testNow}, &res)
			check(t, got, c.want, &res, c.errs)
			for reason := range Reason(numReasons) {
				if res.Rejected[reason] != c.rejected[reason] {
					t.Errorf("Rejected[%s] = %d, want %d", reason, res.Rejected[reason], c.rejected[reason])
				}
			}
		})
	}
}

func TestBiosignalConfig(t *testing.T) {
	for _, n := range []int{0, -1, maxSamplesLimit + 1} {
		if _, err := NewBiosignal(BiosignalConfig{MaxSamples: n}); err == nil {
			t.Errorf("MaxSamples %d accepted", n)
		}
	}
	d, _ := NewBiosignal(DefaultBiosignalConfig())
	var res Result
	d.Decode(nil, "biosignal/x", []byte(`{}`), Options{NowNs: testNow}, &res)
	if res.Rejected[ReasonBadTopic] != 1 || res.Errors[0].Error() != `topic "biosignal/x" is not biosignal/<device>/<signal>` {
		t.Errorf("bad topic: %v", res.Err())
	}
}
