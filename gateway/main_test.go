package gateway

import (
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Tests that go through Load read the process environment: keep the
	// developer's own RUNNEL_* settings out of them.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, envPrefix) {
			os.Unsetenv(name)
		}
	}
	goleak.VerifyTestMain(m)
}
