//go:build linux

package testutil

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Tmpfs mounts a tmpfs of size bytes on a new directory under the test's
// temp dir and unmounts it when the test ends: a small disk a test can
// fill. Mounting needs root (CI runs tests as root); elsewhere the test is
// skipped with the reason, or fails when REQUIRE_TEST_TOOLS=1.
func Tmpfs(tb testing.TB, size int64) string {
	tb.Helper()
	return TmpfsOpts(tb, "size="+strconv.FormatInt(size, 10))
}

// TmpfsOpts is Tmpfs with the mount options given (e.g. "size=1m,nr_inodes=64").
func TmpfsOpts(tb testing.TB, options string) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o750); err != nil {
		tb.Fatal(err)
	}
	err := errors.New("not root")
	if os.Geteuid() == 0 {
		err = syscall.Mount("tmpfs", dir, "tmpfs", 0, options)
	}
	if err != nil {
		msg := "a full-disk test needs a small tmpfs (run as root): mount: " + err.Error()
		if os.Getenv("REQUIRE_TEST_TOOLS") == "1" {
			tb.Fatal(msg + " (REQUIRE_TEST_TOOLS=1)")
		}
		tb.Skip(msg)
	}
	tb.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			tb.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// Fill writes a file in dir until the file system is full (ENOSPC) and
// returns its path; removing it gives the space back.
func Fill(tb testing.TB, dir string) string {
	tb.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			tb.Fatalf("fill %s: %v", dir, err)
		}
	}
}

// FillInodes creates empty files in dir until the file system has no
// inode left (ENOSPC); removing dir/inodes gives them back.
func FillInodes(tb testing.TB, dir string) string {
	tb.Helper()
	sub := filepath.Join(dir, "inodes")
	if err := os.Mkdir(sub, 0o750); err != nil {
		tb.Fatal(err)
	}
	for i := 0; ; i++ {
		f, err := os.Create(filepath.Join(sub, strconv.Itoa(i)))
		if err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return sub
			}
			tb.Fatalf("fill inodes of %s: %v", dir, err)
		}
		f.Close()
	}
}
