package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	firmwaresim "github.com/runnel-iot/runnel/firmware-sim"
)

// FleetCommand is `firmware-sim demo-fleet`, for firmwaresim.Main.
var FleetCommand = firmwaresim.Command{
	Name:    "demo-fleet",
	Summary: "dev kafka (3 brokers) + three gateways + two fleet instances (make demo-fleet)",
	Run:     fleetCmd,
}

const fleetDesc = `Runs the fleet demo: a DEV-ONLY in-memory Kafka-protocol broker (kfake,
three brokers), three runnel gateways (gw-a, gw-b, gw-c; child processes,
each with its own data dir and its own simulated environment sensors,
gw-a-env-0001 ..., tagged site-1/site-2) and two runnel fleet instances
(group_by: site) that merge the gateways' windows into fleet windows.
Prints example fleet queries; Ctrl-C stops everything. With -check it
waits until both instances answer a closed fleet window with all three
gateways and the true distinct device counts (fleet-wide and at site-1),
then stops (exit 1 if not).
`

// FleetOptions configures `firmware-sim demo-fleet`.
type FleetOptions struct {
	Runnel      string // path of the runnel binary
	Config      string // the gateways' config (configs/demo.yaml)
	FleetConfig string // the fleet instances' config (configs/fleet.yaml)
	DataDir     string // <DataDir>/gw-a ... and the children's logs
	// KafkaAddr is the first broker's address (empty: 127.0.0.1:9092;
	// "auto": a free port); the other two take free ports.
	KafkaAddr string
	// FleetHTTP are the two fleet instances' HTTP addresses (empty:
	// 127.0.0.1:8090 and :8091; "auto": free ports). The gateways always
	// take free loopback ports (printed).
	FleetHTTP [2]string
	Devices   int     // simulated devices per gateway
	Rate      float64 // ticks per second per device
	Grace     time.Duration
	Duration  time.Duration // 0: until ctx ends (ignored with Check)
	// Check waits (bounded by CheckTimeout) until both fleet instances
	// answer a closed fleet window merged from all three gateways and list
	// the three gateways, then stops everything.
	Check        bool
	CheckTimeout time.Duration
}

// fleetGateways are the demo's gateway ids.
var fleetGateways = []string{"gw-a", "gw-b", "gw-c"}

func fleetCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o FleetOptions
	fs := firmwaresim.NewFlagSet("demo-fleet", fleetDesc, stderr)
	fs.StringVar(&o.Runnel, "runnel", "bin/runnel", "the runnel binary")
	fs.StringVar(&o.Config, "config", "configs/demo.yaml", "the gateways' config (each gets its own id, data dir and ports)")
	fs.StringVar(&o.FleetConfig, "fleet-config", "configs/fleet.yaml", "the fleet instances' config")
	fs.StringVar(&o.DataDir, "data-dir", "data/demo-fleet", "data dirs and logs of the children")
	fs.StringVar(&o.KafkaAddr, "kafka-addr", "", "first demo Kafka broker (default 127.0.0.1:9092; auto: a free port)")
	fleetHTTP := fs.String("fleet-http", "", "the two fleet instances' HTTP addresses, comma-separated (default 127.0.0.1:8090,127.0.0.1:8091; auto: free ports)")
	fs.IntVar(&o.Devices, "devices", 4, "simulated environment sensors per gateway")
	fs.Float64Var(&o.Rate, "rate", 2, "ticks per second per device")
	fs.DurationVar(&o.Grace, "grace", 10*time.Second, "fleet.grace of the fleet instances")
	fs.DurationVar(&o.Duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	fs.BoolVar(&o.Check, "check", false, "wait until both fleet instances serve a window of all three gateways, then stop; exit 1 if not")
	fs.DurationVar(&o.CheckTimeout, "check-timeout", 75*time.Second, "with -check: the longest wait for that window")
	if code := firmwaresim.ParseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	switch h := *fleetHTTP; {
	case h == "auto":
		o.FleetHTTP = [2]string{"auto", "auto"}
	case h != "":
		a, b, ok := strings.Cut(h, ",")
		if !ok {
			fmt.Fprintln(stderr, "firmware-sim demo-fleet: -fleet-http: want two addresses, comma-separated, or auto")
			return firmwaresim.ExitUsage
		}
		o.FleetHTTP = [2]string{a, b}
	}
	if err := RunFleetDemo(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, "firmware-sim demo-fleet:", err)
		return firmwaresim.ExitFailure
	}
	return firmwaresim.ExitOK
}

// child is one runnel process of the fleet demo (a gateway or a fleet
// instance), in its own process group for the reasons startGateway gives.
type child struct {
	name    string
	http    string // its HTTP address
	cmd     *exec.Cmd
	logf    *os.File
	logPath string
	exited  chan struct{} // closed on exit, with the status in exitErr
	exitErr error
}

func startChild(name, bin string, args, env []string, httpAddr, logPath string) (*child, error) {
	c := &child{name: name, http: httpAddr, logPath: logPath, exited: make(chan struct{})}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c.logf = logf
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	go func() { c.exitErr = c.cmd.Wait(); close(c.exited) }()
	return c, nil
}

// stop sends one SIGTERM and waits for the exit, killing after 40 s. A
// child that had already stopped is an error.
func (c *child) stop() error {
	defer c.logf.Close()
	select {
	case <-c.exited:
		return fmt.Errorf("%s stopped on its own (%s); see its log: %s", c.name, exitText(c.exitErr), c.logPath)
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		if c.exitErr != nil {
			return fmt.Errorf("%s: %s (log: %s)", c.name, exitText(c.exitErr), c.logPath)
		}
		return nil
	case <-time.After(40 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%s did not stop within 40s of SIGTERM (log: %s)", c.name, c.logPath)
	}
}

// logTail is the last n lines of the child's log.
func (c *child) logTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// fleetDemo is the running fleet demo.
type fleetDemo struct {
	gateways, fleets []*child
}

// stopAll stops the gateways, then the fleet instances (one SIGTERM
// each, in parallel within a kind).
func (d *fleetDemo) stopAll() error {
	var errs []error
	for _, kind := range [][]*child{d.gateways, d.fleets} {
		res := make([]error, len(kind))
		var wg sync.WaitGroup
		for i, c := range kind {
			wg.Go(func() { res[i] = c.stop() })
		}
		wg.Wait()
		errs = append(errs, res...)
	}
	return errors.Join(errs...)
}

func (d *fleetDemo) all() []*child { return append(slices.Clone(d.gateways), d.fleets...) }

// anyExited yields each child as it exits.
func (d *fleetDemo) anyExited() <-chan *child {
	ch := make(chan *child, len(d.all()))
	for _, c := range d.all() {
		go func() { <-c.exited; ch <- c }()
	}
	return ch
}

func (d *fleetDemo) printTails(out io.Writer) {
	for _, c := range d.all() {
		fmt.Fprintf(out, "--- %s: last lines of %s\n%s\n", c.name, c.logPath, c.logTail(30))
	}
}

// RunFleetDemo runs the fleet demo until ctx ends, Duration passes or,
// with Check, the check decides.
func RunFleetDemo(ctx context.Context, o FleetOptions, out io.Writer) (err error) {
	if o.KafkaAddr == "" {
		o.KafkaAddr = "127.0.0.1:9092"
	} else if o.KafkaAddr == "auto" {
		o.KafkaAddr = "127.0.0.1:0"
	}
	for i, def := range []string{"127.0.0.1:8090", "127.0.0.1:8091"} {
		switch o.FleetHTTP[i] {
		case "":
			o.FleetHTTP[i] = def
		case "auto":
			if o.FleetHTTP[i], err = freeAddr(); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return err
	}
	k, err := firmwaresim.StartKafka(firmwaresim.KafkaOptions{Addr: o.KafkaAddr, Brokers: 3, Topics: firmwaresim.DefaultKafkaTopics})
	if err != nil {
		return fmt.Errorf("start the demo kafka on %s: %w", o.KafkaAddr, err)
	}
	defer k.Close()
	brokers := strings.Join(k.Addrs(), ",")
	fmt.Fprintf(out, "demo-fleet: %s\n", firmwaresim.KafkaBanner)
	fmt.Fprintf(out, "demo-fleet: kafka (kfake, in memory, 3 brokers) on %s\n", brokers)

	d := &fleetDemo{}
	stopped := false
	defer func() {
		if !stopped {
			if err != nil {
				d.printTails(out)
			}
			_ = d.stopAll()
		}
	}()
	var mqtt []string
	for _, id := range fleetGateways {
		var addrs [3]string
		for i := range addrs {
			if addrs[i], err = freeAddr(); err != nil {
				return err
			}
		}
		dir := filepath.Join(o.DataDir, id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		// Only the 10 s tumbling window: fleet windows close quickly and
		// the queries below have one size to ask for.
		c, err := startChild(id, o.Runnel, []string{"run", "-config", o.Config}, []string{
			"RUNNEL_GATEWAY_ID=" + id, "RUNNEL_DATA_DIR=" + dir, "RUNNEL_KAFKA_BROKERS=" + brokers,
			"RUNNEL_HTTP_ADDR=" + addrs[0], "RUNNEL_MQTT_ADDR=" + addrs[1], "RUNNEL_UDP_ADDR=" + addrs[2],
			"RUNNEL_WINDOWS_TUMBLING=10s",
		}, addrs[0], filepath.Join(o.DataDir, id+".log"))
		if err != nil {
			return err
		}
		d.gateways = append(d.gateways, c)
		mqtt = append(mqtt, addrs[1])
	}
	for i, addr := range o.FleetHTTP {
		name := fmt.Sprintf("fleet-%d", i+1)
		c, err := startChild(name, o.Runnel, []string{"fleet", "-config", o.FleetConfig}, []string{
			"RUNNEL_FLEET_INSTANCE=" + name, "RUNNEL_FLEET_BROKERS=" + brokers, "RUNNEL_FLEET_HTTP=" + addr,
			"RUNNEL_FLEET_GROUP_BY=site", "RUNNEL_FLEET_GRACE=" + o.Grace.String(),
		}, addr, filepath.Join(o.DataDir, name+".log"))
		if err != nil {
			return err
		}
		d.fleets = append(d.fleets, c)
	}
	for _, c := range d.all() {
		if err := waitReady(ctx, "http://"+c.http, c.exited); err != nil {
			if ctx.Err() != nil {
				stopped = true
				return d.stopAll() // interrupted while starting: a clean stop
			}
			return fmt.Errorf("%s: %w (log: %s)", c.name, err, c.logPath)
		}
	}
	printFleetGuide(out, d)

	simCtx, stopSim := context.WithCancel(ctx)
	defer stopSim()
	simDone := make(chan error, len(mqtt))
	for i, broker := range mqtt {
		opt := firmwaresim.DefaultOptions()
		opt.Scenario, opt.Devices, opt.Rate, opt.Broker = firmwaresim.ScenarioEnv, o.Devices, o.Rate, broker
		opt.Sites, opt.Seed = 2, uint64(i+1)
		// Each gateway's sensors are its own devices (gw-a-env-0001, ...),
		// so fleet-wide distinct devices is the sum over the gateways.
		opt.ClientIDPrefix, opt.DevicePrefix = fleetGateways[i]+"-", fleetGateways[i]+"-"
		go func() {
			_, err := firmwaresim.Run(simCtx, opt, io.Discard)
			simDone <- err
		}()
	}

	var limit <-chan time.Time
	switch {
	case o.Check:
		limit = time.After(o.CheckTimeout)
	case o.Duration > 0:
		limit = time.After(o.Duration)
	}
	exited := d.anyExited()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	status := time.NewTicker(10 * time.Second)
	defer status.Stop()
	var state string
	var checkErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case c := <-exited:
			return fmt.Errorf("%s stopped on its own (%s); see its log: %s", c.name, exitText(c.exitErr), c.logPath)
		case err := <-simDone:
			if err != nil {
				return fmt.Errorf("simulator: %w", err)
			}
		case <-limit:
			if o.Check {
				checkErr = fmt.Errorf("fleet check failed within %s: %s", o.CheckTimeout, state)
			}
			break loop
		case <-status.C:
			fmt.Fprintf(out, "demo-fleet: kafka received %s\n", countLine(k.Counts()))
		case <-poll.C:
			if !o.Check {
				continue
			}
			var ok bool
			ok, state = fleetCheck(d, o.Devices)
			if ok {
				fmt.Fprintf(out, "demo-fleet check: ok: %s\n", state)
				break loop
			}
		}
	}
	stopSim()
	stopped = true
	if checkErr != nil {
		d.printTails(out)
	}
	if err := d.stopAll(); err != nil && checkErr == nil {
		checkErr = fmt.Errorf("stop: %w", err)
	}
	fmt.Fprintf(out, "demo-fleet: stopped; kafka received %s\n", countLine(k.Counts()))
	return checkErr
}

// fleetCheck reports whether every fleet instance answers a closed
// 10 s env/temp window (the same one) merged from all three gateways,
// and lists the three gateways.
func fleetCheck(d *fleetDemo, devices int) (bool, string) {
	complete := map[string]int{} // fleet key -> instances that serve it closed with 3 gateways
	var notes []string
	for _, f := range d.fleets {
		if ok, note := distinctCheck(f, devices); !ok {
			return false, f.name + ": " + note
		}
		var w struct{ Windows []Output }
		if err := getJSON("http://"+f.http+"/api/v1/fleet/windows?measurement=env&field=temp&size=10s&last=100", &w); err != nil {
			return false, err.Error()
		}
		n := 0
		for _, x := range w.Windows {
			if x.Closed != "" && len(x.Gateways) == len(fleetGateways) {
				complete[x.Key]++
				n++
			}
		}
		var g struct{ Gateways []struct{ Gateway string } }
		if err := getJSON("http://"+f.http+"/api/v1/fleet/gateways", &g); err != nil {
			return false, err.Error()
		}
		var ids []string
		for _, x := range g.Gateways {
			ids = append(ids, x.Gateway)
		}
		notes = append(notes, fmt.Sprintf("%s: %d windows (%d closed with 3 gateways), gateways %v", f.name, len(w.Windows), n, ids))
		if !slices.Equal(ids, fleetGateways) {
			return false, strings.Join(notes, "; ")
		}
	}
	for key, n := range complete {
		if n == len(d.fleets) {
			return true, fmt.Sprintf("window %s closed with gateways %v on every instance; distinct devices %d fleet-wide, %d at site-1; %s",
				key, fleetGateways, devices*len(fleetGateways), siteDevices(devices, 1)*len(fleetGateways), strings.Join(notes, "; "))
		}
	}
	return false, strings.Join(notes, "; ")
}

// siteDevices is how many of a gateway's n simulated devices are at
// site-<site> (the simulator puts device i at site i%2+1).
func siteDevices(n, site int) int {
	c := 0
	for i := range n {
		if i%2+1 == site {
			c++
		}
	}
	return c
}

// distinctCheck reports whether f answers a closed 10 s window of distinct
// env devices merged from all three gateways with the true fleet total
// (every gateway's devices are its own), and the same per site for
// site-1; no window may count more.
func distinctCheck(f *child, devices int) (bool, string) {
	type row struct {
		Group    string
		Tags     map[string]string
		Closed   string
		Gateways []string
		Distinct uint64
	}
	want := map[string]uint64{"": uint64(devices * len(fleetGateways)), "site-1": uint64(siteDevices(devices, 1) * len(fleetGateways))}
	var notes []string
	for _, site := range []string{"", "site-1"} {
		var r struct{ Windows []row }
		if err := getJSON("http://"+f.http+"/api/v1/fleet/distinct?measurement=env&size=10s&last=100&group="+url.QueryEscape("site="+site), &r); err != nil {
			return false, err.Error()
		}
		found := false
		for _, x := range r.Windows {
			if x.Distinct > want[site] {
				return false, fmt.Sprintf("distinct %s window (site %q) counts %d devices, more than the %d simulated", x.Group, site, x.Distinct, want[site])
			}
			found = found || (x.Closed != "" && len(x.Gateways) == len(fleetGateways) && x.Distinct == want[site])
		}
		if !found {
			return false, fmt.Sprintf("no closed distinct window (site %q) of all gateways with %d devices yet (%d windows)", site, want[site], len(r.Windows))
		}
		notes = append(notes, fmt.Sprintf("site %q: %d", site, want[site]))
	}
	return true, strings.Join(notes, ", ")
}

// Output is the part of a fleet window record (fleet.Output) the check
// reads.
type Output struct {
	Key      string
	Closed   string
	Gateways []string
}

func printFleetGuide(out io.Writer, d *fleetDemo) {
	fmt.Fprintf(out, "demo-fleet: ready\n\n")
	for _, c := range d.gateways {
		fmt.Fprintf(out, "  gateway %s: http://%s/ (log: %s)\n", c.name, c.http, c.logPath)
	}
	for _, c := range d.fleets {
		fmt.Fprintf(out, "  %s: http://%s (log: %s)\n", c.name, c.http, c.logPath)
	}
	a, b := "http://"+d.fleets[0].http, "http://"+d.fleets[1].http
	fmt.Fprintf(out, `
  fleet windows:   curl -s '%[1]s/api/v1/fleet/windows?measurement=env&field=temp&size=10s&last=4'
  one site:        curl -s '%[2]s/api/v1/fleet/windows?measurement=env&field=temp&group=%[3]s&last=2'
  gateways:        curl -s '%[1]s/api/v1/fleet/gateways'
  distinct:        curl -s '%[2]s/api/v1/fleet/distinct?measurement=env&last=2'
  per site:        curl -s '%[1]s/api/v1/fleet/distinct?measurement=env&group=%[3]s&last=2'
  top devices:     curl -s '%[1]s/api/v1/fleet/topk?measurement=env&last=2'
  metrics:         curl -s %[2]s/metrics | grep runnel_fleet

  Each gateway's closed 10 s windows are merged per site: a fleet window
  lists its gateways and closes once every gateway has sent it (or after
  the grace). Either instance answers every closed window. Ctrl-C stops
  everything.

`, a, b, url.QueryEscape("site=site-1"))
}

// countLine formats counts as "a=1 b=2", topics sorted.
func countLine(c map[string]int64) string {
	var parts []string
	for _, t := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, fmt.Sprintf("%s=%d", t, c[t]))
	}
	return strings.Join(parts, " ")
}
