package serieskey

import (
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	for _, c := range []struct {
		s    string
		sep  byte
		want []string
	}{
		{"env,site=a", ',', []string{"env", "site=a"}},
		{`env\,x,site=a\,b`, ',', []string{`env\,x`, `site=a\,b`}},
		{`k\=1=v`, '=', []string{`k\=1`, "v"}},
		{`a\\,b`, ',', []string{`a\\`, "b"}},
		{"", ',', []string{""}},
		{"a,", ',', []string{"a", ""}},
		{`a\`, ',', []string{`a\`}},
	} {
		if got := Split(c.s, c.sep); !slices.Equal(got, c.want) {
			t.Errorf("Split(%q, %q) = %q, want %q", c.s, c.sep, got, c.want)
		}
	}
}

func FuzzSplit(f *testing.F) {
	f.Add(`env\,x,site=a\,b`)
	f.Fuzz(func(t *testing.T, s string) {
		parts := Split(s, ',')
		n := len(parts) - 1
		for _, p := range parts {
			n += len(p)
		}
		if n != len(s) {
			t.Fatalf("parts of %q do not add up: %q", s, parts)
		}
	})
}
