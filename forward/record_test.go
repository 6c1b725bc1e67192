package forward

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

var recordCases = []struct {
	name string
	rec  Record
}{
	{"empty fields", Record{ID: "x"}},
	{"null and empty differ", Record{ID: "x", Key: []byte{}, Value: nil, Origin: []byte{}}},
	{"full", Record{
		Topic: "runnel.summaries", Key: []byte("gw1|env,device=pi-042|temp|1m"),
		Value:   []byte(`{"count":60,"mean":21.5}`),
		Headers: []Header{{Key: "schema", Value: []byte("summary/v1")}, {Key: "nil", Value: nil}, {Key: "", Value: []byte{}}},
		ID:      "gw1/env,device=pi-042/temp/1m/1700000000000", Origin: []byte{1, 2, 3, 0xff},
	}},
	{"binary", Record{ID: "\x00\xff", Key: bytes.Repeat([]byte{0}, 300), Value: bytes.Repeat([]byte{0xff}, 7000)}},
}

func TestRecordRoundTrip(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	for _, tc := range recordCases {
		t.Run(tc.name, func(t *testing.T) {
			b := EncodeRecord(tc.rec, at)
			if len(b) != tc.rec.encodedLen() {
				t.Errorf("encoded %d bytes, encodedLen says %d", len(b), tc.rec.encodedLen())
			}
			got, gotAt, err := DecodeRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			if !recordsEqual(got, tc.rec) || !gotAt.Equal(at) {
				t.Fatalf("round trip: %+v at %v, want %+v at %v", got, gotAt, tc.rec, at)
			}
			if a, ok := entryAppended(b); !ok || !a.Equal(at) {
				t.Errorf("entryAppended: %v %v", a, ok)
			}
			// The decoded record owns its bytes.
			for i := range b {
				b[i] = 0xAA
			}
			if !recordsEqual(got, tc.rec) {
				t.Errorf("decoded record aliases its input")
			}
		})
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	good := EncodeRecord(recordCases[2].rec, time.Unix(1, 0))
	cases := []struct {
		name  string
		in    []byte
		field string
	}{
		{"empty", nil, "header"},
		{"short", good[:5], "header"},
		{"version", append([]byte{9}, good[1:]...), "version"},
		{"truncated topic", good[:recordFixed+3], "topic"},
		{"truncated", good[:len(good)-1], "origin"},
		{"trailing", append(append([]byte(nil), good...), 0), "end"},
		{"overlong varint", append(append([]byte(nil), good[:recordFixed]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), "topic"},
		{"non-minimal length", append(append([]byte(nil), good[:recordFixed]...), 0x80, 0x00), "topic"},
		{"header count lies", append(append([]byte(nil), good[:recordFixed]...), 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f), "headers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeRecord(tc.in)
			var de *DecodeError
			if !errors.As(err, &de) || de.Field != tc.field || de.Offset > len(tc.in) {
				t.Fatalf("err %v, want a DecodeError in %s", err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("message %q does not name the field", err)
			}
		})
	}
}

// FuzzDecodeRecord: any input decodes or fails with a DecodeError, never
// panics; what decodes re-encodes to the same bytes; allocations stay
// bounded by the input.
func FuzzDecodeRecord(f *testing.F) {
	for _, tc := range recordCases {
		f.Add(EncodeRecord(tc.rec, time.Unix(0, 42)))
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, in []byte) {
		rec, at, err := DecodeRecord(in)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || de.Offset < 0 || de.Offset > len(in) {
				t.Fatalf("error %v is not a DecodeError within the input", err)
			}
			return
		}
		if len(rec.Headers) > len(in) {
			t.Fatalf("%d headers from %d bytes", len(rec.Headers), len(in))
		}
		out := EncodeRecord(rec, at)
		if !bytes.Equal(out, in) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", in, out)
		}
		// A strict prefix never decodes: every field is length-delimited
		// and trailing bytes are refused.
		if len(in) > 0 {
			if _, _, err := DecodeRecord(in[:len(in)-1]); err == nil {
				t.Fatalf("prefix of %d bytes decoded", len(in)-1)
			}
		}
	})
}

func BenchmarkDecodeRecord(b *testing.B) {
	in := EncodeRecord(recordCases[2].rec, time.Unix(1, 0))
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, _, err := DecodeRecord(in); err != nil {
			b.Fatal(err)
		}
	}
}

// kafkaEqual compares two Kafka records as the producer sends them (nil
// and empty bytes differ: a Kafka null).
func kafkaEqual(a, b *kgo.Record) bool {
	if a.Topic != b.Topic || !nullableEqual(a.Key, b.Key) || !nullableEqual(a.Value, b.Value) || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !nullableEqual(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}

func nullableEqual(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

// FuzzRecordDecoder: the sender's decoder gives, for any input, the Kafka
// record DecodeRecord and kafkaRecord give, or the same error; and one
// decoder reused over inputs keeps no state from one to the next.
func FuzzRecordDecoder(f *testing.F) {
	for _, tc := range recordCases {
		f.Add(EncodeRecord(tc.rec, time.Unix(0, 42)))
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f})
	full := EncodeRecord(recordCases[2].rec, time.Unix(0, 42))
	f.Fuzz(func(t *testing.T, in []byte) {
		d := recordDecoder{topic: "outbox.topic"}
		for _, b := range [][]byte{in, full, in} {
			got, err := d.decode(b)
			rec, _, werr := DecodeRecord(b)
			if (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error() {
				t.Fatalf("decode %x: error %v, DecodeRecord's %v", b, err, werr)
			}
			if err != nil {
				continue
			}
			if want := kafkaRecord(&rec, "outbox.topic"); !kafkaEqual(got, want) {
				t.Fatalf("decode %x:\n got %+v\nwant %+v", b, got, want)
			}
		}
	})
}

// TestRecordDecoderAllocations: the record a round holds is the Kafka
// record and its headers, views of the entry, nothing more.
func TestRecordDecoderAllocations(t *testing.T) {
	in := EncodeRecord(recordCases[2].rec, time.Unix(1, 0))
	d := recordDecoder{topic: "t"}
	if _, err := d.decode(in); err != nil { // warm the shared names
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := d.decode(in); err != nil {
			t.Fatal(err)
		}
	}); n > 2 {
		t.Errorf("%v allocations per record, want 2 (record, headers)", n)
	}
	in[len(in)-1] ^= 0xff // a corrupt origin is still a valid byte
	in = in[:len(in)-2]
	if _, err := d.decode(in); err == nil {
		t.Error("a truncated entry decoded")
	}
}

func BenchmarkRecordDecoder(b *testing.B) {
	in := EncodeRecord(recordCases[2].rec, time.Unix(1, 0))
	d := recordDecoder{topic: "t"}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := d.decode(in); err != nil {
			b.Fatal(err)
		}
	}
}
