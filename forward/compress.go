package forward

import (
	"bytes"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"
)

// zstdCompressor compresses produce batches with one zstd encoder at its
// fastest level and lower-memory setting, kept for the client's life.
//
// kgo's default compressor keeps its zstd encoders in a sync.Pool at the
// default level: each holds about 2.6 MB of match tables and history, and
// the pool drops them at garbage collections, so a busy client rebuilds
// one every few collections. On a 40 MiB gateway that is the largest
// single object in the heap. The fastest level costs a few percent of
// ratio on the JSON summaries and less CPU.
type zstdCompressor struct {
	mu  sync.Mutex
	enc *zstd.Encoder
}

func newZstdCompressor() (*zstdCompressor, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithWindowSize(64<<10), // as kgo: batches are at most batch_max_bytes
		zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true),
		zstd.WithZeroFrames(true))
	if err != nil {
		return nil, err
	}
	return &zstdCompressor{enc: enc}, nil
}

// Compress implements kgo.Compressor. A broker too old for zstd (produce
// request before v7, Kafka < 2.1) gets the batch uncompressed, as from
// kgo's own compressor configured with zstd alone.
func (c *zstdCompressor) Compress(dst *bytes.Buffer, src []byte, flags ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	if slices.Contains(flags, kgo.CompressDisableZstd) {
		return src, kgo.CodecNone
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The output is a tenth of the batch or less for the JSON summaries
	// (about 15x): the buffer starts at an eighth, and EncodeAll grows it
	// for what compresses worse. Sized by MaxEncodedSize it was as large
	// as the batch, and kgo pools these buffers.
	if n := len(src)/8 + 64; n > dst.Cap() {
		dst.Grow(n)
	}
	return c.enc.EncodeAll(src, dst.Bytes()[:0]), kgo.CodecZstd
}
