package main

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// gatewayProc is a running `runnel run` whose JSON log the test reads.
type gatewayProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan map[string]any
	waited chan struct{}
	err    error // from Wait, once waited is closed

	mu  sync.Mutex
	log strings.Builder
}

// startGateway runs argv (the binary, or an emulator and the binary) with
// `run`, the given environment and JSON logs, and waits for "gateway
// started"; it returns the process and that log line. The process is killed
// at the end of the test if it is still running.
func startGateway(t *testing.T, argv []string, env []string) (*gatewayProc, map[string]any) {
	t.Helper()
	cmd := exec.Command(argv[0], append(argv[1:], "run")...)
	cmd.Env = append(env, "RUNNEL_LOG_FORMAT=json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &gatewayProc{t: t, cmd: cmd, lines: make(chan map[string]any, 1000), waited: make(chan struct{})}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case p.lines <- m:
				default: // nobody is waiting for lines this far on
				}
			}
		}
		p.err = cmd.Wait() // after the pipe is drained, as Wait requires
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
	return p, p.waitLog("gateway started")
}

// logText returns the log so far.
func (p *gatewayProc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// waitLog waits for a log line with message msg and returns it.
func (p *gatewayProc) waitLog(msg string) map[string]any {
	p.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("runnel exited before logging %q:\n%s", msg, p.logText())
			}
			if m["msg"] == msg {
				return m
			}
		case <-deadline:
			p.t.Fatalf("no %q log line within 30s:\n%s", msg, p.logText())
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *gatewayProc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.waited:
		if p.err != nil {
			p.t.Fatalf("runnel run after SIGTERM: %v, want exit 0\n%s", p.err, p.logText())
		}
	case <-time.After(30 * time.Second):
		p.t.Fatalf("runnel did not exit within 30s of SIGTERM:\n%s", p.logText())
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *gatewayProc) kill() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.waited:
	case <-time.After(30 * time.Second):
		p.t.Fatal("runnel did not die within 30s of SIGKILL")
	}
}

// loopbackEnv is the environment of a gateway on kernel-picked loopback
// ports with its data in dir.
func loopbackEnv(env []string, dir string) []string {
	return append(env, "RUNNEL_HTTP_ADDR=127.0.0.1:0", "RUNNEL_MQTT_ADDR=127.0.0.1:0",
		"RUNNEL_UDP_ADDR=127.0.0.1:0", "RUNNEL_DATA_DIR="+dir, "RUNNEL_GATEWAY_ID=test-gw")
}
