package firmwaresim

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMainUsage(t *testing.T) {
	f := func(args []string, wantCode int, wantOut, wantErr []string) {
		t.Helper()
		var out, errb syncBuffer
		code := Main(context.Background(), args, &out, &errb)
		if code != wantCode {
			t.Fatalf("%v: exit %d, want %d; stderr:\n%s", args, code, wantCode, errb.String())
		}
		for _, w := range wantOut {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: stdout lacks %q:\n%s", args, w, out.String())
			}
		}
		for _, w := range wantErr {
			if !strings.Contains(errb.String(), w) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, w, errb.String())
			}
		}
	}
	// -h documents every flag with its default.
	f([]string{"-h"}, ExitOK, nil, []string{"-scenario", "(default \"mix\")", "-devices", "-rate", "-readings", "-duration",
		"-count", "-qos", "-transport", "-format", "-broker", "-udp", "-http", "-username", "-password", "-client-id-prefix", "-device-prefix",
		"-seed", "-malformed", "-out-of-order", "-late", "-reconnect-every", "-burst-every", "-burst-factor",
		"-high-cardinality", "-max-inflight", "percent", "probability", "ticks per second"})
	f([]string{"help"}, ExitOK, []string{"subscribe", "kafka", "bare-broker"}, nil)
	f([]string{"subscribe", "-h"}, ExitOK, nil, []string{"-topic", "alerts/#"})
	f([]string{"kafka", "-h"}, ExitOK, nil, []string{"not for production; in-memory", "-topics", "runnel.summaries,runnel.alerts,runnel.sketches"})
	f([]string{"bare-broker", "-h"}, ExitOK, nil, []string{"-addr", "127.0.0.1:1884"})
	// Bad flags: exit 2, every problem named.
	f([]string{"-devices", "0", "-qos", "7", "-scenario", "ocean", "-malformed", "150"}, ExitUsage, nil,
		[]string{"-devices 0", "-qos 7", "-scenario ocean", "-malformed 150", "invalid flags"})
	f([]string{"-no-such-flag"}, ExitUsage, nil, []string{"flag provided but not defined: -no-such-flag"})
	f([]string{"run", "extra"}, ExitUsage, nil, []string{"unexpected argument \"extra\""})
	f([]string{"fly"}, ExitUsage, nil, []string{"unknown subcommand \"fly\""})
	f([]string{"-start", "yesterday"}, ExitUsage, nil, []string{"-start yesterday"})
	f([]string{"-transport", "udp", "-reconnect-every", "1s"}, ExitUsage, nil, []string{"needs -transport mqtt"})
	f([]string{"kafka", "-addr", "10.1.2.3:9092", "-interval", "1s"}, ExitFailure, nil, []string{"127.0.0.1 only"})
}

func TestMainRunReport(t *testing.T) {
	b, h := startBroker(t, nil)
	var out, errb syncBuffer
	code := Main(context.Background(), []string{"run", "-broker", b.Addr(), "-scenario", "biosignal", "-devices", "2",
		"-rate", "20", "-count", "6", "-qos", "1", "-progress-interval", "100ms"}, &out, &errb)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep Report
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", err, out.String())
	}
	if rep.Scenario != ScenarioBiosignal || rep.Sent != 12 || rep.Acknowledged != 12 || len(h.received()) != 12 {
		t.Fatalf("report %+v, broker got %d", rep, len(h.received()))
	}
	if !strings.Contains(errb.String(), "sent 12") {
		t.Fatalf("no progress on stderr: %q", errb.String())
	}
}

// TestMainInterrupt runs the real binary and sends it SIGINT: it must stop
// cleanly, print the report and exit 0.
func TestMainInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "firmware-sim")
	build := exec.Command("go", "build", "-o", bin, "./cmd/firmware-sim")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	b, h := startBroker(t, nil)
	cmd := exec.Command(bin, "run", "-broker", b.Addr(), "-devices", "2", "-rate", "20", "-scenario", "env")
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitFor(t, 10*time.Second, func() (bool, string) {
		n := len(h.received())
		return n >= 10, strings.Repeat("|", n) + errb.String()
	})
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v; stderr: %s", err, errb.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatal("no exit within 10s of SIGINT")
	}
	var rep Report
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
		t.Fatalf("no JSON report after SIGINT: %v\n%s", err, out.String())
	}
	if !rep.Interrupted || rep.Sent < 10 || rep.Acknowledged != rep.Sent {
		t.Fatalf("report after SIGINT: %+v", rep)
	}
}

func TestSubscribe(t *testing.T) {
	b, _ := startBroker(t, nil)
	srv := b.Server()
	if err := srv.Publish("alerts/hr_high/vitals,device=bio-0009", []byte(`{"state":"firing","value":151.2}`), true, 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- Subscribe(ctx, SubscribeOptions{Broker: b.Addr(), Topic: "alerts/#", QoS: 1, Count: 3}, &out)
	}()
	// The retained message arrives once the subscription is in place.
	waitFor(t, 5*time.Second, func() (bool, string) { return strings.Contains(out.String(), "retained=true"), out.String() })
	if err := srv.Publish("alerts/spo2_low/vitals,device=bio-0010", []byte(`{"state":"resolved"}`), false, 1); err != nil {
		t.Fatal(err)
	}
	if err := srv.Publish("alerts/x/y", []byte("two\nlines"), false, 0); err != nil {
		t.Fatal(err)
	}
	if err := srv.Publish("telemetry/x/env", []byte("not for us"), false, 0); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []string{
		`alerts/hr_high/vitals,device=bio-0009 retained=true {"state":"firing","value":151.2}`,
		`alerts/spo2_low/vitals,device=bio-0010 retained=false {"state":"resolved"}`,
		`alerts/x/y retained=false "two\nlines"`,
	}
	var got []string
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		got = append(got, sc.Text())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("subscribe printed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// denyHook lets every client in and refuses every subscription.
type denyHook struct{ mqtt.HookBase }

func (h *denyHook) ID() string { return "deny-subscribe" }
func (h *denyHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *denyHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (h *denyHook) OnACLCheck(_ *mqtt.Client, _ string, write bool) bool    { return write }

func TestSubscribeRefused(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(denyHook), nil); err != nil {
		t.Fatal(err)
	}
	ln := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := Subscribe(ctx, SubscribeOptions{Broker: ln.Address(), Topic: "alerts/#"}, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "refused the subscription") {
		t.Fatalf("err = %v", err)
	}
	if err := Subscribe(ctx, SubscribeOptions{Broker: "nowhere", Topic: "a"}, &syncBuffer{}); err == nil {
		t.Fatal("broker without port accepted")
	}
}

func TestKafka(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- RunKafka(ctx, KafkaOptions{Addr: "127.0.0.1:0", Topics: DefaultKafkaTopics, Interval: 100 * time.Millisecond}, &out)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var addr string
	waitFor(t, 5*time.Second, func() (bool, string) {
		for _, l := range strings.Split(out.String(), "\n") {
			if a, ok := strings.CutPrefix(l, "listening on "); ok {
				addr, _, _ = strings.Cut(a, ";")
				return true, ""
			}
		}
		return false, out.String()
	})
	if !strings.Contains(out.String(), "not for production; in-memory") {
		t.Fatalf("no warning in %q", out.String())
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	recs := []*kgo.Record{
		{Topic: "runnel.alerts", Key: []byte("gw1|hr"), Value: []byte(`{"state":"firing"}`)},
		{Topic: "runnel.summaries", Value: []byte(`{}`)},
		{Topic: "runnel.summaries", Value: []byte(`{}`)},
	}
	if err := cl.ProduceSync(pctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		s := out.String()
		return strings.Contains(s, "runnel.alerts=1 runnel.sketches=0 runnel.summaries=2 (total 3)"), s[max(0, len(s)-300):]
	})
}

func TestKafkaCounts(t *testing.T) {
	k, err := StartKafka(KafkaOptions{Addr: "localhost:0", Topics: []string{"runnel.alerts"}})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr()), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A topic not created at start is created on first use and counted.
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "other", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		c := k.Counts()
		return c["other"] == 1 && c["runnel.alerts"] == 0, countLine(c)
	})
}
