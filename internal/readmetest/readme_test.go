package readmetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/gateway"
	"github.com/runnel-iot/runnel/internal/testutil"
)

// command is one shell command of a marked block, with what the README
// says it prints.
type command struct {
	line   int      // in README.md
	code   string   // the command, continuation lines joined
	expect []string // documented output lines; a leading space continues the line before
	whole  bool     // expect is a trailing comment: the whole output
}

// shBlock is a marked ```sh block.
type shBlock struct {
	line     int
	nonempty bool
	pending  bool // documents the behaviour after a known defect is fixed
	cmds     []command
	json     string // a ```json block right after it: the last command's output
}

// readme is what the test takes from README.md.
type readme struct {
	blocks []shBlock
	config string // the marked ```yaml blocks, concatenated
}

var markerRE = regexp.MustCompile(`^<!--\s*readme-test(?::\s*(\S+))?\s*-->\s*$`)

// parseReadme finds the marked blocks of a README.
func parseReadme(text string) (readme, error) {
	var r readme
	lines := strings.Split(text, "\n")
	// fence returns the block opening at or after line i (skipping blank
	// lines): its language, body and the index after its closing fence.
	fence := func(i int) (lang string, body []string, next int, ok bool) {
		for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
			i++
		}
		if i >= len(lines) || !strings.HasPrefix(lines[i], "```") {
			return "", nil, i, false
		}
		lang = strings.TrimSpace(strings.TrimPrefix(lines[i], "```"))
		for j := i + 1; j < len(lines); j++ {
			if strings.HasPrefix(lines[j], "```") {
				return lang, lines[i+1 : j], j + 1, true
			}
		}
		return "", nil, i, false
	}
	for i := 0; i < len(lines); i++ {
		m := markerRE.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		opt := m[1]
		lang, body, next, ok := fence(i + 1)
		if !ok {
			return r, fmt.Errorf("README.md:%d: readme-test marker not followed by a fenced block", i+1)
		}
		switch {
		case lang == "yaml" && opt == "config":
			r.config += strings.Join(body, "\n") + "\n"
		case lang == "sh" && (opt == "" || opt == "nonempty" || opt == "pending"):
			b := shBlock{line: i + 1, nonempty: opt == "nonempty", pending: opt == "pending"}
			cmds, err := parseCommands(body, i+3) // body starts two lines after the marker at the earliest
			if err != nil {
				return r, err
			}
			b.cmds = cmds
			if jlang, jbody, _, ok := fence(next); ok && jlang == "json" {
				b.json = strings.Join(jbody, "\n")
			}
			r.blocks = append(r.blocks, b)
		default:
			return r, fmt.Errorf("README.md:%d: readme-test marker %q before a %q block: want a sh block (no option, nonempty or pending) or a yaml block (config)", i+1, opt, lang)
		}
		i = next - 1
	}
	return r, nil
}

// parseCommands splits a shell block into commands and their documented
// outputs. firstLine is the README line of body[0], for messages.
func parseCommands(body []string, firstLine int) ([]command, error) {
	var cmds []command
	for i := 0; i < len(body); i++ {
		line := body[i]
		if strings.TrimSpace(line) == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			if len(cmds) == 0 {
				continue // a comment before any command
			}
			c := &cmds[len(cmds)-1]
			c.expect = append(c.expect, strings.TrimPrefix(strings.TrimPrefix(line, "#"), " "))
			c.whole = false
			continue
		}
		c := command{line: firstLine + i}
		for strings.HasSuffix(line, `\`) && i+1 < len(body) {
			c.code += strings.TrimSuffix(line, `\`)
			i++
			line = body[i]
		}
		code, comment := splitComment(line)
		c.code = strings.TrimSpace(c.code + code)
		if comment != "" {
			c.expect, c.whole = []string{comment}, true
		}
		cmds = append(cmds, c)
	}
	return cmds, nil
}

// splitComment cuts a trailing shell comment off line: a # at the start
// or after a blank, outside quotes ('...', "...", $'...').
func splitComment(line string) (code, comment string) {
	var quote byte // 0, '\'', '"' or 'c' for $'...'
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch quote {
		case '\'':
			if ch == '\'' {
				quote = 0
			}
		case '"', 'c':
			if ch == '\\' {
				i++
			} else if ch == '"' && quote == '"' || ch == '\'' && quote == 'c' {
				quote = 0
			}
		default:
			switch {
			case ch == '\\':
				i++
			case ch == '\'':
				quote = '\''
				if i > 0 && line[i-1] == '$' {
					quote = 'c'
				}
			case ch == '"':
				quote = '"'
			case ch == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
				return line[:i], strings.TrimSpace(line[i+1:])
			}
		}
	}
	return line, ""
}

var (
	goVersionRE = regexp.MustCompile(`go1\.\d+(\.\d+)?`)
	platformRE  = regexp.MustCompile(`\b(linux|darwin|windows|freebsd)/[a-z0-9]+\b`)
	hexRE       = regexp.MustCompile(`\b[0-9a-f]{7,40}\b`)
	letterRE    = regexp.MustCompile(`[a-f]`)
	digitRE     = regexp.MustCompile(`[0-9]`)
	spaceRE     = regexp.MustCompile(`\s+`)
)

// normalize makes values that differ between builds equal (a commit, the
// Go version, the platform) and drops whitespace.
func normalize(s string) string {
	s = goVersionRE.ReplaceAllString(s, "<go>")
	s = platformRE.ReplaceAllString(s, "<platform>")
	s = hexRE.ReplaceAllStringFunc(s, func(h string) string {
		if letterRE.MatchString(h) && digitRE.MatchString(h) {
			return "<hex>"
		}
		return h
	})
	return spaceRE.ReplaceAllString(s, "")
}

// expectRE turns documented output lines into a regexp over the
// normalised output: "..." and "…" match anything; anything may come
// between two documented lines, unless the second starts with a space
// (it continues the first). With whole, the lines are the whole output.
func expectRE(expect []string, whole bool) *regexp.Regexp {
	var segs []string
	for _, l := range expect {
		if strings.HasPrefix(l, " ") && len(segs) > 0 {
			segs[len(segs)-1] += l
			continue
		}
		segs = append(segs, l)
	}
	const wild = "\x00"
	for i, s := range segs {
		s = strings.ReplaceAll(strings.ReplaceAll(s, "…", wild), "...", wild)
		s = regexp.QuoteMeta(normalize(s))
		segs[i] = strings.ReplaceAll(s, wild, ".*?")
	}
	re := strings.Join(segs, ".*?")
	if whole {
		re = "^" + re + "$"
	}
	return regexp.MustCompile("(?s)" + re)
}

// jsonShape lists where actual lacks a key the documented JSON has, or
// holds a value of another kind. Every element of an actual array must
// have the shape of one documented element; with nonempty, an array
// documented with elements must have some.
func jsonShape(doc, actual any, path string, nonempty bool) []string {
	kind := func(v any) string {
		switch v.(type) {
		case map[string]any:
			return "object"
		case []any:
			return "array"
		case string:
			return "string"
		case float64:
			return "number"
		case bool:
			return "bool"
		}
		return "null"
	}
	if kind(doc) != kind(actual) {
		if kind(doc) == "null" || kind(actual) == "null" {
			return nil // an optional value, absent in one of them
		}
		return []string{fmt.Sprintf("%s: %s, documented as %s", path, kind(actual), kind(doc))}
	}
	var bad []string
	switch d := doc.(type) {
	case map[string]any:
		a := actual.(map[string]any)
		keys := make([]string, 0, len(d))
		for k := range d {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			av, ok := a[k]
			if !ok {
				bad = append(bad, fmt.Sprintf("%s: no key %q", path, k))
				continue
			}
			bad = append(bad, jsonShape(d[k], av, path+"."+k, nonempty)...)
		}
	case []any:
		a := actual.([]any)
		if nonempty && len(d) > 0 && len(a) == 0 {
			return []string{path + ": empty, documented with elements"}
		}
		if len(d) == 0 {
			return nil
		}
		for i, av := range a {
			var best []string
			for _, dv := range d {
				m := jsonShape(dv, av, fmt.Sprintf("%s[%d]", path, i), nonempty)
				if best == nil || len(m) < len(best) {
					best = m
				}
				if len(m) == 0 {
					break
				}
			}
			bad = append(bad, best...)
		}
	}
	return bad
}

func TestParseReadme(t *testing.T) {
	text := strings.Join([]string{
		"# Title",
		"<!-- readme-test -->",
		"",
		"```sh",
		"make build                 # not run",
		"curl -s localhost:8080/readyz     # {\"ready\":true}",
		"curl -i -XPOST 'localhost:8080/api/v2/write' \\",
		"  --data-binary $'a b=1\\nc d=# 2'",
		"# HTTP/1.1 400 Bad Request",
		"# {\"code\":\"invalid\",",
		"#  \"line\":2}",
		"```",
		"```json",
		`{"a":[1]}`,
		"```",
		"<!-- readme-test: config -->",
		"```yaml",
		"alerts: {}",
		"```",
		"```sh",
		"unmarked",
		"```",
	}, "\n")
	r, err := parseReadme(text)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.blocks) != 1 || r.config != "alerts: {}\n" {
		t.Fatalf("blocks %d, config %q: want 1 block and the yaml", len(r.blocks), r.config)
	}
	b := r.blocks[0]
	want := []command{
		{code: "make build", expect: []string{"not run"}},
		{code: "curl -s localhost:8080/readyz", expect: []string{`{"ready":true}`}},
		{code: `curl -i -XPOST 'localhost:8080/api/v2/write'   --data-binary $'a b=1\nc d=# 2'`,
			expect: []string{"HTTP/1.1 400 Bad Request", `{"code":"invalid",`, ` "line":2}`}},
	}
	if len(b.cmds) != len(want) || b.json != `{"a":[1]}` {
		t.Fatalf("commands %+v, json %q", b.cmds, b.json)
	}
	for i, c := range b.cmds {
		if c.code != want[i].code || strings.Join(c.expect, "|") != strings.Join(want[i].expect, "|") {
			t.Errorf("command %d = %q %q, want %q %q", i, c.code, c.expect, want[i].code, want[i].expect)
		}
	}
	if _, err := parseReadme("<!-- readme-test: bogus -->\n```sh\nx\n```\n"); err == nil {
		t.Error("an unknown option was accepted")
	}
	for opt, want := range map[string][2]bool{"nonempty": {true, false}, "pending": {false, true}} {
		r, err := parseReadme("<!-- readme-test: " + opt + " -->\n```sh\nx\n```\n")
		if err != nil || len(r.blocks) != 1 || r.blocks[0].nonempty != want[0] || r.blocks[0].pending != want[1] {
			t.Errorf("option %s: %+v, %v; want nonempty, pending = %v", opt, r.blocks, err, want)
		}
	}
}

func TestExpect(t *testing.T) {
	tests := []struct {
		expect []string
		whole  bool
		out    string
		match  bool
	}{
		{[]string{"runnel 5a587b4 (commit 5a587b4, go1.26.8, linux/amd64)"}, true, "runnel abc1234 (commit abc1234, go1.27.1, linux/arm64)\n", true},
		{[]string{"runnel 5a587b4 (commit 5a587b4, go1.26.8, linux/amd64)"}, true, "runnel v1.2.0 (commit abc1234, go1.26.8, linux/amd64)\n", false},
		{[]string{"HTTP/1.1 400 Bad Request", `{"code":"invalid",`, ` "errors":[{"message":"..."}]}`}, false,
			"HTTP/1.1 400 Bad Request\nContent-Type: x\n\n{\"code\":\"invalid\",\"errors\":[{\"message\":\"line 2\"}]}", true},
		{[]string{"HTTP/1.1 400 Bad Request", `{"code":"invalid",`, ` "errors":[]}`}, false,
			"HTTP/1.1 400 Bad Request\n\n{\"code\":\"invalid\",\"x\":1,\"errors\":[]}", false}, // a continuation allows no gap
		{[]string{`"ready"`}, false, `{"ready":true}`, true},
		{[]string{`"ready"`}, true, `{"ready":true}`, false}, // the old README's readyz line
		{[]string{`{"ready":true}`}, true, "{\"ready\":true}\n", true},
		{[]string{`{"ready":true}`}, true, `{"ready":false,"reason":"replaying"}`, false},
		{[]string{"$2a$10$..."}, true, "$2a$10$Qx9.abc\n", true},
	}
	for _, tt := range tests {
		if got := expectRE(tt.expect, tt.whole).MatchString(normalize(tt.out)); got != tt.match {
			t.Errorf("expect %q on %q: match %v, want %v", tt.expect, tt.out, got, tt.match)
		}
	}
}

func TestJSONShape(t *testing.T) {
	doc := `{"windows":[{"open":true,"count":1},{"open":false,"closed_by":"idle"}],"n":1}`
	tests := []struct {
		actual   string
		nonempty bool
		bad      int
	}{
		{`{"windows":[{"open":true,"count":2,"extra":1},{"open":false,"closed_by":"watermark","count":3}],"n":2}`, true, 0},
		{`{"windows":[],"n":2}`, false, 0},
		{`{"windows":[],"n":2}`, true, 1},
		{`{"windows":[{"Open":true,"count":2}],"n":2}`, false, 1}, // renamed key
		{`{"windows":[{"open":"yes","count":2}],"n":2}`, false, 1},
		{`{"windows":[]}`, false, 1},
	}
	var d any
	if err := json.Unmarshal([]byte(doc), &d); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		var a any
		if err := json.Unmarshal([]byte(tt.actual), &a); err != nil {
			t.Fatal(err)
		}
		if bad := jsonShape(d, a, "$", tt.nonempty); len(bad) != tt.bad {
			t.Errorf("%s (nonempty %v): %q, want %d mismatches", tt.actual, tt.nonempty, bad, tt.bad)
		}
	}
}

// aptPackage names the Debian package of a tool the README calls.
var aptPackage = map[string]string{
	"curl":          "curl",
	"mosquitto_pub": "mosquitto-clients",
	"mosquitto_sub": "mosquitto-clients",
	"nc":            "netcat-openbsd",
}

// bashBuiltin lists the bash builtins the README's examples may use: they
// need no program on PATH.
var bashBuiltin = map[string]bool{"echo": true, "printf": true, "cd": true, "export": true, "test": true, "true": true, "false": true}

// tools lists the programs a command line starts: the first word of each
// pipeline stage, past variable assignments.
func tools(code string) []string {
	var out []string
	for _, stage := range regexp.MustCompile(`\|\|?|&&|;`).Split(code, -1) {
		for _, w := range strings.Fields(stage) {
			if strings.Contains(w, "=") && !strings.HasPrefix(w, "-") {
				continue
			}
			out = append(out, w)
			break
		}
	}
	return out
}

// notRun reports why the test does not run a command itself, or "".
func notRun(code string) string {
	switch {
	case strings.HasPrefix(code, "make "):
		return "the test builds the binary itself"
	case strings.HasPrefix(code, "./bin/runnel run"):
		return "the test runs the gateway itself"
	}
	return ""
}

// isQuery reports whether running code again has no effect on the gateway.
func isQuery(code string) bool {
	if !strings.HasPrefix(code, "curl ") {
		return false
	}
	for _, w := range []string{"-XPOST", "-X POST", "--data", " -d "} {
		if strings.Contains(code, w) {
			return false
		}
	}
	return true
}

// ports rewrites the README's default ports to the test gateway's.
func ports(code string, httpPort, mqttPort, udpPort string) string {
	code = regexp.MustCompile(`\b(localhost|127\.0\.0\.1):8080\b`).ReplaceAllString(code, "127.0.0.1:"+httpPort)
	code = regexp.MustCompile(`/dev/udp/(localhost|127\.0\.0\.1)/8089\b`).ReplaceAllString(code, "/dev/udp/127.0.0.1/"+udpPort)
	code = regexp.MustCompile(`\b(localhost|127\.0\.0\.1) 8089\b`).ReplaceAllString(code, "127.0.0.1 "+udpPort)
	return regexp.MustCompile(`\b(mosquitto_(?:pub|sub))\b`).ReplaceAllString(code, "$1 -h 127.0.0.1 -p "+mqttPort)
}

// environ is the test's environment without RUNNEL_* variables.
func environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RUNNEL_") {
			env = append(env, kv)
		}
	}
	return env
}

// TestREADME runs the README's marked shell examples against the built
// gateway and checks their documented outputs.
func TestREADME(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseReadme(string(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.blocks) == 0 {
		t.Fatal("README.md marks no block with <!-- readme-test -->")
	}

	// Every tool the marked blocks call, up front: skip (or fail) once,
	// naming what to install.
	var missing []string
	seen := map[string]bool{}
	for _, b := range r.blocks {
		for _, c := range b.cmds {
			if notRun(c.code) != "" {
				continue
			}
			for _, tool := range append([]string{"bash"}, tools(c.code)...) {
				if seen[tool] || strings.Contains(tool, "/") || bashBuiltin[tool] {
					continue
				}
				seen[tool] = true
				if _, err := exec.LookPath(tool); err != nil {
					pkg := aptPackage[tool]
					if pkg == "" {
						pkg = tool
					}
					missing = append(missing, fmt.Sprintf("%s (apt-get install %s)", tool, pkg))
				}
			}
		}
	}
	if len(missing) > 0 {
		msg := "the README's examples need " + strings.Join(missing, ", ")
		if os.Getenv("REQUIRE_TEST_TOOLS") == "1" {
			t.Fatal(msg + ", and REQUIRE_TEST_TOOLS=1")
		}
		t.Skip(msg)
	}

	// The work directory the commands run in: bin/runnel and configs/.
	work := t.TempDir()
	bin := filepath.Join(work, "bin", "runnel")
	build := exec.Command("go", "build", "-o", bin, "-ldflags",
		"-X github.com/runnel-iot/runnel/gateway.Version=0a1b2c3 -X github.com/runnel-iot/runnel/gateway.Commit=0a1b2c3",
		"./gateway/cmd/runnel")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.Symlink(filepath.Join(root, "configs"), filepath.Join(work, "configs")); err != nil {
		t.Fatal(err)
	}

	args := []string{"run"}
	if r.config != "" {
		cfg := filepath.Join(work, "readme.yaml")
		if err := os.WriteFile(cfg, []byte(r.config), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-config", cfg)
	}
	// pi-042 is the README's gateway id (alert events carry it).
	gw := startGateway(t, bin, args, append(environ(), "RUNNEL_LOG_FORMAT=json", "RUNNEL_GATEWAY_ID=pi-042",
		"RUNNEL_DATA_DIR="+filepath.Join(work, "data"), "RUNNEL_HTTP_ADDR=127.0.0.1:0",
		"RUNNEL_MQTT_ADDR=127.0.0.1:0", "RUNNEL_UDP_ADDR=127.0.0.1:0"))
	port := func(key string) string {
		addr, _ := gw.started[key].(string)
		_, p, ok := strings.Cut(addr, ":")
		if !ok {
			t.Fatalf("gateway started without %s: %v", key, gw.started)
		}
		return p
	}
	httpPort, mqttPort, udpPort := port("http_addr"), port("mqtt_addr"), port("udp_addr")
	testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
		resp, err := http.Get("http://127.0.0.1:" + httpPort + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})

	ran := 0
	for _, b := range r.blocks {
		for i, c := range b.cmds {
			if why := notRun(c.code); why != "" {
				t.Logf("README.md:%d: not run (%s): %s", c.line, why, c.code)
				continue
			}
			var docJSON string
			if i == len(b.cmds)-1 {
				docJSON = b.json
			}
			code := ports(c.code, httpPort, mqttPort, udpPort)
			problems, out := runCommand(t, work, code, c, docJSON, b)
			switch {
			case b.pending && len(problems) == 0:
				t.Errorf("README.md:%d: marked pending (a known defect), but its documented output matches now: "+
					"change the marker at README.md:%d to <!-- readme-test -->", c.line, b.line)
			case b.pending:
				t.Logf("README.md:%d: pending (a known defect, marked so at README.md:%d): %s:\n  %s", c.line, b.line, code, strings.Join(problems, "\n  "))
			case len(problems) > 0:
				t.Errorf("README.md:%d: %s:\n  %s\noutput:\n%s", c.line, code, strings.Join(problems, "\n  "), out)
			default:
				t.Logf("README.md:%d: ok: %s", c.line, code)
			}
			ran++
		}
	}
	if ran == 0 {
		t.Fatal("no README command ran")
	}
	gw.stop(t)
}

// runCommand runs one README command and returns how its output differs
// from the documented one, and the output. A query is run again until its
// output matches, within a deadline (a short one for a pending block,
// which is expected not to match).
func runCommand(t *testing.T, work, code string, c command, docJSON string, b shBlock) (problems []string, out string) {
	t.Helper()
	var doc any
	if docJSON != "" {
		if err := json.Unmarshal([]byte(docJSON), &doc); err != nil {
			t.Fatalf("README.md: the JSON after line %d does not parse: %v", c.line, err)
		}
	}
	wait := 15 * time.Second
	if b.pending {
		wait = 2 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, "bash", "-c", code)
		cmd.Dir = work
		cmd.Env = environ()
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Fatalf("README.md:%d: %s: %v\nstdout: %s\nstderr: %s", c.line, code, err, stdout.String(), stderr.String())
		}
		problems = nil
		out = stdout.String() + stderr.String()
		if len(c.expect) > 0 && !expectRE(c.expect, c.whole).MatchString(normalize(out)) {
			problems = append(problems, fmt.Sprintf("output does not match the documented %q", c.expect))
		}
		if doc != nil {
			var actual any
			if err := json.Unmarshal(stdout.Bytes(), &actual); err != nil {
				problems = append(problems, fmt.Sprintf("output is not JSON: %v", err))
			} else {
				problems = append(problems, jsonShape(doc, actual, "$", b.nonempty)...)
			}
		}
		if len(problems) == 0 || !isQuery(c.code) || time.Now().After(deadline) {
			return problems, out
		}
		time.Sleep(100 * time.Millisecond) // a poll interval, not synchronisation: the loop waits for the match
	}
}

// gatewayProc is the running `runnel run`.
type gatewayProc struct {
	cmd     *exec.Cmd
	started map[string]any // the "gateway started" log line
	waited  chan struct{}
	err     error // from Wait, once waited is closed

	mu  sync.Mutex
	log strings.Builder
}

func (p *gatewayProc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// startGateway starts bin with args and env (JSON logs on stderr) and
// waits for its "gateway started" line. It is killed when the test ends,
// if still running.
func startGateway(t *testing.T, bin string, args, env []string) *gatewayProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &gatewayProc{cmd: cmd, waited: make(chan struct{})}
	started := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "gateway started" {
				started <- m
			}
		}
		p.err = cmd.Wait() // after the pipe is drained, as Wait requires
		close(p.waited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.waited:
		default:
			_ = cmd.Process.Kill()
			<-p.waited
		}
	})
	select {
	case p.started = <-started:
	case <-p.waited:
		t.Fatalf("runnel exited before it started: %v\n%s", p.err, p.logText())
	case <-time.After(30 * time.Second):
		t.Fatalf("runnel did not start within 30s:\n%s", p.logText())
	}
	return p
}

// stop sends SIGTERM and expects exit code 0, as the README says.
func (p *gatewayProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.waited:
		if p.err != nil {
			t.Fatalf("runnel after SIGTERM: %v, want exit 0\n%s", p.err, p.logText())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("runnel did not exit within 30s of SIGTERM:\n%s", p.logText())
	}
}

// TestREADMEEnvDefaults checks the default column of the README's table of
// environment variables (the table after "<!-- env-table -->") against the
// loader's defaults: a row naming a variable with a non-empty default must
// show it as `default` (gateway's own test checks that every variable has
// a row). Rows may merge several variables; each default must be there.
func TestREADMEEnvDefaults(t *testing.T) {
	text, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(text), "<!-- env-table -->")
	if !ok {
		t.Fatal(`README.md has no "<!-- env-table -->" line`)
	}
	rows := map[string]string{} // variable -> its row's default cell
	inTable := false
	for _, line := range strings.Split(after, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 3 {
			continue
		}
		for _, name := range regexp.MustCompile("`(RUNNEL_[A-Z0-9_]+)`").FindAllStringSubmatch(cells[0], -1) {
			rows[name[1]] = cells[len(cells)-1]
		}
	}
	checked := 0
	for _, v := range gateway.EnvVars() {
		cell, ok := rows[v.Name]
		if !ok || v.Default == "" {
			continue
		}
		checked++
		if !strings.Contains(cell, "`"+v.Default+"`") {
			t.Errorf("README.md env table: %s (%s) shows default %q, the loader's is `%s`", v.Name, v.Key, strings.TrimSpace(cell), v.Default)
		}
	}
	if checked < 20 {
		t.Fatalf("checked %d defaults: the table was not found or not parsed", checked)
	}
}
