package demo

import (
	"context"
	"fmt"
	"io"

	firmwaresim "github.com/runnel-iot/runnel/firmware-sim"
)

// Command is `firmware-sim demo`, for firmwaresim.Main.
var Command = firmwaresim.Command{
	Name:    "demo",
	Summary: "dev kafka + the gateway + simulated devices (make demo)",
	Run:     demoCmd,
}

const demoDesc = `Runs the one-command demo: a DEV-ONLY in-memory Kafka-protocol broker
(kfake), the runnel gateway (a child process, forwarding to it) and the
mixed scenario (environment sensors, machines, patients) over MQTT. Prints
the dashboard URL and example queries; Ctrl-C stops everything.
`

func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o DemoOptions
	fs := firmwaresim.NewFlagSet("demo", demoDesc, stderr)
	fs.StringVar(&o.Runnel, "runnel", "bin/runnel", "the runnel binary")
	fs.StringVar(&o.Config, "config", "configs/demo.yaml", "the gateway config")
	fs.StringVar(&o.DataDir, "data-dir", "data/demo", "the gateway's data dir (its log: <data-dir>/runnel.log)")
	fs.StringVar(&o.HTTPAddr, "http-addr", "", "gateway HTTP address (default 127.0.0.1:8080; auto: a free port)")
	fs.StringVar(&o.MQTTAddr, "mqtt-addr", "", "gateway MQTT address (default 127.0.0.1:1883; auto: a free port)")
	fs.StringVar(&o.UDPAddr, "udp-addr", "", "gateway UDP address (default 127.0.0.1:8089; auto: a free port)")
	fs.StringVar(&o.KafkaAddr, "kafka-addr", "", "demo Kafka address (default 127.0.0.1:9092; auto: a free port)")
	fs.IntVar(&o.Devices, "devices", 30, "simulated devices (env : vibration : biosignal = 5:3:2)")
	fs.Float64Var(&o.Rate, "rate", 2, "ticks per second per device")
	fs.DurationVar(&o.Duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	fs.BoolVar(&o.Check, "check", false, "after -duration, check that windows, an alert and forwarded records appear; exit 1 if not")
	if code := firmwaresim.ParseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if err := RunDemo(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, "firmware-sim demo:", err)
		return firmwaresim.ExitFailure
	}
	return firmwaresim.ExitOK
}
