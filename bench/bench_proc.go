package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// bench is one RunBench: options, the work dir and an HTTP client of its
// own (its idle connections are closed at the end, so nothing lingers).
type bench struct {
	o       BenchOptions
	dir     string
	tempDir bool
	hc      *http.Client
	tr      *http.Transport
	// qos1Rate is the gateway's saturating QoS 1 rate (acked/s) measured
	// by mqtt-qos1 in this run; 0 until then.
	qos1Rate float64
	// telegrafCPUPer100k is Telegraf's CPU-s per 100,000 messages
	// measured by the telegraf phase in this run; 0 until then.
	telegrafCPUPer100k float64
}

func newBench(o BenchOptions) (*bench, error) {
	b := &bench{o: o}
	if o.FirmwareSim == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find this executable for the bare broker: %w (set -firmware-sim)", err)
		}
		b.o.FirmwareSim = exe
	}
	for _, bin := range []string{b.o.Runnel, b.o.FirmwareSim} {
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("binary %q: not an executable file (run make build first)", bin)
		}
	}
	if o.WorkDir == "" {
		d, err := os.MkdirTemp("", "runnel-bench-")
		if err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
		b.dir, b.tempDir = d, true
	} else {
		if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
		b.dir = o.WorkDir
	}
	b.tr = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	b.hc = &http.Client{Transport: b.tr, Timeout: 30 * time.Second}
	return b, nil
}

// close removes what the run wrote (a temp work dir whole; in a given
// work dir, only the phase dirs) unless Keep, or the run failed: then the
// children's logs are what the operator needs.
func (b *bench) close(failed bool) {
	b.tr.CloseIdleConnections()
	switch {
	case b.o.Keep || failed:
		b.logf("logs and data dirs kept in %s", b.dir)
	case b.tempDir:
		os.RemoveAll(b.dir)
	default:
		for _, p := range benchPhases {
			os.RemoveAll(filepath.Join(b.dir, p.name))
		}
	}
}

// tmpfsMagic is TMPFS_MAGIC from statfs(2).
const tmpfsMagic = 0x01021994

// onTmpfs reports whether dir is in memory, where fsync costs nothing:
// the gateway's acknowledged paths would look faster than on any disk.
func onTmpfs(dir string) bool {
	var st syscall.Statfs_t
	return syscall.Statfs(dir, &st) == nil && int64(st.Type) == tmpfsMagic
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.o.Log, "bench: "+format+"\n", args...)
}

// child is a gateway or a bare broker run as a child process, so its CPU
// time and memory can be read from /proc/<pid>, and each phase starts from
// a fresh process (VmHWM is then the peak of that phase alone).
type child struct {
	name    string // "runnel" or "bare"
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error // valid once exited is closed
	dir     string
	mqtt    string // host:port
	udp     string // host:port (gateway only)
	base    string // http://host:port (gateway only)
}

// startChild starts bin with args and env (added to the environment minus
// every RUNNEL_* variable, so the caller's shell cannot change a phase),
// its output to dir/<name>.log.
func startChild(name, bin, dir string, args, env []string) (*child, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RUNNEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C of make goes to the bench, which
	// then stops its children in order; if the bench dies, so do they.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{}), dir: dir}
	go func() {
		c.waitErr = cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	return c, nil
}

// alive reports an error when the child has exited.
func (c *child) alive() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s exited: %v (log: %s)", c.name, c.waitErr, c.logPath)
	default:
		return nil
	}
}

// stop sends SIGTERM and waits for a graceful exit (the gateway flushes
// and checkpoints), then SIGKILL after 40 s.
func (c *child) stop() error {
	if err := c.alive(); err != nil {
		return err
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(40 * time.Second)
	defer t.Stop()
	select {
	case <-c.exited:
		if c.waitErr != nil {
			return fmt.Errorf("%s: %v (log: %s)", c.name, c.waitErr, c.logPath)
		}
		return nil
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%s did not stop within 40s of SIGTERM (killed; log: %s)", c.name, c.logPath)
	}
}

// freeAddr returns a loopback TCP address free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// freeUDPAddr returns a loopback UDP address free a moment ago.
func freeUDPAddr() (string, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().String(), nil
}

// startGateway starts the gateway on free loopback ports with a fresh
// data dir (dir), the built-in defaults (= configs/gateway.yaml), config
// when not empty, and env overrides on top.
func (b *bench) startGateway(ctx context.Context, dir, config string, env ...string) (*child, error) {
	httpA, err := freeAddr()
	if err != nil {
		return nil, err
	}
	mqttA, err := freeAddr()
	if err != nil {
		return nil, err
	}
	udpA, err := freeUDPAddr()
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	args := []string{"run"}
	if config != "" {
		args = append(args, "-config", config)
	}
	base := []string{
		"RUNNEL_GATEWAY_ID=bench", "RUNNEL_DATA_DIR=" + filepath.Join(dir, "data"),
		"RUNNEL_HTTP_ADDR=" + httpA, "RUNNEL_MQTT_ADDR=" + mqttA, "RUNNEL_UDP_ADDR=" + udpA,
	}
	if b.o.ProfileDir != "" {
		base = append(base, "RUNNEL_HTTP_PPROF=true")
	}
	env = append(append(base, env...), b.o.GatewayEnv...)
	c, err := startChild("runnel", b.o.Runnel, dir, args, env)
	if err != nil {
		return nil, err
	}
	c.mqtt, c.udp, c.base = mqttA, udpA, "http://"+httpA
	if err := b.waitReady(ctx, c); err != nil {
		_ = c.stop()
		return nil, err
	}
	return c, nil
}

// waitReady polls /readyz until it answers 200 (at most 60 s).
func (b *bench) waitReady(ctx context.Context, c *child) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := b.hc.Get(c.base + "/readyz"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if err := c.alive(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the gateway was not ready within 60s (log: %s)", c.logPath)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// startBare starts `firmware-sim bare-broker` on a free port and waits
// until it accepts connections.
func (b *bench) startBare(ctx context.Context, dir string) (*child, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	c, err := startChild("bare", b.o.FirmwareSim, dir, []string{"bare-broker", "-addr", addr}, nil)
	if err != nil {
		return nil, err
	}
	c.mqtt = addr
	if err := waitAccepting(ctx, c, addr); err != nil {
		_ = c.stop()
		return nil, err
	}
	return c, nil
}

// waitAccepting waits (at most 20 s) until child c accepts TCP
// connections on addr.
func waitAccepting(ctx context.Context, c *child, addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if err := c.alive(); err != nil {
			return err
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%s on %s not accepting within 20s: %w", c.name, addr, errors.Join(err, ctx.Err()))
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// procUsage is what /proc tells of a process.
type procUsage struct {
	cpuS     float64 // utime + stime, seconds
	hwmBytes int64   // VmHWM: peak resident set
	rssBytes int64   // VmRSS
	// runqWaitS is the time the process's threads spent runnable but
	// waiting for a CPU (the second field of each
	// /proc/<pid>/task/<tid>/schedstat, summed; a thread that exited
	// takes its share with it); NaN where the kernel does not say.
	runqWaitS float64
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux ABI Go targets (sysconf would need cgo).
const clockTicks = 100

func (c *child) usage() (procUsage, error) {
	if err := c.alive(); err != nil {
		return procUsage{}, err
	}
	return readProcUsage(c.cmd.Process.Pid)
}

// readProcUsage reads utime and stime from /proc/<pid>/stat (fields 14
// and 15, counted after the parenthesised command name, which may hold
// spaces) and VmHWM and VmRSS from /proc/<pid>/status.
func readProcUsage(pid int) (procUsage, error) {
	var u procUsage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	cpu, err := parseProcStatCPU(string(stat))
	if err != nil {
		return u, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	u.cpuS = cpu
	u.runqWaitS = readRunqWait(pid)
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmHWM" && k != "VmRSS") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return u, fmt.Errorf("/proc/%d/status %s: %q", pid, k, v)
		}
		if k == "VmHWM" {
			u.hwmBytes = kb << 10
		} else {
			u.rssBytes = kb << 10
		}
	}
	return u, sc.Err()
}

// readRunqWait returns the seconds pid's threads have spent waiting on a
// run queue (see procUsage.runqWaitS), or NaN.
func readRunqWait(pid int) float64 {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return math.NaN()
	}
	var ns uint64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			return math.NaN()
		}
		w, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return math.NaN()
		}
		ns += w
	}
	return float64(ns) / 1e9
}

// parseProcStatCPU returns (utime+stime)/USER_HZ from a /proc/<pid>/stat
// line.
func parseProcStatCPU(stat string) (float64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no ')' after the command name")
	}
	// After ") ": state(3) ppid(4) ... utime(14) stime(15).
	fields := strings.Fields(stat[i+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(fields))
	}
	ut, err1 := strconv.ParseUint(fields[11], 10, 64)
	st, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(ut+st) / clockTicks, nil
}

// promSamples are the samples of one /metrics scrape, keyed by the metric
// name with its labels exactly as the gateway writes them, e.g.
// `runnel_ingest_readings_total{listener="mqtt"}`.
type promSamples map[string]float64

func (b *bench) scrape(c *child) (promSamples, error) {
	resp, err := b.hc.Get(c.base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseProm(resp.Body)
}

// parseProm reads the Prometheus text format: comments skipped, the
// value after the last space (no timestamps are written).
func parseProm(r io.Reader) (promSamples, error) {
	out := promSamples{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}
