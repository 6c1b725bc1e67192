package forward

import (
	"bytes"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestZstdCompressor(t *testing.T) {
	c, err := newZstdCompressor()
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	src := bytes.Repeat([]byte(`{"series":"env,device=d1","field":"t","mean":21.5}`), 400)
	var dst bytes.Buffer
	for range 3 { // the encoder is reused
		dst.Reset()
		out, codec := c.Compress(&dst, src)
		if codec != kgo.CodecZstd {
			t.Fatalf("codec %v, want zstd", codec)
		}
		if len(out) >= len(src)/10 {
			t.Errorf("compressed %d bytes to %d", len(src), len(out))
		}
		got, err := dec.DecodeAll(out, nil)
		if err != nil || !bytes.Equal(got, src) {
			t.Fatalf("round trip: %v, equal %v", err, bytes.Equal(got, src))
		}
	}
	// A broker before Kafka 2.1 cannot take zstd.
	if out, codec := c.Compress(&dst, src, kgo.CompressDisableZstd); codec != kgo.CodecNone || !bytes.Equal(out, src) {
		t.Errorf("with CompressDisableZstd: codec %v, %d bytes", codec, len(out))
	}
}
