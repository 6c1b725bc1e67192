package ingest

import (
	"bytes"
	"slices"
	"strings"
)

// Series keys.
//
// A series key is the measurement plus its tags sorted by key, written as in
// line protocol (`env,device=pi-042,site=plant1`):
//
//   - the measurement escapes comma and space with a backslash;
//   - tag keys and values escape comma, equals sign and space;
//   - a backslash is escaped (`\\`) where it would otherwise read as an
//     escape: before a backslash, comma, space or equals sign, and at the
//     end of a part (where the separator follows), so `m\` with tag d=x is
//     `m\\,d=x`, not the ambiguous `m\,d=x`; elsewhere (`C:\temp`) it
//     stays as typed. Line protocol reads `\\` as one backslash too;
//   - tags are sorted by their unescaped key, byte-wise.
//
// So the same series arrives under the same key whatever format, tag order
// or escaping its device used, and a key can be pasted into a line protocol
// line or a query parameter as is.

// Tag is one tag of a series.
type Tag struct {
	Key, Value string
}

// AppendSeriesKey appends the series key of measurement and tags to dst and
// returns the extended slice. It sorts tags in place by key. Duplicate keys
// are written as given; the decoders reject them before calling this.
func AppendSeriesKey(dst []byte, measurement string, tags []Tag) []byte {
	slices.SortFunc(tags, func(a, b Tag) int { return strings.Compare(a.Key, b.Key) })
	dst = appendMeasurement(dst, measurement)
	for _, t := range tags {
		dst = append(dst, ',')
		dst = appendTagPart(dst, t.Key)
		dst = append(dst, '=')
		dst = appendTagPart(dst, t.Value)
	}
	return dst
}

// appendMeasurement appends s escaping comma and space (and a backslash
// that would read as an escape).
func appendMeasurement[T string | []byte](dst []byte, s T) []byte {
	return appendEscaped(dst, s, false)
}

// appendTagPart appends a tag key or value escaping comma, equals and space
// (and a backslash that would read as an escape).
func appendTagPart[T string | []byte](dst []byte, s T) []byte {
	return appendEscaped(dst, s, true)
}

// appendEscaped escapes comma, space, '=' in a tag part, and a backslash
// at the end or before a backslash, comma, space or '=' (in either part, so
// that a parser which does not tell the parts apart reads it right too).
func appendEscaped[T string | []byte](dst []byte, s T, tagPart bool) []byte {
	// Most keys need no escape: copy the plain prefix at once (a series
	// key is built per JSON message; byte by byte it cost 15 % of a decode).
	i := 0
	for i < len(s) {
		if c := s[i]; c == ',' || c == ' ' || c == '=' || c == '\\' {
			break
		}
		i++
	}
	dst = append(dst, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		esc := c == ',' || c == ' ' || (tagPart && c == '=')
		if c == '\\' {
			esc = i+1 == len(s)
			if !esc {
				n := s[i+1]
				esc = n == '\\' || n == ',' || n == ' ' || n == '='
			}
		}
		if esc {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return dst
}

// tagRef is a tag as the decoders collect it: both halves are unescaped
// bytes in the decoder's own scratch buffer, never aliases of the body.
type tagRef struct {
	k, v []byte
}

// sortTags sorts tags by key; it reports the first duplicate key, or nil.
// Insertion sort: a series has a handful of tags, and it does not allocate.
func sortTags(tags []tagRef) (dup []byte) {
	for i := 1; i < len(tags); i++ {
		for j := i; j > 0 && bytes.Compare(tags[j].k, tags[j-1].k) < 0; j-- {
			tags[j], tags[j-1] = tags[j-1], tags[j]
		}
	}
	for i := 1; i < len(tags); i++ {
		if bytes.Equal(tags[i].k, tags[i-1].k) {
			return tags[i].k
		}
	}
	return nil
}

// appendKey appends the series key of measurement and tags, which must be
// sorted already.
func appendKey[T string | []byte](dst []byte, measurement T, tags []tagRef) []byte {
	dst = appendMeasurement(dst, measurement)
	for _, t := range tags {
		dst = append(dst, ',')
		dst = appendTagPart(dst, t.k)
		dst = append(dst, '=')
		dst = appendTagPart(dst, t.v)
	}
	return dst
}

// splitTopic splits an MQTT topic of the form <prefix>/<device>/<name>. The
// prefix is not checked, so the topic-to-codec mapping can choose it; device
// and name must be non-empty and there must be exactly three levels.
func splitTopic(topic string) (device, name string, ok bool) {
	i := strings.IndexByte(topic, '/')
	if i < 0 {
		return "", "", false
	}
	rest := topic[i+1:]
	j := strings.IndexByte(rest, '/')
	if j < 0 {
		return "", "", false
	}
	device, name = rest[:j], rest[j+1:]
	if device == "" || name == "" || strings.IndexByte(name, '/') >= 0 {
		return "", "", false
	}
	return device, name, true
}

// Intern cache bounds. A gateway sees a bounded set of series and fields in
// steady state; the bound protects memory when it does not (a cardinality
// explosion, a fuzzer, an attacker).
const (
	// internMaxEntries is the size of one generation of the cache.
	internMaxEntries = 4096
	// internMaxLen: longer strings are not cached (they are allocated per
	// use), so a few huge keys cannot pin much memory.
	internMaxLen = 512
)

// interner returns one shared string per distinct byte sequence, so that
// repeated series keys and field names do not allocate a string per point.
//
// It keeps two generations of at most internMaxEntries each: when the
// current one is full it becomes the old one and the old one is cleared and
// reused as the current. A hit in the old generation is promoted. So the
// cache holds at most 2×internMaxEntries strings, keeps everything used
// since the last swap, and costs one allocation per new string; a working
// set larger than the bound degrades to allocating, never to growing.
//
// Not safe for concurrent use.
type interner struct {
	cur, old map[string]string
}

// bytes returns a string equal to b. The lookups do not allocate (the
// compiler does not copy for m[string(b)]).
func (in *interner) bytes(b []byte) string {
	if s, ok := in.cur[string(b)]; ok {
		return s
	}
	if s, ok := in.old[string(b)]; ok {
		in.put(s)
		return s
	}
	s := string(b)
	if len(s) <= internMaxLen {
		in.put(s)
	}
	return s
}

func (in *interner) put(s string) {
	if in.cur == nil {
		in.cur = make(map[string]string, 64)
	}
	if len(in.cur) >= internMaxEntries {
		in.old, in.cur = in.cur, in.old
		if in.cur == nil {
			in.cur = make(map[string]string, internMaxEntries)
		} else {
			clear(in.cur)
		}
	}
	in.cur[s] = s
}

// len returns the number of cached strings (tests).
func (in *interner) len() int { return len(in.cur) + len(in.old) }

// recentNames remembers the last few field names a decoder interned: a
// device sends the same few fields in every message, and comparing them
// with a handful of strings is cheaper than a lookup in the intern map,
// which also holds every series key (in a flood from 1,000 devices that
// lookup missed the CPU caches: 1.8 % of the gateway's CPU). Bounded: at
// most recentNamesLen strings of up to recentNameMax bytes, each also in
// (or once in) the interner. Not safe for concurrent use.
type recentNames struct {
	names [recentNamesLen]string
	next  int
}

const (
	recentNamesLen = 8
	recentNameMax  = 64
)

// bytes returns a string equal to b: a recent one, else in.bytes(b),
// which then becomes recent.
func (r *recentNames) bytes(b []byte, in *interner) string {
	for _, s := range r.names {
		if s == string(b) && s != "" {
			return s
		}
	}
	s := in.bytes(b)
	if len(s) <= recentNameMax {
		r.names[r.next] = s
		r.next = (r.next + 1) % recentNamesLen
	}
	return s
}
