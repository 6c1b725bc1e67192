package bench

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that RunBench leaves no goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
