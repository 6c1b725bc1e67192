package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// vmHWM returns the peak resident set of a process, from /proc.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// hostileWrite is hostileWriteFrom from any local address.
func hostileWrite(t *testing.T, addr string, declared int, header string, part []byte) net.Conn {
	t.Helper()
	return hostileWriteFrom(t, "", addr, declared, header, part)
}

func readStatus(t *testing.T, c net.Conn) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestHostileHTTPWriteMemory runs the built binary with the default limits
// (no config) and attacks its write endpoint as issue 15 lists: 20
// connections declaring 32 MiB and sending one byte, the same at the
// largest allowed size, held open, and 8 concurrent gzip bombs inflating to
// 32 MiB of valid lines. Each is refused (413, or 503 past the in-flight
// budget), a legitimate write still succeeds, and the gateway's peak RSS
// stays within 128 MiB.
func TestHostileHTTPWriteMemory(t *testing.T) {
	bin, env := binary(t)
	p, started := startGateway(t, []string{bin}, loopbackEnv(env, t.TempDir()))
	defer p.stop()
	addr := started["http_addr"].(string)
	pid := p.cmd.Process.Pid
	idle := vmHWM(t, pid)

	// 20 × Content-Length 33554432 and one byte: over max_body_bytes,
	// refused from the header alone.
	var conns []net.Conn
	for range 20 {
		conns = append(conns, hostileWrite(t, addr, 33554432, "", []byte("m")))
	}
	for _, c := range conns {
		if code := readStatus(t, c); code != http.StatusRequestEntityTooLarge {
			t.Errorf("32 MiB declared: status %d, want 413", code)
		}
	}
	// 20 × the largest allowed length and one byte, held open: nothing is
	// allocated by the declared length.
	var held []net.Conn
	for range 20 {
		held = append(held, hostileWrite(t, addr, 16<<20, "", []byte("m")))
	}
	// Closed before the gateway stops, or its graceful shutdown would wait
	// for them until http_write.read_timeout.
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()

	// 8 concurrent gzip bombs: 32 MiB of valid lines.
	var raw bytes.Buffer
	for i := 0; raw.Len() < 32<<20; i++ {
		raw.WriteString("env,device=bomb temp=1 1700000000000000000\n")
	}
	var zb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zb, gzip.BestCompression)
	zw.Write(raw.Bytes())
	zw.Close()
	bomb := zb.Bytes()
	t.Logf("gzip bomb: %d bytes inflating to %d", len(bomb), raw.Len())
	var wg sync.WaitGroup
	codes := make(chan int, 8)
	for range 8 {
		c := hostileWrite(t, addr, len(bomb), "Content-Encoding: gzip\r\n", nil)
		wg.Go(func() {
			if _, err := c.Write(bomb); err != nil {
				codes <- -1
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				codes <- -1
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusRequestEntityTooLarge && code != http.StatusServiceUnavailable {
			t.Errorf("gzip bomb: status %d, want 413 or 503", code)
		}
	}

	// A legitimate writer is still served, promptly.
	start := time.Now()
	resp, err := http.Post("http://"+addr+"/api/v2/write", "text/plain", strings.NewReader("env,device=ok temp=21.5\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || time.Since(start) > time.Second {
		t.Errorf("legitimate write during the attack: %d in %s, want 204 within 1s", resp.StatusCode, time.Since(start))
	}
	peak := vmHWM(t, pid)
	t.Logf("VmHWM idle %d MiB, after the attacks %d MiB", idle>>20, peak>>20)
	if peak > 128<<20 {
		t.Errorf("peak RSS %d MiB, want at most 128 MiB", peak>>20)
	}
}

// TestAcceptErrorsSurvived runs the binary with few file descriptors
// (prlimit) and opens sockets to the MQTT listener until accept fails
// (EMFILE): the listener logs it, retries with back-off, and accepts again
// once the sockets are gone (mochi's own loop would have ended for good).
func TestAcceptErrorsSurvived(t *testing.T) {
	bin, env := binary(t)
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		if os.Getenv("REQUIRE_TEST_TOOLS") != "" {
			t.Fatal("prlimit not found and REQUIRE_TEST_TOOLS is set")
		}
		t.Skip("prlimit not found")
	}
	// Pending sockets are bounded (max_pending_connects, half per host)
	// before descriptors run out: raise the bound so they run out here.
	p, started := startGateway(t, []string{prlimit, "--nofile=64:64", bin},
		append(loopbackEnv(env, t.TempDir()), "RUNNEL_MQTT_MAX_PENDING_CONNECTS=1000"))
	defer p.stop()
	mqttAddr := started["mqtt_addr"].(string)
	var socks []net.Conn
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	for range 80 {
		c, err := net.Dial("tcp", mqttAddr)
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, c)
	}
	p.waitLog("mqtt listener cannot accept; retrying with back-off")
	for _, c := range socks {
		c.Close()
	}
	socks = nil
	p.waitLog("mqtt listener accepting again")
	// A real client gets in.
	c, err := net.DialTimeout("tcp", mqttAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// MQTT 3.1.1 CONNECT, client id "ok", clean session, keep-alive 30.
	connect := []byte{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 2, 'o', 'k'}
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK %x, %v; want a successful CONNACK", ack, err)
	}
}
