package forward

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("produce: %w", err) }
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errAttemptTimeout, ErrKindTimeout},
		{kgo.ErrRecordTimeout, ErrKindTimeout},
		{kerr.RequestTimedOut, ErrKindTimeout},
		{wrap(kerr.MessageTooLarge), ErrKindRecordTooLarge},
		{kerr.RecordListTooLarge, ErrKindRecordTooLarge},
		{kerr.InvalidRecord, ErrKindRejected},
		{wrap(kerr.SaslAuthenticationFailed), ErrKindAuth},
		{kerr.TopicAuthorizationFailed, ErrKindAuth},
		{x509.UnknownAuthorityError{}, ErrKindAuth},
		{kerr.UnknownTopicID, ErrKindUnknownTopic},
		{kerr.UnknownTopicOrPartition, ErrKindUnknownTopic},
		{kerr.UnknownServerError, ErrKindBroker},
		{kerr.NotEnoughReplicas, ErrKindBroker},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, ErrKindNetwork},
		{wrap(io.EOF), ErrKindNetwork},
		{syscall.ECONNRESET, ErrKindNetwork},
		{&net.DNSError{IsTimeout: true}, ErrKindTimeout},
		{errors.New("strange"), ErrKindOther},
		{context.Canceled, ErrKindOther},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
