package forward

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Error kinds in Status.Errors, one count per failed delivery attempt (or
// per undeliverable record).
const (
	ErrKindTimeout        = "timeout"          // the attempt outlived request_timeout (silent broker, slow uplink)
	ErrKindNetwork        = "network"          // dial, reset, EOF: the uplink or the broker is down
	ErrKindAuth           = "auth"             // SASL, TLS or ACL refusal: an operator must act
	ErrKindUnknownTopic   = "unknown_topic"    // the topic does not exist (and auto-creation is off)
	ErrKindBroker         = "broker"           // any other Kafka error code
	ErrKindRecordTooLarge = "record_too_large" // one record cannot fit a batch: dropped
	ErrKindRejected       = "record_rejected"  // the broker refuses the record itself: dropped
	ErrKindDecode         = "decode"           // an outbox entry that does not decode: skipped
	ErrKindOther          = "other"
)

// classify names the kind of a produce error.
func classify(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kgo.ErrRecordTimeout),
		errors.Is(err, kerr.RequestTimedOut), errors.Is(err, os.ErrDeadlineExceeded):
		return ErrKindTimeout
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return ErrKindRecordTooLarge
	case errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.InvalidTimestamp):
		return ErrKindRejected
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.TopicAuthorizationFailed),
		errors.Is(err, kerr.ClusterAuthorizationFailed), errors.Is(err, kerr.UnsupportedSaslMechanism),
		errors.Is(err, kerr.IllegalSaslState), errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
		return ErrKindAuth
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return ErrKindUnknownTopic
	}
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var alert tls.AlertError
	var recHdr tls.RecordHeaderError
	if errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) || errors.As(err, &alert) || errors.As(err, &recHdr) {
		return ErrKindAuth
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return ErrKindTimeout
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, kgo.ErrClientClosed) {
		return ErrKindNetwork
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ErrKindBroker
	}
	return ErrKindOther
}

// isRecordLevel reports kinds that concern one record, not the uplink: the
// record is retried alone once, then dropped.
func isRecordLevel(kind string) bool {
	return kind == ErrKindRecordTooLarge || kind == ErrKindRejected
}

// backoffDelay is the wait before attempt n+1 after n consecutive failed
// attempts (n ≥ 1): full jitter over an exponential cap ("Exponential
// Backoff And Jitter", AWS architecture blog, 2015), so gateways that lost
// the same cluster spread their reconnects.
func backoffDelay(b Backoff, n int, rnd func(int64) int64) time.Duration {
	ceiling := b.Initial
	for i := 1; i < n && ceiling < b.Max; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, b.Max)
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(rnd(int64(ceiling) + 1))
}

func randInt64N(n int64) int64 { return rand.Int64N(n) }
