package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecureDefaultNetns runs `runnel run` with no config inside a network
// namespace the test creates, joined to the test's by a veth pair, and
// dials the namespace's non-loopback address: every listener refuses.
// With security.allow_anonymous_network the same dials connect, so the
// test can tell the two apart. Needs root and ip(8): skipped otherwise,
// failed under REQUIRE_TEST_TOOLS=1.
func TestSecureDefaultNetns(t *testing.T) {
	ns, addr := makeNetns(t)
	bin, env := binary(t)
	for _, open := range []bool{false, true} {
		t.Run(fmt.Sprintf("allow_anonymous_network=%v", open), func(t *testing.T) {
			e := append(env, "RUNNEL_DATA_DIR="+t.TempDir(), "RUNNEL_GATEWAY_ID=netns-gw", "RUNNEL_UDP_ADDR=:8089",
				fmt.Sprintf("RUNNEL_SECURITY_ALLOW_ANONYMOUS_NETWORK=%v", open))
			p, _ := startGateway(t, []string{"ip", "netns", "exec", ns, bin}, e)
			defer p.stop()
			for _, port := range []string{"8080", "1883"} {
				c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, port), 5*time.Second)
				if c != nil {
					c.Close()
				}
				switch {
				case open && err != nil:
					t.Errorf("dial %s:%s with allow_anonymous_network: %v, want a connection", addr, port, err)
				case !open && !errors.Is(err, syscall.ECONNREFUSED):
					t.Errorf("dial %s:%s with no credentials: %v, want connection refused", addr, port, err)
				}
			}
			if !open && !strings.Contains(p.logText(), "bound to loopback only") {
				t.Errorf("no loopback log line:\n%s", p.logText())
			}
			if open && strings.Contains(p.logText(), "bound to loopback only") {
				t.Errorf("loopback log line with allow_anonymous_network:\n%s", p.logText())
			}
		})
	}
}

// makeNetns creates a network namespace with a veth pair to the test's
// own: the host side 10.213.<n>.1/30, the namespace side .2, returned. It
// is removed at the end of the test.
func makeNetns(t *testing.T) (name, addr string) {
	t.Helper()
	skip := func(why string) {
		if os.Getenv("REQUIRE_TEST_TOOLS") != "" {
			t.Fatalf("%s and REQUIRE_TEST_TOOLS is set", why)
		}
		t.Skip(why)
	}
	if os.Geteuid() != 0 {
		skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skip("ip(8) not found")
	}
	n := os.Getpid() % 250
	name = fmt.Sprintf("runnel-test-%d", os.Getpid())
	host, peer := fmt.Sprintf("rvh%d", os.Getpid()), fmt.Sprintf("rvn%d", os.Getpid())
	run := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("netns", "add", name); err != nil {
		skip("cannot create a network namespace: " + err.Error())
	}
	t.Cleanup(func() {
		_ = run("link", "del", host) // deletes the peer too
		_ = run("netns", "del", name)
	})
	addr = fmt.Sprintf("10.213.%d.2", n)
	for _, args := range [][]string{
		{"link", "add", host, "type", "veth", "peer", "name", peer, "netns", name},
		{"addr", "add", fmt.Sprintf("10.213.%d.1/30", n), "dev", host},
		{"link", "set", host, "up"},
		{"-n", name, "addr", "add", addr + "/30", "dev", peer},
		{"-n", name, "link", "set", peer, "up"},
		{"-n", name, "link", "set", "lo", "up"},
	} {
		if err := run(args...); err != nil {
			t.Fatal(err)
		}
	}
	return name, addr
}
