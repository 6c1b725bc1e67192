package demo

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
)

// moduleRoot is the repository's root (paths below are relative to it, so
// the test does not depend on the folder it lives in).
func moduleRoot(t *testing.T) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(gomod)))
}

// buildDemoBinaries builds runnel and firmware-sim into a temp dir, as
// `make build` does.
func buildDemoBinaries(t *testing.T, root string) (runnel, fwsim string) {
	t.Helper()
	dir := t.TempDir()
	runnel, fwsim = filepath.Join(dir, "runnel"), filepath.Join(dir, "firmware-sim")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, b := range [][2]string{{runnel, "./gateway/cmd/runnel"}, {fwsim, "./firmware-sim/cmd/firmware-sim"}} {
		wg.Go(func() {
			cmd := exec.Command("go", "build", "-o", b[0], b[1])
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return runnel, fwsim
}

// TestDemoInterrupt runs `firmware-sim demo` (the built binaries, free
// loopback ports) and stops it as a user would: Ctrl-C in a terminal
// sends SIGINT to the whole foreground process group, the demo and its
// gateway child alike; a service manager sends SIGTERM to the demo alone.
// Either way everything must stop, leave no process behind and exit 0
// (`make demo` used to end "the gateway exited: <nil>", exit 1).
func TestDemoInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs the demo")
	}
	root := moduleRoot(t)
	runnel, fwsim := buildDemoBinaries(t, root)
	for _, tc := range []struct {
		name  string
		sig   syscall.Signal
		group bool
	}{
		{"ctrl-c", syscall.SIGINT, true},
		{"sigterm", syscall.SIGTERM, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(fwsim, "demo", "-runnel", runnel, "-config", filepath.Join(root, "configs/demo.yaml"),
				"-data-dir", t.TempDir(), "-http-addr", "auto", "-mqtt-addr", "auto", "-udp-addr", "auto",
				"-kafka-addr", "auto", "-devices", "3", "-rate", "5")
			// Its own process group, as a foreground job in a terminal.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			var out, errb testutil.SyncBuffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pgid := cmd.Process.Pid
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
			testutil.WaitFor(t, 60*time.Second, func() (bool, string) {
				select {
				case err := <-exited:
					t.Fatalf("the demo exited before it was ready: %v\nstdout: %s\nstderr: %s", err, out.String(), errb.String())
				default:
				}
				return strings.Contains(out.String(), "demo: gateway ready"), out.String() + errb.String()
			})
			target := pgid
			if tc.group {
				target = -pgid
			}
			if err := syscall.Kill(target, tc.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("exit after %s: %v, want status 0\nstderr: %s", tc.sig, err, errb.String())
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("no exit within 60s of %s\nstdout: %s\nstderr: %s", tc.sig, out.String(), errb.String())
			}
			if s := errb.String(); strings.Contains(s, "exited") {
				t.Errorf("stderr after %s: %s", tc.sig, s)
			}
			if !strings.Contains(out.String(), "demo: stopped") {
				t.Errorf("no closing line on stdout:\n%s", out.String())
			}
			// Nothing may be left: no process in the demo's group, and
			// the gateway (in a group of its own) no longer serving.
			if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("a process of the demo's group still runs after its exit (kill -0: %v)", err)
			}
			m := regexp.MustCompile(`dashboard: +http://([0-9.:]+)/`).FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("no dashboard address in the output:\n%s", out.String())
			}
			if c, err := net.Dial("tcp", m[1]); err == nil {
				c.Close()
				t.Errorf("the gateway still serves %s after the demo exited", m[1])
			}
		})
	}
}
