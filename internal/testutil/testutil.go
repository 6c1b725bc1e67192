// Package testutil holds the test helpers several packages share.
package testutil

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond until it reports true or timeout passes, then fails
// the test with the last state cond described. The poll interval is not
// synchronisation: cond says what is awaited.
func WaitFor(tb testing.TB, timeout time.Duration, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %s; last state: %s", timeout, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SyncBuffer collects writes (a logger's, a child's output) safely for a
// test that polls String meanwhile.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
