package forward

import (
	"bytes"
	"fmt"
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

// TestZstdCompressorBufferFitsOutput checks that compressing a batch does
// not size the (pooled) output buffer by the batch: summaries compress
// about 15x, and a buffer as large as the batch kept a mebibyte per
// pooled buffer for tens of kilobytes of output.
func TestZstdCompressorBufferFitsOutput(t *testing.T) {
	c, err := newZstdCompressor()
	if err != nil {
		t.Fatal(err)
	}
	var src []byte
	for i := 0; len(src) < 1<<20; i++ {
		src = fmt.Appendf(src, `{"series":"env,device=d%d","field":"t","count":%d,"mean":%d.5}`, i%1000, i%60, i%97)
	}
	var dst bytes.Buffer
	out, _ := c.Compress(&dst, src)
	if dst.Cap() > len(src)/4 {
		t.Errorf("output buffer of %d bytes for %d compressed bytes of a %d-byte batch", dst.Cap(), len(out), len(src))
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	if got, err := dec.DecodeAll(out, nil); err != nil || !bytes.Equal(got, src) {
		t.Fatalf("round trip: %v", err)
	}
	// Incompressible input still compresses (EncodeAll grows the output).
	rnd := make([]byte, 256<<10)
	for i := range rnd {
		rnd[i] = byte(i*7919 + i>>3*31)
	}
	dst.Reset()
	out, _ = c.Compress(&dst, rnd)
	if got, err := dec.DecodeAll(out, nil); err != nil || !bytes.Equal(got, rnd) {
		t.Fatalf("round trip of incompressible input: %v", err)
	}
}
