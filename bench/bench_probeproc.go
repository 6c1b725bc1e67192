package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"sync/atomic"
	"time"

	firmwaresim "github.com/runnel-iot/runnel/firmware-sim"
)

// The latency probes run in a process of their own (firmware-sim
// bench-probe, a child like the bare broker), not beside the load
// generator: in the generator's process a probe's publish, its HTTP polls
// and the receipt of its alert queued behind the generator's goroutines on
// the same Go scheduler, and the figure then held the harness's own
// queueing. A dashboard or a subscriber is a process apart from the
// sensors; the kernel schedules the probe's few threads beside the
// generator's, as it would theirs.

// probeOut is what a bench-probe child reports on stdout, as JSON.
type probeOut struct {
	Lat      []time.Duration `json:"lat_ns"`               // query: ingest to queryable; alert: to the firing event
	Resolve  []time.Duration `json:"resolve_ns,omitempty"` // alert: the clearing reading to the resolved event
	Timeouts int             `json:"timeouts"`
	Polls    int             `json:"polls"`    // query: GETs of the window, all probes
	Overruns int64           `json:"overruns"` // alert events the subscriber had no room for
}

// runProbes runs the probes of kind ("query" or "alert") against gw in a
// bench-probe child until end (and until there are MinProbes of them, at
// most probeOverrun past end). It ends the child if gw exits.
func (b *bench) runProbes(ctx context.Context, gw *child, kind string, end time.Time) (probeOut, error) {
	var po probeOut
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, b.o.FirmwareSim, "bench-probe", "-kind", kind, "-mqtt", gw.mqtt, "-http", gw.base,
		"-until", strconv.FormatInt(end.UnixNano(), 10), "-min-probes", strconv.Itoa(b.o.MinProbes))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return po, fmt.Errorf("start bench-probe: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return po, fmt.Errorf("bench-probe %s: %w: %s", kind, err, bytes.TrimSpace(stderr.Bytes()))
		}
	case <-gw.exited:
		cancel()
		<-done
		return po, gw.alive()
	}
	if err := json.Unmarshal(stdout.Bytes(), &po); err != nil {
		return po, fmt.Errorf("bench-probe %s: its report: %w", kind, err)
	}
	return po, nil
}

// ProbeCommand is `firmware-sim bench-probe`, the latency probes of make
// bench in a process of their own (run by the bench, not by hand).
var ProbeCommand = firmwaresim.Command{
	Name:    "bench-probe",
	Summary: "the latency probes of make bench, as a process apart from the load (run by bench)",
	Run:     probeCmd,
}

func probeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := firmwaresim.NewFlagSet("bench-probe", "Runs make bench's latency probes against a gateway and prints what they\nmeasured as JSON on stdout. kind query: a probe reading at a time, its\nwindow polled over HTTP until it counts it; kind alert: a crossing and a\nclearing reading per cycle, their events received on alerts/#.\n", stderr)
	kind := fs.String("kind", "query", "`query` or alert")
	mqttAddr := fs.String("mqtt", "", "the gateway's MQTT host:port")
	base := fs.String("http", "", "the gateway's API base, http://host:port")
	until := fs.Int64("until", 0, "probe until this Unix time, in nanoseconds")
	minN := fs.Int("min-probes", minProbes, "go on past -until (at most 1m) until there are this many samples")
	if code := firmwaresim.ParseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	po, err := probe(ctx, *kind, *mqttAddr, *base, time.Unix(0, *until), *minN)
	if err == nil {
		err = json.NewEncoder(stdout).Encode(po)
	}
	if err != nil {
		fmt.Fprintf(stderr, "firmware-sim bench-probe: %v\n", err)
		return firmwaresim.ExitFailure
	}
	return firmwaresim.ExitOK
}

func probe(ctx context.Context, kind, mqttAddr, base string, end time.Time, minN int) (probeOut, error) {
	var po probeOut
	if mqttAddr == "" || base == "" {
		return po, errors.New("-mqtt and -http are required")
	}
	var lost atomic.Int64
	switch kind {
	case "query":
		tr := &http.Transport{MaxIdleConnsPerHost: 2}
		defer tr.CloseIdleConnections()
		p, err := connectProbe(ctx, mqttAddr, "bench-probe", &lost)
		if err != nil {
			return po, err
		}
		defer p.Disconnect(250)
		po.Lat, po.Timeouts, po.Polls, err = queryProbes(ctx, &http.Client{Transport: tr, Timeout: 30 * time.Second}, base, minN, p, end)
		return po, err
	case "alert":
		events := make(chan alertSeen, 256)
		var overrun atomic.Int64
		sub, err := connectProbe(ctx, mqttAddr, "bench-alerts", &lost)
		if err != nil {
			return po, err
		}
		defer sub.Disconnect(250)
		if err := waitToken(ctx, sub.Subscribe("alerts/#", 1, alertHandler(events, &overrun)), 10*time.Second); err != nil {
			return po, fmt.Errorf("subscribe alerts/#: %w", err)
		}
		p, err := connectProbe(ctx, mqttAddr, "bench-probe", &lost)
		if err != nil {
			return po, err
		}
		defer p.Disconnect(250)
		po.Lat, po.Resolve, po.Timeouts, err = alertProbes(ctx, minN, p, events, end)
		po.Overruns = overrun.Load()
		return po, err
	}
	return po, fmt.Errorf("-kind %q: want query or alert", kind)
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
