package ingest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/runnel-iot/runnel/wal"
)

// BrokerConfig is the `mqtt` section: the embedded broker's listeners,
// users, limits and the topic-to-decoder mapping.
type BrokerConfig struct {
	// Addr is the plain TCP listener (":1883"); empty disables it.
	Addr string `yaml:"addr"`
	// TLS is the MQTT-over-TLS listener (":8883"), off unless cert and key
	// are set.
	TLS BrokerTLSConfig `yaml:"tls"`
	// WebSocketAddr is an optional MQTT-over-WebSocket listener (":8083");
	// empty disables it.
	WebSocketAddr string `yaml:"websocket_addr"`
	// WebSocketTLS serves the WebSocket listener as wss, with the tls
	// section's certificate and client-certificate settings.
	WebSocketTLS bool `yaml:"websocket_tls"`
	// WebSocketOrigins are the browser origins ("https://dash.example")
	// allowed besides the listener's own; other cross-origin upgrades are
	// refused (403). Requests without an Origin header (devices) pass.
	WebSocketOrigins []string `yaml:"websocket_origins"`
	// AllowAnonymous lets clients connect without a username. Unset, it is
	// true exactly when no users are configured (and the log says so loudly).
	AllowAnonymous *bool `yaml:"allow_anonymous"`
	// Users are the accounts clients authenticate with.
	Users []BrokerUser `yaml:"users"`

	// Limits, so that memory stays bounded under many clients and client ids.
	MaxPacketBytes wal.ByteSize  `yaml:"max_packet_bytes"` // largest packet a client may send
	MaxClients     int           `yaml:"max_clients"`      // connected clients at once
	ReceiveMaximum int           `yaml:"receive_maximum"`  // QoS 1/2 messages in flight per client, unacknowledged
	MaxKeepAlive   time.Duration `yaml:"max_keep_alive"`   // a client asking for more (or none) gets this
	ConnectTimeout time.Duration `yaml:"connect_timeout"`  // time to send CONNECT after the TCP connect
	SessionExpiry  time.Duration `yaml:"session_expiry"`   // longest a disconnected session is kept
	MaxQueued      int           `yaml:"max_queued"`       // outbound messages queued per client (offline queue)
	MaxRetained    int           `yaml:"max_retained"`     // retained messages one client may set

	// Quotas against one hostile client or host (refusals carry MQTT 5
	// reason codes: 0x97 quota exceeded, 0x9F connection rate exceeded).
	MaxSubscriptions        int          `yaml:"max_subscriptions"`          // subscriptions per client; past it SUBACK refuses the filter
	MaxRetainedBytes        wal.ByteSize `yaml:"max_retained_bytes"`         // payload bytes of all retained messages and retained wills
	MaxRetainedMessageBytes wal.ByteSize `yaml:"max_retained_message_bytes"` // largest payload kept as retained; larger ones are delivered, not retained
	MaxPendingConnects      int          `yaml:"max_pending_connects"`       // sockets that have not sent CONNECT yet (TCP and TLS); more are closed at accept
	MaxConnectionsPerSource int          `yaml:"max_connections_per_source"` // open sockets per remote host; a CONNECT past it gets 0x9F
	MaxQueuedBytes          wal.ByteSize `yaml:"max_queued_bytes"`           // payload bytes queued for one session (QoS 1/2, online or offline); a full session misses messages until it drains
	MaxOfflineSessions      int          `yaml:"max_offline_sessions"`       // persistent sessions kept while disconnected; past it the one offline longest is expired
	MaxOfflineQueuedBytes   wal.ByteSize `yaml:"max_offline_queued_bytes"`   // payload bytes queued for all offline sessions together; past it they miss messages until their clients return

	// Topics maps topic filters to decoders; the first match wins. A publish
	// on a topic no filter matches is routed to subscribers but not stored.
	Topics []TopicCodec `yaml:"topics"`
	// LineProtocolPrecision is the timestamp unit of line protocol on MQTT.
	LineProtocolPrecision string `yaml:"line_protocol_precision"`
	// MaxFutureSkew rejects readings stamped further ahead of the gateway
	// clock than this.
	MaxFutureSkew time.Duration `yaml:"max_future_skew"`
	// Biosignal bounds biosignal batches.
	Biosignal BiosignalConfig `yaml:"biosignal"`
}

// BrokerTLSConfig configures the TLS listener.
type BrokerTLSConfig struct {
	Addr     string `yaml:"addr"`      // ":8883"
	CertFile string `yaml:"cert_file"` // PEM certificate (chain)
	KeyFile  string `yaml:"key_file"`  // PEM private key
	// ClientCAFile, when set, requires client certificates signed by it.
	ClientCAFile string `yaml:"client_ca_file"`
	// UsernameFromCN makes a client certificate's Common Name the client's
	// username (with client_ca_file): the certificate authenticates it, no
	// password is checked, and the ACL is that of the mqtt.users entry of
	// that name (whose password_hash may then be empty). A CN with no
	// entry is refused.
	UsernameFromCN bool `yaml:"username_from_cn"`
	// Only turns the plain listeners off (addr, and websocket_addr unless
	// websocket_tls): every client then presents a certificate signed by
	// client_ca_file, which it requires.
	Only bool `yaml:"only"`
}

// BrokerUser is one MQTT account. Publish and Subscribe are topic filters
// the user may publish or subscribe to, with %u and %c standing for the
// username and client id. An empty Publish allows every topic except the
// reserved ones (alerts/..., $SYS/...); an empty Subscribe allows nothing.
// Reserved topics open only to filters that literally start with them.
type BrokerUser struct {
	Username string `yaml:"username"`
	// PasswordHash is a bcrypt hash (`echo -n PASS | runnel passwd`).
	PasswordHash string   `yaml:"password_hash"`
	Publish      []string `yaml:"publish"`
	Subscribe    []string `yaml:"subscribe"`
}

// TopicCodec maps a topic filter to a decoder.
type TopicCodec struct {
	Filter string `yaml:"filter"`
	Codec  string `yaml:"codec"` // a registered decoder: json, biosignal, line_protocol (Codecs)
}

// DefaultBrokerConfig returns the defaults: TCP on :1883, TLS and
// WebSocket off, 256 KiB packets, 1,000 clients, 1,024 messages in flight
// per client, the DESIGN topic mapping.
func DefaultBrokerConfig() BrokerConfig {
	return BrokerConfig{
		Addr:           ":1883",
		TLS:            BrokerTLSConfig{Addr: ":8883"},
		MaxPacketBytes: 256 * wal.KiB,
		MaxClients:     1000,
		ReceiveMaximum: 1024,
		MaxKeepAlive:   5 * time.Minute,
		ConnectTimeout: 10 * time.Second,
		SessionExpiry:  time.Hour,
		MaxQueued:      1024,
		MaxRetained:    100,

		MaxSubscriptions:        100,
		MaxRetainedBytes:        4 * wal.MiB,
		MaxRetainedMessageBytes: 64 * wal.KiB,
		MaxPendingConnects:      64,
		MaxConnectionsPerSource: 100,
		MaxQueuedBytes:          wal.MiB,
		MaxOfflineSessions:      64,
		MaxOfflineQueuedBytes:   16 * wal.MiB,
		Topics: []TopicCodec{
			{Filter: "telemetry/+/+", Codec: CodecJSON},
			{Filter: "biosignal/+/+", Codec: CodecBiosignal},
			{Filter: "lp/#", Codec: CodecLineProtocol},
		},
		LineProtocolPrecision: "ns",
		MaxFutureSkew:         DefaultMaxFutureSkew,
		Biosignal:             DefaultBiosignalConfig(),
	}
}

// ConfigError is one invalid setting; Key is relative to the section.
type ConfigError struct {
	Key string
	Msg string
}

func (e *ConfigError) Error() string     { return e.Key + ": " + e.Msg }
func (e *ConfigError) ConfigKey() string { return e.Key }

// Validate reports every invalid setting at once.
func (c BrokerConfig) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	for key, addr := range map[string]string{"addr": c.Addr, "websocket_addr": c.WebSocketAddr} {
		if addr != "" {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				bad(key, "%q is not host:port", addr)
			}
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file must be set together")
	}
	if c.TLS.CertFile != "" {
		if _, _, err := net.SplitHostPort(c.TLS.Addr); err != nil {
			bad("tls.addr", "%q is not host:port", c.TLS.Addr)
		}
	}
	if c.WebSocketTLS && (c.TLS.CertFile == "" || c.WebSocketAddr == "") {
		bad("websocket_tls", "needs websocket_addr and tls.cert_file and tls.key_file")
	}
	for i, o := range c.WebSocketOrigins {
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" {
			bad(fmt.Sprintf("websocket_origins[%d]", i), "%q is not an origin like https://dash.example", o)
		}
	}
	if (c.TLS.UsernameFromCN || c.TLS.Only) && c.TLS.ClientCAFile == "" {
		bad("tls.client_ca_file", "username_from_cn and only need client certificates: set client_ca_file")
	}
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		bad("tls.client_ca_file", "needs cert_file and key_file")
	}
	if c.Addr == "" && c.TLS.CertFile == "" && c.WebSocketAddr == "" && !c.TLS.Only {
		bad("addr", "no MQTT listener: set addr, tls or websocket_addr")
	}
	seen := map[string]bool{}
	for i, u := range c.Users {
		key := fmt.Sprintf("users[%d]", i)
		if u.Username == "" {
			bad(key+".username", "must not be empty")
		}
		if seen[u.Username] {
			bad(key+".username", "%q is configured twice", u.Username)
		}
		seen[u.Username] = true
		if u.PasswordHash == "" && c.TLS.UsernameFromCN {
			// a certificate-only account
		} else if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			bad(key+".password_hash", "is not a bcrypt hash ($2a$/$2b$/$2y$…): %v", err)
		}
		for j, f := range u.Publish {
			if !validFilter(f) {
				bad(fmt.Sprintf("%s.publish[%d]", key, j), "%q is not a valid topic filter", f)
			}
		}
		for j, f := range u.Subscribe {
			if !validFilter(f) {
				bad(fmt.Sprintf("%s.subscribe[%d]", key, j), "%q is not a valid topic filter", f)
			}
		}
	}
	// Bounds, each with its reason.
	if c.MaxPacketBytes < 1*wal.KiB || c.MaxPacketBytes > 64*wal.MiB {
		bad("max_packet_bytes", "%s is out of range 1KiB to 64MiB", c.MaxPacketBytes)
	}
	if c.MaxClients < 1 || c.MaxClients > 1_000_000 {
		bad("max_clients", "%d is out of range 1 to 1000000", c.MaxClients)
	}
	if c.ReceiveMaximum < 1 || c.ReceiveMaximum > 65535 {
		bad("receive_maximum", "%d is out of range 1 to 65535 (MQTT's limit)", c.ReceiveMaximum)
	}
	if c.MaxKeepAlive < time.Second || c.MaxKeepAlive > 18*time.Hour {
		bad("max_keep_alive", "%s is out of range 1s to 18h (MQTT's 65535 s)", c.MaxKeepAlive)
	}
	if c.ConnectTimeout < 100*time.Millisecond || c.ConnectTimeout > 5*time.Minute {
		bad("connect_timeout", "%s is out of range 100ms to 5m", c.ConnectTimeout)
	}
	if c.SessionExpiry < 0 || c.SessionExpiry > 24*time.Hour*49 {
		bad("session_expiry", "%s is out of range 0 to 1176h (MQTT's 2^32 s cap, bounded further for memory)", c.SessionExpiry)
	}
	if c.MaxQueued < 1 || c.MaxQueued > 1<<20 {
		bad("max_queued", "%d is out of range 1 to 1048576", c.MaxQueued)
	}
	if c.MaxRetained < 0 || c.MaxRetained > 1<<20 {
		bad("max_retained", "%d is out of range 0 to 1048576", c.MaxRetained)
	}
	if c.MaxSubscriptions < 1 || c.MaxSubscriptions > 1<<20 {
		bad("max_subscriptions", "%d is out of range 1 to 1048576", c.MaxSubscriptions)
	}
	if c.MaxRetainedBytes < 0 || c.MaxRetainedBytes > 4*wal.GiB {
		bad("max_retained_bytes", "%s is out of range 0 to 4GiB (retained messages live in memory)", c.MaxRetainedBytes)
	}
	if c.MaxRetainedMessageBytes < 0 || c.MaxRetainedMessageBytes > c.MaxPacketBytes {
		bad("max_retained_message_bytes", "%s is out of range 0 to max_packet_bytes (%s)", c.MaxRetainedMessageBytes, c.MaxPacketBytes)
	}
	if c.MaxPendingConnects < 1 || c.MaxPendingConnects > 1<<20 {
		bad("max_pending_connects", "%d is out of range 1 to 1048576", c.MaxPendingConnects)
	}
	if c.MaxConnectionsPerSource < 1 || c.MaxConnectionsPerSource > 1<<20 {
		bad("max_connections_per_source", "%d is out of range 1 to 1048576", c.MaxConnectionsPerSource)
	}
	if c.MaxQueuedBytes < wal.KiB || c.MaxQueuedBytes > 4*wal.GiB {
		bad("max_queued_bytes", "%s is out of range 1KiB to 4GiB (queued messages live in memory)", c.MaxQueuedBytes)
	}
	if c.MaxOfflineSessions < 0 || c.MaxOfflineSessions > 1<<20 {
		bad("max_offline_sessions", "%d is out of range 0 to 1048576", c.MaxOfflineSessions)
	}
	if c.MaxOfflineQueuedBytes < wal.KiB || c.MaxOfflineQueuedBytes > 4*wal.GiB {
		bad("max_offline_queued_bytes", "%s is out of range 1KiB to 4GiB (queued messages live in memory)", c.MaxOfflineQueuedBytes)
	}
	for i, t := range c.Topics {
		key := fmt.Sprintf("topics[%d]", i)
		if !validFilter(t.Filter) {
			bad(key+".filter", "%q is not a valid topic filter", t.Filter)
		}
		if _, ok := decoders[t.Codec]; !ok {
			bad(key+".codec", "%q is not one of %s", t.Codec, strings.Join(Codecs(), ", "))
		}
	}
	if _, err := ParsePrecision(c.LineProtocolPrecision); err != nil {
		bad("line_protocol_precision", "%q is not one of ns, us, ms, s", c.LineProtocolPrecision)
	}
	if c.MaxFutureSkew < time.Second || c.MaxFutureSkew > 24*time.Hour {
		bad("max_future_skew", "%s is out of range 1s to 24h", c.MaxFutureSkew)
	}
	if err := c.Biosignal.Validate(); err != nil {
		for _, e := range unjoin(err) {
			var ke interface{ ConfigKey() string }
			if errors.As(e, &ke) {
				bad("biosignal."+ke.ConfigKey(), "%s", strings.TrimPrefix(e.Error(), ke.ConfigKey()+": "))
			} else {
				bad("biosignal", "%v", e)
			}
		}
	}
	return errors.Join(errs...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Anonymous reports whether clients may connect without a username: the
// allow_anonymous setting, or, unset, true exactly when no users are
// configured.
func (c BrokerConfig) Anonymous() bool {
	if c.AllowAnonymous != nil {
		return *c.AllowAnonymous
	}
	return len(c.Users) == 0
}

// Broker is the embedded MQTT broker (mochi-mqtt) with Runnel's ingest
// hook: it authenticates clients, stores telemetry in the WAL before it
// acknowledges it, and routes messages to local subscribers.
type Broker struct {
	cfg    BrokerConfig
	logger *slog.Logger
	srv    *mqtt.Server
	hook   *ingestHook
	mu     sync.Mutex
	addrs  map[string]net.Addr // bound addresses by listener id
	tcp    []*tcpListener      // the TCP and TLS listeners, set by Start
	closed bool
}

// NewBroker validates cfg and builds the broker; it binds nothing and
// starts no goroutine (Start does).
func NewBroker(cfg BrokerConfig, app Appender, rejects RejectSink, stats *Stats, logger *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mqtt config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// mochi logs whole packets (payloads as decimal bytes) and one line per
	// denied client: drop the packets, rate-limit the lines.
	logger = slog.New(newQuietHandler(logger.Handler()))
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = int64(cfg.MaxClients)
	caps.MaximumPacketSize = uint32(cfg.MaxPacketBytes)
	caps.ReceiveMaximum = uint16(cfg.ReceiveMaximum)
	caps.MaximumInflight = uint16(min(cfg.MaxQueued, 65535))
	caps.MaximumClientWritesPending = int32(cfg.MaxQueued)
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	caps.MaximumMessageExpiryInterval = int64(cfg.SessionExpiry / time.Second)
	// Acks carry a reason string at most, never the publisher's user
	// properties (mochi's default echoes them; some clients reject that).
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	srv := mqtt.New(&mqtt.Options{
		Capabilities:             caps,
		InlineClient:             true, // the gateway's own publishes: durable deliveries, alerts
		Logger:                   logger,
		ClientNetWriteBufferSize: 4096,
		ClientNetReadBufferSize:  4096,
	})
	hook, err := newIngestHook(cfg, srv, app, rejects, stats, logger)
	if err != nil {
		return nil, err
	}
	if err := srv.AddHook(hook, nil); err != nil {
		return nil, fmt.Errorf("add mqtt hook: %w", err)
	}
	if err := srv.AddHook(hook.quota, nil); err != nil {
		return nil, fmt.Errorf("add mqtt quota hook: %w", err)
	}
	return &Broker{cfg: cfg, logger: logger, srv: srv, hook: hook, addrs: map[string]net.Addr{}}, nil
}

// Start binds every configured listener (a clear error names the one that
// could not bind) and starts serving. It returns once the listeners are
// bound; Close stops them.
func (b *Broker) Start() error {
	if !b.cfg.Anonymous() && len(b.cfg.Users) == 0 {
		b.logger.Warn("mqtt: anonymous access is off and no users are configured: no client can connect")
	}
	if b.cfg.Anonymous() {
		b.logger.Warn("MQTT ANONYMOUS ACCESS IS ON: any client that reaches the broker can publish; configure mqtt.users (and leave mqtt.allow_anonymous unset) to require passwords",
			"users", len(b.cfg.Users))
	}
	var lns []listeners.Listener
	if b.cfg.TLS.Only {
		b.logger.Info("mqtt: plain listeners off (mqtt.tls.only): clients need a certificate", "addr", b.cfg.Addr)
	}
	if b.cfg.Addr != "" && !b.cfg.TLS.Only {
		lns = append(lns, b.newTCPListener("tcp", b.cfg.Addr, nil))
	}
	if b.cfg.TLS.CertFile != "" {
		tc, err := b.tlsConfig()
		if err != nil {
			return err
		}
		lns = append(lns, b.newTCPListener("tls", b.cfg.TLS.Addr, tc))
	}
	if b.cfg.WebSocketAddr != "" && (b.cfg.WebSocketTLS || !b.cfg.TLS.Only) {
		ws := &wsListener{id: "ws", addr: b.cfg.WebSocketAddr, connectTimeout: b.cfg.ConnectTimeout,
			origins: b.cfg.WebSocketOrigins, conns: b.hook.conns, onBound: b.bound, logger: b.logger}
		if b.cfg.WebSocketTLS {
			tc, err := b.tlsConfig()
			if err != nil {
				return err
			}
			ws.tls = tc
		}
		lns = append(lns, ws)
	}
	for _, l := range lns {
		if err := b.srv.AddListener(l); err != nil {
			b.srv.Close()
			return fmt.Errorf("listen mqtt %s on %s: %w", l.ID(), l.Address(), unwrapOpError(err))
		}
	}
	if err := b.srv.Serve(); err != nil {
		b.srv.Close()
		return fmt.Errorf("start mqtt broker: %w", err)
	}
	// Publishes that come before it are gathered and wait for it.
	b.hook.qos0.start()
	return nil
}

func (b *Broker) newTCPListener(id, addr string, tc *tls.Config) *tcpListener {
	l := &tcpListener{id: id, addr: addr, tls: tc, connectTimeout: b.cfg.ConnectTimeout, onBound: b.bound,
		conns: b.hook.conns, logger: b.logger}
	b.tcp = append(b.tcp, l)
	return l
}

// ListenerProblem says why a listener is not accepting ("" when all are):
// accept has been failing (file descriptors exhausted, say) and is being
// retried with back-off.
func (b *Broker) ListenerProblem() string {
	for _, l := range b.tcp {
		if p := l.failing.Load(); p != nil {
			return "mqtt listener " + l.id + " cannot accept: " + *p
		}
	}
	return ""
}

func (b *Broker) bound(id string, a net.Addr) {
	b.mu.Lock()
	b.addrs[id] = a
	b.mu.Unlock()
	b.logger.Info("mqtt listening", "listener", id, "addr", a.String())
}

// Addr returns the bound address of a listener ("tcp", "tls"), or nil.
func (b *Broker) Addr(listener string) net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addrs[listener]
}

func (b *Broker) tlsConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(b.cfg.TLS.CertFile, b.cfg.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("mqtt tls: load cert %s and key %s: %w", b.cfg.TLS.CertFile, b.cfg.TLS.KeyFile, err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if b.cfg.TLS.ClientCAFile != "" {
		pem, err := os.ReadFile(b.cfg.TLS.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt tls: read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt tls: no certificate in client CA file %s", b.cfg.TLS.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Publish publishes a message as the gateway itself (alerts, $SYS): it
// passes no ACL and is never stored as telemetry.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	return b.srv.Publish(topic, payload, retain, qos)
}

// Retain stores topic's retained message without delivering it to the
// clients subscribed now: the gateway restores the retained state of its
// alert topics after a restart this way (mochi keeps retained messages in
// memory only), without repeating old events to live subscribers.
func (b *Broker) Retain(topic string, payload []byte, qos byte) {
	b.srv.Topics.RetainMessage(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: true},
		TopicName:   topic,
		Payload:     payload,
		Created:     time.Now().Unix(),
	})
}

// Clients returns the number of connected clients.
func (b *Broker) Clients() int { return b.srv.Clients.Len() }

// Close stops accepting, disconnects every client (v5 clients get a
// server-shutting-down DISCONNECT), and waits for their goroutines, the
// ingest hook's included. Publishes whose append is still in flight are
// not acknowledged; their clients resend on reconnect. Idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.hook.shutdown() // unblocks hooks waiting on the WAL
	err := b.srv.Close()
	b.srv.Listeners.ClientsWg.Wait()
	b.hook.wait()
	b.hook.qos0.close() // the QoS 0 readings gathered by the last publishes
	return err
}

// tcpListener is mochi's TCP listener plus a deadline for CONNECT: mochi
// reads the first packet with no deadline, so a socket that never sends
// CONNECT would stay open forever. mochi replaces the deadline with the
// keep-alive one after CONNECT.
type tcpListener struct {
	id, addr       string
	tls            *tls.Config
	connectTimeout time.Duration
	onBound        func(id string, a net.Addr)
	conns          *connTracker
	logger         *slog.Logger
	failing        atomic.Pointer[string] // the last accept error while accepting fails
	ln             net.Listener
	mu             sync.Mutex
	closed         bool
	wg             sync.WaitGroup
}

func (l *tcpListener) ID() string       { return l.id }
func (l *tcpListener) Address() string  { return l.addr }
func (l *tcpListener) Protocol() string { return "tcp" }

func (l *tcpListener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.ln = ln // TLS is layered per socket, over the counted connection
	l.onBound(l.id, ln.Addr())
	return nil
}

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	closed := func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.closed
	}
	acceptLoop(l.ln, closed, l.acceptFailed, func(raw net.Conn) {
		// Counted before anything is read: a socket past the pending
		// bound is closed at once.
		tc := l.conns.accept(raw)
		if tc == nil {
			raw.Close()
			return
		}
		var conn net.Conn = tc
		if l.tls != nil {
			conn = tls.Server(tc, l.tls)
		}
		_ = conn.SetDeadline(time.Now().Add(l.connectTimeout))
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			conn.Close()
			return
		}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			_ = establish(l.id, conn) // mochi logs and counts its own failures
		}()
	})
}

// acceptFailed records an accept failure (nil: accepting again), for the
// gateway's readiness and the log.
func (l *tcpListener) acceptFailed(err error) {
	if err == nil {
		l.failing.Store(nil)
		l.logger.Info("mqtt listener accepting again", "listener", l.id)
		return
	}
	msg := err.Error()
	if l.failing.Swap(&msg) == nil {
		l.logger.Warn("mqtt listener cannot accept; retrying with back-off", "listener", l.id, "err", err)
	}
}

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	closeClients(l.id)
	if l.ln != nil {
		l.ln.Close()
	}
	l.wg.Wait()
}

func unwrapOpError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Err
	}
	return err
}
