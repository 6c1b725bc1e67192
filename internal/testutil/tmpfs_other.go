//go:build !linux

package testutil

import (
	"os"
	"testing"
)

// Tmpfs needs Linux: elsewhere the test is skipped, or fails when
// REQUIRE_TEST_TOOLS=1.
func Tmpfs(tb testing.TB, size int64) string {
	tb.Helper()
	if os.Getenv("REQUIRE_TEST_TOOLS") == "1" {
		tb.Fatal("a full-disk test needs a tmpfs mount (Linux, root) (REQUIRE_TEST_TOOLS=1)")
	}
	tb.Skip("a full-disk test needs a tmpfs mount (Linux, root)")
	return ""
}

// Fill is Linux-only with Tmpfs.
func Fill(tb testing.TB, dir string) string {
	tb.Skip("needs Tmpfs")
	return ""
}

// TmpfsOpts needs Linux, as Tmpfs.
func TmpfsOpts(tb testing.TB, options string) string { return Tmpfs(tb, 0) }

// FillInodes is Linux-only with Tmpfs.
func FillInodes(tb testing.TB, dir string) string {
	tb.Skip("needs Tmpfs")
	return ""
}
