package ingest

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/runnel-iot/runnel/internal/testutil"
	"github.com/runnel-iot/runnel/wal"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// rejectBox is a RejectSink that keeps everything, for tests.
type rejectBox struct {
	mu  sync.Mutex
	all []Reject
}

func (b *rejectBox) Add(r Reject) {
	b.mu.Lock()
	b.all = append(b.all, r)
	b.mu.Unlock()
}

func (b *rejectBox) list() []Reject {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.all)
}

// awaitCond polls cond until it holds, failing the test after 10s with the
// last state describe reports.
func awaitCond(t testing.TB, describe func() string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		if cond() {
			return true, ""
		}
		return false, describe()
	})
}

// udpTestConfig listens on a kernel-picked loopback port.
func udpTestConfig() UDPConfig {
	c := DefaultUDPConfig()
	c.Addr = "127.0.0.1:0"
	return c
}

// startUDP serves a UDP listener until the test ends and checks that Serve
// returned nil.
func startUDP(t testing.TB, cfg UDPConfig, app Appender, sink RejectSink) (*UDP, *Stats) {
	t.Helper()
	st := new(Stats)
	u, err := NewUDP(cfg, app, sink, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- u.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return u, st
}

func dialUDP(t testing.TB, addr net.Addr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, addr.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func sortReadings(rs []wal.Reading) []wal.Reading {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b wal.Reading) int {
		if c := strings.Compare(a.Series, b.Series); c != 0 {
			return c
		}
		if c := strings.Compare(a.Field, b.Field); c != 0 {
			return c
		}
		return cmp.Compare(a.TimeNs, b.TimeNs)
	})
	return rs
}

func sameReadings(t testing.TB, got, want []wal.Reading) {
	t.Helper()
	g, w := sortReadings(got), sortReadings(want)
	if !slices.Equal(g, w) {
		t.Fatalf("readings:\n got %v\nwant %v", g, w)
	}
}

// envLines returns n lines of series env,device=pi-<i>,site=plant1 with
// two fields each, timestamps ts0+i in the given unit, and the readings
// they decode to.
func envLines(n int, ts0 int64, unitNs int64, suffix string) (string, []wal.Reading) {
	var b strings.Builder
	var want []wal.Reading
	for i := range n {
		ts := ts0 + int64(i)
		fmt.Fprintf(&b, "env,site=plant1,device=pi-%03d temp=%d.5,hum=40.25 %d%s\n", i, 20+i, ts, suffix)
		s := fmt.Sprintf("env,device=pi-%03d,site=plant1", i)
		want = append(want,
			wal.Reading{Series: s, Field: "temp", Value: float64(20+i) + 0.5, TimeNs: ts * unitNs},
			wal.Reading{Series: s, Field: "hum", Value: 40.25, TimeNs: ts * unitNs})
	}
	return b.String(), want
}

func TestUDPStoresManyLinesPerDatagram(t *testing.T) {
	cases := []struct {
		precision string
		ts0, unit int64
	}{
		{"ns", 1700000000000000000, 1},
		{"us", 1700000000000000, 1e3},
		{"ms", 1700000000000, 1e6},
		{"s", 1700000000, 1e9},
	}
	for _, tc := range cases {
		t.Run(tc.precision, func(t *testing.T) {
			app := openTestWAL(t)
			cfg := udpTestConfig()
			cfg.Precision = tc.precision
			u, st := startUDP(t, cfg, app, nil)
			c := dialUDP(t, u.Addr())
			var want []wal.Reading
			for d := range 3 {
				body, rs := envLines(60, tc.ts0+int64(d)*100, tc.unit, "")
				if _, err := c.Write([]byte(body)); err != nil {
					t.Fatal(err)
				}
				want = append(want, rs...)
			}
			awaitCond(t, func() string { return fmt.Sprintf("stored %d of %d", st.Readings[ListenerUDP].Load(), len(want)) },
				func() bool { return st.Readings[ListenerUDP].Load() == uint64(len(want)) })
			sameReadings(t, walReadings(t, app.log), want)
			if got := st.Messages[ListenerUDP].Load(); got != 3 {
				t.Errorf("messages = %d, want 3", got)
			}
			if app.log.LastIndex() != 3 {
				t.Errorf("wal records = %d, want one batch per datagram (3)", app.log.LastIndex())
			}
		})
	}
}

func TestUDPKeepsGoodLinesAndRejectsBadOnes(t *testing.T) {
	app := openTestWAL(t)
	sink := new(rejectBox)
	u, st := startUDP(t, udpTestConfig(), app, sink)
	c := dialUDP(t, u.Addr())
	future := time.Now().Add(time.Hour).UnixNano()
	body := "env,device=a temp=1 1700000000000000000\n" +
		"env,device=b temp=oops 1700000000000000000\n" +
		"env,device=c temp=3 1700000000000000000\n" +
		fmt.Sprintf("env,device=d temp=4 %d\n", future)
	if _, err := c.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	awaitCond(t, func() string { return fmt.Sprint(st.Readings[ListenerUDP].Load()) },
		func() bool { return st.Readings[ListenerUDP].Load() == 2 })
	sameReadings(t, walReadings(t, app.log), []wal.Reading{
		{Series: "env,device=a", Field: "temp", Value: 1, TimeNs: 1700000000000000000},
		{Series: "env,device=c", Field: "temp", Value: 3, TimeNs: 1700000000000000000},
	})
	if got := st.Rejected[ListenerUDP][ReasonSyntax].Load(); got != 1 {
		t.Errorf("syntax rejects = %d, want 1", got)
	}
	if got := st.Rejected[ListenerUDP][ReasonFutureTimestamp].Load(); got != 1 {
		t.Errorf("future rejects = %d, want 1", got)
	}
	rj := sink.list()
	if len(rj) != 1 {
		t.Fatalf("rejects = %v, want one per datagram", rj)
	}
	r := rj[0]
	if r.Listener != "udp" || r.Reason != "syntax" || r.Source != c.LocalAddr().String() ||
		!strings.HasPrefix(r.Error, "line 2, column ") || !strings.HasSuffix(r.Error, "(and 1 more rejected)") ||
		string(r.Raw) != body || r.RawBytes != len(body) {
		t.Errorf("reject = %+v", r)
	}
}

func TestUDPDropsOversizedDatagram(t *testing.T) {
	app := openTestWAL(t)
	sink := new(rejectBox)
	cfg := udpTestConfig()
	cfg.MaxDatagramBytes = 512
	u, st := startUDP(t, cfg, app, sink)
	c := dialUDP(t, u.Addr())
	big, _ := envLines(20, 1700000000000000000, 1, "") // ~1.2 KB
	small, want := envLines(2, 1700000000000000000, 1, "")
	for _, b := range []string{big, small} {
		if _, err := c.Write([]byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	awaitCond(t, func() string { return fmt.Sprint(st.Readings[ListenerUDP].Load()) },
		func() bool { return st.Readings[ListenerUDP].Load() == uint64(len(want)) })
	sameReadings(t, walReadings(t, app.log), want)
	if got := st.Dropped[ListenerUDP][DropTooLarge].Load(); got != 1 {
		t.Errorf("too large = %d, want 1", got)
	}
	rj := sink.list()
	if len(rj) != 1 || rj[0].Reason != "too_large" || rj[0].RawBytes <= 512 || !strings.Contains(rj[0].Error, "max_datagram_bytes (512B)") {
		t.Errorf("rejects = %+v", rj)
	}
}

// busyAppender refuses every best-effort batch, like a WAL whose pending
// budget is full, and fails the test if anything blocks in Append.
type busyAppender struct {
	tries   atomic.Int64
	appends atomic.Int64
}

func (a *busyAppender) Append(ctx context.Context, b *wal.Batch, done func(error)) error {
	a.appends.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

func (a *busyAppender) TryAppend(b *wal.Batch, done func(error)) error {
	a.tries.Add(1)
	return ErrBusy
}

func TestUDPBusyWALDropsAndCountsWithoutBlocking(t *testing.T) {
	app := new(busyAppender)
	u, st := startUDP(t, udpTestConfig(), app, nil)
	c := dialUDP(t, u.Addr())
	body, rs := envLines(50, 1700000000000000000, 1, "")
	const n = 300
	for range n {
		if _, err := c.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	// Every datagram the kernel delivered went through TryAppend and was
	// counted: nothing waits on the WAL.
	got := func() uint64 { return st.Messages[ListenerUDP].Load() + u.KernelDrops() }
	awaitCond(t, func() string { return fmt.Sprintf("received+kernel drops %d of %d", got(), n) },
		func() bool { return got() == n && uint64(app.tries.Load()) == st.Messages[ListenerUDP].Load() })
	if app.appends.Load() != 0 {
		t.Error("the UDP reader called the blocking Append")
	}
	wantDrops := st.Messages[ListenerUDP].Load() * uint64(len(rs))
	if d := st.Dropped[ListenerUDP][DropBusy].Load(); d != wantDrops || wantDrops == 0 {
		t.Errorf("busy drops = %d, want %d", d, wantDrops)
	}
	if st.Readings[ListenerUDP].Load() != 0 {
		t.Error("readings counted as stored")
	}
}

func TestUDPServeReturnsOnCancel(t *testing.T) {
	u, err := NewUDP(udpTestConfig(), openTestWAL(t), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- u.Serve(ctx) }() // listens itself
	awaitCond(t, func() string { return "not bound" }, func() bool { return u.Addr() != nil })
	addr := u.Addr().String()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	// The socket is closed: the port can be bound again.
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("port still bound after serve returned: %v", err)
	}
	pc.Close()
	if err := u.Serve(context.Background()); err == nil {
		t.Error("second serve succeeded")
	}
}

func TestUDPListenAddressInUse(t *testing.T) {
	a, err := NewUDP(udpTestConfig(), openTestWAL(t), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	cfg := udpTestConfig()
	cfg.Addr = a.Addr().String()
	b, err := NewUDP(cfg, openTestWAL(t), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Listen()
	want := "listen udp on " + cfg.Addr + ": address already in use"
	if err == nil || (runtime.GOOS == "linux" && err.Error() != want) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("listen = %v, want %q", err, want)
	}
}

// TestUDPKernelDrops overflows a tiny receive buffer before serving, then
// checks the drop count reaches KernelDrops with the next datagrams.
func TestUDPKernelDrops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SO_RXQ_OVFL is Linux only")
	}
	cfg := udpTestConfig()
	cfg.ReadBufferBytes = 4 * wal.KiB
	st := new(Stats)
	u, err := NewUDP(cfg, openTestWAL(t), nil, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Listen(); err != nil {
		t.Fatal(err)
	}
	if !u.ovfl {
		t.Fatal("SO_RXQ_OVFL not enabled")
	}
	c := dialUDP(t, u.Addr())
	body, _ := envLines(15, 1700000000000000000, 1, "")
	const burst = 200
	for range burst {
		if _, err := c.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- u.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}()
	// The count rides on datagrams queued after the drops.
	awaitCond(t, func() string {
		return fmt.Sprintf("kernel drops %d, received %d", u.KernelDrops(), st.Messages[ListenerUDP].Load())
	}, func() bool {
		c.Write([]byte(body))
		return u.KernelDrops() > 0
	})
	if d := u.KernelDrops(); d >= burst || d+st.Messages[ListenerUDP].Load() < burst {
		t.Errorf("kernel drops %d and received %d do not account for the burst of %d", d, st.Messages[ListenerUDP].Load(), burst)
	}
}

func TestParseRxqOvfl(t *testing.T) {
	word := bits.UintSize / 8
	hdr := (word + 8 + word - 1) &^ (word - 1)
	cmsg := func(level, typ int32, data []byte) []byte {
		l := hdr + len(data)
		b := make([]byte, (l+word-1)&^(word-1))
		if word == 8 {
			binary.NativeEndian.PutUint64(b, uint64(l))
		} else {
			binary.NativeEndian.PutUint32(b, uint32(l))
		}
		binary.NativeEndian.PutUint32(b[word:], uint32(level))
		binary.NativeEndian.PutUint32(b[word+4:], uint32(typ))
		copy(b[hdr:], data)
		return b
	}
	count := binary.NativeEndian.AppendUint32(nil, 4242)
	cases := []struct {
		name string
		oob  []byte
		want uint32
		ok   bool
	}{
		{"alone", cmsg(syscall.SOL_SOCKET, soRxqOvfl, count), 4242, true},
		{"after another", append(cmsg(0, 8, []byte{1, 2, 3, 4, 5}), cmsg(syscall.SOL_SOCKET, soRxqOvfl, count)...), 4242, true},
		{"other type", cmsg(syscall.SOL_SOCKET, 29, count), 0, false},
		{"truncated", cmsg(syscall.SOL_SOCKET, soRxqOvfl, count)[:hdr+2], 0, false},
		{"empty", nil, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseRxqOvfl(tc.oob)
			if got != tc.want || ok != tc.ok {
				t.Errorf("got %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestUDPKernelDropCounterWidens(t *testing.T) {
	u := &UDP{}
	for _, v := range []uint32{5, 3, 1 << 31, 1<<32 - 2, 1} { // 3: an older datagram; then a wrap
		u.noteKernelDrops(v)
	}
	if got, want := u.KernelDrops(), uint64(1<<32+1); got != want {
		t.Errorf("kernel drops = %d, want %d", got, want)
	}
}

func TestUDPConfigValidate(t *testing.T) {
	cases := map[string]struct {
		mod  func(*UDPConfig)
		keys []string
	}{
		"defaults":   {func(*UDPConfig) {}, nil},
		"no buffer":  {func(c *UDPConfig) { c.ReadBufferBytes = 0 }, nil},
		"bad addr":   {func(c *UDPConfig) { c.Addr = "8089" }, []string{"addr"}},
		"bad port":   {func(c *UDPConfig) { c.Addr = ":99999" }, []string{"addr"}},
		"tiny buf":   {func(c *UDPConfig) { c.ReadBufferBytes = 100 }, []string{"read_buffer_bytes"}},
		"big dgram":  {func(c *UDPConfig) { c.MaxDatagramBytes = 128 * wal.KiB }, []string{"max_datagram_bytes"}},
		"no readers": {func(c *UDPConfig) { c.Readers = 0 }, []string{"readers"}},
		"precision":  {func(c *UDPConfig) { c.Precision = "h" }, []string{"precision"}},
		"off":        {func(c *UDPConfig) { c.Addr = "" }, nil},
		"all at once": {func(c *UDPConfig) { c.Addr, c.Readers, c.Precision = "nohost", 99, "m" },
			[]string{"addr", "readers", "precision"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := DefaultUDPConfig()
			tc.mod(&c)
			checkConfigKeys(t, c.Validate(), tc.keys)
		})
	}
}

// checkConfigKeys checks that err joins exactly one *ConfigError per key.
func checkConfigKeys(t *testing.T, err error, keys []string) {
	t.Helper()
	var got []string
	if err != nil {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var ke interface{ ConfigKey() string }
			if !errors.As(e, &ke) {
				t.Fatalf("%v has no config key", e)
			}
			got = append(got, ke.ConfigKey())
		}
	}
	if !slices.Equal(got, keys) {
		t.Errorf("keys = %v, want %v (err %v)", got, keys, err)
	}
}

// benchLines returns a line protocol body of n lines from devices
// pi-000 to pi-<devices-1> in turn, with millisecond-spaced timestamps.
func benchLines(n, seq, devices int) []byte {
	var b []byte
	for i := range n {
		b = fmt.Appendf(b, "env,device=pi-%03d,site=plant1 temp=21.5,hum=40.1 %d\n",
			(seq*n+i)%devices, 1700000000000000000+int64(seq*n+i)*1e6)
	}
	return b
}

// countingAppender passes batches on to next (nil: decode only, every
// batch stored at once) and returns a token per TryAppend, which paces the
// benchmark's sender to what the receiver takes.
type countingAppender struct {
	next   Appender
	tokens chan struct{}
}

func (a *countingAppender) Append(ctx context.Context, b *wal.Batch, done func(error)) error {
	panic("BUG: the UDP listener called the blocking Append")
}

func (a *countingAppender) TryAppend(b *wal.Batch, done func(error)) error {
	defer func() {
		select {
		case a.tokens <- struct{}{}:
		default:
		}
	}()
	if a.next == nil {
		done(nil)
		return nil
	}
	return a.next.TryAppend(b, done)
}

// BenchmarkUDP sends datagrams of 75 lines (150 readings of one device's
// series) over loopback to the listener and measures the readings stored
// per second of wall time, through a real WAL (batch sync, and sync none
// for comparison) and through a decode-only receiver. The sender keeps a
// window of datagrams in flight, so the kernel buffer does not overflow;
// datagrams the kernel or a busy WAL still dropped are reported.
func BenchmarkUDP(b *testing.B) {
	const lines, window = 75, 32
	dgrams := make([][]byte, 64)
	for i := range dgrams {
		dgrams[i] = benchLines(lines, i, 1) // a device sends its own readings
	}
	for _, mode := range []string{"wal", "wal-sync-none", "decode-only"} {
		b.Run(mode, func(b *testing.B) {
			cfg := udpTestConfig()
			app := &countingAppender{tokens: make(chan struct{}, window)}
			switch mode {
			case "wal":
				app.next = openTestWAL(b)
			case "wal-sync-none": // where the time goes: the fsyncs, or the rest
				wc := wal.DefaultConfig()
				wc.Sync = wal.SyncNone
				l, err := wal.Open(b.TempDir(), wc, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				app.next = &walAppender{log: l}
			}
			for range window {
				app.tokens <- struct{}{}
			}
			u, st := startUDP(b, cfg, app, nil)
			c := dialUDP(b, u.Addr())
			b.SetBytes(int64(len(dgrams[0])))
			b.ReportAllocs()
			timer := time.NewTimer(time.Hour)
			start := time.Now()
			b.ResetTimer()
			for i := range b.N {
				select {
				case <-app.tokens:
				default:
					timer.Reset(50 * time.Millisecond) // a token lost with a dropped datagram
					select {
					case <-app.tokens:
					case <-timer.C:
					}
					timer.Stop()
				}
				if _, err := c.Write(dgrams[i%len(dgrams)]); err != nil {
					b.Fatal(err)
				}
			}
			in := func() uint64 { return st.Messages[ListenerUDP].Load() + u.KernelDrops() }
			settled := func() uint64 {
				return st.Readings[ListenerUDP].Load() + st.Dropped[ListenerUDP][DropBusy].Load() + st.Dropped[ListenerUDP][DropAppendFailed].Load()
			}
			deadline := time.Now().Add(2 * time.Second)
			for (in() < uint64(b.N) || settled() < st.Messages[ListenerUDP].Load()*2*lines) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Microsecond) // poll interval of the end-of-run wait
			}
			elapsed := time.Since(start)
			b.StopTimer()
			stored := st.Readings[ListenerUDP].Load()
			b.ReportMetric(float64(stored)/elapsed.Seconds(), "points/s")
			b.ReportMetric(float64(uint64(b.N)-st.Messages[ListenerUDP].Load()), "kernel-drops")
			b.ReportMetric(float64(st.Dropped[ListenerUDP][DropBusy].Load()), "busy-drops")
		})
	}
}
