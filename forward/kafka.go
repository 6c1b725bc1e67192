package forward

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// clientOpts turns the config into kgo options. It reads the TLS files (so
// New reports a missing certificate before anything runs) but opens no
// connection.
func clientOpts(cfg KafkaConfig, maxBuffered int, logger *slog.Logger, hooks ...kgo.Hook) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		// acks=all and idempotence are kgo's defaults; stated so a change
		// of defaults cannot weaken delivery.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// The sender builds each round whole before anything is sent (see
		// sender); it lingers itself, so kgo's linger is off.
		kgo.ManualFlushing(),
		kgo.ProducerBatchMaxBytes(int32(cfg.BatchMaxBytes)),
		kgo.ProduceRequestTimeout(cfg.RequestTimeout),
		kgo.MaxBufferedRecords(maxBuffered),
		// After a broker failure kgo holds the affected records until its
		// next metadata refresh, which waits at least MetadataMinAge (5s by
		// default), whatever their context says. A quarter of an attempt
		// keeps a failed attempt from outliving request_timeout.
		kgo.MetadataMinAge(min(max(cfg.RequestTimeout/4, 100*time.Millisecond), 5*time.Second)),
		kgo.WithLogger(kgoLogger{logger}),
		// KIP-714 telemetry pushes, to brokers that ask for them, are
		// compressed with kgo's default lz4 writer, which takes two 4 MiB
		// blocks per push: on a 40 MiB gateway that was the peak RSS
		// (+12 MiB every push). Operators watch the gateway's /metrics.
		kgo.DisableClientMetrics(),
	}
	if cfg.Delivery != DeliveryExactlyOnce {
		// An idempotent producer waits forever for an answer to a request
		// it sent (LIBRARY-NOTES): a broker that accepts the connection
		// and never answers would hang records past every timeout. This
		// lets the attempt's deadline fail them; the outbox still holds
		// them, and the next attempt sends them again.
		// kgo refuses it with a transactional id; in exactly_once mode a
		// round that outlives its deadline is aborted instead, and the
		// transaction timeout bounds what Kafka holds open.
		opts = append(opts, kgo.AllowIdempotentProduceCancellation())
	}
	if len(hooks) > 0 {
		opts = append(opts, kgo.WithHooks(hooks...))
	}
	if cfg.Compression == "zstd" {
		c, err := newZstdCompressor()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.WithCompressor(c))
	} else {
		codec, err := compressionCodec(cfg.Compression)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.ProducerBatchCompression(codec))
	}
	if cfg.TLS.Enabled {
		tc, err := tlsConfig(cfg.TLS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch cfg.SASL.Mechanism {
	case SASLPlain:
		opts = append(opts, kgo.SASL(plain.Auth{User: cfg.SASL.Username, Pass: cfg.SASL.Password}.AsMechanism()))
	case SASLScramSHA256:
		opts = append(opts, kgo.SASL(scram.Auth{User: cfg.SASL.Username, Pass: cfg.SASL.Password}.AsSha256Mechanism()))
	case SASLScramSHA512:
		opts = append(opts, kgo.SASL(scram.Auth{User: cfg.SASL.Username, Pass: cfg.SASL.Password}.AsSha512Mechanism()))
	}
	return opts, nil
}

func compressionCodec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "zstd":
		return kgo.ZstdCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "none":
		return kgo.NoCompression(), nil
	}
	return kgo.CompressionCodec{}, &ConfigError{Key: "compression", Msg: fmt.Sprintf("%q is not supported", name)}
}

func tlsConfig(c TLSConfig) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // an operator's explicit choice, documented as unsafe
	}
	var errs []error
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			errs = append(errs, &ConfigError{Key: "tls.ca_file", Msg: err.Error()})
		} else {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, &ConfigError{Key: "tls.ca_file", Msg: fmt.Sprintf("%s holds no PEM certificate", c.CAFile)})
			}
			tc.RootCAs = pool
		}
	}
	if c.CertFile != "" && c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			errs = append(errs, &ConfigError{Key: "tls.cert_file", Msg: fmt.Sprintf("load client certificate %s with key %s: %v", c.CertFile, c.KeyFile, err)})
		} else {
			tc.Certificates = []tls.Certificate{cert}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return tc, nil
}

// kgoLogger forwards kgo's log to slog. kgo logs every failed dial at warn
// level; during an outage that would be a line per broker per retry, so its
// warnings go to debug and its errors to warn: the forwarder logs each
// failed attempt itself, once.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelDebug
	if level == kgo.LogLevelError {
		lvl = slog.LevelWarn
	}
	k.l.Log(context.Background(), lvl, "kafka client: "+msg, keyvals...)
}

// wireHook counts what reached Kafka: batches, records and their bytes as
// compressed on the wire.
type wireHook struct {
	batches, records, wireBytes, rawBytes atomic.Uint64
}

func (h *wireHook) OnProduceBatchWritten(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.ProduceBatchMetrics) {
	h.batches.Add(1)
	h.records.Add(uint64(m.NumRecords))
	h.wireBytes.Add(uint64(m.CompressedBytes))
	h.rawBytes.Add(uint64(m.UncompressedBytes))
}
