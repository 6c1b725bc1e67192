package firmwaresim

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// BareBroker is a mochi-mqtt broker with allow-all auth and one hook on
// OnPublish that does nothing: the baseline that benchmarks compare the
// gateway's broker with. It stores nothing and bounds nothing (mochi's
// defaults): never expose it.
type BareBroker struct {
	srv *mqtt.Server
	ln  *listeners.TCP
}

// noopHook is called on every publish, as the gateway's hook is, and
// passes the packet on untouched, so the baseline pays mochi's hook
// dispatch and nothing more.
type noopHook struct{ mqtt.HookBase }

func (h *noopHook) ID() string           { return "noop" }
func (h *noopHook) Provides(b byte) bool { return b == mqtt.OnPublish }
func (h *noopHook) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	return pk, nil
}

// StartBareBroker listens on addr (port 0 picks one; see Addr) and serves
// until Close. extra hooks (a test's counters) are added after the two
// of the baseline. Logs at warning level and above go to logw (nil: none).
func StartBareBroker(addr string, logw io.Writer, extra ...mqtt.Hook) (*BareBroker, error) {
	if logw == nil {
		logw = io.Discard
	}
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Logger:       slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	for _, h := range append([]mqtt.Hook{new(auth.AllowHook), new(noopHook)}, extra...) {
		if err := srv.AddHook(h, nil); err != nil {
			return nil, fmt.Errorf("bare broker hook %s: %w", h.ID(), err)
		}
	}
	ln := listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})
	if err := srv.AddListener(ln); err != nil {
		return nil, fmt.Errorf("bare broker listen %s: %w", addr, err)
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return nil, fmt.Errorf("bare broker: %w", err)
	}
	return &BareBroker{srv: srv, ln: ln}, nil
}

// Addr is the address the broker listens on (host:port).
func (b *BareBroker) Addr() string { return b.ln.Address() }

// Server is the mochi server, for in-process publishes in tests.
func (b *BareBroker) Server() *mqtt.Server { return b.srv }

// Close stops the broker and disconnects its clients.
func (b *BareBroker) Close() error { return b.srv.Close() }

// RunBareBroker serves a BareBroker on addr until ctx ends.
func RunBareBroker(ctx context.Context, addr string, out io.Writer) error {
	b, err := StartBareBroker(addr, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "bare mochi-mqtt broker on %s: allow-all auth, a no-op publish hook, nothing stored (a benchmark baseline, not a gateway)\n", b.Addr())
	<-ctx.Done()
	return b.Close()
}
