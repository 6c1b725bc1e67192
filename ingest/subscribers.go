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
//
// An entry also holds the topic's codec (the mqtt.topics mapping, fixed
// for the broker's life), so one lookup per publish answers both questions
// (matching the topic against every filter cost as much as the lookup),
// and the topic's series memo, so the decoder need not build the series
// key again.
type subscriberCache struct {
	gen atomic.Uint64
	mu  sync.RWMutex
	m   map[string]subscriberEntry
}

type subscriberEntry struct {
	gen   uint64 // 1 + the generation any was computed in; 0: not computed
	any   bool
	codec string     // the topic's codec, "" for none
	dec   *sync.Pool // the codec's decoders (*pooledDecoder), nil for none
	// memo is the series key of the topic's last message (Options.Memo),
	// so a device's key is not built and interned per message. Never
	// changed once stored (a new one replaces it); a pointer keeps the
	// map's values small.
	memo *SeriesMemo
}

const subscriberCacheMax = 4096

// lookup returns topic's entry, computing its codec and the codec's
// decoder pool with codecFor when the topic is not cached. Its subscriber
// answer is for has.
func (c *subscriberCache) lookup(topic string, codecFor func(string) (string, *sync.Pool)) subscriberEntry {
	c.mu.RLock()
	e, ok := c.m[topic]
	c.mu.RUnlock()
	if ok {
		return e
	}
	e = subscriberEntry{}
	e.codec, e.dec = codecFor(topic)
	c.store(topic, e)
	return e
}

// has reports whether topic has subscribers: e's answer while it is
// valid, else computed with any and cached. e is topic's entry from lookup
// (its codec is stored with the answer).
func (c *subscriberCache) has(topic string, e subscriberEntry, any func(string) bool) bool {
	g := c.gen.Load()
	if e.gen == g+1 {
		return e.any
	}
	e.gen, e.any = g+1, any(topic)
	c.store(topic, e)
	return e.any
}

// maxCachedTopic bounds the topics the cache keeps (MQTT allows 64 KiB):
// device topics are short, and with 4,096 entries the cache stays within
// a few megabytes whatever topics clients send.
const maxCachedTopic = 256

func (c *subscriberCache) store(topic string, e subscriberEntry) {
	if len(topic) > maxCachedTopic {
		return // answered afresh each time
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= subscriberCacheMax {
		c.m = make(map[string]subscriberEntry)
	}
	// A copy, even over an existing entry (assigning to a string key
	// replaces the stored key too): mochi's TopicName aliases the packet's
	// read buffer, payload included, which the key would otherwise keep
	// alive.
	c.m[strings.Clone(topic)] = e
	c.mu.Unlock()
}

// added invalidates every entry: a subscription was added.
func (c *subscriberCache) added() { c.gen.Add(1) }

// OnSubscribed invalidates the subscriber cache (mochi added the
// subscriptions before calling it).
func (h *ingestHook) OnSubscribed(_ *mqtt.Client, _ packets.Packet, _ []byte) {
	h.subs.added()
}
