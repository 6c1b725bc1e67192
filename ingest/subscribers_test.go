package ingest

import (
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
	c.has(topic, func(string) bool { return true })
	buf[0] = 'x' // mochi reuses or frees the buffer
	if _, ok := c.m["state/r/1"]; !ok {
		t.Error("the cache's key aliases the packet buffer: it pins the packet and changes with it")
	}
}
