package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// requireTool skips a test whose tool is missing when run by hand, and
// fails it where REQUIRE_TEST_TOOLS is set (.ci/run sets it and installs
// the tools), so CI can never skip it silently.
func requireTool(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("REQUIRE_TEST_TOOLS") != "" {
		t.Fatalf("%s is required (REQUIRE_TEST_TOOLS is set) but not installed: %s", name, install)
	}
	t.Skipf("%s not installed (%s); skipping", name, install)
	return ""
}

// TestARMBinaries builds the static Linux ARM binaries the way `make
// build-arm64` and `make build-armv7` do, and runs each under
// qemu-user-static: `runnel version`, then start, serve /healthz, take
// readings from the simulator (built for the host), answer them over HTTP,
// SIGTERM.
func TestARMBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-builds and emulates the binary")
	}
	_, env := binary(t)
	for _, tc := range []struct{ goarch, goarm, qemu, platform string }{
		{"arm64", "", "qemu-aarch64-static", "linux/arm64"},
		{"arm", "7", "qemu-arm-static", "linux/arm"},
	} {
		t.Run(tc.goarch, func(t *testing.T) {
			qemu := requireTool(t, tc.qemu, "apt-get install qemu-user-static")
			bin := filepath.Join(t.TempDir(), "runnel-"+tc.goarch)
			build := exec.Command("go", "build", "-trimpath", "-o", bin,
				"-ldflags", "-s -w -X github.com/runnel-iot/runnel/gateway.Version=v0.0.0-arm", ".")
			build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+tc.goarch, "GOARM="+tc.goarm)
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("cross build: %v\n%s", err, out)
			}
			fi, err := os.Stat(bin)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s binary: %.1f MB stripped", tc.platform, float64(fi.Size())/1e6)
			if fi.Size() > 20e6 {
				t.Errorf("%s binary is %d bytes, over the 20 MB target", tc.platform, fi.Size())
			}
			out, err := exec.Command(qemu, bin, "version").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "v0.0.0-arm") || !strings.Contains(string(out), tc.platform) {
				t.Fatalf("%s version = %q, %v; want the version and %s", tc.qemu, out, err, tc.platform)
			}
			checkRunAndSIGTERM(t, []string{qemu, bin}, env)
		})
	}
}
