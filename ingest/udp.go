package ingest

// The UDP listener: InfluxDB line protocol in datagrams, as Telegraf's
// socket_writer and influxdb (udp://) outputs and small devices send it.
// UDP is best-effort by nature: nothing is acknowledged, and a datagram is
// lost when the kernel's receive buffer overflows or the WAL is busy. Every
// such loss is counted (KernelDrops, Stats.Dropped[ListenerUDP]).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// UDPConfig configures the UDP line protocol listener (section `udp`).
type UDPConfig struct {
	// Addr is the host:port to listen on; empty turns the listener off
	// (the gateway then does not create it).
	Addr string `yaml:"addr"`
	// ReadBufferBytes is the socket receive buffer (SO_RCVBUF) that absorbs
	// bursts while the readers are busy; 0 keeps the kernel default. Linux
	// caps it at net.core.rmem_max unless the gateway may raise it
	// (CAP_NET_ADMIN); a smaller grant is logged at start.
	ReadBufferBytes wal.ByteSize `yaml:"read_buffer_bytes"`
	// MaxDatagramBytes bounds one datagram; a larger one is dropped whole
	// (counted as too_large, kept in the dead-letter log).
	MaxDatagramBytes wal.ByteSize `yaml:"max_datagram_bytes"`
	// Readers is the number of goroutines reading the socket, each with its
	// own decoder and buffers.
	Readers int `yaml:"readers"`
	// Precision is the unit of the timestamps: ns, us, ms or s.
	Precision string `yaml:"precision"`
	// MaxFutureSkew rejects readings more than this far ahead of the
	// receive time; 0 means the decoder default (1m), a negative value
	// turns the check off.
	MaxFutureSkew time.Duration `yaml:"max_future_skew"`
	// AllowSources, when set, are the only peers (CIDR prefixes such as
	// "10.1.2.0/24", or single addresses) whose datagrams are taken; the
	// rest are dropped and counted (reason source_denied). UDP carries no
	// credentials, so this is its only access control: the gateway binds an
	// unfiltered UDP listener to loopback unless
	// security.allow_anonymous_network is set.
	AllowSources []string `yaml:"allow_sources"`
}

// DefaultUDPConfig returns the defaults: off (no addr; set udp.addr, e.g.
// ":8089", to turn it on), an 8 MiB receive buffer,
// datagrams up to 64 KiB, 2 readers, nanosecond timestamps, 1m of future
// skew.
func DefaultUDPConfig() UDPConfig {
	return UDPConfig{
		ReadBufferBytes:  8 * wal.MiB,
		MaxDatagramBytes: 64 * wal.KiB,
		Readers:          2,
		Precision:        "ns",
		MaxFutureSkew:    DefaultMaxFutureSkew,
	}
}

// Validate reports every invalid setting at once, joined with errors.Join;
// each is a *ConfigError with the key relative to the section.
func (c UDPConfig) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Addr != "" {
		if err := validHostPort(c.Addr); err != nil {
			bad("addr", "%v", err)
		}
	}
	// Bounds, each with its reason.
	if c.ReadBufferBytes != 0 && (c.ReadBufferBytes < 4*wal.KiB || c.ReadBufferBytes > 512*wal.MiB) {
		bad("read_buffer_bytes", "%s is out of range: 0 (kernel default) or 4KiB to 512MiB (kernel memory per socket)", c.ReadBufferBytes)
	}
	if c.MaxDatagramBytes < 512 || c.MaxDatagramBytes > 64*wal.KiB {
		bad("max_datagram_bytes", "%s is out of range 512B to 64KiB (a UDP datagram carries at most 64KiB)", c.MaxDatagramBytes)
	}
	if c.Readers < 1 || c.Readers > 64 {
		bad("readers", "%d is out of range 1 to 64 (each reader holds a datagram buffer and a decoder)", c.Readers)
	}
	if _, err := ParsePrecision(c.Precision); err != nil {
		bad("precision", "%q is not one of ns, us, ms, s", c.Precision)
	}
	for i, s := range c.AllowSources {
		if _, err := parseSource(s); err != nil {
			bad("allow_sources["+strconv.Itoa(i)+"]", "%q is not a CIDR prefix (10.1.2.0/24) or an IP address", s)
		}
	}
	return errors.Join(errs...)
}

// parseSource parses an allow_sources entry: a prefix, or one address.
func parseSource(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// allowed reports whether a datagram from addr may be taken.
func (u *UDP) allowed(addr netip.Addr) bool {
	if len(u.allow) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, p := range u.allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// validHostPort checks a listen address of the form host:port.
func validHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err == nil {
		return nil
	}
	if _, err := net.LookupPort("udp", port); err != nil {
		return fmt.Errorf("%q: port %q is not a number 0 to 65535 nor a known service", addr, port)
	}
	return nil
}

// UDP receives line protocol datagrams and appends their readings to the
// WAL without ever blocking a socket reader:
//
//   - each datagram is decoded on its own (many lines per datagram; a line
//     without a timestamp gets the receive time) and its readings go to
//     Appender.TryAppend as one batch;
//   - bad lines are rejected alone, counted by reason and sent to the
//     reject sink (one Reject per datagram with problems); the good lines
//     of the datagram are kept;
//   - when the WAL cannot take the batch now (ErrBusy) its readings are
//     dropped and counted as Dropped[ListenerUDP][DropBusy]; a failed write
//     counts them as DropAppendFailed; a datagram over MaxDatagramBytes is
//     dropped whole and counted (one per datagram) as DropTooLarge;
//   - datagrams the kernel dropped because the receive buffer was full are
//     counted by the kernel (Linux, SO_RXQ_OVFL) and read back by
//     KernelDrops.
//
// UDP is best-effort: the sender gets no acknowledgement and no error. Use
// HTTP or MQTT QoS 1 for readings that must not be lost.
//
// Lifecycle: NewUDP, then Listen (optional: Serve listens if needed), then
// Serve(ctx) until ctx ends. Close releases a socket that was bound but
// never served. The methods are safe for concurrent use.
type UDP struct {
	cfg     UDPConfig
	opt     Options // Precision and MaxFutureSkew; NowNs per datagram
	app     Appender
	rejects RejectSink
	stats   *Stats
	logger  *slog.Logger
	allow   []netip.Prefix // empty: every source

	mu      sync.Mutex
	conn    *net.UDPConn
	serving bool
	ovfl    bool // the kernel drop counter is enabled

	kdrops atomic.Uint64 // kernel drops, widened from the kernel's uint32
}

// NewUDP validates cfg and returns a listener that will append to app,
// send rejected lines to rejects and count into stats. rejects, stats and
// logger may be nil (discard, private counters, no logs). It starts no
// goroutine and binds no socket.
func NewUDP(cfg UDPConfig, app Appender, rejects RejectSink, stats *Stats, logger *slog.Logger) (*UDP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("udp config: %w", err)
	}
	if cfg.Addr == "" {
		return nil, errors.New("new udp listener: addr is empty (the listener is off)")
	}
	if app == nil {
		return nil, errors.New("new udp listener: nil appender")
	}
	prec, _ := ParsePrecision(cfg.Precision)
	if stats == nil {
		stats = new(Stats)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var allow []netip.Prefix
	for _, s := range cfg.AllowSources {
		p, _ := parseSource(s) // validated above
		allow = append(allow, p)
	}
	return &UDP{
		allow:   allow,
		cfg:     cfg,
		opt:     Options{Precision: prec, MaxFutureSkew: cfg.MaxFutureSkew},
		app:     app,
		rejects: rejects,
		stats:   stats,
		logger:  logger.With("listener", "udp"),
	}, nil
}

// Listen binds the socket, sets its receive buffer and (on Linux) enables
// the kernel drop counter. It does not block. Binding early lets the
// gateway fail at start on a port in use: `listen udp on :8089: address
// already in use` (errors.Is finds the syscall error).
func (u *UDP) Listen() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn != nil {
		return fmt.Errorf("listen udp on %s: already listening", u.cfg.Addr)
	}
	pc, err := net.ListenPacket("udp", u.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen udp on %s: %w", u.cfg.Addr, bindCause(err))
	}
	conn := pc.(*net.UDPConn)
	if err := u.setReadBuffer(conn); err != nil {
		conn.Close()
		return fmt.Errorf("listen udp on %s: %w", u.cfg.Addr, err)
	}
	u.ovfl = enableDropCounter(conn)
	u.conn = conn
	u.logger.Info("udp listener bound", "addr", conn.LocalAddr().String(),
		"readers", u.cfg.Readers, "kernel_drop_counter", u.ovfl)
	return nil
}

// bindCause strips net's "listen udp :8089: bind:" prefix, which the caller
// words itself, keeping the cause (EADDRINUSE) for errors.Is.
func bindCause(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Err
	}
	return err
}

// Addr returns the bound address, or nil before Listen.
func (u *UDP) Addr() net.Addr {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn == nil {
		return nil
	}
	return u.conn.LocalAddr()
}

// KernelDrops returns how many datagrams the kernel dropped because the
// socket's receive buffer was full, since Listen. Linux reports the count
// with the next datagram received after a drop (SO_RXQ_OVFL), so it lags
// until one arrives; on other systems it is always 0.
func (u *UDP) KernelDrops() uint64 { return u.kdrops.Load() }

// Serve reads datagrams with cfg.Readers goroutines until ctx ends, then
// closes the socket and returns once every reader has exited. It listens
// first if Listen was not called. It returns nil when ctx ends, and an
// error if binding fails or reading keeps failing. It never blocks on the
// WAL. Serve may be called once.
func (u *UDP) Serve(ctx context.Context) error {
	u.mu.Lock()
	bound := u.conn != nil
	u.mu.Unlock()
	if !bound {
		if err := u.Listen(); err != nil {
			return err
		}
	}
	u.mu.Lock()
	if u.serving || u.conn == nil {
		u.mu.Unlock()
		return fmt.Errorf("serve udp on %s: already served or closed", u.cfg.Addr)
	}
	u.serving = true
	conn, ovfl := u.conn, u.ovfl
	u.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, u.cfg.Readers)
	var wg sync.WaitGroup
	for range u.cfg.Readers {
		wg.Go(func() {
			defer cancel() // a reader that stops for any reason stops Serve
			if err := u.readLoop(ctx, conn, ovfl); err != nil {
				errs <- err
			}
		})
	}
	<-ctx.Done()
	u.Close()
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// Close closes the socket; Serve's readers then exit. Safe to call more
// than once and concurrently with Serve.
func (u *UDP) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn == nil {
		return nil
	}
	err := u.conn.Close()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close udp on %s: %w", u.cfg.Addr, err)
	}
	return nil
}

// udpReader is one reader goroutine's state; nothing in it is shared.
type udpReader struct {
	buf      []byte // one datagram; one byte over the limit to detect oversize
	oob      []byte
	dec      Decoder
	res      Result
	readings []wal.Reading
	batch    wal.Batch
}

// maxReadErrors is how many consecutive read errors a reader tolerates
// (each logged) before Serve gives up with the last one.
const maxReadErrors = 100

// readLoop is one reader: receive, decode, append, until the socket closes.
func (u *UDP) readLoop(ctx context.Context, conn *net.UDPConn, ovfl bool) error {
	r := &udpReader{
		buf: make([]byte, int(u.cfg.MaxDatagramBytes)+1),
		dec: newLineDecoder(),
	}
	if ovfl {
		r.oob = make([]byte, 64) // room for the SO_RXQ_OVFL message
	}
	failures := 0
	for {
		n, oobn, _, from, err := conn.ReadMsgUDPAddrPort(r.buf, r.oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			failures++
			if failures >= maxReadErrors {
				return fmt.Errorf("read udp on %s: %d consecutive failures, last: %w", u.cfg.Addr, failures, err)
			}
			u.logger.Warn("udp read failed", "err", err, "failures", failures)
			continue
		}
		failures = 0
		nowNs := time.Now().UnixNano()
		if oobn > 0 {
			if v, ok := parseRxqOvfl(r.oob[:oobn]); ok {
				u.noteKernelDrops(v)
			}
		}
		u.datagram(r, r.buf[:n], from, nowNs)
	}
}

// datagram handles one received datagram.
func (u *UDP) datagram(r *udpReader, data []byte, from netip.AddrPort, nowNs int64) {
	st := u.stats
	if !u.allowed(from.Addr()) {
		// Not counted as a message nor kept as a dead letter: a flood from
		// a denied source must cost as little as possible.
		st.Dropped[ListenerUDP][DropSourceDenied].Add(1)
		return
	}
	st.Messages[ListenerUDP].Add(1)
	st.Bytes[ListenerUDP].Add(uint64(len(data)))
	if len(data) > int(u.cfg.MaxDatagramBytes) {
		st.Dropped[ListenerUDP][DropTooLarge].Add(1)
		if u.rejects != nil {
			u.rejects.Add(Reject{
				TimeNs: nowNs, Listener: ListenerUDP.String(), Source: from.String(),
				Reason: DropTooLarge.String(),
				Error: fmt.Sprintf("datagram larger than max_datagram_bytes (%s); dropped whole",
					u.cfg.MaxDatagramBytes),
				Raw: cutRaw(data), RawBytes: len(data),
			})
		}
		return
	}
	opt := u.opt
	opt.NowNs = nowNs
	r.readings = r.dec.Decode(r.readings[:0], "", data, opt, &r.res)
	r.res.requireReadings(data)
	st.CountResult(ListenerUDP, &r.res)
	if r.res.Problems() > 0 && u.rejects != nil {
		u.rejects.Add(resultReject(ListenerUDP, nowNs, from.String(), "", &r.res, data))
	}
	if len(r.readings) == 0 {
		return
	}
	r.batch = wal.Batch{IngestNs: nowNs, Readings: r.readings}
	n := uint64(len(r.readings))
	err := u.app.TryAppend(&r.batch, func(err error) {
		if err != nil {
			st.Dropped[ListenerUDP][DropAppendFailed].Add(n)
			return
		}
		st.Readings[ListenerUDP].Add(n)
	})
	switch {
	case err == nil:
	case errors.Is(err, ErrBusy):
		st.Dropped[ListenerUDP][DropBusy].Add(n)
	default:
		st.Dropped[ListenerUDP][DropAppendFailed].Add(n)
	}
	r.batch.Readings = nil
}

// noteKernelDrops folds the kernel's cumulative uint32 drop counter, as
// seen by any reader in any order, into the 64-bit total: a value behind the
// one already folded (an older datagram read by another reader) is
// ignored, and the counter's wrap at 2^32 is carried.
func (u *UDP) noteKernelDrops(v uint32) {
	for {
		cur := u.kdrops.Load()
		delta := v - uint32(cur)
		if delta == 0 || delta > 1<<31 {
			return
		}
		if u.kdrops.CompareAndSwap(cur, cur+uint64(delta)) {
			return
		}
	}
}

// Socket options. SO_RXQ_OVFL and SO_RCVBUFFORCE are Linux's (asm-generic
// socket.h; also their values on arm, arm64, mips and x86); they are only
// used when runtime.GOOS is linux.
const (
	soRcvbufForce = 33
	soRxqOvfl     = 40
)

// setReadBuffer sets SO_RCVBUF as configured and logs a warning if the
// kernel granted less.
func (u *UDP) setReadBuffer(conn *net.UDPConn) error {
	want := int(u.cfg.ReadBufferBytes)
	if want == 0 {
		return nil
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("set receive buffer: %w", err)
	}
	var got int
	var serr, gerr error
	cerr := rc.Control(func(fd uintptr) {
		// As root (CAP_NET_ADMIN) FORCE goes past net.core.rmem_max, which
		// is what an operator who configured the size asked for.
		if runtime.GOOS != "linux" || setsockoptInt(syscall.SetsockoptInt, fd, syscall.SOL_SOCKET, soRcvbufForce, want) != nil {
			serr = setsockoptInt(syscall.SetsockoptInt, fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, want)
		}
		got, gerr = getsockoptInt(syscall.GetsockoptInt, fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	})
	if err := errors.Join(cerr, serr); err != nil {
		return fmt.Errorf("set receive buffer to %s: %w", u.cfg.ReadBufferBytes, err)
	}
	if gerr != nil {
		u.logger.Warn("cannot read back the udp receive buffer size", "err", gerr)
		return nil
	}
	if runtime.GOOS == "linux" {
		got /= 2 // Linux reports twice the size asked for, the rest being its bookkeeping (socket(7))
	}
	if got < want {
		attrs := []any{"requested_bytes", want, "granted_bytes", got}
		if max, ok := rmemMax(); ok {
			attrs = append(attrs, "rmem_max", max, "hint", "raise net.core.rmem_max (sysctl -w net.core.rmem_max=N) or run with CAP_NET_ADMIN")
		}
		u.logger.Warn("udp receive buffer smaller than configured; bursts may be dropped by the kernel", attrs...)
	}
	return nil
}

// rmemMax reads Linux's cap on SO_RCVBUF.
func rmemMax() (int, bool) {
	if runtime.GOOS != "linux" {
		return 0, false
	}
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return n, err == nil
}

// enableDropCounter turns on SO_RXQ_OVFL (Linux): every datagram then
// carries the socket's cumulative drop count in a control message.
func enableDropCounter(conn *net.UDPConn) bool {
	if runtime.GOOS != "linux" {
		return false
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = setsockoptInt(syscall.SetsockoptInt, fd, syscall.SOL_SOCKET, soRxqOvfl, 1)
	}); err != nil {
		return false
	}
	return serr == nil
}

// setsockoptInt and getsockoptInt call syscall's functions, whose socket
// parameter is an int on Unix and a Handle on Windows, so this one file
// builds everywhere.
func setsockoptInt[F ~int | ~uintptr](set func(F, int, int, int) error, fd uintptr, level, opt, v int) error {
	return set(F(fd), level, opt, v)
}

func getsockoptInt[F ~int | ~uintptr](get func(F, int, int) (int, error), fd uintptr, level, opt int) (int, error) {
	return get(F(fd), level, opt)
}

// parseRxqOvfl finds the SO_RXQ_OVFL control message in oob and returns its
// counter. The layout is Linux's struct cmsghdr: a size_t length (the word
// size on every Linux port Go supports), int level, int type, then the data
// at the next word boundary. It is parsed here rather than with
// syscall.ParseSocketControlMessage, which does not exist on every system
// this file builds for.
func parseRxqOvfl(oob []byte) (uint32, bool) {
	const word = bits.UintSize / 8
	align := func(n int) int { return (n + word - 1) &^ (word - 1) }
	hdr := align(word + 8)
	for len(oob) >= hdr {
		var l int
		if word == 8 {
			l = int(binary.NativeEndian.Uint64(oob))
		} else {
			l = int(binary.NativeEndian.Uint32(oob))
		}
		if l < hdr || l > len(oob) {
			return 0, false
		}
		level := int32(binary.NativeEndian.Uint32(oob[word:]))
		typ := int32(binary.NativeEndian.Uint32(oob[word+4:]))
		if level == syscall.SOL_SOCKET && typ == soRxqOvfl && l >= hdr+4 {
			return binary.NativeEndian.Uint32(oob[hdr:]), true
		}
		next := align(l)
		if next > len(oob) {
			return 0, false
		}
		oob = oob[next:]
	}
	return 0, false
}
