package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	firmwaresim "github.com/runnel-iot/runnel/firmware-sim"
	"github.com/runnel-iot/runnel/ingest"
	"github.com/runnel-iot/runnel/wal"
)

// BareDecoderCommand is `firmware-sim bare-decoder`: the baseline of the
// udp and http phases. It receives line protocol the way the gateway does
// (UDP datagrams, POST /api/v2/write) and decodes it with ingest's
// decoder, storing nothing: the cost of the socket and the decode alone.
// GET /metrics reports runnel_ingest_readings_total per listener in the
// gateway's names, so the bench reads both the same way.
var BareDecoderCommand = firmwaresim.Command{
	Name:    "bare-decoder",
	Summary: "decode-only UDP and HTTP line-protocol receiver, a benchmark baseline",
	Run:     bareDecoderCmd,
}

func bareDecoderCmd(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := firmwaresim.NewFlagSet("bare-decoder", "A decode-only line-protocol receiver (nothing stored): the baseline of the bench's\nudp and http phases. Never expose it.\n", stderr)
	udpAddr := fs.String("udp", "127.0.0.1:0", "UDP listen address")
	httpAddr := fs.String("http", "127.0.0.1:0", "HTTP listen address (POST /api/v2/write, GET /metrics)")
	if err := fs.Parse(args); err != nil {
		return firmwaresim.ExitUsage
	}
	if err := runBareDecoder(ctx, *udpAddr, *httpAddr); err != nil {
		fmt.Fprintf(stderr, "firmware-sim bare-decoder: %v\n", err)
		return firmwaresim.ExitFailure
	}
	return firmwaresim.ExitOK
}

func runBareDecoder(ctx context.Context, udpAddr, httpAddr string) error {
	pc, err := net.ListenPacket("udp", udpAddr)
	if err != nil {
		return fmt.Errorf("listen udp %s: %w", udpAddr, err)
	}
	defer pc.Close()
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("listen http %s: %w", httpAddr, err)
	}
	var udpN, httpN atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		dec := ingest.NewLineProtocol()
		buf := make([]byte, 64<<10)
		var dst []wal.Reading
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			dst = dec.Decode(dst[:0], buf[:n], ingest.Options{NowNs: time.Now().UnixNano()}, nil)
			udpN.Add(int64(len(dst)))
		}
	}()
	decoders := sync.Pool{New: func() any { return ingest.NewLineProtocol() }}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v2/write", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 32<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		dec := decoders.Get().(*ingest.LineProtocol)
		dst := dec.Decode(nil, body, ingest.Options{NowNs: time.Now().UnixNano()}, nil)
		decoders.Put(dec)
		httpN.Add(int64(len(dst)))
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "runnel_ingest_readings_total{listener=\"udp\"} %d\nrunnel_ingest_readings_total{listener=\"http\"} %d\n", udpN.Load(), httpN.Load())
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		pc.Close()
		srv.Close()
	}()
	err = srv.Serve(ln)
	pc.Close()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// startBareDecoder starts `firmware-sim bare-decoder` on free ports and
// waits until its HTTP side answers.
func (b *bench) startBareDecoder(ctx context.Context, dir string) (*child, error) {
	udp, err := freeAddr()
	if err != nil {
		return nil, err
	}
	hp, err := freeAddr()
	if err != nil {
		return nil, err
	}
	c, err := startChild("bare", b.o.FirmwareSim, dir, []string{"bare-decoder", "-udp", udp, "-http", hp}, nil)
	if err != nil {
		return nil, err
	}
	c.udp, c.base = udp, "http://"+hp
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := b.hc.Get(c.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			return c, nil
		}
		if err := c.alive(); err != nil {
			return nil, err
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			_ = c.stop()
			return nil, fmt.Errorf("bare decoder on %s not answering within 20s: %w", hp, errors.Join(err, ctx.Err()))
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}
