package ingest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/runnel-iot/runnel/wal"
)

const testNow = int64(1_700_000_000_000_000_000)

func r(series, field string, v float64, ts int64) wal.Reading {
	return wal.Reading{Series: series, Field: field, Value: v, TimeNs: ts}
}

// check compares readings and the error strings of res.
func check(t *testing.T, got, want []wal.Reading, res *Result, wantErrs []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("readings:\n got %v\nwant %v", got, want)
	}
	if res.Readings != len(got) {
		t.Errorf("res.Readings = %d, len = %d", res.Readings, len(got))
	}
	var errs []string
	for _, e := range res.Errors {
		errs = append(errs, e.Error())
	}
	if !slices.Equal(errs, wantErrs) {
		t.Errorf("errors:\n got %q\nwant %q", errs, wantErrs)
	}
	if res.Problems() < len(res.Errors) {
		t.Errorf("Problems %d < %d errors", res.Problems(), len(res.Errors))
	}
}

func TestLineProtocol(t *testing.T) {
	const s = "env,device=pi-042,site=plant1"
	type tc struct {
		name     string
		body     string
		opt      Options
		want     []wal.Reading
		errs     []string
		rejected map[Reason]int
		skipped  []FieldCount
		loss     int
	}
	cases := []tc{
		{name: "happy", body: "env,device=pi-042,site=plant1 temp=21.5,hum=40.1 1700000000000000000\n",
			want: []wal.Reading{r(s, "temp", 21.5, testNow), r(s, "hum", 40.1, testNow)}},
		{name: "tags sorted", body: "env,site=plant1,device=pi-042 temp=1 1700000000000000000",
			want: []wal.Reading{r(s, "temp", 1, testNow)}},
		{name: "escaping", body: `my\ env\,x,ta\=g\ k=v\,a\ l\=ue f\ 1=2 1`,
			want: []wal.Reading{r(`my\ env\,x,ta\=g\ k=v\,a\ l\=ue`, "f 1", 2, 1)}},
		{name: "types", body: "m i=-3i,u=7u,b=true,B=F,f=1e3,s=\"on\",t=\"x\" 5\nm s=\"y\" 6",
			want:    []wal.Reading{r("m", "i", -3, 5), r("m", "u", 7, 5), r("m", "b", 1, 5), r("m", "B", 0, 5), r("m", "f", 1000, 5)},
			skipped: []FieldCount{{"s", 2}, {"t", 1}}},
		{name: "precision loss", body: "m a=9007199254740993i,b=9007199254740992i,c=-9007199254740993i,d=18446744073709551615u 1",
			want: []wal.Reading{r("m", "a", 9007199254740992, 1), r("m", "b", 9007199254740992, 1),
				r("m", "c", -9007199254740992, 1), r("m", "d", 18446744073709551615, 1)},
			loss: 3},
		{name: "missing timestamp", body: "m v=1\n\n# comment\nm v=2 \n",
			want: []wal.Reading{r("m", "v", 1, testNow), r("m", "v", 2, testNow)}},
		{name: "precision s", body: "m v=1 1700000000", opt: Options{Precision: Second},
			want: []wal.Reading{r("m", "v", 1, testNow)}},
		{name: "precision ms", body: "m v=1 1700000000000", opt: Options{Precision: Millisecond},
			want: []wal.Reading{r("m", "v", 1, testNow)}},
		{name: "precision us", body: "m v=1 1700000000000000", opt: Options{Precision: Microsecond},
			want: []wal.Reading{r("m", "v", 1, testNow)}},
		{name: "duplicate field last wins", body: "m a=1,b=2,a=3 1",
			want: []wal.Reading{r("m", "a", 3, 1), r("m", "b", 2, 1)}},
		{name: "mixed good and bad", body: "m a=1 1\nm a=oops 2\nm a=3 3\nm,t=1 4\nm a=5 5\r\n",
			want: []wal.Reading{r("m", "a", 1, 1), r("m", "a", 3, 3), r("m", "a", 5, 5)},
			errs: []string{`line 2, column 5: field value has unrecognized type`,
				`line 4, column 8: want '=' after field key "4", found '\n'`},
			rejected: map[Reason]int{ReasonSyntax: 2}},
		{name: "bad float", body: "m a=1,b=1.2.3 1",
			errs:     []string{`line 1, column 9, field "b": invalid float value "1.2.3"`},
			rejected: map[Reason]int{ReasonSyntax: 1}},
		{name: "int out of range", body: "m a=0 0\n\nm a=1,b=99999999999999999999i 1",
			want:     []wal.Reading{r("m", "a", 0, 0)},
			errs:     []string{`line 3, column 9, field "b": int value 99999999999999999999 out of range`},
			rejected: map[Reason]int{ReasonOutOfRange: 1}},
		{name: "timestamp out of range", body: "m a=1 9999999999999", opt: Options{Precision: Second},
			errs:     []string{`line 1, column 7: timestamp 9999999999999 s out of range`},
			rejected: map[Reason]int{ReasonOutOfRange: 1}},
		{name: "bad timestamp", body: "m a=1 12x",
			errs:     []string{`line 1, column 7: invalid timestamp ("12x")`},
			rejected: map[Reason]int{ReasonSyntax: 1}},
		{name: "future", body: "m a=1 1700000000000000000\nm a=2 1700000060000000001\nm a=3 1700000060000000000",
			want:     []wal.Reading{r("m", "a", 1, testNow), r("m", "a", 3, testNow+60e9)},
			errs:     []string{`line 2, column 7: event time 2023-11-14T22:14:20.000000001Z is 1m0.000000001s after the receive time (max skew 1m0s)`},
			rejected: map[Reason]int{ReasonFutureTimestamp: 1}},
		{name: "future custom skew", body: "m a=1 1700000001000000000", opt: Options{MaxFutureSkew: time.Second / 2},
			errs:     []string{`line 1, column 7: event time 2023-11-14T22:13:21Z is 1s after the receive time (max skew 500ms)`},
			rejected: map[Reason]int{ReasonFutureTimestamp: 1}},
		{name: "future check off", body: "m a=1 1800000000000000000", opt: Options{MaxFutureSkew: -1},
			want: []wal.Reading{r("m", "a", 1, 18e17)}},
		{name: "duplicate tag", body: "m,a=1,a=2 v=1 1",
			errs:     []string{`line 1, column 1, field "tags.a": duplicate tag key`},
			rejected: map[Reason]int{ReasonBadTag: 1}},
		{name: "nan not allowed", body: "m a=-Inf 1\nm a=NaN 1",
			errs: []string{`line 1, column 5, field "a": invalid float value "-Inf"`,
				`line 2, column 5: field value has unrecognized type`},
			rejected: map[Reason]int{ReasonSyntax: 2}},
		{name: "only strings", body: `m s="a"`, skipped: []FieldCount{{"s", 1}}},
		{name: "empty", body: ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := NewLineProtocol()
			c.opt.NowNs = testNow
			var res Result
			got := d.Decode(nil, []byte(c.body), c.opt, &res)
			check(t, got, c.want, &res, c.errs)
			for reason := range Reason(numReasons) {
				if res.Rejected[reason] != c.rejected[reason] {
					t.Errorf("Rejected[%s] = %d, want %d", reason, res.Rejected[reason], c.rejected[reason])
				}
			}
			if !slices.Equal(res.Skipped, c.skipped) {
				t.Errorf("Skipped = %v, want %v", res.Skipped, c.skipped)
			}
			if res.PrecisionLoss != c.loss {
				t.Errorf("PrecisionLoss = %d, want %d", res.PrecisionLoss, c.loss)
			}
		})
	}
}

func TestLineProtocolErrorWrapsLibrary(t *testing.T) {
	var res Result
	NewLineProtocol().Decode(nil, []byte("m a=1 1\nm,x a=1"), Options{NowNs: testNow}, &res)
	err := res.Err()
	var de *lineprotocol.DecodeError
	if !errors.As(err, &de) || de.Line != 2 {
		t.Fatalf("errors.As DecodeError: %v (%v)", de, err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Reason != ReasonSyntax || e.Line != 2 || e.Column != 3 || e.Offset != 10 {
		t.Fatalf("Error = %+v", e)
	}
	if !strings.HasPrefix(e.Error(), "line 2, column 3: ") {
		t.Errorf("message %q", e.Error())
	}
}

func TestLineProtocolAppendsAndBoundsErrors(t *testing.T) {
	d := NewLineProtocol()
	var res Result
	prev := []wal.Reading{r("x", "y", 1, 2)}
	body := strings.Repeat("m a=bad\n", 25) + "m a=1 1\n"
	got := d.Decode(prev[:1:1], []byte(body), Options{NowNs: testNow}, &res)
	if len(got) != 2 || got[0] != prev[0] || got[1] != r("m", "a", 1, 1) {
		t.Fatalf("got %v", got)
	}
	if len(res.Errors) != MaxErrors || res.Rejected[ReasonSyntax] != 25 {
		t.Fatalf("errors %d, rejected %d", len(res.Errors), res.Rejected[ReasonSyntax])
	}
	if !strings.Contains(res.Err().Error(), "and 15 more rejected") {
		t.Errorf("Err() = %v", res.Err())
	}
	// The nil Result and reuse of the decoder work too.
	got = d.Decode(got[:0], []byte("m a=2 2"), Options{NowNs: testNow}, nil)
	if len(got) != 1 || got[0].Value != 2 {
		t.Fatalf("got %v", got)
	}
}

func TestLineProtocolManyFieldsDedup(t *testing.T) {
	var b strings.Builder
	b.WriteString("m ")
	for i := range 40 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "f%d=1", i)
	}
	b.WriteString(",f0=2,f25=3 1")
	var res Result
	got := NewLineProtocol().Decode(nil, []byte(b.String()), Options{NowNs: testNow}, &res)
	if len(got) != 40 || got[0].Value != 2 || got[25].Value != 3 {
		t.Fatalf("len %d, %v %v", len(got), got[0], got[25])
	}
}

func TestParsePrecision(t *testing.T) {
	for in, want := range map[string]Precision{"": Nanosecond, "ns": Nanosecond, "us": Microsecond, "µs": Microsecond, "ms": Millisecond, "s": Second} {
		if p, err := ParsePrecision(in); err != nil || p != want {
			t.Errorf("ParsePrecision(%q) = %v, %v", in, p, err)
		}
	}
	if _, err := ParsePrecision("m"); err == nil || err.Error() != `invalid precision "m": want ns, us, ms or s` {
		t.Errorf("ParsePrecision(m) err = %v", err)
	}
}

func TestReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for reason := range Reason(NumReasons) {
		s := reason.String()
		if s == "" || seen[s] || strings.ToLower(s) != s || strings.ContainsAny(s, " -") {
			t.Errorf("bad label %q", s)
		}
		seen[s] = true
	}
	if Reason(200).String() != "Reason(200)" {
		t.Error("out of range reason name")
	}
}
