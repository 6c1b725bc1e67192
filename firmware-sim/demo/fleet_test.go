package demo

import (
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/internal/testutil"
)

// TestFleetDemo runs `firmware-sim demo-fleet` from the built binaries on
// free loopback ports: -check must find a closed fleet window merged from
// all three gateways on both fleet instances and exit 0 (what `make
// demo-fleet-check` runs in CI), and Ctrl-C (SIGINT to the whole
// foreground group) must stop everything with exit 0. Either way no child
// may be left serving.
func TestFleetDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs three gateways and two fleet instances")
	}
	root := moduleRoot(t)
	runnel, fwsim := buildDemoBinaries(t, root)
	start := func(t *testing.T, extra ...string) (*exec.Cmd, *testutil.SyncBuffer, <-chan error) {
		t.Helper()
		args := append([]string{"demo-fleet", "-runnel", runnel, "-config", filepath.Join(root, "configs/demo.yaml"),
			"-fleet-config", filepath.Join(root, "configs/fleet.yaml"), "-data-dir", t.TempDir(),
			"-kafka-addr", "auto", "-fleet-http", "auto"}, extra...)
		cmd := exec.Command(fwsim, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a foreground job's group
		var out testutil.SyncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		pgid := cmd.Process.Pid
		t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
		return cmd, &out, exited
	}
	// nothingLeft checks that no child serves any more once the demo exited.
	nothingLeft := func(t *testing.T, out string) {
		t.Helper()
		addrs := regexp.MustCompile(`(?m)^  (?:gateway gw-[abc]|fleet-[12]): http://([0-9.:]+)`).FindAllStringSubmatch(out, -1)
		if len(addrs) != 5 {
			t.Fatalf("want 5 child addresses in the output, found %d:\n%s", len(addrs), out)
		}
		for _, m := range addrs {
			if c, err := net.Dial("tcp", m[1]); err == nil {
				c.Close()
				t.Errorf("%s still serves after the demo exited", m[1])
			}
		}
	}

	t.Run("check", func(t *testing.T) {
		_, out, exited := start(t, "-check")
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("demo-fleet -check: %v, want exit 0\n%s", err, out.String())
			}
		case <-time.After(150 * time.Second):
			t.Fatalf("demo-fleet -check did not exit within 150s\n%s", out.String())
		}
		s := out.String()
		if !regexp.MustCompile(`demo-fleet check: ok: window \S+ closed with gateways \[gw-a gw-b gw-c\] on every instance`).MatchString(s) {
			t.Errorf("no check line with the three gateways:\n%s", s)
		}
		// Each gateway simulates its own four devices, two per site.
		if !strings.Contains(s, "distinct devices 12 fleet-wide, 6 at site-1") {
			t.Errorf("no check line with the true distinct device counts:\n%s", s)
		}
		if !strings.Contains(s, "demo-fleet: stopped") || strings.Contains(s, "stopped on its own") {
			t.Errorf("want a clean stop:\n%s", s)
		}
		nothingLeft(t, s)
	})

	t.Run("ctrl-c", func(t *testing.T) {
		cmd, out, exited := start(t)
		testutil.WaitFor(t, 60*time.Second, func() (bool, string) {
			select {
			case err := <-exited:
				t.Fatalf("the demo exited before it was ready: %v\n%s", err, out.String())
			default:
			}
			return strings.Contains(out.String(), "demo-fleet: ready"), out.String()
		})
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("exit after SIGINT: %v, want 0\n%s", err, out.String())
			}
		case <-time.After(90 * time.Second):
			t.Fatalf("no exit within 90s of SIGINT\n%s", out.String())
		}
		s := out.String()
		if !strings.Contains(s, "demo-fleet: stopped") || strings.Contains(s, "stopped on its own") {
			t.Errorf("want a clean stop:\n%s", s)
		}
		if err := syscall.Kill(-cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("a process of the demo's group still runs after its exit (kill -0: %v)", err)
		}
		nothingLeft(t, s)
	})
}
