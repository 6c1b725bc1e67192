package gateway

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// TestCheckpointsUnderUDPOnly: a gateway fed only over UDP (best effort:
// acknowledged before its fsync) at about 100 datagrams a second writes
// checkpoints on its interval, and at shutdown one that covers every
// applied record. Before, it wrote none at all, not even at shutdown.
func TestCheckpointsUnderUDPOnly(t *testing.T) {
	cfg := testConfig(t)
	cfg.Checkpoint.Interval = 100 * time.Millisecond
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	conn, err := net.Dial("udp", g.udpAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stop := make(chan struct{})
	sent := make(chan int)
	go func() {
		n := 0
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				sent <- n
				return
			case <-tick.C:
			}
			if _, err := fmt.Fprintf(conn, "udp,device=a v=%d %d\n", n, time.Now().UnixNano()); err == nil {
				n++
			}
		}
	}()
	waitFor(t, 20*time.Second, func() (bool, string) {
		n := g.pipeline.Stats().Checkpoints
		return n >= 3, fmt.Sprintf("%d checkpoints under UDP load (interval 100ms)", n)
	})
	close(stop)
	n := <-sent
	waitFor(t, 20*time.Second, func() (bool, string) {
		a, l := g.pipeline.Windows().AppliedIndex(), g.wal.LastIndex()
		return a >= l, fmt.Sprintf("applied %d of %d (%d datagrams sent)", a, l, n)
	})
	applied := g.pipeline.Windows().AppliedIndex()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	done <- nil // for the deferred receive
	ck, err := wal.OpenCheckpoints(filepath.Join(cfg.Gateway.DataDir, "checkpoints"), nil)
	if err != nil {
		t.Fatal(err)
	}
	idx, _, _, err := ck.Load()
	if err != nil || idx < applied {
		t.Fatalf("checkpoint after shutdown covers %d (%v), want at least %d", idx, err, applied)
	}
}
