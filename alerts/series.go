package alerts

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// tag is one tag of a parsed series key, unescaped.
type tag struct{ key, value string }

// errSeriesKey marks a series key that is not in the canonical form.
var errSeriesKey = errors.New("bad series key")

// parseSeriesKey splits a canonical series key (`measurement,k1=v1,k2=v2`,
// see ingest/series.go) into its unescaped measurement and tags, appended
// to tags[:0]. Escapes: `\,`, `\ ` and `\\` in the measurement; `\,`, `\=`,
// `\ ` and `\\` in tag keys and values. A backslash before any other byte
// is a literal backslash, as in line protocol. It allocates only for parts
// that hold an escape.
//
// Errors: an empty measurement, a tag without '=', an empty tag key or
// value, or an unescaped '=' in a tag value; such a key is matched by no
// rule.
func parseSeriesKey(key string, tags []tag) (string, []tag, error) {
	tags = tags[:0]
	end := scanPart(key, 0, false)
	meas := unescape(key[:end], false)
	if meas == "" {
		return "", tags, fmt.Errorf("%w %q: empty measurement", errSeriesKey, key)
	}
	i := end
	for i < len(key) {
		// key[i] == ','
		i++
		kEnd := scanPart(key, i, true)
		if kEnd >= len(key) || key[kEnd] != '=' {
			return "", tags, fmt.Errorf("%w %q: tag at byte %d has no '='", errSeriesKey, key, i)
		}
		k := unescape(key[i:kEnd], true)
		if k == "" {
			return "", tags, fmt.Errorf("%w %q: empty tag key at byte %d", errSeriesKey, key, i)
		}
		vStart := kEnd + 1
		vEnd := scanPart(key, vStart, true)
		if vEnd < len(key) && key[vEnd] == '=' {
			return "", tags, fmt.Errorf("%w %q: unescaped '=' in tag value at byte %d", errSeriesKey, key, vEnd)
		}
		v := unescape(key[vStart:vEnd], true)
		if v == "" {
			return "", tags, fmt.Errorf("%w %q: empty value of tag %q", errSeriesKey, key, k)
		}
		tags = append(tags, tag{k, v})
		i = vEnd
	}
	return meas, tags, nil
}

// scanPart returns the index of the first unescaped separator at or after
// i: ',' (and '=' in tag parts), or len(s).
func scanPart(s string, i int, tagPart bool) int {
	for ; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 < len(s) && isEscaped(s[i+1], tagPart) {
				i++
			}
		case ',':
			return i
		case '=':
			if tagPart {
				return i
			}
		}
	}
	return i
}

func isEscaped(c byte, tagPart bool) bool {
	return c == ',' || c == ' ' || c == '\\' || (tagPart && c == '=')
}

// unescape removes the escaping backslashes of a part; it returns s itself
// (no allocation) when there are none.
func unescape(s string, tagPart bool) string {
	j := strings.IndexByte(s, '\\')
	if j < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:j]...)
	for i := j; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && isEscaped(s[i+1], tagPart) {
			i++
		}
		b = append(b, s[i])
	}
	return string(b)
}

// TopicLevel escapes a series key (or any string) into one MQTT topic
// level, as used in `alerts/<rule>/<level>`. It percent-encodes, as %XX
// with upper-case hex, every byte that has a meaning in topics or is not
// allowed or advised there: '/', '+', '#', NUL and the other C0 controls,
// DEL, the C1 controls U+0080..U+009F, bytes that are not valid UTF-8, and
// '%' itself, so ParseTopicLevel reverses it exactly. The empty string
// becomes "%", which no non-empty input produces (an escape always has two
// hex digits), so the level is never empty. A leading '$' is harmless: it
// is never the first level of the topic.
func TopicLevel(series string) string {
	n := 0
	for i := 0; i < len(series); {
		w, esc := topicRune(series, i)
		if esc {
			n += 2 * w
		}
		i += w
	}
	if series == "" {
		return "%"
	}
	if n == 0 {
		return series
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(series)+n)
	for i := 0; i < len(series); {
		w, esc := topicRune(series, i)
		if !esc {
			b = append(b, series[i:i+w]...)
		} else {
			for k := i; k < i+w; k++ {
				b = append(b, '%', hex[series[k]>>4], hex[series[k]&15])
			}
		}
		i += w
	}
	return string(b)
}

// topicRune returns the width of the rune (or invalid byte) at s[i] and
// whether its bytes must be escaped.
func topicRune(s string, i int) (int, bool) {
	c := s[i]
	if c < utf8.RuneSelf {
		return 1, c < 0x20 || c == 0x7f || c == '/' || c == '+' || c == '#' || c == '%'
	}
	r, w := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && w == 1 {
		return 1, true
	}
	return w, r >= 0x80 && r <= 0x9f
}

// ParseTopicLevel reverses TopicLevel.
func ParseTopicLevel(level string) (string, error) {
	if level == "%" {
		return "", nil
	}
	if level == "" {
		return "", errors.New("empty topic level")
	}
	if strings.IndexByte(level, '%') < 0 {
		return level, nil
	}
	b := make([]byte, 0, len(level))
	for i := 0; i < len(level); i++ {
		if level[i] != '%' {
			b = append(b, level[i])
			continue
		}
		if i+2 >= len(level) {
			return "", fmt.Errorf("topic level %q: truncated escape at byte %d", level, i)
		}
		hi, ok1 := unhex(level[i+1])
		lo, ok2 := unhex(level[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("topic level %q: bad escape %q at byte %d", level, level[i:i+3], i)
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
