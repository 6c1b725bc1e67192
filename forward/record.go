package forward

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// IDHeader is the header every record carries its ID in, first among its
// headers, so consumers can drop the duplicates at-least-once delivery
// produces.
const IDHeader = "runnel-id"

// Record is one message for Kafka, as the gateway hands it to an outbox.
// forward does not look inside Key, Value or Origin. A nil Key or Value is
// sent as a Kafka null (a nil Value on a compacted topic is a tombstone);
// an empty one as empty bytes.
type Record struct {
	// Topic overrides the topic of the outbox's kind when set.
	Topic   string
	Key     []byte
	Value   []byte
	Headers []Header
	// ID is the record's deterministic id (gateway, series, field,
	// window): the same emission always gets the same ID, so duplicates
	// are recognisable. Required; sent as header runnel-id.
	ID string
	// Origin is opaque to forward: stored with the record, returned by
	// Outbox.Last, never sent (the gateway keeps its replay position here).
	Origin []byte
}

// MaxRecordBytes bounds the outbox entry of one record (all fields plus
// about 20 bytes of encoding). Kafka's default max.message.bytes is about
// 1 MB per batch, so larger records could never be delivered anyway.
const MaxRecordBytes = 1 << 20

const (
	recordVersion = 1
	// version, appended-at
	recordFixed = 1 + 8
)

// encodedLen returns the size of r's outbox entry.
func (r *Record) encodedLen() int {
	n := recordFixed + strLen(len(r.Topic)) + nullableLen(r.Key) + nullableLen(r.Value)
	n += uvarintLen(uint64(len(r.Headers)))
	for _, h := range r.Headers {
		n += strLen(len(h.Key)) + nullableLen(h.Value)
	}
	return n + strLen(len(r.ID)) + nullableLen(r.Origin)
}

func strLen(n int) int { return uvarintLen(uint64(n)) + n }

func nullableLen(b []byte) int {
	if b == nil {
		return 1
	}
	return uvarintLen(uint64(len(b))+1) + len(b)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// appendRecord appends r's outbox entry (FORMAT.md) to dst, stamped with
// the time it was appended.
func appendRecord(dst []byte, r *Record, appended time.Time) []byte {
	dst = append(dst, recordVersion)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(appended.UnixNano()))
	dst = appendString(dst, r.Topic)
	dst = appendNullable(dst, r.Key)
	dst = appendNullable(dst, r.Value)
	dst = binary.AppendUvarint(dst, uint64(len(r.Headers)))
	for _, h := range r.Headers {
		dst = appendString(dst, h.Key)
		dst = appendNullable(dst, h.Value)
	}
	dst = appendString(dst, r.ID)
	return appendNullable(dst, r.Origin)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendNullable writes len+1, so 0 stands for nil and nil survives the
// round trip (a Kafka null differs from empty bytes).
func appendNullable(dst, b []byte) []byte {
	if b == nil {
		return append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(b))+1)
	return append(dst, b...)
}

// EncodeRecord returns the outbox entry of r, stamped with the time it was
// appended. It does not validate r (Outbox.Append does).
func EncodeRecord(r Record, appended time.Time) []byte {
	return appendRecord(make([]byte, 0, r.encodedLen()), &r, appended)
}

// DecodeError says where and why an outbox entry does not decode.
type DecodeError struct {
	Offset int    // byte offset of the bad field
	Field  string // "topic", "headers[2].value", ...
	Msg    string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("decode outbox record: %s at byte %d: %s", e.Field, e.Offset, e.Msg)
}

// DecodeRecord decodes an outbox entry written by EncodeRecord, with the
// time it was appended. It copies b: the Record owns its slices. It
// rejects an unknown version, any length that runs past b, and trailing
// bytes, with a *DecodeError.
func DecodeRecord(b []byte) (Record, time.Time, error) {
	buf := append([]byte(nil), b...)
	var hs []viewHeader
	v, at, err := decodeView(buf, &hs)
	if err != nil {
		return Record{}, time.Time{}, err
	}
	r := Record{Topic: string(v.topic), Key: v.key, Value: v.value, ID: string(v.id), Origin: v.origin}
	if len(hs) > 0 {
		r.Headers = make([]Header, len(hs))
		for i, h := range hs {
			r.Headers[i] = Header{Key: string(h.key), Value: h.value}
		}
	}
	return r, at, nil
}

// recordView is a decoded outbox entry whose fields alias the entry.
type recordView struct {
	topic, key, value, id, origin []byte // key, value, origin: nil for a null
}

type viewHeader struct{ key, value []byte }

// decodeView decodes entry buf into views of it (FORMAT.md), the headers
// into *hs (reused: its previous contents are dropped). It allocates
// nothing but *hs's growth.
func decodeView(buf []byte, hs *[]viewHeader) (recordView, time.Time, error) {
	d := decoder{buf: buf}
	var v recordView
	*hs = (*hs)[:0]
	if len(d.buf) < recordFixed {
		return v, time.Time{}, &DecodeError{Offset: 0, Field: "header", Msg: fmt.Sprintf("%d bytes is shorter than the %d-byte fixed part", len(buf), recordFixed)}
	}
	if ver := d.buf[0]; ver != recordVersion {
		return v, time.Time{}, &DecodeError{Offset: 0, Field: "version", Msg: fmt.Sprintf("unknown version %d (this build reads %d)", ver, recordVersion)}
	}
	at := time.Unix(0, int64(binary.LittleEndian.Uint64(d.buf[1:9])))
	d.off = recordFixed
	v.topic = d.str("topic")
	v.key = d.nullable("key")
	v.value = d.nullable("value")
	// Each header takes at least two bytes, so a count beyond that is a lie
	// and must not size an allocation.
	n := d.uvarint("headers")
	if d.err == nil && n > uint64(len(d.buf)-d.off)/2 {
		d.fail("headers", fmt.Sprintf("count %d cannot fit in the %d bytes left", n, len(d.buf)-d.off))
	}
	for i := 0; d.err == nil && uint64(i) < n; i++ {
		// The field is named only on failure: no formatting per header.
		k := d.str("")
		if d.err != nil {
			d.err.Field = fmt.Sprintf("headers[%d].key", i)
			break
		}
		val := d.nullable("")
		if d.err != nil {
			d.err.Field = fmt.Sprintf("headers[%d].value", i)
			break
		}
		*hs = append(*hs, viewHeader{k, val})
	}
	v.id = d.str("id")
	v.origin = d.nullable("origin")
	if d.err == nil && d.off != len(d.buf) {
		d.fail("end", fmt.Sprintf("%d trailing bytes", len(d.buf)-d.off))
	}
	if d.err != nil {
		*hs = (*hs)[:0]
		return recordView{}, time.Time{}, d.err
	}
	return v, at, nil
}

// entryAppended reads only the append time of an entry.
func entryAppended(b []byte) (time.Time, bool) {
	if len(b) < recordFixed || b[0] != recordVersion {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.LittleEndian.Uint64(b[1:9]))), true
}

type decoder struct {
	buf []byte
	off int
	err *DecodeError
}

func (d *decoder) fail(field, msg string) {
	if d.err == nil {
		d.err = &DecodeError{Offset: d.off, Field: field, Msg: msg}
	}
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf[d.off:])
	if n <= 0 {
		d.fail(field, "truncated or overlong length")
		return 0
	}
	// Only the shortest encoding: an entry has exactly one byte form.
	if n != uvarintLen(v) {
		d.fail(field, fmt.Sprintf("length %d in %d bytes is not minimally encoded", v, n))
		return 0
	}
	d.off += n
	return v
}

// bytes returns the next n bytes, aliasing d.buf (a private copy).
func (d *decoder) bytes(field string, n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if left := uint64(len(d.buf) - d.off); n > left {
		d.fail(field, fmt.Sprintf("length %d runs past the end (%d bytes left)", n, left))
		return nil
	}
	b := d.buf[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return b
}

// str returns the next length-prefixed string as a view (non-nil when
// the decoder has not failed).
func (d *decoder) str(field string) []byte {
	n := d.uvarint(field)
	if d.err != nil {
		return nil
	}
	return d.bytes(field, n)
}

func (d *decoder) nullable(field string) []byte {
	n := d.uvarint(field)
	if d.err != nil || n == 0 {
		return nil
	}
	return d.bytes(field, n-1)
}

// RecordError is an Append refused because one of its records is invalid;
// nothing of that Append was stored.
type RecordError struct {
	Index int    // position of the record in the Append
	ID    string // its ID, if it has one
	Field string
	Msg   string
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("outbox record %d (id %q): %s: %s", e.Index, e.ID, e.Field, e.Msg)
}

// validate checks what can be checked before a record reaches Kafka.
func validateRecord(i int, r *Record, size int) error {
	bad := func(field, format string, args ...any) error {
		return &RecordError{Index: i, ID: r.ID, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if r.ID == "" {
		return bad("id", "empty: every record needs a deterministic id (consumers drop duplicates by it)")
	}
	if r.Topic != "" {
		if err := checkTopic(r.Topic); err != nil {
			return bad("topic", "%q: %v", r.Topic, err)
		}
	}
	for j, h := range r.Headers {
		if h.Key == IDHeader {
			return bad(fmt.Sprintf("headers[%d]", j), "%q is reserved: forward sets it from the record's ID", IDHeader)
		}
	}
	if size > MaxRecordBytes {
		return bad("size", "%d bytes encoded exceeds the %d-byte limit", size, MaxRecordBytes)
	}
	return nil
}
