package ingest

import (
	"strings"
	"sync"
	"testing"
	"unsafe"
)

// TestSubscriberCacheOwnsItsKeys: mochi's TopicName aliases the packet's
// read buffer (an unsafe string over it, payload included), so a cache
// entry keyed by it pinned the whole packet: up to 4096 × 256 KiB. The
// attack suite's retained flood (4,000 distinct topics, 60 KB payloads)
// took the gateway from 38 to 337 MiB. A stored key must be a copy.
func TestSubscriberCacheOwnsItsKeys(t *testing.T) {
	buf := append([]byte("state/r/1"), make([]byte, 60_000)...)
	topic := unsafe.String(&buf[0], len("state/r/1")) // as mochi decodes it
	var c subscriberCache
	c.has(topic, c.lookup(topic, codecIs("")), func(string) bool { return true })
	buf[0] = 'x' // mochi reuses or frees the buffer
	if _, ok := c.m["state/r/1"]; !ok {
		t.Error("the cache's key aliases the packet buffer: it pins the packet and changes with it")
	}
}

// The same holds when an entry is stored again (a subscription made its
// answer stale): assigning to an existing string key replaces the key.
func TestSubscriberCacheOwnsItsKeysOnUpdate(t *testing.T) {
	var c subscriberCache
	c.has("state/r/1", c.lookup("state/r/1", codecIs("json")), func(string) bool { return false })
	c.added()
	buf := append([]byte("state/r/1"), make([]byte, 60_000)...)
	topic := unsafe.String(&buf[0], len("state/r/1"))
	e := c.lookup(topic, codecIs(""))
	if e.codec != "json" {
		t.Errorf("codec %q, want the cached json", e.codec)
	}
	if !c.has(topic, e, func(string) bool { return true }) {
		t.Error("a stale answer was used after a subscription was added")
	}
	buf[0] = 'x'
	if e, ok := c.m["state/r/1"]; !ok || !e.any {
		t.Errorf("entry %+v, %v after the update: its key aliases the packet buffer", e, ok)
	}
}

// TestSubscriberCacheSkipsLongTopics: the cache holds up to 4,096 topics,
// so it keeps only topics of a bounded length (MQTT allows 64 KiB): a
// client cycling through long topics cannot park megabytes in it, and
// such a topic still gets its answers, computed each time.
func TestSubscriberCacheSkipsLongTopics(t *testing.T) {
	var c subscriberCache
	long := "telemetry/" + strings.Repeat("x", maxCachedTopic)
	e := c.lookup(long, codecIs("json"))
	if e.codec != "json" || !c.has(long, e, func(string) bool { return true }) {
		t.Fatalf("long topic answered codec %q", e.codec)
	}
	if len(c.m) != 0 {
		t.Fatalf("a %d-byte topic was cached", len(long))
	}
	c.lookup("telemetry/a/env", codecIs("json"))
	if len(c.m) != 1 {
		t.Fatalf("%d entries after a short topic, want 1", len(c.m))
	}
}

// codecIs is a codecFor answering codec, with no decoders, for every topic.
func codecIs(codec string) func(string) (string, *sync.Pool) {
	return func(string) (string, *sync.Pool) { return codec, nil }
}
