package ingest

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/runnel-iot/runnel/wal"
)

func TestJSON(t *testing.T) {
	const s = "env,device=pi-042"
	const sp = "env,device=pi-042,site=plant1"
	const ts = int64(1_700_000_000_000) * 1e6
	type tc struct {
		name     string
		topic    string
		body     string
		opt      Options
		want     []wal.Reading
		errs     []string
		rejected map[Reason]int
		skipped  []FieldCount
	}
	cases := []tc{
		{name: "happy", body: `{"ts":1700000000000,"temp":21.5,"hum":40.1,"tags":{"site":"plant1"}}`,
			want: []wal.Reading{r(sp, "temp", 21.5, ts), r(sp, "hum", 40.1, ts)}},
		{name: "tags and ts after fields", body: `{"temp":1,"tags":{"site":"plant1"},"ts":1700000000000}`,
			want: []wal.Reading{r(sp, "temp", 1, ts)}},
		{name: "array", body: " [ {\"ts\":1700000000000,\"a\":1} ,\n{\"ts\":1700000000001.5,\"a\":2}, {\"a\":3}, {} ] ",
			want: []wal.Reading{r(s, "a", 1, ts), r(s, "a", 2, ts+1_500_000), r(s, "a", 3, testNow)}},
		{name: "empty array", body: `[]`},
		{name: "float and exponent ts", body: `[{"ts":1.7e12,"a":1},{"ts":-5,"a":2}]`,
			want: []wal.Reading{r(s, "a", 1, ts), r(s, "a", 2, -5_000_000)}},
		{name: "types", body: `{"b":true,"f":false,"s":"on","n":-0.5e1,"i":12345678901234567890,"s":"again","t":"x"}`,
			want:    []wal.Reading{r(s, "b", 1, testNow), r(s, "f", 0, testNow), r(s, "n", -5, testNow), r(s, "i", 12345678901234567890, testNow)},
			skipped: []FieldCount{{"s", 1}, {"t", 1}}},
		{name: "duplicate member last wins", body: `{"a":1,"b":2,"a":3,"c":4,"c":null}`,
			want:     []wal.Reading{r(s, "b", 2, testNow), r(s, "a", 3, testNow)},
			errs:     []string{`line 1, column 30, field "c": null is not a number`},
			rejected: map[Reason]int{ReasonBadFieldType: 1}},
		{name: "bad fields keep the rest", body: "[{\"a\":1},\n {\"x\":null,\"y\":{\"z\":1},\"w\":[1],\"ok\":2,\"\":3,\"big\":1e999}]",
			want: []wal.Reading{r(s, "a", 1, testNow), r(s, "ok", 2, testNow)},
			errs: []string{
				`line 2, column 7, element 1, field "x": null is not a number`,
				`line 2, column 16, element 1, field "y": object is not a number`,
				`line 2, column 28, element 1, field "w": array is not a number`,
				`line 2, column 39, element 1: field name must be non-empty UTF-8`,
				`line 2, column 50, element 1, field "big": number 1e999 out of float64 range`},
			rejected: map[Reason]int{ReasonBadFieldType: 4, ReasonOutOfRange: 1}},
		{name: "non-object element", body: `[{"a":1},5,"x",{"a":2}]`,
			want: []wal.Reading{r(s, "a", 1, testNow), r(s, "a", 2, testNow)},
			errs: []string{`line 1, column 10, element 1: expected an object, got number`,
				`line 1, column 12, element 2: expected an object, got string`},
			rejected: map[Reason]int{ReasonBadFieldType: 2}},
		{name: "not an object", body: `42`,
			errs:     []string{`line 1, column 1: expected an object or an array of objects, got number`},
			rejected: map[Reason]int{ReasonBadFieldType: 1}},
		{name: "syntax keeps completed objects", body: "[{\"a\":1},\n  {\"a\":2,\"b\" 3}, {\"a\":4}]",
			want:     []wal.Reading{r(s, "a", 1, testNow)},
			errs:     []string{`line 2, column 14: invalid character '3' after object key`},
			rejected: map[Reason]int{ReasonSyntax: 1}},
		{name: "truncated", body: `{"a":1`,
			errs:     []string{`line 1, column 7: unexpected end of JSON input`},
			rejected: map[Reason]int{ReasonSyntax: 1}},
		{name: "empty body", body: ``,
			errs:     []string{`line 1, column 1: unexpected end of JSON input`},
			rejected: map[Reason]int{ReasonSyntax: 1}},
		{name: "trailing garbage", body: `{"a":1} x`,
			want:     []wal.Reading{r(s, "a", 1, testNow)},
			errs:     []string{`line 1, column 9: invalid character 'x' after top-level value`},
			rejected: map[Reason]int{ReasonSyntax: 1}},
		{name: "bad number grammar", body: `{"a":01}`,
			errs:     []string{`line 1, column 7: invalid character '1' after object key:value pair`},
			rejected: map[Reason]int{ReasonSyntax: 1}},
		{name: "escaped names", body: `{"t\u0065mp":1,"tags":{"a b":"c,d=e","z\"":"\u00e9"}}`,
			want: []wal.Reading{r(`env,a\ b=c\,d\=e,device=pi-042,z"=é`, "temp", 1, testNow)}},
		{name: "escaped topic parts", topic: "telemetry/dev 1/my,env",
			body: `{"a":1}`, want: []wal.Reading{r(`my\,env,device=dev\ 1`, "a", 1, testNow)}},
		{name: "device tag same", body: `{"a":1,"tags":{"device":"pi-042","site":"plant1"}}`,
			want: []wal.Reading{r(sp, "a", 1, testNow)}},
		{name: "device tag contradicts", body: `{"a":1,"tags":{"device":"other"}}`,
			want:     []wal.Reading{r(s, "a", 1, testNow)},
			errs:     []string{`line 1, column 25, field "tags.device": payload tag device="other" contradicts the topic's device "pi-042"; the topic wins`},
			rejected: map[Reason]int{ReasonBadTag: 1}},
		{name: "empty tag value omitted", body: `{"a":1,"tags":{"site":""}}`,
			want: []wal.Reading{r(s, "a", 1, testNow)}},
		{name: "bad tags reject the object", body: `[{"a":1,"tags":{"site":5}},{"a":2,"tags":{"":"x"}},{"a":3,"tags":{"k":"a\nb"}},{"a":4,"tags":[]},{"a":5}]`,
			want: []wal.Reading{r(s, "a", 5, testNow)},
			errs: []string{`line 1, column 24, element 0, field "tags.site": tag value must be a string, got number`,
				`line 1, column 43, element 1, field "tags.": empty tag key`,
				`line 1, column 67, element 2, field "tags.k": tag holds a control character or invalid UTF-8`,
				`line 1, column 94, element 3, field "tags": tags must be an object of strings, got array`},
			rejected: map[Reason]int{ReasonBadTag: 4}},
		{name: "bad ts", body: `[{"ts":"now","a":1},{"ts":1e20,"a":2},{"a":3}]`,
			want: []wal.Reading{r(s, "a", 3, testNow)},
			errs: []string{`line 1, column 8, element 0, field "ts": ts must be a number of milliseconds, got string`,
				`line 1, column 27, element 1, field "ts": timestamp 1e20 ms out of range`},
			rejected: map[Reason]int{ReasonBadFieldType: 1, ReasonOutOfRange: 1}},
		{name: "future", body: `[{"ts":1700000060001,"a":1},{"ts":1700000060000,"a":2}]`,
			want:     []wal.Reading{r(s, "a", 2, ts+60e9)},
			errs:     []string{`line 1, column 8, element 0, field "ts": event time 2023-11-14T22:14:20.001Z is 1m0.001s after the receive time (max skew 1m0s)`},
			rejected: map[Reason]int{ReasonFutureTimestamp: 1}},
		{name: "future small skew", body: `{"ts":1700000001000,"a":1}`, opt: Options{MaxFutureSkew: time.Second / 2},
			errs:     []string{`line 1, column 7, field "ts": event time 2023-11-14T22:13:21Z is 1s after the receive time (max skew 500ms)`},
			rejected: map[Reason]int{ReasonFutureTimestamp: 1}},
		{name: "bad topic", topic: "telemetry/pi-042", body: `{"a":1}`,
			errs:     []string{`topic "telemetry/pi-042" is not telemetry/<device>/<measurement>`},
			rejected: map[Reason]int{ReasonBadTopic: 1}},
		{name: "bad topic deep", topic: "telemetry/a/b/c", body: `{"a":1}`,
			errs:     []string{`topic "telemetry/a/b/c" is not telemetry/<device>/<measurement>`},
			rejected: map[Reason]int{ReasonBadTopic: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.topic == "" {
				c.topic = "telemetry/pi-042/env"
			}
			c.opt.NowNs = testNow
			var res Result
			got := NewJSON().Decode(nil, c.topic, []byte(c.body), c.opt, &res)
			check(t, got, c.want, &res, c.errs)
			for reason := range Reason(numReasons) {
				if res.Rejected[reason] != c.rejected[reason] {
					t.Errorf("Rejected[%s] = %d, want %d", reason, res.Rejected[reason], c.rejected[reason])
				}
			}
			if !slices.Equal(res.Skipped, c.skipped) {
				t.Errorf("Skipped = %v, want %v", res.Skipped, c.skipped)
			}
		})
	}
}

func TestJSONSyntaxMessages(t *testing.T) {
	for body, want := range map[string]string{
		`{"a":tru}`:             `line 1, column 9: invalid character '}' in literal true (expecting 'e')`,
		`{"a":"x\q"}`:           `line 1, column 9: invalid character 'q' in string escape code`,
		`{"a":"\u12G4"}`:        `line 1, column 11: invalid character 'G' in \u hexadecimal character escape`,
		"{\"a\":\"x\ny\"}":      `line 1, column 8: invalid character '\n' in string literal`,
		`{"a":-}`:               `line 1, column 7: invalid character '}' in numeric literal`,
		`{"a":1.}`:              `line 1, column 8: invalid character '}' after decimal point in numeric literal`,
		`{"a":1e}`:              `line 1, column 8: invalid character '}' in exponent of numeric literal`,
		`{a:1}`:                 `line 1, column 2: invalid character 'a' looking for beginning of object key string`,
		`{"a":1,}`:              `line 1, column 8: invalid character '}' looking for beginning of object key string`,
		`{"a":[1,{"b":2]]}`:     `line 1, column 15: invalid character ']' after object key:value pair`,
		`[{"a":1} {"a":2}]`:     `line 1, column 10: invalid character '{' after array element`,
		"{\"a\":\"\xff\"} \xff": `line 1, column 11: invalid character '\xff' after top-level value`,
	} {
		var res Result
		NewJSON().Decode(nil, "telemetry/d/m", []byte(body), Options{NowNs: testNow}, &res)
		if len(res.Errors) != 1 || res.Errors[0].Error() != want || res.Errors[0].Reason != ReasonSyntax {
			t.Errorf("%q: errors %v, want %q", body, res.Errors, want)
		}
	}
}

func TestInterner(t *testing.T) {
	var in interner
	a := in.bytes([]byte("env,device=a"))
	b := in.bytes([]byte("env,device=a"))
	if a != b || in.len() != 1 {
		t.Fatal("not interned")
	}
	for i := range 3 * internMaxEntries {
		in.bytes([]byte{byte(i), byte(i >> 8), 'x'})
	}
	if n := in.len(); n > 2*internMaxEntries {
		t.Fatalf("cache holds %d > %d", n, 2*internMaxEntries)
	}
	long := make([]byte, internMaxLen+1)
	n := in.len()
	in.bytes(long)
	if in.len() != n {
		t.Error("long string cached")
	}
	if allocs := testing.AllocsPerRun(100, func() { in.bytes([]byte("env,device=a")) }); allocs != 0 {
		t.Errorf("hit allocates %v", allocs)
	}
}

// recentNames answers a recent field name without the intern map, the
// same string the interner gave; it holds at most recentNamesLen short
// names, the most recent ones.
func TestRecentNames(t *testing.T) {
	var (
		in interner
		r  recentNames
	)
	temp := r.bytes([]byte("temp"), &in)
	if temp != "temp" || in.len() != 1 {
		t.Fatalf("got %q, intern cache %d, want temp interned", temp, in.len())
	}
	if got := r.bytes([]byte("temp"), &in); unsafe.StringData(got) != unsafe.StringData(temp) {
		t.Error("a recent name is not the interned string")
	}
	in = interner{} // a recent name is answered without the interner
	if got := r.bytes([]byte("temp"), &in); got != "temp" || in.len() != 0 {
		t.Errorf("recent name: got %q, intern lookups added %d", got, in.len())
	}
	for i := range 2 * recentNamesLen {
		r.bytes([]byte{'f', byte('a' + i)}, &in)
	}
	for _, s := range r.names {
		if s == "temp" {
			t.Error("the oldest name is still recent after 16 others")
		}
	}
	long := make([]byte, recentNameMax+1)
	r.bytes(long, &in)
	for _, s := range r.names {
		if len(s) > recentNameMax {
			t.Errorf("a %d-byte name is kept recent", len(s))
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { r.bytes([]byte("fp"), &in) }); allocs != 0 {
		t.Errorf("a recent hit allocates %v", allocs)
	}
}

func TestAppendSeriesKey(t *testing.T) {
	got := string(AppendSeriesKey(nil, "my env,x", []Tag{{"site", "plant 1"}, {"a=b", "c,d"}, {"device", "pi-042"}}))
	want := `my\ env\,x,a\=b=c\,d,device=pi-042,site=plant\ 1`
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	// A backslash is escaped only where it would read as an escape: at the
	// end of a part and before a backslash or separator.
	for _, tc := range []struct {
		meas, k, v, want string
	}{
		{`m\`, "d", "x", `m\\,d=x`},
		{"m", `C:\temp`, `a\`, `m,C:\temp=a\\`},
		{`a\,b`, `k\=`, `\\`, `a\\\,b,k\\\==\\\\`},
		{`m\=`, "k", `x\ y`, `m\\=,k=x\\\ y`},
	} {
		if got := string(AppendSeriesKey(nil, tc.meas, []Tag{{tc.k, tc.v}})); got != tc.want {
			t.Errorf("%q %q=%q: got %s, want %s", tc.meas, tc.k, tc.v, got, tc.want)
		}
	}
}

// msToNs's integer fast path agrees with strconv on every shape, the
// limits included.
func TestMsToNsIntegers(t *testing.T) {
	ref := func(lit string) (int64, bool) {
		n, err := strconv.ParseInt(lit, 10, 64)
		if err != nil || n > maxInt64/1_000_000 || n < -maxInt64/1_000_000 {
			return 0, false
		}
		return n * 1e6, true
	}
	lits := []string{"0", "-0", "1", "-1", "007", "1700000000000", "-1700000000000",
		"9223372036854", "9223372036855", "-9223372036854", "-9223372036855",
		"999999999999999999", "-999999999999999999", "1000000000000000000", "9223372036854775807",
		"9223372036854775808", "-9223372036854775808", "-", ""}
	for i := range 1000 {
		lits = append(lits, strconv.FormatInt(int64(i)*7919*1_000_003-3_000_000_000, 10))
	}
	for _, lit := range lits {
		gotN, gotOK := msToNs([]byte(lit), true)
		wantN, wantOK := ref(lit)
		if gotN != wantN || gotOK != wantOK {
			t.Errorf("msToNs(%q) = %d, %v; strconv says %d, %v", lit, gotN, gotOK, wantN, wantOK)
		}
	}
}

// decodeBoth decodes body with a fresh decoder and no memo, and with d and
// memo; it fails unless both give the same readings and result.
func decodeBoth(t *testing.T, d *JSON, memo *SeriesMemo, topic string, body []byte) {
	t.Helper()
	var want, got Result
	wantR := NewJSON().Decode(nil, topic, body, Options{NowNs: testNow, MaxFutureSkew: -1}, &want)
	gotR := d.Decode(nil, topic, body, Options{NowNs: testNow, MaxFutureSkew: -1, Memo: memo}, &got)
	if !reflect.DeepEqual(gotR, wantR) {
		t.Fatalf("%s %q with memo %+v: readings\n%+v\nwant\n%+v", topic, body, *memo, gotR, wantR)
	}
	if got.Err() != nil || want.Err() != nil {
		if fmt.Sprint(got.Err()) != fmt.Sprint(want.Err()) || got.Rejected != want.Rejected {
			t.Fatalf("%s %q with memo: result %v %v, want %v %v", topic, body, got.Rejected, got.Err(), want.Rejected, want.Err())
		}
	}
	if got.Rejected != want.Rejected || got.Readings != want.Readings {
		t.Fatalf("%s %q with memo: rejected %v readings %d, want %v %d", topic, body, got.Rejected, got.Readings, want.Rejected, want.Readings)
	}
}

// TestSeriesMemo: a topic's SeriesMemo gives the series key its objects'
// tags give, is reused while the tags are sent the same, and changes
// nothing in the readings or the result, whatever the payload.
func TestSeriesMemo(t *testing.T) {
	const topic = "telemetry/pi-1/env"
	d := NewJSON()
	var memo SeriesMemo
	tagged := []byte(`{"ts":1700000000000,"temp":21.5,"tags":{"site":"plant1"}}`)
	decodeBoth(t, d, &memo, topic, tagged)
	if memo.Tags != `{"site":"plant1"}` || memo.Series != "env,device=pi-1,site=plant1" {
		t.Fatalf("memo after a tagged object: %+v", memo)
	}
	remembered := memo
	decodeBoth(t, d, &memo, topic, tagged)
	if memo != remembered {
		t.Fatalf("memo changed on the same tags: %+v, was %+v", memo, remembered)
	}
	for _, body := range []string{
		`{"temp":1}`, // no tags
		`{"temp":1}`,
		`{"temp":1,"tags":{}}`,
		`{"temp":1,"tags":{"site":"plant2"}}`,
		`{"temp":1,"tags":{"site":"plant2"},"tags":{"site":"plant1"}}`, // the last wins
		`{"temp":1,"tags":{"site":"plant1"},"tags":{"site":"plant2"}}`,
		`{"temp":1,"tags":{"site":"plant1"},"tags":{"a":"b"}}`,
		`{"temp":1,"tags":{"site":"plant1"},"tags":5}`,
		`{"temp":1,"tags":{"device":"other"}}`, // contradiction: reported every time
		`{"temp":1,"tags":{"device":"other"}}`,
		`{"temp":1,"tags":{"site":"a,b c=d\\"}}`,
		`{"temp":1,"tags":{"site":"a,b c=d\\"}}`,
		`{"temp":1,"tags":{"site":"plant1"}}`,
		`{"temp":1,"tags":{"site":"plant1"}`, // truncated after the memo's text
		`{"temp":1,"tags":{"site":"plant1"}x}`,
		`[{"a":1,"tags":{"site":"plant1"}},{"a":2},{"a":3,"tags":{"site":"plant1"}},{"a":4,"tags":{"site":"s2"}}]`,
		`{"temp":1,"tags":{"":"x"}}`,
		`{"temp":1,"tags":{"":"x"}}`,
	} {
		decodeBoth(t, d, &memo, topic, []byte(body))
	}
}

// TestSeriesMemoBounded: the memo of a topic lives in the broker's topic
// cache (4,096 topics), so it keeps only tags of a bounded size: a device
// whose tags text is long (padding, many tags) gets its key built every
// time, and a hostile client cannot park a payload-sized string per topic.
func TestSeriesMemoBounded(t *testing.T) {
	d := NewJSON()
	var memo SeriesMemo
	long := `{"ts":1700000000000,"temp":21.5,"tags":{"site":"plant1"` + strings.Repeat(" ", maxMemoTags) + `}}`
	decodeBoth(t, d, &memo, "telemetry/pi-1/env", []byte(long))
	if memo.Tags != "" || memo.Series != "" {
		t.Fatalf("memo kept %d bytes of tags text (bound %d): %+v", len(memo.Tags), maxMemoTags, memo)
	}
}

// fastFloat gives strconv.ParseFloat's exact bits for the literals it
// takes, and declines the others.
func TestFastFloat(t *testing.T) {
	for _, lit := range []string{"0", "-0", "21.5", "-3", "1013.25", "0.1", "0.000001", "123456789012345",
		"1234567.89012345", "-999999999999999", "9007199254740993", "0.1234567890123456", "1e5", "1.5e-3", "", "-", "1.",
		"00012", "3.14159265358979", "0.30000000000000004", "4.35", "1.005", "2.675"} {
		want, werr := strconv.ParseFloat(lit, 64)
		got, ok := fastFloat([]byte(lit))
		if !ok {
			continue // strconv decides
		}
		if werr != nil || math.Float64bits(got) != math.Float64bits(want) {
			t.Errorf("fastFloat(%q) = %v (%#x), strconv %v (%#x) %v", lit, got, math.Float64bits(got), want, math.Float64bits(want), werr)
		}
	}
	for _, lit := range []string{"21.5", "-3", "1013.25", "0.000001"} {
		if _, ok := fastFloat([]byte(lit)); !ok {
			t.Errorf("fastFloat(%q) declined a sensor value's shape", lit)
		}
	}
	for _, lit := range []string{"1e5", "1234567890123456", "0.1234567890123456", "", "-", "1."} {
		if _, ok := fastFloat([]byte(lit)); ok {
			t.Errorf("fastFloat(%q) took a literal it must leave to strconv", lit)
		}
	}
}

func FuzzFastFloat(f *testing.F) {
	for _, s := range []string{"21.5", "-0.001", "123456789012345", "1.005", "9.999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, lit string) {
		got, ok := fastFloat([]byte(lit))
		if !ok {
			return
		}
		want, err := strconv.ParseFloat(lit, 64)
		if err != nil || math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("fastFloat(%q) = %v, strconv %v %v", lit, got, want, err)
		}
	})
}
