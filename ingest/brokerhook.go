package ingest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
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
//     handled (see handled) so mochi neither acks nor delivers. When the
//     group commit holding the readings is durable, the client's acker
//     goroutine writes the PUBACKs of every message that became durable, in
//     receive order, in one socket write, then delivers the messages to
//     local subscribers as sent (deliver: InjectPacket from an inline
//     client named after the publisher). Every QoS 1 publish of a client
//     takes this path, stored, refused or not, reason-coded or not, so
//     PUBACKs never overtake each other [MQTT-4.6.0-2].
//   - QoS 2: OnPublish blocks until the readings are durable, then lets
//     mochi send PUBREC, deliver, and run the PUBREL/PUBCOMP exchange.
//     Blocking holds this client's read loop for one fsync per QoS 2
//     message. A v5 failure gets a reason-coded PUBREC from the hook.
//   - QoS 0: best effort: the readings are gathered with other QoS 0
//     readings into shared WAL appends (coalesce.go) and queued if the WAL
//     has room then, else dropped and counted; mochi delivers the message
//     at once.
//
// A QoS 1 or 2 publish whose append fails is never acknowledged: a v5
// client gets a PUBACK or PUBREC with reason 0x80 and then every client is
// disconnected, so it resends on reconnect. See doc.go.
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
	batches  sync.Pool             // *wal.Batch: a QoS 1/2 publish's readings, reused once appended

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
	retainedAt    map[string]int64 // topic → when it was charged (unix ns), under mu
	// willPending holds the retained wills charged at CONNECT and not yet
	// in mochi's store (their clients are connected, or the will is
	// delayed), topic → client, under mu: a recount must keep them.
	willPending map[string]*mqtt.Client

	quota *quotaHook // session queues, offline sessions, subscription counts (brokerquota.go)
	subs  subscriberCache
	qos0  *coalescer // QoS 0 readings, gathered into shared appends; started by Broker.Start
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
		retainedAt:   map[string]int64{},
		willPending:  map[string]*mqtt.Client{},
		denials:      newRateLimiter(denialLogEvery),
	}
	for i := range cfg.Users {
		h.users[cfg.Users[i].Username] = &cfg.Users[i]
	}
	h.auth = newAuthGuard(cfg.Users, stats)
	h.quota = newQuotaHook(h)
	h.qos0 = newCoalescer(app, stats, ListenerMQTT, coalesceFlushAt)
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
		mqtt.OnPacketProcessed, mqtt.OnSessionEstablished, mqtt.OnSubscribed, mqtt.OnWillSent:
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
	// mochi has sent the will (into the retained store) or dropped it
	// (DISCONNECT) by now, unless it is delayed.
	if atomic.LoadUint32(&cl.Properties.Will.Flag) == 0 {
		h.forgetPendingWillLocked(cl)
	}
	h.mu.Unlock()
	if ca != nil {
		ca.stop()
	}
}

// codecFor returns the codec of topic's first matching filter and that
// codec's decoder pool ("" and nil when none matches).
func (h *ingestHook) codecFor(topic string) (string, *sync.Pool) {
	for _, t := range h.topics {
		if matchFilter(t.Filter, topic) {
			return t.Codec, h.decoders[t.Codec]
		}
	}
	return "", nil
}

// OnPublish is the ingest path; see the type's comment and doc.go.
func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the gateway's own publish: a durable delivery (deliver), an alert
	}
	if !h.allowed(cl, pk.TopicName, true) {
		return h.refusePublish(cl, pk)
	}
	if pk.FixedHeader.Retain && !h.allowRetain(cl, pk) {
		pk.FixedHeader.Retain = false
	}
	topic := h.subs.lookup(pk.TopicName, h.codecFor)
	codec := topic.codec
	if pk.FixedHeader.Retain && len(pk.Payload) == 0 {
		// Clears the topic's retained message [MQTT-3.3.1-6]: not
		// telemetry, whatever the topic.
		codec = ""
	}
	var (
		nowNs    = time.Now().UnixNano()
		d        *pooledDecoder
		readings []wal.Reading
		reason   packets.Code
	)
	if codec != "" {
		d = topic.dec.Get().(*pooledDecoder)
		readings, reason = h.decodePublish(cl, &pk, &topic, d, nowNs)
	}
	if pk.FixedHeader.Qos == 0 {
		// Gathered with other clients' QoS 0 readings into shared WAL
		// records (coalesce.go), which copies them from the decoder's
		// batch; refused only once it is closed. Nothing here waits.
		if len(readings) > 0 && !h.qos0.add(readings, nowNs) {
			h.stats.Dropped[ListenerMQTT][DropBusy].Add(uint64(len(readings)))
		}
		if d != nil {
			releaseDecoder(topic.dec, d)
		}
		if !pk.FixedHeader.Retain && !h.hasSubscribers(pk.TopicName, topic) {
			handled(&pk) // nobody to deliver to: skip mochi's fan-out
		}
		return pk, nil
	}
	// QoS 1 and 2 may wait (for room in the client's ack window, in the
	// WAL): the decoder, with its intern caches, goes back to its pool
	// first, so there are only as many as publishes decoding at once, and
	// the readings move to a batch of their own. The Appender encodes the
	// batch before it returns, so it serves publish after publish.
	batch, _ := h.batches.Get().(*wal.Batch)
	if batch == nil {
		batch = new(wal.Batch)
	}
	defer func() {
		if cap(batch.Readings) > 4096 { // a rare huge payload: do not pin it
			batch.Readings = nil
		}
		batch.Readings = batch.Readings[:0]
		h.batches.Put(batch)
	}()
	batch.IngestNs = nowNs
	if d != nil {
		batch.Readings, d.batch.Readings = d.batch.Readings, batch.Readings[:0]
		releaseDecoder(topic.dec, d)
	}
	if pk.FixedHeader.Qos == 2 {
		return h.publishQoS2(cl, pk, batch, reason)
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
	if reason.Code == 0 && (pk.FixedHeader.Retain || h.hasSubscribers(pk.TopicName, topic)) {
		e.deliver = deliverable(pk, nowNs)
	}
	switch {
	case len(batch.Readings) > 0:
		e.n = uint64(len(batch.Readings))
		if err := h.app.Append(h.ctx, batch, e.appended); err != nil {
			e.appended(err)
		}
	default:
		// Not telemetry, or nothing to store: acknowledge in order, with
		// the reason if there is one.
		e.reason = reason
		ca.complete(e, nil)
	}
	handled(&pk)
	return pk, nil
}

// decodePublish decodes a telemetry publish with d (its codec's decoder,
// which the caller holds and releases), counts and dead-letters what it
// rejected, and returns the readings (in d.batch) and, for a v5 client
// when none was usable, the reason code to answer with [MQTT-3.4.2.1] (a
// 3.1.1 client cannot be told: it was counted and dead-lettered). It
// keeps the topic's series memo in topic, the topic's cache entry.
func (h *ingestHook) decodePublish(cl *mqtt.Client, pk *packets.Packet, topic *subscriberEntry, d *pooledDecoder, nowNs int64) ([]wal.Reading, packets.Code) {
	h.stats.Messages[ListenerMQTT].Add(1)
	h.stats.Bytes[ListenerMQTT].Add(uint64(len(pk.Payload)))
	var memo SeriesMemo
	if topic.memo != nil {
		memo = *topic.memo
	}
	d.batch.Readings = h.decodeWith(d, pk.TopicName, pk.Payload, nowNs, &memo, d.batch.Readings[:0])
	if topic.memo == nil || memo != *topic.memo { // the topic's tags changed (or were first seen)
		// A copy made only here: storing &memo itself would move memo to
		// the heap on every publish.
		m := memo
		topic.memo = &m
		h.subs.store(pk.TopicName, *topic)
	}
	res := &d.res
	res.requireReadings(pk.Payload)
	h.stats.CountResult(ListenerMQTT, res)
	if res.Problems() > 0 {
		h.reject(cl, *pk, nowNs, res)
	}
	var reason packets.Code
	if len(d.batch.Readings) == 0 && cl.Properties.ProtocolVersion == 5 {
		reason = packets.ErrPayloadFormatInvalid
		reason.Reason = firstError(res)
	}
	return d.batch.Readings, reason
}

// refusePublish answers a publish the ACL refuses as mochi would have
// (processPublish): QoS 0 is dropped, a 3.1.1 client is disconnected (it
// has no negative ack), a v5 client gets PUBACK/PUBREC 0x87, in order with
// its other acks.
func (h *ingestHook) refusePublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch {
	case pk.FixedHeader.Qos == 0:
	case cl.Properties.ProtocolVersion < 5:
		_ = h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	default:
		h.refuse(cl, pk, packets.ErrNotAuthorized)
	}
	handled(&pk)
	return pk, nil
}

// refuse answers a v5 QoS 1 or 2 publish with a reason-coded PUBACK or
// PUBREC on the path its other acks of that kind take: the QoS 1 ack
// window, or (QoS 2) mochi's WritePacket from the read goroutine, as
// mochi's own PUBRECs are written. Runs on the client's read goroutine.
func (h *ingestHook) refuse(cl *mqtt.Client, pk packets.Packet, code packets.Code) {
	if pk.FixedHeader.Qos == 2 {
		_ = cl.WritePacket(h.ack(packets.Pubrec, pk.PacketID, code))
		return
	}
	ca := h.acksFor(cl)
	if ca == nil {
		return // disconnecting
	}
	if e := ca.reserve(h.ctx, pk.PacketID); e != nil {
		e.reason = code
		ca.complete(e, nil)
	}
}

// publishQoS2 stores a QoS 2 publish's readings before mochi sends PUBREC:
// it blocks this client's read loop for one group commit. Failures are
// answered here with a reason-coded PUBREC (v5): mochi would answer a
// hook's reason code with a PUBACK. PUBRECs keep their order: mochi writes
// its own with cl.WritePacket on this same goroutine, as these are.
func (h *ingestHook) publishQoS2(cl *mqtt.Client, pk packets.Packet, batch *wal.Batch, reason packets.Code) (packets.Packet, error) {
	if reason.Code != 0 {
		h.refuse(cl, pk, reason)
		handled(&pk)
		return pk, nil
	}
	if len(batch.Readings) == 0 {
		return pk, nil
	}
	err := AppendSync(h.ctx, h.app, batch)
	h.countAppend(uint64(len(batch.Readings)), err)
	if err == nil {
		return pk, nil
	}
	h.logger.Warn("mqtt qos 2 publish not stored; disconnecting the client so it resends",
		"client", cl.ID, "topic", pk.TopicName, "err", err)
	if cl.Properties.ProtocolVersion == 5 {
		_ = cl.WritePacket(h.ack(packets.Pubrec, pk.PacketID, packets.ErrUnspecifiedError))
	}
	cl.Stop(fmt.Errorf("wal append failed: %w", err))
	handled(&pk)
	return pk, nil
}

// ack builds a reason-coded PUBACK or PUBREC with the reason string and no
// other property (none inherited from the publish).
func (h *ingestHook) ack(typ byte, id uint16, code packets.Code) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: typ},
		PacketID:    id,
		ReasonCode:  code.Code,
		Properties:  packets.Properties{ReasonString: code.Reason},
	}
}

// deliverable is the copy of a QoS 1 publish that deliver re-injects once
// it is acknowledged: every property as sent, the topic alias resolved
// (mochi resolved pk.TopicName before OnPublish; the alias belongs to the
// publisher's connection), and the receive time, from which its message
// expiry counts.
func deliverable(pk packets.Packet, nowNs int64) *packets.Packet {
	p := pk.Copy(false)
	p.PacketID = pk.PacketID // Copy drops it; PublishValidate wants one for QoS > 0
	p.Properties.TopicAlias, p.Properties.TopicAliasFlag = 0, false
	p.Properties.SubscriptionIdentifier = nil
	p.Created = nowNs // nanoseconds until deliver, which sets mochi's seconds
	return &p
}

// handled marks a publish the hook has answered itself (a QoS 1 publish
// the ack window owns, a QoS 2 publish refused with a reason-coded PUBREC),
// so mochi neither acks, retains nor delivers it (processPublish treats it
// as an ignored QoS 0 message). Returning ErrRejectPacket does the same,
// but mochi's hook dispatcher then boxes the whole packet into a debug log
// call's arguments, logged or not: one large allocation per message, about
// 6 % of the gateway's CPU under QoS 1 load.
//
// It marks pk in place: a packet is 800 bytes, and OnPublish runs for
// every message, so the hot path copies it no more than the hook
// signature makes it.
func handled(pk *packets.Packet) {
	pk.FixedHeader.Qos, pk.FixedHeader.Retain, pk.Ignore = 0, false, true
}

func (h *ingestHook) countAppend(n uint64, err error) {
	if err != nil {
		h.stats.Dropped[ListenerMQTT][DropAppendFailed].Add(n)
		return
	}
	h.stats.Readings[ListenerMQTT].Add(n)
}

// hasSubscribers reports whether a publish on topic has subscribers; e is
// topic's entry in the subscriber cache.
func (h *ingestHook) hasSubscribers(topic string, e subscriberEntry) bool {
	return h.subs.has(topic, e, func(topic string) bool {
		subs := h.srv.Topics.Subscribers(topic)
		return len(subs.Subscriptions) > 0 || len(subs.Shared) > 0 || len(subs.InlineSubscriptions) > 0
	})
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
		delete(h.retainedAt, topic)
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
	set[strings.Clone(topic)] = struct{}{} // not the packet buffer TopicName aliases
	return true
}

// OnWillSent forgets the pending charge of a will now in the retained
// store (a delayed will is sent after its client's OnDisconnect).
func (h *ingestHook) OnWillSent(cl *mqtt.Client, _ packets.Packet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.forgetPendingWillLocked(cl)
}

// forgetPendingWillLocked drops cl's pending retained will, if any; the
// topic's charge stays until a recount finds it absent from the store.
// Called under h.mu.
func (h *ingestHook) forgetPendingWillLocked(cl *mqtt.Client) {
	for topic, c := range h.willPending {
		if c == cl {
			delete(h.willPending, topic)
		}
	}
}

// allowRetainedWill is allowRetainTopic for cl's retained will at CONNECT;
// an accepted will stays charged while it waits to be sent. A delayed
// will of an earlier connection with the same client id was cancelled by
// this one [MQTT-3.1.3-9]: its pending charge goes.
func (h *ingestHook) allowRetainedWill(cl *mqtt.Client, topic string, size int) bool {
	h.mu.Lock()
	for t, c := range h.willPending {
		if c != cl && c.ID == cl.ID && c.Closed() {
			delete(h.willPending, t)
		}
	}
	h.mu.Unlock()
	if !h.allowRetainTopic(cl.ID, topic, size) {
		return false
	}
	h.mu.Lock()
	h.willPending[strings.Clone(topic)] = cl // not the CONNECT packet's buffer
	h.mu.Unlock()
	return true
}

// chargeRetained charges a retained payload of size bytes on topic to
// max_retained_bytes (replacing what the topic held), or reports that it
// does not fit. mochi drops expired retained messages on its own, so when
// the count says full it is recounted from mochi's store first. What is
// charged but not in the store yet keeps its charge: the wills of
// connected clients, and messages charged within retainStoreGrace (mochi
// stores a publish after OnPublish returns, a durable one after its group
// commit, so a concurrent recount would miss them). Called under h.mu.
func (h *ingestHook) chargeRetained(topic string, size int64) bool {
	limit := int64(h.cfg.MaxRetainedBytes)
	now := time.Now().UnixNano()
	if h.retainedBytes-h.retainedSize[topic]+size > limit {
		h.retainedBytes = 0
		for t := range h.retainedSize {
			_, pendingWill := h.willPending[t]
			if pk, ok := h.srv.Topics.Retained.Get(t); ok {
				h.retainedSize[t] = int64(len(pk.Payload))
				h.retainedBytes += int64(len(pk.Payload))
			} else if pendingWill || now-h.retainedAt[t] < int64(retainStoreGrace) {
				h.retainedBytes += h.retainedSize[t]
			} else {
				delete(h.retainedSize, t)
				delete(h.retainedAt, t)
			}
		}
		if h.retainedBytes-h.retainedSize[topic]+size > limit {
			return false
		}
	}
	if _, ok := h.retainedSize[topic]; !ok {
		topic = strings.Clone(topic) // not the packet buffer TopicName aliases
	}
	h.retainedBytes += size - h.retainedSize[topic]
	h.retainedSize[topic] = size
	h.retainedAt[topic] = now
	return true
}

// retainStoreGrace is how long a charged retained message keeps its charge
// while it is not in mochi's store (see chargeRetained); one that never
// gets there (its publish failed) is released after it.
const retainStoreGrace = 10 * time.Second

// pooledDecoder is a decoder with the Result it decodes into and the
// batch it decodes a publish's readings into; OnPublish holds it while it
// uses them (for QoS 0, until the coalescer has copied the readings:
// neither is copied or pooled apart). The Result travels with the decoder
// because a *Result passed through the Decoder interface escapes:
// OnPublish's own Result would cost an allocation per publish.
type pooledDecoder struct {
	dec   Decoder
	res   Result
	memo  SeriesMemo // the topic's, for Options.Memo (here: no allocation per publish)
	batch wal.Batch
}

// releaseDecoder returns d, which a publish held, to its pool.
func releaseDecoder(pool *sync.Pool, d *pooledDecoder) {
	d.res.Reset()
	if cap(d.batch.Readings) > 4096 { // a rare huge payload: do not pin it
		d.batch.Readings = nil
	}
	d.batch.Readings = d.batch.Readings[:0]
	pool.Put(d)
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

// decodeWith appends the readings of a publish on topic to dst, decoded
// by d (one of the topic's codec's pooled decoders, which the caller
// holds); the result is in d.res. memo is the topic's series memo
// (Options.Memo), updated in place. It takes the topic and payload, not
// the 800-byte packet, which would be copied per call.
func (h *ingestHook) decodeWith(d *pooledDecoder, topic string, payload []byte, nowNs int64, memo *SeriesMemo, dst []wal.Reading) []wal.Reading {
	d.memo = *memo
	opt := Options{NowNs: nowNs, MaxFutureSkew: h.cfg.MaxFutureSkew, Precision: h.precision, Memo: &d.memo}
	dst = d.dec.Decode(dst, topic, payload, opt, &d.res)
	*memo, d.memo = d.memo, SeriesMemo{}
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

	// Used by the acker goroutine only.
	origin     *mqtt.Client      // the inline client deliver injects with, named after cl
	deliveries []*packets.Packet // flush's scratch
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

// flush acknowledges finished entries, in order, in one socket write:
// plain PUBACKs (4 bytes) and reason-coded ones (encoded here, not
// through cl.WritePacket, which could hold them in mochi's write buffer
// behind queued deliveries while later plain ones overtake them
// [MQTT-4.6.0-2]). A failure is acknowledged (v5: 0x80) and ends the
// connection. The successes are then delivered. It returns buf, for reuse.
func (ca *clientAcks) flush(ready []*ackEntry, buf []byte) ([]byte, bool) {
	deliver := ca.deliveries[:0]
	defer func() {
		clear(deliver)
		ca.deliveries = deliver[:0]
	}()
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
			if ca.cl.Properties.ProtocolVersion == 5 {
				buf = ca.appendAck(buf, e.id, packets.ErrUnspecifiedError)
			}
			write()
			ca.h.logger.Warn("mqtt publish not stored; disconnecting the client so it resends",
				"client", ca.cl.ID, "err", e.err)
			ca.cl.Stop(fmt.Errorf("wal append failed: %w", e.err))
			return buf, false
		case e.reason.Code != 0:
			buf = ca.appendAck(buf, e.id, e.reason)
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
		ca.deliver(p)
	}
	return buf, true
}

// appendAck appends a v5 PUBACK with a reason code and its reason string,
// as mochi's WritePacket would encode it for this client (no reason string
// when it asked for no problem information [MQTT-3.1.2-29], none that
// would make the packet exceed its maximum packet size [MQTT-3.1.2-25]).
func (ca *clientAcks) appendAck(buf []byte, id uint16, code packets.Code) []byte {
	pk := ca.h.ack(packets.Puback, id, code)
	pk.ProtocolVersion = 5
	props := &ca.cl.Properties.Props
	pk.Mods.MaxSize = props.MaximumPacketSize
	pk.Mods.DisallowProblemInfo = props.RequestProblemInfoFlag && props.RequestProblemInfo == 0
	var b bytes.Buffer
	if err := pk.PubackEncode(&b); err != nil {
		panic("BUG: encode puback: " + err.Error()) // a PUBACK always encodes
	}
	return append(buf, b.Bytes()...)
}

// deliver routes an acknowledged QoS 1 publish to local subscribers as
// its publisher sent it, through mochi's own publish path
// (Server.InjectPacket, processPublish): every property is kept, the
// publisher's client id is the origin (no-local, retain-as-published),
// retained messages are stored by mochi, subscription identifiers are set
// per subscriber. The injecting client is an inline client named after the
// publisher (inline: no ACL, no inflight, no ack), made on first use; its
// protocol version is 5, so mochi's expiry sweeps apply to what it
// retains. Message expiry counts from receipt (mochi counts it from the
// injection, in whole seconds): the interval is reduced by the time spent
// storing, and a message that expired meanwhile is not delivered
// [MQTT-3.3.2-5].
func (ca *clientAcks) deliver(p *packets.Packet) {
	if ca.origin == nil {
		ca.origin = ca.h.srv.NewClient(nil, mqtt.LocalListener, ca.cl.ID, true)
		ca.origin.Properties.ProtocolVersion = 5
	}
	if mei := p.Properties.MessageExpiryInterval; mei > 0 {
		left := time.Duration(mei)*time.Second - time.Duration(time.Now().UnixNano()-p.Created)
		if left <= 0 {
			return
		}
		p.Properties.MessageExpiryInterval = uint32((left + time.Second - 1) / time.Second)
	}
	p.Created = 0
	if err := ca.h.srv.InjectPacket(ca.origin, *p); err != nil {
		ca.h.logger.Warn("mqtt delivery to local subscribers failed", "client", ca.cl.ID, "topic", p.TopicName, "err", err)
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
