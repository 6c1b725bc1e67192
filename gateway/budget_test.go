package gateway

import "testing"

// TestDefaultsFitRSSBudget: issue 15 holds the gateway with the defaults
// to 128 MiB of peak RSS under each hostile client. The HTTP write path
// lets attackers keep the most live at once: every write in flight
// (http_write.max_inflight_bytes) and the WAL appends they wait on
// (wal.max_pending_bytes), on top of the idle heap (~14 MiB). The
// automatic memory limit lets the heap grow to autoLimit(live) before it
// collects, and the binary's mapped code adds ~12 MiB of RSS. With 32 MiB
// in flight that came to 140 MiB (the attack suite measured 67-121 MiB
// for 8 writers of 30 MB; 46-71 MiB with 20 MiB in flight).
func TestDefaultsFitRSSBudget(t *testing.T) {
	const idleHeap, code, budget = 14 << 20, 12 << 20, 128 << 20
	c := DefaultConfig()
	live := uint64(idleHeap + c.HTTPWrite.MaxInflightBytes + c.WAL.MaxPendingBytes)
	if rss := autoLimit(live) + code; rss > budget {
		t.Errorf("HTTP writes in flight %s + WAL pending %s: the heap may reach %d MiB, RSS %d MiB; want at most %d MiB",
			c.HTTPWrite.MaxInflightBytes, c.WAL.MaxPendingBytes, autoLimit(live)>>20, rss>>20, budget>>20)
	}
}
