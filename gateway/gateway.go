package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/runnel-iot/runnel/forward"
	"github.com/runnel-iot/runnel/gateway/httpapi"
	"github.com/runnel-iot/runnel/ingest"
	"github.com/runnel-iot/runnel/pipeline"
	"github.com/runnel-iot/runnel/wal"
)

// Gateway is one running gateway: the WAL and the HTTP server, wired
// together. Create it with New, run it once with Run. Its methods are safe
// for concurrent use.
type Gateway struct {
	cfg    Config
	logger *slog.Logger
	srv    *http.Server
	ready  chan struct{}
	ran    atomic.Bool
	// bindsMoved are the listeners secureBinds moved to loopback, logged
	// by Run.
	bindsMoved []bindChange

	// Readiness, read by /readyz.
	walOpen  atomic.Bool
	httpUp   atomic.Bool
	mqttUp   atomic.Bool
	stopping atomic.Bool

	// Set by Run's starts, before ready is closed.
	mux         *http.ServeMux
	wal         *wal.Log
	deadLetters *ingest.DeadLetters
	broker      *ingest.Broker
	udp         *ingest.UDP
	ingestStats ingest.Stats
	late        *ingest.DeadLetters
	pipeline    *pipeline.Pipeline
	hub         *httpapi.Hub
	outboxes    []*forward.Outbox  // summaries, sketches, alerts
	forwarder   *forward.Forwarder // nil when forwarding is off

	mu   sync.Mutex
	addr string // bound HTTP address, once listening
}

// Run is New followed by Gateway.Run: it blocks until ctx is cancelled or
// a component fails, then shuts down; see Gateway.Run.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	g, err := New(cfg, logger)
	if err != nil {
		return err
	}
	return g.Run(ctx)
}

// New validates cfg and allocates the gateway. It starts no goroutine,
// opens no file and binds no port; Run does. A nil logger discards.
func New(cfg Config, logger *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Secure by default: unprotected listeners bind loopback (security.go).
	cfg, moved := cfg.secureBinds()
	if len(cfg.HTTPWrite.Tokens) == 0 {
		// The write endpoint is never left open by http.tokens alone.
		cfg.HTTPWrite.Tokens = cfg.HTTP.Tokens
	}
	g := &Gateway{cfg: cfg, logger: logger, ready: make(chan struct{}), bindsMoved: moved}
	mux := http.NewServeMux()
	g.mux = mux
	mux.HandleFunc("GET /healthz", g.handleHealthz)
	mux.HandleFunc("GET /readyz", g.handleReadyz)
	mux.HandleFunc("GET /metrics", g.handleMetrics)
	if cfg.HTTP.Pprof {
		if runtime.MemProfileRate == 0 { // turned off by cmd/runnel
			runtime.MemProfileRate = 512 << 10
		}
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	g.srv = &http.Server{
		Handler:           requireToken(cfg.HTTP.Tokens, mux),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10, // net/http's 1 MiB is for browsers with many cookies
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return g, nil
}

// Ready is closed once every component has started and the HTTP listener
// is bound. It is never closed if Run fails during start.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Addr returns the bound HTTP address (useful with port 0), or "" before
// the listener is up.
func (g *Gateway) Addr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.addr
}

// Run starts the gateway and blocks until ctx is cancelled or a component
// fails; the first failure stops everything. It then shuts down in the
// order the data flows: stop accepting HTTP, then flush and close the WAL,
// all within gateway.shutdown_timeout and regardless of ctx (the cleanup
// runs under context.WithoutCancel).
//
// Run returns nil after a clean shutdown on ctx cancellation; otherwise the
// failure, joined with any shutdown error, including one saying the
// deadline passed. It returns only after every goroutine it started has
// exited, except a WAL close still running when the deadline passed: that
// one is abandoned, as the process is about to exit. Run may be called once.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.ran.CompareAndSwap(false, true) {
		return errors.New("run gateway: Run was already called")
	}
	start := time.Now()
	timeout := g.cfg.Gateway.ShutdownTimeout
	if msg := secureBindsLog(g.bindsMoved); msg != "" {
		g.logger.Warn(msg)
	}
	if msg := g.cfg.udpExposureWarning(); msg != "" {
		g.logger.Warn(msg, "udp_addr", g.cfg.UDP.Addr)
	}
	var grp group
	if g.setMemoryLimit() {
		defer releaseMemoryLimit()
		grp.add(goActor("memory limit", ctx, tuneMemoryLimit, nil))
	}
	// Start sinks before sources, so nothing is accepted before it can be
	// stored; the group stops them in reverse.
	for _, start := range []func(context.Context, *group) error{
		g.startWAL, g.startDeadLetters, g.startWindows, // sinks and the stream
		g.startHTTP, g.startMQTT, g.startUDP, // sources
	} {
		if err := start(ctx, &grp); err != nil {
			if errors.Is(err, errStartCancelled) {
				g.logger.Info("gateway stopped while waiting for storage")
				return grp.abort(ctx, timeout, nil)
			}
			return grp.abort(ctx, timeout, err)
		}
	}
	g.logger.Info("gateway started", "gateway_id", g.cfg.Gateway.ID, "http_addr", g.Addr(),
		"mqtt_addr", addrString(g.broker.Addr("tcp")), "udp_addr", addrString(g.udpAddr()),
		"data_dir", g.cfg.Gateway.DataDir, "version", Version)
	close(g.ready)

	err := grp.run(ctx, timeout, func(cause error) {
		g.stopping.Store(true)
		if cause != nil {
			g.logger.Error("gateway stopping after a failure", "err", cause)
		} else {
			g.logger.Info("gateway stopping")
		}
	})
	g.logger.Info("gateway stopped", "uptime", time.Since(start).Round(time.Millisecond).String())
	return err
}

// startWAL opens the readings WAL under the data dir, waiting while the
// disk is full (holdOnStorage).
func (g *Gateway) startWAL(ctx context.Context, grp *group) error {
	dataDir := g.cfg.Gateway.DataDir
	dir := filepath.Join(dataDir, "wal")
	var log *wal.Log
	err := g.holdOnStorage(ctx, "wal", func() error {
		if err := os.MkdirAll(dataDir, 0o750); err != nil {
			return fmt.Errorf("create data dir %s: %w", dataDir, unwrapPath(err))
		}
		l, err := wal.Open(dir, g.cfg.WAL, g.logger.With("component", "wal"))
		if err != nil {
			return fmt.Errorf("open wal %s: %w", dir, err)
		}
		log = l
		return nil
	})
	if err != nil {
		return err
	}
	g.wal = log
	g.walOpen.Store(true)
	grp.add(actor{name: "wal", stop: func(ctx context.Context) error {
		g.walOpen.Store(false)
		return closeWithin(ctx, log.Close)
	}})
	return nil
}

// startDeadLetters opens the dead-letter log of rejected payloads.
func (g *Gateway) startDeadLetters(ctx context.Context, grp *group) error {
	dir := filepath.Join(g.cfg.Gateway.DataDir, "deadletters")
	var dl *ingest.DeadLetters
	err := g.holdOnStorage(ctx, "dead-letter log", func() error {
		d, err := ingest.OpenDeadLetters(dir, g.cfg.DeadLetters, g.logger.With("component", "deadletters"))
		if err != nil {
			return fmt.Errorf("open dead-letter log %s: %w", dir, err)
		}
		dl = d
		return nil
	})
	if err != nil {
		return err
	}
	g.deadLetters = dl
	grp.add(actor{name: "dead letters", stop: func(ctx context.Context) error { return closeWithin(ctx, dl.Close) }})
	return nil
}

// startMQTT starts the embedded broker.
func (g *Gateway) startMQTT(_ context.Context, grp *group) error {
	b, err := ingest.NewBroker(g.cfg.MQTT, newReadings(g.wal, g.pipeline), g.deadLetters, &g.ingestStats, g.logger.With("component", "mqtt"))
	if err != nil {
		return err
	}
	if err := b.Start(); err != nil {
		return err
	}
	g.broker = b
	g.pipeline.OnAlert = g.publishAlert
	g.pipeline.OnRestore = g.restoreAlert
	g.mqttUp.Store(true)
	grp.add(actor{name: "mqtt", stop: func(ctx context.Context) error {
		g.mqttUp.Store(false)
		return closeWithin(ctx, b.Close)
	}})
	return nil
}

// startUDP binds the line-protocol UDP listener, unless udp.addr is empty.
func (g *Gateway) startUDP(ctx context.Context, grp *group) error {
	if g.cfg.UDP.Addr == "" {
		return nil
	}
	u, err := ingest.NewUDP(g.cfg.UDP, newReadings(g.wal, g.pipeline), g.deadLetters, &g.ingestStats, g.logger.With("component", "udp"))
	if err != nil {
		return err
	}
	if err := u.Listen(); err != nil {
		return err
	}
	g.udp = u
	grp.add(goActor("udp", ctx, u.Serve, u.Close))
	return nil
}

func (g *Gateway) udpAddr() net.Addr {
	if g.udp == nil {
		return nil
	}
	return g.udp.Addr()
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// startHTTP binds the HTTP listener; the group serves on it.
func (g *Gateway) startHTTP(ctx context.Context, grp *group) error {
	w, err := ingest.NewHTTPWrite(g.cfg.HTTPWrite, newReadings(g.wal, g.pipeline), g.deadLetters, &g.ingestStats, g.logger.With("component", "http_write"))
	if err != nil {
		return err
	}
	g.mux.Handle("/api/v2/write", w)
	hub := httpapi.NewHub(streamClientBuffer)
	hub.MaxClients = g.cfg.HTTP.MaxStreamClients
	g.srv.RegisterOnShutdown(hub.Close)
	g.hub = hub
	g.pipeline.OnEmit = hub.PublishEmission
	api := &httpapi.API{Rejects: g.deadLetters, Late: g.late, Windows: g.pipeline.Windows(), Sketches: g.pipeline.Windows(),
		Alerts: g.pipeline.Alerts(), Stream: hub, Logger: g.logger.With("component", "httpapi")}
	api.Status = statusSource{g: g, start: time.Now()}
	api.Register(g.mux)
	addr := g.cfg.HTTP.Addr
	var lc net.ListenConfig
	var tlsCfg *tls.Config
	if g.cfg.HTTP.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(g.cfg.HTTP.TLSCertFile, g.cfg.HTTP.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("http tls: load %s and %s: %w", g.cfg.HTTP.TLSCertFile, g.cfg.HTTP.TLSKeyFile, err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		return fmt.Errorf("listen http on %s: %w", addr, err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	g.mu.Lock()
	g.addr = ln.Addr().String()
	g.mu.Unlock()
	g.httpUp.Store(true)
	grp.add(actor{
		name: "http",
		run: func() error {
			if err := g.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve http on %s: %w", addr, err)
			}
			return nil
		},
		stop: func(ctx context.Context) error {
			g.httpUp.Store(false)
			// Shutdown closes the listener, then waits for requests in
			// flight, but only for its own stage: one stalled client (a
			// body that never comes) must not eat the deadline the
			// checkpoint, the outboxes and the WAL need after it. Past the
			// drain, Close cuts off what is left; a request cut off was
			// never acknowledged, so nothing acknowledged is lost.
			dctx, cancel := context.WithTimeout(ctx, httpDrain(g.cfg.Gateway.ShutdownTimeout))
			defer cancel()
			if err := g.srv.Shutdown(dctx); err != nil {
				g.logger.Warn("http requests still open after the drain; closing them", "drain", httpDrain(g.cfg.Gateway.ShutdownTimeout).String())
				_ = g.srv.Close() // its error repeats Shutdown's
			}
			_ = ln.Close() // in case Serve never ran; already closed otherwise
			return nil
		},
	})
	return nil
}

// httpDrain is how long a shutdown waits for HTTP requests in flight: a
// quarter of gateway.shutdown_timeout, at most 3s. Acknowledged writes
// finish within it (they wait for one group commit); what is still open
// then is a stalled or slow client, cut off.
func httpDrain(timeout time.Duration) time.Duration { return min(3*time.Second, timeout/4) }

func (g *Gateway) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// readiness is the JSON body of /readyz.
type readiness struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
	// Uplink is the state of forwarding when brokers are configured:
	// "ok", or "down: <last error>". A broken uplink does not make the
	// gateway unready: the outboxes hold the summaries meanwhile.
	Uplink string `json:"uplink,omitempty"`
}

// readiness says whether the gateway is ready, and why not.
func (g *Gateway) readiness() readiness {
	switch {
	case g.stopping.Load():
		return readiness{Reason: "shutting down"}
	case !g.walOpen.Load():
		return readiness{Reason: "wal not open"}
	case !g.httpUp.Load():
		return readiness{Reason: "http listener not up"}
	case !g.mqttUp.Load():
		return readiness{Reason: "mqtt broker not up"}
	case g.broker != nil && g.broker.ListenerProblem() != "":
		return readiness{Reason: g.broker.ListenerProblem()}
	case g.pipeline != nil && !g.pipeline.Replayed():
		return readiness{Reason: fmt.Sprintf("replaying the wal up to index %d", g.pipeline.ReplayTarget())}
	}
	if reason := g.storageHeld(); reason != "" {
		return readiness{Reason: reason}
	}
	r := readiness{Ready: true}
	if g.forwarder != nil {
		st := g.forwarder.Status()
		switch {
		case st.Fenced:
			// Another process forwards this gateway's outboxes: this one
			// must not take traffic it will never forward.
			return readiness{Reason: "kafka producer fenced: " + st.FencedReason, Uplink: "fenced"}
		case st.Connected:
			r.Uplink = "ok"
		case st.LastError != "":
			// /readyz is open to probes: the reason without the brokers'
			// addresses (the full error is in /api/v1/status, behind the
			// tokens).
			r.Uplink = "down: " + redactAddrs(st.LastError)
		default:
			r.Uplink = "connecting"
		}
	}
	return r
}

// storageHeld returns why a stage cannot accept or move on because of a
// storage error, or "": the WAL and the outboxes (a failed write, until one
// succeeds again) and the pipeline (an outbox append, checkpoint write or
// WAL read failing and retried). Acknowledged writes wait meanwhile, so a
// load balancer should send them elsewhere.
func (g *Gateway) storageHeld() string {
	if g.wal != nil {
		if ok, reason := g.wal.Health(); !ok {
			return "wal cannot accept appends: " + reason
		}
	}
	for _, box := range g.outboxes {
		if ok, reason := box.Health(); !ok {
			return "cannot store outputs: " + reason
		}
	}
	if g.pipeline != nil {
		if ok, reason := g.pipeline.Health(); !ok {
			return "pipeline " + reason
		}
	}
	return ""
}

// hostPort matches host:port and [v6]:port addresses in an error text.
var hostPort = regexp.MustCompile(`(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-]*):[0-9]{1,5}\b`)

// redactAddrs replaces the network addresses in s with "<address>".
func redactAddrs(s string) string { return hostPort.ReplaceAllString(s, "<address>") }

func (g *Gateway) handleReadyz(w http.ResponseWriter, _ *http.Request) {
	r := g.readiness()
	w.Header().Set("Content-Type", "application/json")
	if !r.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(r)
}

// errStartCancelled is returned by a start that was waiting for storage
// when Run's ctx ended: a clean stop, not a failure.
var errStartCancelled = errors.New("start cancelled while waiting for storage")

// holdOnStorage runs open until it succeeds or fails for a reason other
// than a full disk (ENOSPC, EDQUOT): a full disk is retried with backoff
// (100ms doubling to 5s), logged at most every 30s, until ctx ends
// (errStartCancelled). A gateway restarted on a full disk (or out of
// inodes) thus starts and waits for space instead of exiting, which under
// a supervisor is a crash loop; other errors (permissions, a path that is
// a file) are configuration errors and fail the start at once.
func (g *Gateway) holdOnStorage(ctx context.Context, what string, open func() error) error {
	delay := 100 * time.Millisecond
	var logged time.Time
	for {
		err := open()
		if err == nil || !isDiskFull(err) {
			return err
		}
		if time.Since(logged) >= 30*time.Second {
			logged = time.Now()
			g.logger.Error("cannot start on a full disk; waiting for space", "stage", what, "err", err, "retry_in", delay.String())
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return errStartCancelled
		case <-t.C:
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// isDiskFull reports a storage error that space freed later cures.
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// closeWithin calls close and waits for it until ctx ends. A close still
// running at the deadline is abandoned: its goroutine is left behind.
func closeWithin(ctx context.Context, close func() error) error {
	done := make(chan error, 1)
	go func() { done <- close() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("gave up waiting: %w", ctx.Err())
	}
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// requireToken guards every endpoint but the health probes and the write
// endpoint (which checks its own tokens) with the configured tokens, sent
// as "Authorization: Bearer <t>" or InfluxDB's "Token <t>". Tokens are
// compared by SHA-256 digest in constant time. No tokens: open.
func requireToken(tokens []string, next http.Handler) http.Handler {
	if len(tokens) == 0 {
		return next
	}
	digests := make([][32]byte, len(tokens))
	for i, t := range tokens {
		digests[i] = sha256.Sum256([]byte(t))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The probes stay open, the write endpoint checks its own tokens,
		// and the dashboard's static files hold no data (a page load cannot
		// send a header; the page asks for the token and sends it on its
		// API calls).
		switch p := r.URL.Path; {
		case p == "/healthz", p == "/readyz", p == "/api/v2/write", p == "/", strings.HasPrefix(p, "/assets/"):
			next.ServeHTTP(w, r)
			return
		}
		h := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			tok, ok = strings.CutPrefix(h, "Token ")
		}
		if ok {
			d := sha256.Sum256([]byte(strings.TrimSpace(tok)))
			match := 0
			for _, want := range digests {
				match |= subtle.ConstantTimeCompare(d[:], want[:])
			}
			if match == 1 {
				next.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="runnel"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"unauthorized: send Authorization: Bearer <token> (http.tokens)"}` + "\n"))
	})
}
