package ingest

// Per-session quotas mochi does not keep: the subscriptions of one client
// (refused per filter with 0x97), the payload bytes queued for one session
// and for all offline sessions together, and the number of persistent
// sessions kept while their clients are away.

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// quotaFilter replaces a SUBSCRIBE filter past max_subscriptions in
// OnSubscribe: it is not a valid filter ('#' must be last), so mochi
// refuses it without subscribing, and OnSubscribed turns that refusal into
// 0x97 in the SUBACK.
const quotaFilter = "#/quota"

// quotaHook keeps the session quotas. It is a hook of its own, registered
// after ingestHook, so the publish and ack path stays in one place;
// deliveries are refused in ingestHook.OnACLCheck (mochi allows a delivery
// when any hook's ACL check does, so only the one ACL hook can refuse).
type quotaHook struct {
	mqtt.HookBase
	h *ingestHook

	mu sync.Mutex
	// queues holds, per client id, the payload bytes of the outbound
	// QoS 1/2 messages in the session's inflight store (sent and awaiting
	// their ack, or held for an offline client), by packet id.
	queues map[string]*sessionQueue
	// subscribing holds the SUBSCRIBE each client is processing: the
	// filters mochi will ACL-check (so OnACLCheck tells them from
	// deliveries) and the indices refused for the quota.
	subscribing map[*mqtt.Client]*subscribeState
	// offline orders the persistent sessions whose clients are away by
	// when they left (a sequence: mochi's stop time has 1 s resolution).
	offline map[string]uint64
	seq     uint64
}

type sessionQueue struct {
	bytes int64
	sizes map[uint16]int32
}

type subscribeState struct {
	filters []string
	refused []int
}

func newQuotaHook(h *ingestHook) *quotaHook {
	return &quotaHook{h: h, queues: map[string]*sessionQueue{},
		subscribing: map[*mqtt.Client]*subscribeState{}, offline: map[string]uint64{}}
}

func (q *quotaHook) ID() string { return "runnel-quota" }

func (q *quotaHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
		mqtt.OnPublishDropped, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnClientExpired:
		return true
	}
	return false
}

// OnSubscribe applies mqtt.max_subscriptions. mochi has no hook that sets
// one filter's SUBACK code, but processSubscribe refuses an invalid filter
// (0x8F) and hands its reason-code slice, the SUBACK's own, to OnSubscribed
// before writing it: a filter past the quota is swapped for an invalid one
// here and its code set to 0x97 there. Filters the client holds, repeats
// and invalid filters do not count.
func (q *quotaHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	st := &subscribeState{}
	count := cl.State.Subscriptions.Len()
	seen := map[string]bool{}
	for i, f := range pk.Filters {
		st.filters = append(st.filters, f.Filter)
		if _, held := cl.State.Subscriptions.Get(f.Filter); held || seen[f.Filter] || !mqtt.IsValidFilter(f.Filter, false) {
			continue
		}
		if count >= q.h.cfg.MaxSubscriptions {
			q.h.deny("subscribe refused: max_subscriptions reached", "client", cl.ID, "filter", f.Filter)
			pk.Filters[i].Filter = quotaFilter
			st.refused = append(st.refused, i)
			continue
		}
		count++
		seen[f.Filter] = true
	}
	q.mu.Lock()
	q.subscribing[cl] = st
	q.mu.Unlock()
	return pk
}

// OnSubscribed writes 0x97 (quota exceeded) for the filters OnSubscribe
// refused; a 3.1.1 client keeps mochi's 0x80 (failure), its only refusal.
func (q *quotaHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	q.mu.Lock()
	st := q.subscribing[cl]
	delete(q.subscribing, cl)
	q.mu.Unlock()
	if st == nil || cl.Properties.ProtocolVersion < 5 {
		return
	}
	for _, i := range st.refused {
		if i < len(reasonCodes) {
			reasonCodes[i] = packets.ErrQuotaExceeded.Code
		}
	}
}

// subscribeCheck reports whether an ACL check of cl for filter is part of
// the SUBSCRIBE cl is processing rather than a delivery to cl.
func (q *quotaHook) subscribeCheck(cl *mqtt.Client, filter string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.subscribing[cl]
	if st == nil {
		return false
	}
	for _, f := range st.filters {
		if f == filter {
			return true
		}
	}
	return false
}

// queueFull reports whether cl's session holds max_queued_bytes or more of
// queued payload, or is offline while the offline sessions together hold
// max_offline_queued_bytes or more: it then misses messages until the
// client acknowledges (or, offline, until it reconnects and drains). The
// bounds are checked before a message is queued, so a session (and the
// offline total) may exceed them by one message. Without the total, the
// offline sessions could hold max_offline_sessions x max_queued_bytes
// (64 MiB with the defaults, over the memory budget of a Pi).
func (q *quotaHook) queueFull(cl *mqtt.Client) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if sq := q.queues[cl.ID]; sq != nil && sq.bytes >= int64(q.h.cfg.MaxQueuedBytes) {
		return true
	}
	if _, offline := q.offline[cl.ID]; !offline {
		return false
	}
	// A sum over at most max_offline_sessions queues, only for deliveries
	// to offline sessions.
	var total int64
	for id := range q.offline {
		if sq := q.queues[id]; sq != nil {
			total += sq.bytes
		}
	}
	return total >= int64(q.h.cfg.MaxOfflineQueuedBytes)
}

// OnQosPublish counts an outbound QoS 1/2 message stored in the session's
// inflight store (also for a resend of one, with the same packet id).
func (q *quotaHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if cl.Net.Inline || pk.FixedHeader.Type != packets.Publish {
		return // inbound QoS 2 keeps a PUBREC, no payload
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.setLocked(cl.ID, pk.PacketID, len(pk.Payload))
}

func (q *quotaHook) setLocked(id string, packetID uint16, size int) {
	sq := q.queues[id]
	if sq == nil {
		sq = &sessionQueue{sizes: map[uint16]int32{}}
		q.queues[id] = sq
	}
	sq.bytes += int64(size) - int64(sq.sizes[packetID])
	sq.sizes[packetID] = int32(size)
}

// OnQosComplete and OnQosDropped uncount a message that left the inflight
// store. Inbound and outbound QoS exchanges share mochi's packet-id space,
// so an id still in the store is kept.
func (q *quotaHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) { q.forget(cl, pk.PacketID) }
func (q *quotaHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet)  { q.forget(cl, pk.PacketID) }

func (q *quotaHook) forget(cl *mqtt.Client, packetID uint16) {
	if _, ok := cl.State.Inflight.Get(packetID); ok {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	sq := q.queues[cl.ID]
	if sq == nil {
		return
	}
	if size, ok := sq.sizes[packetID]; ok {
		sq.bytes -= int64(size)
		delete(sq.sizes, packetID)
	}
}

// OnPublishDropped: mochi dropped a message whose client's write queue was
// full, taking it out of the inflight store without saying which packet
// id it had: recount from the store.
func (q *quotaHook) OnPublishDropped(cl *mqtt.Client, _ packets.Packet) { q.recount(cl) }

// recount rebuilds cl's queue from its inflight store: after a session is
// taken over (the store is cloned) or started clean (the old one cleared,
// with no hook called), and after a drop.
func (q *quotaHook) recount(cl *mqtt.Client) {
	all := cl.State.Inflight.GetAll(false)
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.queues, cl.ID)
	for _, pk := range all {
		if pk.FixedHeader.Type == packets.Publish {
			q.setLocked(cl.ID, pk.PacketID, len(pk.Payload))
		}
	}
}

// OnSessionEstablished counts the session's queue afresh and takes it off
// the offline list.
func (q *quotaHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	q.recount(cl)
	q.mu.Lock()
	delete(q.offline, cl.ID)
	q.mu.Unlock()
}

// OnDisconnect forgets a session that ends with its connection; a session
// that persists joins the offline list, and past max_offline_sessions the
// one offline longest is expired as if its expiry interval had passed.
// Expiring the oldest rather than refusing new sessions keeps every device
// able to connect; memory stays within max_offline_sessions sessions of
// max_queued_bytes each.
func (q *quotaHook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if cl.Net.Inline || cl.IsTakenOver() || q.h.ctx.Err() != nil {
		return // a takeover's new session owns the client id now; shutting down
	}
	q.mu.Lock()
	if expire {
		delete(q.queues, cl.ID)
		delete(q.offline, cl.ID)
		q.mu.Unlock()
		return
	}
	q.seq++
	q.offline[cl.ID] = q.seq
	var evict []string
	for len(q.offline) > q.h.cfg.MaxOfflineSessions {
		oldest, min := "", uint64(0)
		for id, s := range q.offline {
			if oldest == "" || s < min {
				oldest, min = id, s
			}
		}
		delete(q.offline, oldest)
		delete(q.queues, oldest)
		evict = append(evict, oldest)
	}
	q.mu.Unlock()
	for _, id := range evict {
		q.expire(id)
	}
}

// expire ends the offline session of a client id as mochi's expiry does,
// and also drops its subscriptions (mochi's expiry leaves them routed to
// a client that no longer exists). A client that reconnected meanwhile is
// left alone.
func (q *quotaHook) expire(id string) {
	srv := q.h.srv
	cl, ok := srv.Clients.Get(id)
	if !ok || !cl.Closed() {
		return
	}
	q.h.deny("offline session expired: max_offline_sessions reached", "client", id)
	srv.UnsubscribeClient(cl)
	cl.ClearInflights()
	srv.Clients.Delete(id)
}

// OnClientExpired forgets a session mochi expired.
func (q *quotaHook) OnClientExpired(cl *mqtt.Client) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.queues, cl.ID)
	delete(q.offline, cl.ID)
}
