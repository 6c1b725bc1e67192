//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package wal

import "os"

// lockDir is a no-op where flock is unavailable: one process per data dir
// is then the operator's duty.
func lockDir(dir string) (*os.File, error) { return nil, nil }

func unlockDir(f *os.File) {}
