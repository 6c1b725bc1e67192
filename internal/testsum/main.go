// Command testsum reads `go test -json` from standard input and prints
// what a non-verbose `go test` would: one line per package, and the whole
// output of every test that failed. It ends with the tests that were
// skipped and why, and a closing line "N passed, N failed, N skipped".
// It exits 1 when a test or a package failed (a build error included).
//
// `make test` pipes the race run through it so a test that skips (a
// missing tool, a short setting) is never silent.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of test2json output (go doc cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

type key struct{ pkg, test string }

type skip struct {
	name   string
	reason string
}

func main() {
	failed, err := summarize(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsum:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

// summarize copies the summary of the stream in to out and reports
// whether anything failed.
func summarize(in io.Reader, out io.Writer) (bool, error) {
	outputs := map[key][]string{}
	var skips []skip
	passed, failed, skipped := 0, 0, 0
	anyFail := false
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil || ev.Action == "" {
			// Not test2json (a build error printed by go itself): pass it on.
			fmt.Fprintln(out, string(line))
			continue
		}
		k := key{ev.Package, ev.Test}
		switch ev.Action {
		case "output":
			outputs[k] = append(outputs[k], ev.Output)
		case "pass":
			if ev.Test != "" {
				passed++
			} else {
				fmt.Fprintf(out, "ok  \t%s\t%.3fs\n", ev.Package, ev.Elapsed)
			}
			delete(outputs, k)
		case "skip":
			if ev.Test != "" {
				skipped++
				skips = append(skips, skip{ev.Package + " " + ev.Test, reason(outputs[k])})
			} else {
				fmt.Fprintf(out, "?   \t%s\t[no test files]\n", ev.Package)
			}
			delete(outputs, k)
		case "fail":
			anyFail = true
			if ev.Test != "" {
				failed++
				// Subtests print inside their parent; print each failing
				// test's own lines once.
				fmt.Fprint(out, strings.Join(outputs[k], ""))
			} else {
				fmt.Fprint(out, strings.Join(outputs[k], ""))
				fmt.Fprintf(out, "FAIL\t%s\t%.3fs\n", ev.Package, ev.Elapsed)
			}
			delete(outputs, k)
		}
	}
	if err := sc.Err(); err != nil {
		return true, err
	}
	if len(skips) > 0 {
		sort.Slice(skips, func(i, j int) bool { return skips[i].name < skips[j].name })
		fmt.Fprintf(out, "\nskipped tests (%d):\n", len(skips))
		for _, s := range skips {
			fmt.Fprintf(out, "  %s: %s\n", s.name, s.reason)
		}
	}
	fmt.Fprintf(out, "\n%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	return anyFail, nil
}

// reason picks the skip message out of a skipped test's output: the
// lines after "=== RUN" and before "--- SKIP", without the file:line
// prefix's indentation.
func reason(lines []string) string {
	var parts []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		parts = append(parts, t)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, " ")
}
