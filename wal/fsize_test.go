package wal

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"testing"
)

const fsizeChildEnv = "RUNNEL_WAL_FSIZE_CHILD"

// TestRealWriteError runs a child whose file size limit (RLIMIT_FSIZE) makes
// the operating system fail a segment write, as a full disk would.
func TestRealWriteError(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("RLIMIT_FSIZE behaviour is checked on Linux")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), fsizeChildEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child: %s", out)
}

// fsizeChild appends until the file size limit fails a write, checks that
// the failed group was not acknowledged and the log recovered to exactly the
// acknowledged records, then lifts the limit and appends again.
func fsizeChild() int {
	dir := os.Getenv(fsizeChildEnv)
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		return 1
	}
	signal.Ignore(syscall.SIGXFSZ) // get EFBIG instead of being killed
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		return fail("getrlimit: %v", err)
	}
	const limit = 40 << 10
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: old.Max}); err != nil {
		return fail("setrlimit: %v", err)
	}
	cfg := DefaultConfig()
	cfg.SegmentBytes = 1 * MiB
	l, err := Open(dir, cfg, nil)
	if err != nil {
		return fail("open: %v", err)
	}
	defer l.Close()
	acked := map[uint64][]byte{}
	var failures int
	for i := 0; i < 1000 && failures < 3; i++ {
		rec := payload(1, i)
		first, _, err := l.Append(context.Background(), [][]byte{rec})
		if err != nil {
			failures++
			continue
		}
		acked[first] = rec
	}
	if failures == 0 {
		return fail("no write failed under a %d-byte file size limit", limit)
	}
	st := l.Stats()
	if st.WriteErrors == 0 || st.Recoveries == 0 {
		return fail("write errors %d, recoveries %d: want both > 0", st.WriteErrors, st.Recoveries)
	}
	check := func(when string) int {
		got := map[uint64][]byte{}
		r := l.NewReader(1)
		for r.Next() {
			got[r.Index()] = append([]byte(nil), r.Record()...)
		}
		if r.Err() != nil {
			return fail("%s: read: %v", when, r.Err())
		}
		if len(got) != len(acked) {
			return fail("%s: log holds %d records, %d were acknowledged", when, len(got), len(acked))
		}
		for i, w := range acked {
			if string(got[i]) != string(w) {
				return fail("%s: record %d = %q, want %q", when, i, got[i], w)
			}
		}
		return 0
	}
	if rc := check("under the limit"); rc != 0 {
		return rc
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		return fail("restore rlimit: %v", err)
	}
	for i := 0; i < 200; i++ {
		rec := payload(2, i)
		first, _, err := l.Append(context.Background(), [][]byte{rec})
		if err != nil {
			return fail("append after space came back: %v", err)
		}
		acked[first] = rec
	}
	if rc := check("after the limit was lifted"); rc != 0 {
		return rc
	}
	fmt.Printf("%d failed appends, %d acknowledged, recoveries %d\n", failures, len(acked), l.Stats().Recoveries)
	return 0
}
