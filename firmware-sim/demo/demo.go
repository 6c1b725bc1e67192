package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	firmwaresim "github.com/runnel-iot/runnel/firmware-sim"
)

// DemoOptions configures `firmware-sim demo`: a DEV-ONLY in-memory Kafka
// (kfake), the runnel gateway as a child process forwarding to it, and the
// mixed scenario feeding the gateway.
type DemoOptions struct {
	Runnel  string // path of the runnel binary
	Config  string // gateway config (configs/demo.yaml)
	DataDir string // the gateway's data dir
	// Addresses of the gateway; empty: the defaults (127.0.0.1:8080,
	// :1883, :8089); "auto": free loopback ports.
	HTTPAddr, MQTTAddr, UDPAddr string
	KafkaAddr                   string // empty: 127.0.0.1:9092
	Devices                     int
	Rate                        float64
	Duration                    time.Duration // 0: until ctx ends
	// Check: after Duration, stop the devices and verify that windows
	// closed, an alert fired (the ECG lead-off rule fires once the ECG
	// stops) and summaries and alerts reached Kafka; exit 1 if not.
	Check bool
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// RunDemo runs the demo until ctx ends or Duration passes; it returns an
// error when something fails to start or, with Check, a check fails.
func RunDemo(ctx context.Context, o DemoOptions, out io.Writer) error {
	if err := o.resolveAddrs(); err != nil {
		return err
	}
	k, err := firmwaresim.StartKafka(firmwaresim.KafkaOptions{Addr: o.KafkaAddr, Topics: firmwaresim.DefaultKafkaTopics})
	if err != nil {
		return fmt.Errorf("start the demo kafka on %s: %w", o.KafkaAddr, err)
	}
	defer k.Close()
	fmt.Fprintf(out, "demo: %s\n", firmwaresim.KafkaBanner)
	fmt.Fprintf(out, "demo: kafka (kfake, in memory) on %s\n", k.Addr())

	gw, err := startGateway(o, k.Addr())
	if err != nil {
		return err
	}
	defer gw.logf.Close()
	base := "http://" + o.HTTPAddr
	if err := waitReady(ctx, base, gw.exited); err != nil {
		switch stopErr := gw.stop(); {
		case stopErr != nil:
			return stopErr // with the gateway's exit status and log
		case ctx.Err() != nil:
			return nil // interrupted while starting: a clean stop
		}
		return fmt.Errorf("%w (log: %s)", err, gw.logPath)
	}
	printGuide(out, o, gw.logPath, base)

	simCtx, stopSim := context.WithCancel(ctx)
	if o.Duration > 0 {
		simCtx, stopSim = context.WithTimeout(ctx, o.Duration)
	}
	defer stopSim()
	opt := firmwaresim.DefaultOptions()
	opt.Scenario, opt.Devices, opt.Rate, opt.Broker = firmwaresim.ScenarioMix, o.Devices, o.Rate, o.MQTTAddr
	opt.ClientIDPrefix = "sim-"
	simDone := make(chan error, 1)
	go func() {
		_, err := firmwaresim.Run(simCtx, opt, out)
		simDone <- err
	}()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	var simErr error
loop:
	for {
		select {
		case simErr = <-simDone:
			break loop
		case <-gw.exited:
			return gw.stoppedOnItsOwn()
		case <-tick.C:
			fmt.Fprintf(out, "demo: kafka received %s; %s\n", formatCounts(k.Counts()), alertLine(base))
		}
	}
	if simErr != nil {
		_ = gw.stop()
		return fmt.Errorf("simulator: %w", simErr)
	}
	var checkErr error
	if o.Check {
		checkErr = demoCheck(base, k, out)
	}
	if err := gw.stop(); err != nil && checkErr == nil {
		checkErr = fmt.Errorf("stop the gateway: %w", err)
	}
	fmt.Fprintf(out, "demo: stopped; kafka received %s\n", formatCounts(k.Counts()))
	return checkErr
}

// resolveAddrs fills in the default addresses and picks free ports for
// those set to "auto".
func (o *DemoOptions) resolveAddrs() error {
	if o.KafkaAddr == "" {
		o.KafkaAddr = "127.0.0.1:9092"
	}
	defaults := map[*string]string{&o.HTTPAddr: "127.0.0.1:8080", &o.MQTTAddr: "127.0.0.1:1883", &o.UDPAddr: "127.0.0.1:8089"}
	for p, d := range defaults {
		switch *p {
		case "":
			*p = d
		case "auto":
			a, err := freeAddr()
			if err != nil {
				return err
			}
			*p = a
		}
	}
	if o.KafkaAddr == "auto" {
		o.KafkaAddr = "127.0.0.1:0"
	}
	return nil
}

// gatewayChild is the runnel gateway the demo runs.
type gatewayChild struct {
	cmd     *exec.Cmd
	logf    *os.File // its stdout and stderr, at logPath
	logPath string
	// exited closes when the gateway has exited, with its status in
	// exitErr: every waiter sees it, not only the first.
	exited  chan struct{}
	exitErr error
}

// startGateway starts runnel with the demo's config, forwarding to the
// Kafka at kafkaAddr, its output in <DataDir>/runnel.log.
func startGateway(o DemoOptions, kafkaAddr string) (*gatewayChild, error) {
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, err
	}
	gw := &gatewayChild{logPath: filepath.Join(o.DataDir, "runnel.log"), exited: make(chan struct{})}
	logf, err := os.Create(gw.logPath)
	if err != nil {
		return nil, err
	}
	gw.logf = logf
	gw.cmd = exec.Command(o.Runnel, "run", "-config", o.Config)
	gw.cmd.Env = append(os.Environ(),
		"RUNNEL_KAFKA_BROKERS="+kafkaAddr, "RUNNEL_DATA_DIR="+o.DataDir,
		"RUNNEL_HTTP_ADDR="+o.HTTPAddr, "RUNNEL_MQTT_ADDR="+o.MQTTAddr, "RUNNEL_UDP_ADDR="+o.UDPAddr)
	gw.cmd.Stdout, gw.cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal reaches the demo
	// alone, which stops the devices and then the gateway with one
	// SIGTERM. In the terminal's group the gateway got the SIGINT too and
	// stopped on its own, which the demo took for a failure (and a SIGTERM
	// from the demo on top is a second signal: the gateway exits at once).
	// If the demo dies, the gateway gets SIGTERM.
	gw.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := gw.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", o.Runnel, err)
	}
	go func() { gw.exitErr = gw.cmd.Wait(); close(gw.exited) }()
	return gw, nil
}

// stop sends SIGTERM and waits for the gateway to exit, killing it after
// 40 s. A gateway that had already stopped is an error.
func (gw *gatewayChild) stop() error {
	select {
	case <-gw.exited:
		return gw.stoppedOnItsOwn()
	default:
	}
	_ = gw.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-gw.exited:
		return gw.exitErr
	case <-time.After(40 * time.Second):
		_ = gw.cmd.Process.Kill()
		<-gw.exited
		return errors.New("the gateway did not stop within 40s of SIGTERM")
	}
}

// stoppedOnItsOwn is the error of a gateway that exited before the demo
// stopped it; call it once exited is closed.
func (gw *gatewayChild) stoppedOnItsOwn() error {
	return fmt.Errorf("the gateway stopped on its own (%s); see its log: %s", exitText(gw.exitErr), gw.logPath)
}

// printGuide prints where to look: the dashboard and example queries.
func printGuide(out io.Writer, o DemoOptions, logPath, base string) {
	fmt.Fprintf(out, `demo: gateway ready (log: %[1]s)

  dashboard:     http://%[2]s/
  series:        curl -s '%[3]s/api/v1/series?limit=5'
  windows:       curl -s '%[3]s/api/v1/windows?series=env,device=env-0001,site=site-1&field=temp&size=10s&last=3'
  alerts:        curl -s '%[3]s/api/v1/alerts'
  live stream:   curl -sN '%[3]s/api/v1/stream?kind=alert,tumbling'
  watch alerts:  bin/firmware-sim subscribe -broker %[4]s -topic 'alerts/#'
                 (or: mosquitto_sub -h %[5]s -p %[6]s -t 'alerts/#' -v)
  metrics:       curl -s %[3]s/metrics | grep runnel_forward

  Simulated patients raise heart-rate and SpO2 alerts within about two
  minutes; machines raise vibration alerts. Ctrl-C stops everything.

`, logPath, o.HTTPAddr, base, o.MQTTAddr, hostOf(o.MQTTAddr), portOf(o.MQTTAddr))
}

// exitText describes how a child process ended.
func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// waitReady polls /readyz until it answers 200.
func waitReady(ctx context.Context, base string, exited <-chan struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("the gateway stopped during start")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("the gateway was not ready within 60s")
		}
	}
}

// demoCheck waits (after the devices stopped) until windows closed, an
// alert fired, and summaries and alerts reached Kafka.
func demoCheck(base string, k *firmwaresim.KafkaBroker, out io.Writer) error {
	deadline := time.Now().Add(45 * time.Second)
	var state string
	for time.Now().Before(deadline) {
		var series struct{ Total int }
		var al struct{ Stats struct{ Fired int } }
		okS := getJSON(base+"/api/v1/series?limit=1", &series) == nil && series.Total > 0
		okA := getJSON(base+"/api/v1/alerts?limit=1", &al) == nil && al.Stats.Fired > 0
		c := k.Counts()
		okK := c["runnel.summaries"] > 0 && c["runnel.alerts"] > 0
		state = fmt.Sprintf("series %d, alerts fired %d, kafka %s", series.Total, al.Stats.Fired, formatCounts(c))
		if okS && okA && okK {
			fmt.Fprintf(out, "demo check: ok: %s\n", state)
			return nil
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
	return fmt.Errorf("demo check failed within 45s: %s", state)
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func alertLine(base string) string {
	var al struct {
		Stats struct{ Firing, Fired, Resolved int }
	}
	if err := getJSON(base+"/api/v1/alerts?limit=0", &al); err != nil {
		return "alerts: " + err.Error()
	}
	return fmt.Sprintf("alerts firing %d (fired %d, resolved %d)", al.Stats.Firing, al.Stats.Fired, al.Stats.Resolved)
}

func formatCounts(c map[string]int64) string {
	var parts []string
	for _, t := range firmwaresim.DefaultKafkaTopics {
		parts = append(parts, fmt.Sprintf("%s=%d", strings.TrimPrefix(t, "runnel."), c[t]))
	}
	return strings.Join(parts, " ")
}

func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
