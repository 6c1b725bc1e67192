//go:build unix

package windows

import "syscall"

// processCPU is the user and system CPU time of the process so far, in ns
// (0 where getrusage fails).
func processCPU() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
