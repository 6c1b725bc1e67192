package ingest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/runnel-iot/runnel/wal"
)

// ingestHook is the broker's one hook: authentication, ACLs, limits, and
// the durable ack path. mochi calls OnPublish on the publishing client's own
// read goroutine before it would ack (server.go processPublish), so
// blocking there throttles only that client.
//
// The ack path, per QoS:
//   - QoS 1: OnPublish decodes the payload, queues the readings in the WAL
//     (AppendAsync: the read loop goes on to the next message), records the
//     packet id in the client's ack window, and returns the packet marked
//     handled (see handled) so mochi neither acks nor delivers. When the group commit holding the
//     readings is durable, the client's acker goroutine writes the PUBACKs
//     of every message that became durable, in receive order, in one socket
//     write, then delivers the messages to local subscribers. Every QoS 1
//     publish of a client takes this path, stored or not, so PUBACKs never
//     overtake each other [MQTT-4.6.0-2].
//   - QoS 2: OnPublish blocks until the readings are durable, then lets
//     mochi send PUBREC and run the PUBREL/PUBCOMP exchange. Blocking holds
//     this client's read loop for one fsync per QoS 2 message.
//   - QoS 0: best effort: the readings are queued if the WAL has room now,
//     else dropped and counted; the message is delivered at once.
//
// A QoS 1 or 2 publish whose append fails is never acknowledged: a v5
// client gets a PUBACK with reason 0x80 (QoS 1) and then every client is
// disconnected, so it resends on reconnect.
type ingestHook struct {
	mqtt.HookBase
	cfg     BrokerConfig
	srv     *mqtt.Server
	app     Appender
	rejects RejectSink
	stats   *Stats
	logger  *slog.Logger

	users     map[string]*BrokerUser
	anonymous bool
	authCache sync.Map // sha256(user \x00 password) → struct{}: bcrypt is 50+ ms; reconnect storms must not pay it each time
	authN     int
	auth      *authGuard // dummy hash, concurrency bound, per-source back-off (brokerauth.go)

	topics    []TopicCodec
	precision Precision

	decoders map[string]*sync.Pool // codec → *pooledDecoder, for each codec of topics
	batches  sync.Pool             // *wal.Batch: a publish's readings, reused once appended

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	clients map[*mqtt.Client]*clientAcks
	retain  map[string]map[string]struct{} // client id → retained topics it set
	wg      sync.WaitGroup

	// ownMu serialises client-id ownership checks (brokeracl.go); claims
	// are CONNECTs between their check and their established session.
	ownMu  sync.Mutex
	claims map[string]*mqtt.Client

	denials *rateLimiter // denial log lines, per cause
	conns   *connTracker // sockets pending CONNECT and per source (brokerconn.go)

	retainedBytes int64            // payload bytes retained by clients, under mu
	retainedSize  map[string]int64 // topic → retained payload bytes, under mu

	quota *quotaHook // session queues, offline sessions, subscription counts (brokerquota.go)
}

func newIngestHook(cfg BrokerConfig, srv *mqtt.Server, app Appender, rejects RejectSink, stats *Stats, logger *slog.Logger) (*ingestHook, error) {
	prec, _ := ParsePrecision(cfg.LineProtocolPrecision)
	if stats == nil {
		stats = &Stats{}
	}
	h := &ingestHook{
		cfg: cfg, srv: srv, app: app, rejects: rejects, stats: stats, logger: logger,
		users: map[string]*BrokerUser{}, anonymous: cfg.Anonymous(),
		topics: cfg.Topics, precision: prec,
		clients: map[*mqtt.Client]*clientAcks{},
		retain:  map[string]map[string]struct{}{},
		claims:  map[string]*mqtt.Client{},
		conns:   newConnTracker(cfg.MaxPendingConnects, cfg.MaxConnectionsPerSource),

		retainedSize: map[string]int64{},
		denials:      newRateLimiter(denialLogEvery),
	}
	for i := range cfg.Users {
		h.users[cfg.Users[i].Username] = &cfg.Users[i]
	}
	h.auth = newAuthGuard(cfg.Users, stats)
	h.quota = newQuotaHook(h)
	if err := h.initDecoders(DecoderConfig{Biosignal: cfg.Biosignal}); err != nil {
		return nil, err
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h, nil
}

func (h *ingestHook) ID() string { return "runnel-ingest" }

func (h *ingestHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnDisconnect,
		mqtt.OnPacketRead, mqtt.OnSessionEstablished:
		return true
	}
	return false
}

func (h *ingestHook) shutdown() { h.cancel() }

// wait waits for every acker goroutine.
func (h *ingestHook) wait() {
	h.mu.Lock()
	for _, ca := range h.clients {
		ca.stop()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// OnConnect caps the keep-alive: a client asking for none or for more than
// max_keep_alive gets max_keep_alive, so a silent socket is eventually
// closed (v5 clients are told through the server keep-alive). It refuses
// (v5 0x87, 3.1.1 0x05) a will its user may not publish or retain, and a
// client id whose live or persisted session belongs to another username.
// It runs before the password check, which then refuses a claimed
// username with a wrong password.
func (h *ingestHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	limit := uint16(h.cfg.MaxKeepAlive / time.Second)
	if cl.State.Keepalive == 0 || cl.State.Keepalive > limit {
		cl.State.Keepalive = limit
		cl.State.ServerKeepalive = true
	}
	if tc := trackedOf(cl); tc != nil && !tc.markConnected() {
		h.deny("connect refused: too many connections from one source", "remote", tc.src, "client", cl.ID)
		return h.refuseConnect(cl, packets.ErrConnectionRateExceeded)
	}
	user := string(pk.Connect.Username)
	if cn := h.certUser(cl); cn != "" {
		// The certificate names the user, whatever CONNECT claims; the
		// ACL reads cl.Properties.Username.
		user = cn
		cl.Properties.Username = []byte(cn)
	}
	if code, ok := h.checkWill(cl, user); !ok {
		return h.refuseConnect(cl, code)
	}
	if !h.claimClientID(cl, user) {
		h.deny("connect refused: client id in use by another user", "user", user, "client", cl.ID)
		return h.refuseConnect(cl, packets.ErrNotAuthorized)
	}
	return nil
}

// OnDisconnect ends the client's acker. Appends still in flight complete,
// but their acknowledgements are dropped: the client resends.
func (h *ingestHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.releaseClaim(cl)
	h.mu.Lock()
	ca := h.clients[cl]
	delete(h.clients, cl)
	h.mu.Unlock()
	if ca != nil {
		ca.stop()
	}
}

func (h *ingestHook) codecFor(topic string) string {
	for _, t := range h.topics {
		if matchFilter(t.Filter, topic) {
			return t.Codec
		}
	}
	return ""
}

// OnPublish is the ingest path; see the type's comment.
func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the gateway's own publish (a durable delivery, an alert)
	}
	if pk.FixedHeader.Retain && !h.allowRetain(cl, pk) {
		pk.FixedHeader.Retain = false
	}
	codec := h.codecFor(pk.TopicName)
	var (
		res   Result
		nowNs = time.Now().UnixNano()
	)
	// The Appender encodes the batch before it returns, so one batch and
	// its readings slice serve publish after publish.
	batch, _ := h.batches.Get().(*wal.Batch)
	if batch == nil {
		batch = new(wal.Batch)
	}
	defer func() {
		if cap(batch.Readings) > 4096 { // a rare huge payload: do not pin it
			batch.Readings = nil
		}
		h.batches.Put(batch)
	}()
	batch.IngestNs, batch.Readings = nowNs, batch.Readings[:0]
	if codec != "" {
		h.stats.Messages[ListenerMQTT].Add(1)
		h.stats.Bytes[ListenerMQTT].Add(uint64(len(pk.Payload)))
		batch.Readings = h.decode(codec, pk, nowNs, batch.Readings, &res)
		h.stats.CountResult(ListenerMQTT, &res)
		if res.Problems() > 0 {
			h.reject(cl, pk, nowNs, &res)
		}
	}
	readings := batch.Readings
	switch pk.FixedHeader.Qos {
	case 0:
		if len(readings) > 0 {
			n := uint64(len(readings))
			if err := h.app.TryAppend(batch, func(err error) { h.countAppend(n, err) }); err != nil {
				h.stats.Dropped[ListenerMQTT][DropBusy].Add(n)
			}
		}
		return pk, nil
	case 2:
		if len(readings) > 0 {
			err := AppendSync(h.ctx, h.app, batch)
			h.countAppend(uint64(len(readings)), err)
			if err != nil {
				h.logger.Warn("mqtt qos 2 publish not stored; disconnecting the client so it resends",
					"client", cl.ID, "topic", pk.TopicName, "err", err)
				cl.Stop(fmt.Errorf("wal append failed: %w", err))
				return pk, packets.ErrRejectPacket
			}
		}
		return pk, nil
	}
	// QoS 1: every publish goes through the client's ordered ack window.
	ca := h.acksFor(cl)
	if ca == nil {
		return pk, packets.ErrRejectPacket // disconnecting
	}
	e := ca.reserve(h.ctx, pk.PacketID)
	if e == nil {
		return pk, packets.ErrRejectPacket // disconnecting or shutting down
	}
	// Deliver after the ack when someone will get it now, or when it is to
	// be retained for those who subscribe later.
	if pk.FixedHeader.Retain || h.hasSubscribers(pk.TopicName) {
		p := pk.Copy(false)
		e.deliver = &p
	}
	switch {
	case len(readings) > 0:
		e.n = uint64(len(readings))
		if err := h.app.Append(h.ctx, batch, e.appended); err != nil {
			e.appended(err)
		}
	case codec != "" && res.Problems() > 0 && cl.Properties.ProtocolVersion == 5:
		// Nothing usable: tell a v5 client why [MQTT-3.4.2.1].
		e.reason = packets.ErrPayloadFormatInvalid
		e.reason.Reason = firstError(&res)
		ca.complete(e, nil)
	default:
		// Not telemetry, or a 3.1.1 client that cannot be told (the payload
		// was counted and kept): acknowledge in order.
		ca.complete(e, nil)
	}
	return handled(pk), nil
}

// handled marks a QoS 1 publish the ack window now owns, so mochi neither
// acks, retains nor delivers it (processPublish treats it as an ignored
// QoS 0 message). Returning ErrRejectPacket does the same, but mochi's
// hook dispatcher then boxes the whole packet into a debug log call's
// arguments, logged or not: one large allocation per message, about 6 % of
// the gateway's CPU under QoS 1 load.
func handled(pk packets.Packet) packets.Packet {
	pk.FixedHeader.Qos, pk.FixedHeader.Retain, pk.Ignore = 0, false, true
	return pk
}

func (h *ingestHook) countAppend(n uint64, err error) {
	if err != nil {
		h.stats.Dropped[ListenerMQTT][DropAppendFailed].Add(n)
		return
	}
	h.stats.Readings[ListenerMQTT].Add(n)
}

func (h *ingestHook) hasSubscribers(topic string) bool {
	subs := h.srv.Topics.Subscribers(topic)
	return len(subs.Subscriptions) > 0 || len(subs.Shared) > 0 || len(subs.InlineSubscriptions) > 0
}

// allowRetain bounds the retained topics one client may set; past the
// bound the message is delivered but not retained.
func (h *ingestHook) allowRetain(cl *mqtt.Client, pk packets.Packet) bool {
	return h.allowRetainTopic(cl.ID, pk.TopicName, len(pk.Payload))
}

// allowRetainTopic is allowRetain for a client id, topic and payload size
// (wills are checked with it at CONNECT).
func (h *ingestHook) allowRetainTopic(clientID, topic string, size int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.retain[clientID]
	if size == 0 { // clears the retained message
		delete(set, topic)
		h.retainedBytes -= h.retainedSize[topic]
		delete(h.retainedSize, topic)
		return true
	}
	if int64(size) > int64(h.cfg.MaxRetainedMessageBytes) || !h.chargeRetained(topic, int64(size)) {
		h.deny("retained message over the retained limits: delivered, not retained", "client", clientID, "topic", topic, "bytes", size)
		return false
	}
	if _, ok := set[topic]; ok {
		return true
	}
	if len(set) >= h.cfg.MaxRetained {
		return false
	}
	if set == nil {
		if len(h.retain) >= h.cfg.MaxClients*2 {
			return false // bounded even across many client ids
		}
		set = map[string]struct{}{}
		h.retain[clientID] = set
	}
	set[topic] = struct{}{}
	return true
}

// chargeRetained charges a retained payload of size bytes on topic to
// max_retained_bytes (replacing what the topic held), or reports that it
// does not fit. mochi drops expired retained messages on its own, so when
// the count says full it is recounted from mochi's store first. Called
// under h.mu.
func (h *ingestHook) chargeRetained(topic string, size int64) bool {
	limit := int64(h.cfg.MaxRetainedBytes)
	if h.retainedBytes-h.retainedSize[topic]+size > limit {
		h.retainedBytes = 0
		for t := range h.retainedSize {
			if pk, ok := h.srv.Topics.Retained.Get(t); ok {
				h.retainedSize[t] = int64(len(pk.Payload))
				h.retainedBytes += int64(len(pk.Payload))
			} else {
				delete(h.retainedSize, t)
			}
		}
		if h.retainedBytes-h.retainedSize[topic]+size > limit {
			return false
		}
	}
	h.retainedBytes += size - h.retainedSize[topic]
	h.retainedSize[topic] = size
	return true
}

// pooledDecoder is a decoder with the Result it decodes into. The Result
// travels with the decoder because a *Result passed through the Decoder
// interface escapes: OnPublish's own Result would cost an allocation per
// publish.
type pooledDecoder struct {
	dec Decoder
	res Result
}

// initDecoders makes a pool of decoders for each codec of the topic
// mapping, checking that each can be built.
func (h *ingestHook) initDecoders(cfg DecoderConfig) error {
	h.decoders = map[string]*sync.Pool{}
	for _, t := range h.topics {
		if h.decoders[t.Codec] != nil {
			continue
		}
		if _, err := NewDecoder(t.Codec, cfg); err != nil {
			return err
		}
		codec := t.Codec
		h.decoders[codec] = &sync.Pool{New: func() any {
			d, _ := NewDecoder(codec, cfg) // built once above: cannot fail
			return &pooledDecoder{dec: d}
		}}
	}
	return nil
}

// decode appends the readings of pk to dst.
func (h *ingestHook) decode(codec string, pk packets.Packet, nowNs int64, dst []wal.Reading, res *Result) []wal.Reading {
	opt := Options{NowNs: nowNs, MaxFutureSkew: h.cfg.MaxFutureSkew, Precision: h.precision}
	pool := h.decoders[codec]
	d := pool.Get().(*pooledDecoder)
	dst = d.dec.Decode(dst, pk.TopicName, pk.Payload, opt, &d.res)
	res.copyFrom(&d.res)
	d.res.Reset()
	pool.Put(d)
	return dst
}

func firstError(res *Result) string {
	if len(res.Errors) > 0 {
		return res.Errors[0].Error()
	}
	return "no readings in payload"
}

func (h *ingestHook) reject(cl *mqtt.Client, pk packets.Packet, nowNs int64, res *Result) {
	if h.rejects == nil {
		return
	}
	reason := "syntax"
	if len(res.Errors) > 0 {
		reason = res.Errors[0].Reason.String()
	}
	raw := pk.Payload
	h.rejects.Add(Reject{
		TimeNs: nowNs, Listener: ListenerMQTT.String(), Source: cl.ID, Topic: pk.TopicName,
		Reason: reason, Error: res.Err().Error(), Raw: raw[:min(len(raw), 1024)], RawBytes: len(raw),
	})
}

// acksFor returns the client's ack window, starting its acker on first use.
func (h *ingestHook) acksFor(cl *mqtt.Client) *clientAcks {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ca := h.clients[cl]; ca != nil {
		return ca
	}
	if cl.Closed() || h.ctx.Err() != nil {
		return nil
	}
	ca := newClientAcks(h, cl)
	h.clients[cl] = ca
	h.wg.Go(ca.run)
	return ca
}

// clientAcks is one client's window of QoS 1 publishes awaiting their
// PUBACK, in receive order, and the goroutine that writes those PUBACKs.
// Its size is bounded by receive_maximum: a client with that many
// publishes in flight blocks in OnPublish (TCP backpressure on that client
// only) until the oldest become durable.
type clientAcks struct {
	h     *ingestHook
	cl    *mqtt.Client
	slots chan struct{} // one token per publish in flight
	kick  chan struct{} // 1-slot: an entry completed
	done  chan struct{}
	once  sync.Once

	mu      sync.Mutex
	pending []*ackEntry
	free    []*ackEntry // acknowledged entries, for reuse
}

type ackEntry struct {
	ca       *clientAcks
	id       uint16
	n        uint64 // readings appended
	finished bool
	err      error
	reason   packets.Code // non-zero: a v5 PUBACK with this reason instead of success
	deliver  *packets.Packet
	// appended is e.onAppended, bound once: entries are recycled, so a
	// publish allocates no callback.
	appended func(error)
}

// onAppended is the Appender's done of the entry's readings.
func (e *ackEntry) onAppended(err error) {
	e.ca.h.countAppend(e.n, err)
	e.ca.complete(e, err)
}

func newClientAcks(h *ingestHook, cl *mqtt.Client) *clientAcks {
	return &clientAcks{
		h: h, cl: cl,
		slots: make(chan struct{}, h.cfg.ReceiveMaximum),
		kick:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
}

func (ca *clientAcks) stop() { ca.once.Do(func() { close(ca.done) }) }

// reserve takes a slot in the window (blocking while it is full) and
// appends an entry for the packet; nil when the client or broker is going.
func (ca *clientAcks) reserve(ctx context.Context, id uint16) *ackEntry {
	select {
	case ca.slots <- struct{}{}:
	case <-ca.done:
		return nil
	case <-ctx.Done():
		return nil
	}
	ca.mu.Lock()
	var e *ackEntry
	if n := len(ca.free); n > 0 {
		e = ca.free[n-1]
		ca.free = ca.free[:n-1]
	} else {
		e = &ackEntry{ca: ca}
		e.appended = e.onAppended
	}
	e.id = id
	ca.pending = append(ca.pending, e)
	ca.mu.Unlock()
	return e
}

// recycle returns acknowledged entries for reuse.
func (ca *clientAcks) recycle(done []*ackEntry) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	for _, e := range done {
		*e = ackEntry{ca: ca, appended: e.appended}
		if len(ca.free) < cap(ca.slots) {
			ca.free = append(ca.free, e)
		}
	}
}

// complete records an entry's outcome; it runs on the WAL's goroutine and
// never blocks.
func (ca *clientAcks) complete(e *ackEntry, err error) {
	ca.mu.Lock()
	e.finished, e.err = true, err
	ca.mu.Unlock()
	select {
	case ca.kick <- struct{}{}:
	default:
	}
}

// run writes PUBACKs as entries complete, oldest first, and stops at the
// first entry that is not finished: acks never overtake each other.
func (ca *clientAcks) run() {
	var (
		buf   []byte
		ready []*ackEntry
		ok    bool
	)
	for {
		select {
		case <-ca.kick:
		case <-ca.done:
			return
		}
		ca.mu.Lock()
		n := 0
		for n < len(ca.pending) && ca.pending[n].finished {
			n++
		}
		ready = append(ready[:0], ca.pending[:n]...)
		// Shift rather than reslice, so the window's array is reused.
		m := copy(ca.pending, ca.pending[n:])
		clear(ca.pending[m:])
		ca.pending = ca.pending[:m]
		ca.mu.Unlock()
		if n == 0 {
			continue
		}
		if buf, ok = ca.flush(ready, buf[:0]); !ok {
			ca.stop()
			return
		}
		ca.recycle(ready)
		clear(ready)
		for range n {
			<-ca.slots
		}
	}
}

// flush acknowledges finished entries: the plain PUBACKs of a run of
// successes go out in one socket write; a failure ends the connection. It
// returns buf, for reuse.
func (ca *clientAcks) flush(ready []*ackEntry, buf []byte) ([]byte, bool) {
	var deliver []*packets.Packet
	write := func() bool {
		if len(buf) == 0 {
			return true
		}
		err := writeRaw(ca.cl, buf)
		buf = buf[:0]
		if err != nil {
			ca.h.logger.Debug("mqtt puback write failed", "client", ca.cl.ID, "err", err)
			return false
		}
		return true
	}
	for _, e := range ready {
		switch {
		case e.err != nil:
			if !write() {
				return buf, false
			}
			ca.h.logger.Warn("mqtt publish not stored; disconnecting the client so it resends",
				"client", ca.cl.ID, "err", e.err)
			if ca.cl.Properties.ProtocolVersion == 5 {
				_ = ca.cl.WritePacket(pubackWithReason(e.id, packets.ErrUnspecifiedError))
			}
			ca.cl.Stop(fmt.Errorf("wal append failed: %w", e.err))
			return buf, false
		case e.reason.Code != 0:
			if !write() {
				return buf, false
			}
			if err := ca.cl.WritePacket(pubackWithReason(e.id, e.reason)); err != nil {
				return buf, false
			}
		default:
			// PUBACK with success and no properties: 4 bytes in 3.1.1 and
			// in 5 (reason and properties may be omitted [MQTT-3.4.2.1]).
			buf = append(buf, packets.Puback<<4, 2, byte(e.id>>8), byte(e.id))
			if e.deliver != nil {
				deliver = append(deliver, e.deliver)
			}
		}
	}
	if !write() {
		return buf, false
	}
	for _, p := range deliver {
		if err := ca.h.srv.Publish(p.TopicName, p.Payload, p.FixedHeader.Retain, p.FixedHeader.Qos); err != nil {
			ca.h.logger.Warn("mqtt delivery to local subscribers failed", "topic", p.TopicName, "err", err)
		}
	}
	return buf, true
}

func pubackWithReason(id uint16, code packets.Code) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Puback},
		PacketID:    id,
		ReasonCode:  code.Code,
		Properties:  packets.Properties{ReasonString: code.Reason},
	}
}

// writeRaw writes pre-encoded packets to the client's connection under the
// client's lock, as mochi's own WritePacket does, so they never interleave
// with its writes. One write carries every PUBACK a group commit released.
func writeRaw(cl *mqtt.Client, b []byte) error {
	if cl.Closed() || cl.Net.Conn == nil {
		return mqtt.ErrConnectionClosed
	}
	cl.Lock()
	defer cl.Unlock()
	_, err := bytes.NewReader(b).WriteTo(cl.Net.Conn)
	return err
}

// matchFilter reports whether an MQTT topic filter matches a topic.
func matchFilter(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false // [MQTT-4.7.2-1]
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fmore || !tmore {
			if !fmore && !tmore {
				return true
			}
			// "a/#" matches "a" [MQTT-4.7.1-2]
			return !tmore && frest == "#"
		}
		filter, topic = frest, trest
	}
}

// validFilter reports whether s is a valid MQTT topic filter.
func validFilter(s string) bool {
	if s == "" || len(s) > 65535 {
		return false
	}
	levels := strings.Split(s, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}
