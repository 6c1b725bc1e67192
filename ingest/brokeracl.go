package ingest

// Broker access control beyond mochi's: ACL filters with %u/%c, reserved
// topics, will checks and client-id ownership at CONNECT, and answers to
// publishes mochi would drop silently.

import (
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// reservedPrefix returns the reserved root of a topic or filter ("alerts"
// or "$SYS"), or "". Reserved topics are the gateway's own: a user reaches
// them only through a filter that literally starts with that root, never
// through a wildcard ("+/+/+", "#").
func reservedPrefix(topic string) string {
	switch {
	case topic == "alerts" || strings.HasPrefix(topic, "alerts/"):
		return "alerts"
	case strings.HasPrefix(topic, "$SYS"):
		return "$SYS"
	}
	return ""
}

// reservedTopic reports whether a topic is reserved for the gateway's own
// publishes.
func reservedTopic(topic string) bool { return reservedPrefix(topic) != "" }

// expandFilter substitutes %u (username) and %c (client id) in an ACL
// filter, so one rule such as telemetry/%u/+ lets each device publish only
// as itself. A name holding a wildcard or a level separator would widen the
// filter, so a filter that needs one is unusable (false).
func expandFilter(f, user, client string) (string, bool) {
	if !strings.Contains(f, "%") {
		return f, true
	}
	for _, sub := range []struct{ key, val string }{{"%u", user}, {"%c", client}} {
		if !strings.Contains(f, sub.key) {
			continue
		}
		if sub.val == "" || strings.ContainsAny(sub.val, "+#/") {
			return "", false
		}
		f = strings.ReplaceAll(f, sub.key, sub.val)
	}
	return f, true
}

// aclAllows applies a user's filters to a topic (publish) or a requested
// filter (subscribe). An empty list allows nothing; a reserved topic is
// allowed only by a filter that literally starts with its root.
func aclAllows(filters []string, user, client, topic string) bool {
	root := reservedPrefix(topic)
	for _, f := range filters {
		f, ok := expandFilter(f, user, client)
		if !ok {
			continue
		}
		if root != "" && reservedPrefix(f) != root {
			continue
		}
		if matchFilter(f, topic) {
			return true
		}
	}
	return false
}

// pubAllowed applies a user's publish filters: an empty list allows every
// topic but the reserved ones (an empty subscribe list allows nothing).
func pubAllowed(u *BrokerUser, user, client, topic string) bool {
	if len(u.Publish) == 0 {
		return !reservedTopic(topic)
	}
	return aclAllows(u.Publish, user, client, topic)
}

// OnACLCheck applies the user's subscribe filters (see aclAllows). It
// lets every publish through: OnPublish checks publishes (allowed), where
// the QoS is known, so that a refusal's PUBACK takes the ordered ack path
// like every other (mochi would write it itself, out of order), and after
// mochi resolved a topic alias (it calls this hook before, with the empty
// topic name of an aliased publish). mochi also asks it before each
// delivery to a client (write false, with the topic): a delivery to a
// session whose queue is full (max_queued_bytes) is refused there.
func (h *ingestHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return true
	}
	return h.allowed(cl, topic, write)
}

// allowed applies the user's publish and subscribe filters (see aclAllows
// and pubAllowed). Anonymous clients, when allowed, may subscribe to
// anything and publish anywhere but the reserved topics.
func (h *ingestHook) allowed(cl *mqtt.Client, topic string, write bool) bool {
	user := string(cl.Properties.Username)
	u := h.users[user]
	var allowed bool
	switch {
	case u == nil && write && reservedTopic(topic):
		h.deny("publish on a reserved topic", "client", cl.ID, "topic", topic)
		return false
	case u == nil:
		allowed = h.anonymous && user == ""
	case write:
		allowed = pubAllowed(u, user, cl.ID, topic)
	default:
		allowed = aclAllows(u.Subscribe, user, cl.ID, topic)
	}
	if !allowed {
		if u == nil {
			return false
		}
		if write {
			h.deny("publish denied by acl", "user", user, "client", cl.ID, "topic", topic)
		} else {
			h.deny("subscribe denied by acl", "user", user, "client", cl.ID, "filter", topic)
		}
		return false
	}
	if !write && !cl.Net.Inline && h.quota.queueFull(cl) && !h.quota.subscribeCheck(cl, topic) {
		h.deny("message not queued: max_queued_bytes reached", "client", cl.ID, "topic", topic)
		return false
	}
	return true
}

// refuseConnect answers a CONNECT with "not authorized" (v5 0x87, 3.1.1
// 0x05) and returns the code, which makes mochi close the connection.
func (h *ingestHook) refuseConnect(cl *mqtt.Client, code packets.Code) error {
	if cl.Properties.ProtocolVersion < 5 {
		v3 := packets.Err3NotAuthorized
		if code == packets.ErrServerBusy || code == packets.ErrQuotaExceeded || code == packets.ErrConnectionRateExceeded {
			v3 = packets.Err3ServerUnavailable
		}
		_ = h.srv.SendConnack(cl, v3, false, nil)
	} else {
		_ = h.srv.SendConnack(cl, code, false, nil)
	}
	return code
}

// checkWill refuses a will its user could not publish: wills go out
// through mochi's sendLWT with no ACL check, so they are checked here, at
// CONNECT, against the publish ACL and, when retained, the retained limits.
func (h *ingestHook) checkWill(cl *mqtt.Client, user string) (packets.Code, bool) {
	w := cl.Properties.Will
	if w.Flag == 0 {
		return packets.CodeSuccess, true
	}
	allowed := false
	if u := h.users[user]; u != nil {
		allowed = pubAllowed(u, user, cl.ID, w.TopicName)
	} else {
		allowed = h.anonymous && user == "" && !reservedTopic(w.TopicName)
	}
	if !allowed {
		h.deny("will refused by acl", "user", user, "client", cl.ID, "topic", w.TopicName)
		return packets.ErrNotAuthorized, false
	}
	if w.Retain && len(w.Payload) > 0 && !h.allowRetainedWill(cl, w.TopicName, len(w.Payload)) {
		h.deny("retained will over the retained limits", "client", cl.ID, "topic", w.TopicName)
		return packets.ErrQuotaExceeded, false
	}
	return packets.CodeSuccess, true
}

// claimClientID refuses a CONNECT that would take over the live or
// persisted session of another username, or race one that is being
// established: the check and the claim happen under one lock, and a claim
// lasts until the session is established (or its connection is gone).
func (h *ingestHook) claimClientID(cl *mqtt.Client, user string) bool {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	if existing, ok := h.srv.Clients.Get(cl.ID); ok && existing != cl && string(existing.Properties.Username) != user {
		return false
	}
	if c, ok := h.claims[cl.ID]; ok && c != cl && !c.Closed() && string(c.Properties.Username) != user {
		return false
	}
	h.claims[cl.ID] = cl
	return true
}

// releaseClaim ends cl's claim on its client id.
func (h *ingestHook) releaseClaim(cl *mqtt.Client) {
	h.ownMu.Lock()
	if h.claims[cl.ID] == cl {
		delete(h.claims, cl.ID)
	}
	h.ownMu.Unlock()
}

// OnSessionEstablished ends the CONNECT's claim: mochi now holds the
// session under the client id, and claimClientID finds it there.
func (h *ingestHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.releaseClaim(cl)
	h.subs.added() // a resumed session brought its subscriptions back
}

// OnPacketProcessed answers QoS 1/2 publishes that mochi dropped without
// a word (a topic under $SYS: processPublish returns before any ack), so
// the client does not wait forever: a v5 client gets PUBACK/PUBREC 0x87, a
// 3.1.1 client, which has no negative ack, is disconnected. A topic with a
// wildcard never gets here: mochi's PublishValidate already disconnects
// the client for a protocol error. This is done after processing rather
// than in OnPacketRead because mochi copies each packet into and out of
// every hook that provides OnPacketRead (several 800-byte copies per
// message, about 5 % of the CPU of a QoS 0 flood), while OnPacketProcessed
// takes one copy; the check is on the same read goroutine, so the answer
// keeps its place among the client's other acks.
func (h *ingestHook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, err error) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos == 0 || err != nil || cl.Net.Inline ||
		mqtt.IsValidFilter(pk.TopicName, true) {
		return
	}
	h.deny("publish on a reserved or invalid topic", "client", cl.ID, "topic", pk.TopicName)
	if cl.Properties.ProtocolVersion < 5 {
		cl.Stop(packets.ErrNotAuthorized) // closes the connection: a 3.1.1 server sends no DISCONNECT
		return
	}
	code := packets.ErrNotAuthorized
	code.Reason = "topic reserved for the gateway"
	h.refuse(cl, pk, code)
}
