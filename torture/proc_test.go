package torture

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binPath is the runnel binary TestMain built.
var binPath string

// setting is "short" or "long" (RUNNEL_TORTURE); "" skips the suite.
var setting = os.Getenv("RUNNEL_TORTURE")

func TestMain(m *testing.M) {
	if setting == "" {
		// Nothing to build: every test skips with the reason.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "runnel-torture-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "runnel")
	build := exec.Command("go", "build", "-o", binPath, "github.com/runnel-iot/runnel/gateway/cmd/runnel")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build runnel:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// rounds returns the short or the long count.
func rounds(short, long int) int {
	if setting == "long" {
		return long
	}
	return short
}

// requireSuite skips unless the suite was asked for.
func requireSuite(t *testing.T) {
	t.Helper()
	if setting == "" {
		t.Skip("the fault suite runs with RUNNEL_TORTURE=short|long (make torture)")
	}
	if setting != "short" && setting != "long" {
		t.Fatalf("RUNNEL_TORTURE=%q: want short or long", setting)
	}
}

// proc is one running `runnel run` whose JSON log the suite reads.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	waited chan struct{}
	err    error // from Wait, once waited is closed

	mu    sync.Mutex
	log   strings.Builder
	lines []map[string]any
	seen  chan struct{} // closed and replaced at every new line
}

// start runs the binary with env and a config file and waits for "gateway started".
func start(t *testing.T, env []string, config string) *proc {
	t.Helper()
	cmd := exec.Command(binPath, "run", "-config", config)
	cmd.Env = append(env, "RUNNEL_LOG_FORMAT=json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, waited: make(chan struct{}), seen: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var m map[string]any
			_ = json.Unmarshal(sc.Bytes(), &m)
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			if m != nil {
				p.lines = append(p.lines, m)
			}
			close(p.seen)
			p.seen = make(chan struct{})
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		close(p.waited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.waited:
		default:
			cmd.Process.Kill()
			<-p.waited
		}
	})
	p.waitLog("gateway started", 60*time.Second)
	return p
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// find returns the first log line with message msg, or nil.
func (p *proc) find(msg string) map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.lines {
		if m["msg"] == msg {
			return m
		}
	}
	return nil
}

// waitLog waits for a log line with message msg and returns it.
func (p *proc) waitLog(msg string, within time.Duration) map[string]any {
	p.t.Helper()
	deadline := time.After(within)
	for {
		p.mu.Lock()
		seen := p.seen
		p.mu.Unlock()
		if m := p.find(msg); m != nil {
			return m
		}
		select {
		case <-seen:
		case <-p.waited:
			if m := p.find(msg); m != nil {
				return m
			}
			p.t.Fatalf("runnel exited (%v) before logging %q:\n%s", p.err, msg, tail(p.logText(), 40))
		case <-deadline:
			p.t.Fatalf("no %q log line within %v:\n%s", msg, within, tail(p.logText(), 40))
		}
	}
}

// addr returns an address from the "gateway started" line.
func (p *proc) addr(key string) string {
	m := p.find("gateway started")
	s, _ := m[key].(string)
	if s == "" {
		p.t.Fatalf("start line lacks %s: %v", key, m)
	}
	return s
}

// alive reports whether the process still runs.
func (p *proc) alive() bool {
	select {
	case <-p.waited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and requires a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.waited:
		if p.err != nil {
			p.t.Fatalf("runnel after SIGTERM: %v, want exit 0\n%s", p.err, tail(p.logText(), 40))
		}
	case <-time.After(60 * time.Second):
		p.t.Fatalf("runnel did not exit within 60s of SIGTERM:\n%s", tail(p.logText(), 40))
	}
}

// kill sends SIGKILL and waits until the process is gone.
func (p *proc) kill() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.waited:
	case <-time.After(30 * time.Second):
		p.t.Fatal("runnel did not die within 30s of SIGKILL")
	}
}

// signal sends sig.
func (p *proc) signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

// readyz returns /readyz's status code and body.
func (p *proc) readyz() (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + p.addr("http_addr") + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, b.String()
}

// waitReady waits until /readyz answers 200.
func (p *proc) waitReady(within time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body := p.readyz()
		if code == http.StatusOK {
			return
		}
		if !p.alive() {
			p.t.Fatalf("runnel exited (%v) before it was ready:\n%s", p.err, tail(p.logText(), 40))
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("not ready within %v: %d %s\n%s", within, code, body, tail(p.logText(), 40))
		}
		time.Sleep(50 * time.Millisecond) // polling an HTTP probe: the wait is bounded by the deadline above
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// baseEnv is the environment of a suite gateway: loopback ports the kernel
// picks, data in dir, no RUNNEL_* from outside.
func baseEnv(dir string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RUNNEL_") && !strings.HasPrefix(kv, "GOMEMLIMIT") {
			env = append(env, kv)
		}
	}
	env = append(env, "RUNNEL_HTTP_ADDR=127.0.0.1:0", "RUNNEL_MQTT_ADDR=127.0.0.1:0",
		"RUNNEL_UDP_ADDR=127.0.0.1:0", "RUNNEL_DATA_DIR="+dir, "RUNNEL_GATEWAY_ID=torture-gw")
	return append(env, extra...)
}
