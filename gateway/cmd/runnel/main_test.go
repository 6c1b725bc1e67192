package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"

	firmwaresim "github.com/runnel-iot/runnel/firmware-sim"
	"github.com/runnel-iot/runnel/internal/testutil"
)

func TestMain(m *testing.M) {
	// Load reads the process environment: keep the developer's own
	// RUNNEL_* settings out of the in-process tests.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "RUNNEL_") {
			os.Unsetenv(name)
		}
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if binDir != "" {
			os.RemoveAll(binDir)
		}
		os.Exit(code)
	}))
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunCommands(t *testing.T) {
	good := writeFile(t, "good.yaml", "gateway:\n  id: gw-7\n")
	bad := writeFile(t, "bad.yaml", "log:\n  level: loud\n")
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	tests := []struct {
		name      string
		args      []string
		code      int
		stdout    string // exact, unless empty
		stderrHas string
		stdoutHas string
	}{
		{name: "no command", args: nil, code: 2, stderrHas: "usage: runnel <command>"},
		{name: "unknown command", args: []string{"serve"}, code: 2, stderrHas: `runnel: unknown command "serve"`},
		{name: "help", args: []string{"-h"}, code: 0, stdoutHas: "usage: runnel <command>"},
		{name: "version", args: []string{"version"}, code: 0, stdoutHas: "runnel dev (commit unknown, go"},
		{name: "check without -config", args: []string{"check"}, code: 2, stderrHas: "runnel check: -config FILE is required"},
		{name: "check good", args: []string{"check", "-config", good}, code: 0, stdout: good + ": ok\ngateway.id: gw-7\n"},
		{name: "check bad", args: []string{"check", "-config", bad}, code: 2, stderrHas: bad + `:2: log.level: "loud" is not one of debug, info, warn, error` + "\n"},
		{name: "check missing", args: []string{"check", "-config", missing}, code: 2, stderrHas: "read config " + missing + ": no such file or directory"},
		{name: "check bad flag", args: []string{"check", "-conf", good}, code: 2, stderrHas: "flag provided but not defined: -conf"},
		{name: "check -h", args: []string{"check", "-h"}, code: 0, stderrHas: "-config"},
		{name: "run extra argument", args: []string{"run", "now"}, code: 2, stderrHas: `runnel run: unexpected argument "now"`},
		{name: "run bad config", args: []string{"run", "-config", bad}, code: 2, stderrHas: bad + ":2: log.level:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.code ||
				tt.stdout != "" && stdout.String() != tt.stdout ||
				!strings.Contains(stdout.String(), tt.stdoutHas) ||
				!strings.Contains(stderr.String(), tt.stderrHas) {
				t.Errorf("runnel %q = %d\nstdout: %s\nstderr: %s\nwant %d, stdout %q, stdout holding %q, stderr holding %q",
					tt.args, code, stdout.String(), stderr.String(), tt.code, tt.stdout, tt.stdoutHas, tt.stderrHas)
			}
		})
	}
}

func TestWatchSignals(t *testing.T) {
	tests := []struct {
		name       string
		signals    []os.Signal
		wantCancel bool
		wantExit   int // -1: exit not called
		wantLog    string
	}{
		{name: "no signal", wantExit: -1},
		{name: "one signal cancels", signals: []os.Signal{syscall.SIGTERM}, wantCancel: true, wantExit: -1, wantLog: `msg="shutting down" signal=terminated`},
		{name: "second signal exits", signals: []os.Signal{syscall.SIGINT, syscall.SIGTERM}, wantCancel: true, wantExit: 1,
			wantLog: `msg="second signal during shutdown, exiting now" signal=terminated`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			sigs := make(chan os.Signal, len(tt.signals))
			for _, s := range tt.signals {
				sigs <- s
			}
			done := make(chan struct{})
			cancelled := make(chan struct{})
			exitCode := -1
			exited := make(chan struct{})
			returned := make(chan struct{})
			go func() {
				defer close(returned)
				watchSignals(done, sigs, func() { close(cancelled) }, logger, func(code int) { exitCode = code; close(exited) })
			}()
			// Wait for what the signals must cause, then end the run.
			switch {
			case tt.wantExit >= 0:
				<-exited
			case tt.wantCancel:
				<-cancelled
			}
			close(done)
			select {
			case <-returned:
			case <-time.After(5 * time.Second):
				t.Fatal("watchSignals did not return after done")
			}
			select {
			case <-cancelled:
				if !tt.wantCancel {
					t.Error("cancel called, want not")
				}
			default:
				if tt.wantCancel {
					t.Error("cancel not called")
				}
			}
			if exitCode != tt.wantExit {
				t.Errorf("exit code = %d, want %d", exitCode, tt.wantExit)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log:\n%s\nwant it to hold %q", logs.String(), tt.wantLog)
			}
		})
	}
}

// binDir holds the binary buildBinary built; TestMain removes it.
var binDir string

// buildBinary builds runnel once, with a stamped version.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "runnel-test-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "runnel")
	cmd := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X github.com/runnel-iot/runnel/gateway.Version=v0.0.0-test -X github.com/runnel-iot/runnel/gateway.Commit=abc1234", ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// binary returns the built runnel and an environment free of RUNNEL_*.
func binary(t *testing.T) (string, []string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RUNNEL_") {
			env = append(env, kv)
		}
	}
	return bin, env
}

func TestBinaryVersionAndCheck(t *testing.T) {
	bin, env := binary(t)
	bad := writeFile(t, "bad.yaml", "gateway:\n  id: gw-1\nwal:\n  sync: fast\n")
	tests := []struct {
		args   []string
		code   int
		output string // prefix of stdout+stderr
	}{
		{[]string{"version"}, 0, "runnel v0.0.0-test (commit abc1234, go"},
		{[]string{"check", "-config", bad}, 2, bad + `:4: wal.sync: "fast" is not one of batch, interval, none` + "\n"},
	}
	for _, tt := range tests {
		cmd := exec.Command(bin, tt.args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tt.code || !strings.HasPrefix(string(out), tt.output) {
			t.Errorf("runnel %q = %d, %q; want %d, %q", tt.args, code, out, tt.code, tt.output)
		}
	}
}

func TestBinaryRunAndSIGTERM(t *testing.T) {
	bin, env := binary(t)
	checkRunAndSIGTERM(t, []string{bin}, env)
}

// checkRunAndSIGTERM runs `runnel run` through argv (the binary, or an
// emulator and the binary), waits for it to serve /healthz, stops it with
// SIGTERM and expects a clean exit.
// checkRunAndSIGTERM starts argv, checks /healthz and that simulated
// readings are queryable over HTTP, then stops it with SIGTERM.
func checkRunAndSIGTERM(t *testing.T, argv []string, env []string) {
	t.Helper()
	p, started := startGateway(t, argv, loopbackEnv(env, t.TempDir()))
	addr, _ := started["http_addr"].(string)
	if started["gateway_id"] != "test-gw" || addr == "" {
		t.Fatalf("start line %v lacks gateway_id or http_addr", started)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", resp.StatusCode, body)
	}
	{
		// The simulator (built for the host) publishes readings at QoS 1;
		// they must come back over HTTP.
		opt := firmwaresim.DefaultOptions()
		opt.Scenario, opt.Devices, opt.Rate, opt.Count = firmwaresim.ScenarioEnv, 4, 20, 10
		opt.Broker = started["mqtt_addr"].(string)
		rep, err := firmwaresim.Run(context.Background(), opt, io.Discard)
		if err != nil || rep.Acknowledged != rep.Sent || rep.Sent < 40 {
			t.Fatalf("simulator: %v, sent %d, acknowledged %d", err, rep.Sent, rep.Acknowledged)
		}
		testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
			var series struct{ Total int }
			resp, err := client.Get("http://" + addr + "/api/v1/series?prefix=env")
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&series)
				resp.Body.Close()
			}
			return err == nil && series.Total == 4, fmt.Sprintf("the 4 simulated series queryable: %d, %v", series.Total, err)
		})
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if m := p.waitLog("shutting down"); m["signal"] != "terminated" {
		t.Errorf("shutting down line %v, want signal terminated", m)
	}
	p.waitLog("gateway stopped")
	select {
	case <-p.waited:
		if p.err != nil {
			t.Errorf("runnel run after SIGTERM: %v, want exit 0\n%s", p.err, p.logText())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("runnel did not exit within 30s of SIGTERM")
	}
}

func TestPasswd(t *testing.T) {
	var out, errb bytes.Buffer
	if code := passwd(strings.NewReader("s3cret\n"), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	h := strings.TrimSpace(out.String())
	if bcrypt.CompareHashAndPassword([]byte(h), []byte("s3cret")) != nil {
		t.Fatalf("%q is not a bcrypt hash of the password", h)
	}
	if code := passwd(strings.NewReader("\n"), &out, &errb); code != 2 {
		t.Fatalf("empty password: exit %d, want 2", code)
	}
}
