package wal

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

const crashChildEnv = "RUNNEL_WAL_CRASH_CHILD"

// crashChild appends from several goroutines until it is killed, printing
// one line per acknowledged append: "first last producer seq count". Each
// line is one write(2) to the pipe, so a kill never leaves half a line that
// parses.
func crashChild(dir string) {
	round, _ := strconv.Atoi(os.Getenv("RUNNEL_WAL_CRASH_ROUND"))
	cfg := DefaultConfig()
	cfg.SegmentBytes = 64 * KiB
	l, err := Open(dir, cfg, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	for g := range 4 {
		go func() {
			p := round*16 + g
			rng := rand.New(rand.NewPCG(uint64(p), 7))
			for s := 0; ; {
				n := 1 + rng.IntN(3)
				recs := make([][]byte, n)
				for j := range recs {
					recs[j] = payload(p, s+j)
				}
				first, last, err := l.Append(context.Background(), recs)
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(4)
				}
				line := fmt.Sprintf("%d %d %d %d %d\n", first, last, p, s, n)
				mu.Lock()
				os.Stdout.WriteString(line)
				mu.Unlock()
				s += n
			}
		}()
	}
	time.Sleep(30 * time.Second) // the parent kills it long before; this bounds an orphan
	os.Exit(5)
}

type ack struct {
	first, last uint64
	p, s, n     int
}

// TestCrashLosesNoAcknowledgedRecord SIGKILLs a child that appends
// concurrently, at random moments, at least 50 times; after each kill every
// acknowledged record is present, byte-identical and in order, and every
// record found is one the child really appended.
func TestCrashLosesNoAcknowledgedRecord(t *testing.T) {
	const rounds = 50
	budget := 150 * time.Second
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var acks []ack
	start := time.Now()
	for round := 0; round < rounds; round++ {
		if time.Since(start) > budget {
			t.Fatalf("only %d of %d crash rounds within %s", round, rounds, budget)
		}
		acks = append(acks, crashRound(t, exe, dir, round, rng)...)
		verifyCrashLog(t, dir, acks)
	}
	if len(acks) < rounds {
		t.Fatalf("only %d acknowledged appends over %d rounds", len(acks), rounds)
	}
	t.Logf("%d rounds, %d acknowledged appends, %s", rounds, len(acks), time.Since(start).Round(time.Millisecond))
}

// crashRound runs one child, kills it after a random number of
// acknowledgements (or a random delay after the first), and returns the
// acknowledgements it printed.
func crashRound(t *testing.T, exe, dir string, round int, rng *rand.Rand) []ack {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, "RUNNEL_WAL_CRASH_ROUND="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killAfter := 1 + rng.IntN(400)
	delay := time.Duration(rng.IntN(40)) * time.Millisecond
	var acks []ack
	sc := bufio.NewScanner(out)
	var timer *time.Timer
	killed := make(chan struct{})
	kill := func() {
		select {
		case <-killed:
		default:
			close(killed)
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	deadline := time.AfterFunc(20*time.Second, kill) // a stuck child fails the round below
	defer deadline.Stop()
	for sc.Scan() {
		var a ack
		if _, err := fmt.Sscanf(sc.Text(), "%d %d %d %d %d", &a.first, &a.last, &a.p, &a.s, &a.n); err != nil {
			continue // a line cut by the kill
		}
		acks = append(acks, a)
		if timer == nil {
			timer = time.AfterFunc(delay, kill)
			defer timer.Stop()
		}
		if len(acks) >= killAfter {
			kill()
		}
	}
	io.Copy(io.Discard, out)
	cmd.Wait()
	if len(acks) == 0 {
		t.Fatalf("round %d: child acknowledged nothing; stderr: %s", round, stderr.String())
	}
	return acks
}

func verifyCrashLog(t *testing.T, dir string, acks []ack) {
	t.Helper()
	l := mustOpen(t, dir, DefaultConfig())
	defer l.Close()
	got := readAll(t, l)
	for _, a := range acks {
		for j := 0; j < a.n; j++ {
			idx := a.first + uint64(j)
			if want := payload(a.p, a.s+j); !bytes.Equal(got[idx], want) {
				t.Fatalf("acknowledged record %d (producer %d seq %d) is %q, want %q", idx, a.p, a.s+j, got[idx], want)
			}
		}
	}
	lastSeq := map[int]int{}
	for idx := uint64(1); idx <= l.LastIndex(); idx++ {
		rec, ok := got[idx]
		if !ok {
			t.Fatalf("record %d missing from the middle of the log", idx)
		}
		var p, s int
		if _, err := fmt.Sscanf(string(rec), "%d/%d:", &p, &s); err != nil || !bytes.Equal(rec, payload(p, s)) {
			t.Fatalf("record %d = %q was never appended", idx, rec)
		}
		if prev, ok := lastSeq[p]; ok && s != prev+1 {
			t.Fatalf("record %d: producer %d seq %d follows seq %d", idx, p, s, prev)
		}
		lastSeq[p] = s
	}
	if st := l.Stats(); st.CorruptRecords != 0 {
		t.Fatalf("%d corrupt records after a crash", st.CorruptRecords)
	}
}
