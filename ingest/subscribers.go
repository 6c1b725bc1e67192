package ingest

import (
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// subscriberCache remembers, per topic, whether a publish on it has any
// subscriber. mochi answers that by walking its topic tree and building
// three maps per publish (TopicsIndex.Subscribers): about a tenth of the
// gateway's CPU on a QoS 0 flood, where sensors publish on topics nobody
// subscribes to. A publish with no subscriber and no retain flag then
// skips mochi's fan-out altogether (OnPublish returns it ignored).
//
// An entry is valid for the generation it was computed in. Every added
// subscription bumps the generation after mochi added it (OnSubscribed,
// for clients and the inline client alike, and OnSessionEstablished for
// the subscriptions a resumed session brings): a lookup that read the
// generation before the bump stores its answer under the old one, so
// nothing computed before a subscription outlives it. A removed
// subscription leaves "has subscribers" entries that are merely
// pessimistic (mochi then finds none). The map is emptied when it holds
// subscriberCacheMax topics, so it stays small with any topic count.
type subscriberCache struct {
	gen atomic.Uint64
	mu  sync.RWMutex
	m   map[string]subscriberEntry
}

type subscriberEntry struct {
	gen uint64
	any bool
}

const subscriberCacheMax = 4096

// has reports whether topic has subscribers, computing it with any when
// the cache has no valid answer.
func (c *subscriberCache) has(topic string, any func(string) bool) bool {
	g := c.gen.Load()
	c.mu.RLock()
	e, ok := c.m[topic]
	c.mu.RUnlock()
	if ok && e.gen == g {
		return e.any
	}
	v := any(topic)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= subscriberCacheMax {
		c.m = make(map[string]subscriberEntry)
	}
	// A copy: mochi's TopicName aliases the packet's read buffer, payload
	// included, which the key would otherwise keep alive.
	c.m[strings.Clone(topic)] = subscriberEntry{gen: g, any: v}
	c.mu.Unlock()
	return v
}

// added invalidates every entry: a subscription was added.
func (c *subscriberCache) added() { c.gen.Add(1) }

// OnSubscribed invalidates the subscriber cache (mochi added the
// subscriptions before calling it).
func (h *ingestHook) OnSubscribed(_ *mqtt.Client, _ packets.Packet, _ []byte) {
	h.subs.added()
}
