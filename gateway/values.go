package gateway

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// This file holds the reflection shared by the YAML walk (load.go) and the
// environment overrides (env.go): which struct fields are config keys, and
// how one text value is set into a typed field.

var (
	durationType        = reflect.TypeFor[time.Duration]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	textMarshalerType   = reflect.TypeFor[encoding.TextMarshaler]()
)

// yamlName is the config key of a struct field: its yaml tag name, else its
// lower-cased name as yaml.v3 would use. "-" marks a field that is no key.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name
}

// keyField is one config key of a struct.
type keyField struct {
	name  string
	index int
}

// keyFields lists the config keys of struct type t in declaration order.
func keyFields(t reflect.Type) []keyField {
	var out []keyField
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if name := yamlName(f); name != "-" {
			out = append(out, keyField{name: name, index: i})
		}
	}
	return out
}

func keyNames(fs []keyField) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.name
	}
	return out
}

// isScalar reports whether values of t are written as one YAML scalar.
func isScalar(t reflect.Type) bool {
	if t == durationType || reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return true
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// isList reports whether t is a list of scalars, settable from one
// comma-separated environment variable.
func isList(t reflect.Type) bool {
	return t.Kind() == reflect.Slice && isScalar(t.Elem())
}

// setScalar parses s into v, which must be addressable and of a scalar type.
// The error says what s should look like; the caller adds where it came from.
func setScalar(v reflect.Value, s string) error {
	t := v.Type()
	if t == durationType {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a duration: want a number with a unit, like 500ms, 10s, 5m, 1h", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(s))
	}
	switch t.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a boolean: want true or false", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, t.Bits())
		if err != nil {
			return numError(s, err, "a whole number")
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, t.Bits())
		if err != nil {
			return numError(s, err, "a whole number, not negative")
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), t.Bits())
		if err != nil {
			return numError(s, err, "a number")
		}
		v.SetFloat(f)
	default:
		panic("BUG: config value of type " + t.String() + " is not a scalar")
	}
	return nil
}

func numError(s string, err error, want string) error {
	if errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("%q is too large: want %s", s, want)
	}
	return fmt.Errorf("%q is not %s", s, want)
}

// setList parses a comma-separated list into the slice v: items are
// trimmed of spaces and empty items dropped, so "" is the empty list.
func setList(v reflect.Value, s string) error {
	out := reflect.MakeSlice(v.Type(), 0, 0)
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		e := reflect.New(v.Type().Elem()).Elem()
		if err := setScalar(e, item); err != nil {
			return err
		}
		out = reflect.Append(out, e)
	}
	v.Set(out)
	return nil
}

// formatValue writes a scalar or list as it would be written in config.
func formatValue(v reflect.Value) string {
	t := v.Type()
	switch {
	case t.Kind() == reflect.Pointer:
		if v.IsNil() {
			return "" // unset: a default derived from other settings applies
		}
		return formatValue(v.Elem())
	case t == durationType:
		return formatDuration(time.Duration(v.Int()))
	case t.Implements(textMarshalerType):
		b, err := v.Interface().(encoding.TextMarshaler).MarshalText()
		if err != nil {
			return fmt.Sprint(v.Interface())
		}
		return string(b)
	case isList(t):
		items := make([]string, v.Len())
		for i := range items {
			items[i] = formatValue(v.Index(i))
		}
		return strings.Join(items, ",")
	}
	return fmt.Sprint(v.Interface())
}

// formatDuration drops the zero units time.Duration.String keeps:
// 24h rather than 24h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// closeMatches returns up to three candidates within a small edit distance
// of s, closest first: the "did you mean" of unknown keys and variables.
func closeMatches(s string, candidates []string) []string {
	type match struct {
		c string
		d int
	}
	var ms []match
	limit := max(2, len(s)/4)
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d <= limit {
			ms = append(ms, match{c, d})
		}
	}
	// Insertion sort: the lists are short.
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && ms[j].d < ms[j-1].d; j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
	var out []string
	for i := 0; i < len(ms) && i < 3; i++ {
		out = append(out, ms[i].c)
	}
	return out
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func didYouMean(s string, candidates []string) string {
	m := closeMatches(s, candidates)
	if len(m) == 0 {
		return ""
	}
	return " (did you mean " + strings.Join(m, " or ") + "?)"
}
