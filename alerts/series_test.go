package alerts

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/runnel-iot/runnel/ingest"
)

func TestParseSeriesKey(t *testing.T) {
	cases := []struct {
		key  string
		meas string
		tags []tag
		err  string
	}{
		{key: "env", meas: "env"},
		{key: "env,device=pi-042,site=plant1", meas: "env", tags: []tag{{"device", "pi-042"}, {"site", "plant1"}}},
		{key: `my\ meas\,x,k\ 1=v\=1\,2`, meas: "my meas,x", tags: []tag{{"k 1", "v=1,2"}}},
		{key: `m=1,k=v`, meas: "m=1", tags: []tag{{"k", "v"}}},     // '=' needs no escape in a measurement
		{key: `a\b,k=c\d`, meas: `a\b`, tags: []tag{{"k", `c\d`}}}, // a backslash before anything else is literal
		{key: `m\`, meas: `m\`},                              // also at the end
		{key: `m,k=v\`, meas: "m", tags: []tag{{"k", `v\`}}}, // also at the end of a tag
		{key: "", err: `bad series key "": empty measurement`},
		{key: ",k=v", err: `bad series key ",k=v": empty measurement`},
		{key: "m,", err: `bad series key "m,": tag at byte 2 has no '='`},
		{key: "m,k", err: `bad series key "m,k": tag at byte 2 has no '='`},
		{key: "m,=v", err: `bad series key "m,=v": empty tag key at byte 2`},
		{key: "m,k=", err: `bad series key "m,k=": empty value of tag "k"`},
		{key: "m,k=v,", err: `bad series key "m,k=v,": tag at byte 6 has no '='`},
		{key: "m,k=a=b", err: `bad series key "m,k=a=b": unescaped '=' in tag value at byte 5`},
	}
	for _, c := range cases {
		meas, tags, err := parseSeriesKey(c.key, nil)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%q: error %v, want %s", c.key, err, c.err)
			}
			continue
		}
		if err != nil || meas != c.meas || !slices.Equal(tags, c.tags) {
			t.Errorf("%q: got %q %q %v, want %q %q", c.key, meas, tags, err, c.meas, c.tags)
		}
	}
}

func TestParseSeriesKeyNoAlloc(t *testing.T) {
	buf := make([]tag, 0, 8)
	allocs := testing.AllocsPerRun(100, func() {
		_, buf, _ = parseSeriesKey("env,device=pi-042,site=plant1", buf)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations for a key without escapes", allocs)
	}
}

// seriesKey builds a key as the ingest package does.
func seriesKey(meas string, tags []tag) string {
	it := make([]ingest.Tag, len(tags))
	for i, t := range tags {
		it[i] = ingest.Tag{Key: t.key, Value: t.value}
	}
	return string(ingest.AppendSeriesKey(nil, meas, it))
}

// ambiguous reports parts the canonical form cannot carry: empty ones.
func ambiguous(parts ...string) bool {
	return slices.Contains(parts, "")
}

// FuzzSeriesKeyRoundTrip: parse(ingest's key of m and tags) gives back m
// and the tags sorted by key.
func FuzzSeriesKeyRoundTrip(f *testing.F) {
	f.Add("env", "device", "pi-042", "site", "plant 1")
	f.Add("a,b c", "k=1", `v\,=`, "x y", "z,")
	f.Add(`m\x`, `\k`, `\=`, `a\b`, `\ `)
	f.Add(`m\`, `k\`, `v\`, `\\`, `a\\,`) // a trailing backslash, before a separator
	f.Fuzz(func(t *testing.T, m, k1, v1, k2, v2 string) {
		if ambiguous(m, k1, v1, k2, v2) || k1 == k2 {
			return
		}
		key := seriesKey(m, []tag{{k1, v1}, {k2, v2}})
		meas, tags, err := parseSeriesKey(key, nil)
		want := []tag{{k1, v1}, {k2, v2}}
		slices.SortFunc(want, func(a, b tag) int { return strings.Compare(a.key, b.key) })
		if err != nil || meas != m || !slices.Equal(tags, want) {
			t.Fatalf("key %q: got %q %q %v, want %q %q", key, meas, tags, err, m, want)
		}
	})
}

// FuzzParseSeriesKey: any input parses or fails cleanly; what parses
// re-encodes to a key that parses to the same thing.
func FuzzParseSeriesKey(f *testing.F) {
	for _, s := range []string{"env,device=pi-042,site=plant1", `a\ b\,c,k\=1=v\ 1\,x`, "m,k=a=b", "", ",", `\`, `m,k=v\`, "m,,", "m,k=v,k=w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		meas, tags, err := parseSeriesKey(key, nil)
		if err != nil {
			return
		}
		if meas == "" {
			t.Fatal("empty measurement accepted")
		}
		parts := []string{meas}
		for _, tg := range tags {
			if tg.key == "" || tg.value == "" {
				t.Fatalf("empty tag part accepted: %q", tags)
			}
			parts = append(parts, tg.key, tg.value)
		}
		if len(meas)+2*len(tags) > len(key)+1 {
			t.Fatalf("parsed more than the input: %q %q", meas, tags)
		}
		if ambiguous(parts...) {
			return
		}
		again := seriesKey(meas, slices.Clone(tags))
		meas2, tags2, err := parseSeriesKey(again, nil)
		sorted := slices.Clone(tags)
		slices.SortStableFunc(sorted, func(a, b tag) int { return strings.Compare(a.key, b.key) })
		if err != nil || meas2 != meas || !slices.Equal(tags2, sorted) {
			t.Fatalf("%q -> %q %q -> %q -> %q %q %v", key, meas, tags, again, meas2, tags2, err)
		}
	})
}

func TestTopicLevel(t *testing.T) {
	cases := []struct{ in, want string }{
		{"env,device=pi-042,site=plant1", "env,device=pi-042,site=plant1"},
		{"a/b", "a%2Fb"},
		{"+#%", "%2B%23%25"},
		{"x\x00y\x1f\x7f", "x%00y%1F%7F"},
		{"", "%"},
		{"%", "%25"},
		{"température µ", "température µ"},
		{"c1\u0085", "c1%C2%85"},
		{"bad\xffutf8", "bad%FFutf8"},
		{"$SYS", "$SYS"},
		{`a\ b`, `a\ b`},
	}
	for _, c := range cases {
		got := TopicLevel(c.in)
		if got != c.want {
			t.Errorf("TopicLevel(%q) = %q, want %q", c.in, got, c.want)
		}
		back, err := ParseTopicLevel(got)
		if err != nil || back != c.in {
			t.Errorf("ParseTopicLevel(%q) = %q, %v; want %q", got, back, err, c.in)
		}
	}
	for _, bad := range []string{"", "%2", "%G0", "a%", "%%"} {
		if _, err := ParseTopicLevel(bad); err == nil {
			t.Errorf("ParseTopicLevel(%q) accepted", bad)
		}
	}
}

func FuzzTopicLevel(f *testing.F) {
	for _, s := range []string{"env,device=a", "a/b+c#d%e", "", "\x00", "\xff\xfe", "\u0085\u009f\u00a0", "%25"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lvl := TopicLevel(s)
		if lvl == "" || !utf8.ValidString(lvl) {
			t.Fatalf("TopicLevel(%q) = %q: empty or not UTF-8", s, lvl)
		}
		for _, r := range lvl {
			if r == '/' || r == '+' || r == '#' || r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
				t.Fatalf("TopicLevel(%q) = %q holds %U", s, lvl, r)
			}
		}
		back, err := ParseTopicLevel(lvl)
		if err != nil || back != s {
			t.Fatalf("round trip %q -> %q -> %q, %v", s, lvl, back, err)
		}
		// Any level decodes or fails cleanly, never to more bytes.
		if dec, err := ParseTopicLevel(s); err == nil && len(dec) > len(s) {
			t.Fatalf("ParseTopicLevel(%q) = %q grew", s, dec)
		}
	})
}
