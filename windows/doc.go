// Package windows is Runnel's event-time window engine: it turns the
// readings of the WAL into closed window summaries per series and field
// (tumbling, with quantiles, and sliding), group sketches across devices
// (HyperLogLog distinct counts, Count-Min top-k), reservoir samples, and the
// per device watermarks that decide when a window closes.
//
// # What it owns
//
// Engine holds all window, sketch and watermark state in memory, under one
// RWMutex: Apply takes the write lock, the read API (Series, Windows,
// Quantiles, Samples, Groups, Stats, MarshalBinary) the read lock, and
// returns copies owned by the caller. It starts no goroutine, does no I/O
// and never reads the clock.
//
// # Time
//
// Event time is the reading's TimeNs. Each device (the `device` tag of a
// series, else the series key) has a watermark: its largest event time
// minus AllowedLateness, raised to the end of its open windows when it goes
// idle. A reading below its device's watermark is late: counted, handed to
// the LateSink and applied nowhere. Windows of a series close once its
// device's watermark reaches their end. A group window closes once every
// active device that contributed to it has a watermark at or past its end.
//
// Processing time is the largest batch IngestNs applied so far; it alone
// decides idle devices (IdleTimeout) and series eviction (SeriesTTL),
// checked at most once per second of it, after a batch's readings. Replaying
// the same batches from the same state therefore gives the same emissions
// and the same state, byte for byte (MarshalBinary), which is what the
// durability contract needs: a checkpoint covering WAL index i, plus a
// replay from i+1, reproduces the live run.
//
// # Memory
//
// State is charged against MemoryBudget as it is allocated (see memory.go).
// A new (series, field) is admitted only if its reservation still fits;
// otherwise its reading goes to the series OverflowSeries with the same
// field, judged and windowed as a reading of that series (device
// `_overflow`), and is counted with an HLL of the series that overflowed.
// A new group window that would not fit goes to its group's OverflowKey.
// Evicted series and closed windows return their sketches to small pools,
// so steady-state updates do not allocate. The closed history kept for
// queries is encoded (hist.go): a record takes 19 to about 90 bytes
// instead of a 104-byte struct, while it is charged as the struct.
//
// # The update path
//
// Apply works through a batch 8 readings at a time: prefetch.go first
// finds their series (seriesindex.go: open addressing on the key's seeded
// 64-bit hash) and pairs and loads the state their updates touch
// (windows, panes, the Count-Min counters of their top-k keys), one step
// of every reading's chain of pointers at a time, then the
// readings are applied in order. With thousands of pairs visited in turn
// no update finds its state in a cache, and this lets their cache misses
// overlap instead of queueing. The chunks are pipelined: while one is
// applied, the series of the next and the index slots of the one after
// are already loading (their key hashes kept for prefetch), so those steps
// of the chains wait behind the work instead of before it. The lookups
// change nothing, so results are those of applying the readings one by
// one. A tumbling window holds its latest values (up to 4) back from its
// quantile sketch and gives them to it in arrival order, five at a time
// (sketches.Quantile.AddKeyed): an update writes the window alone, and the
// sketch's cache lines are loaded once per five values. A window
// makes its sketch on its fifth value (one of fewer values has the sketch
// of its pending values, built when needed), so a series reporting less
// often than that costs no sketch memory.
//
// # Guarantees and limits
//
//   - Updates are O(1) per reading and window spec; a sliding window merges
//     its panes once, when it closes.
//   - Emissions of one Apply come in processing order: per reading, the
//     windows it closed (oldest end first, tumbling before sliding, by spec
//     order, then start, series, field) and then the group windows it
//     closed (by group, start, key); then idle closes by device key; then
//     evictions by series key.
//   - A group window once closed is not reopened: a later reading for it
//     (possible because watermarks are per device) still counts in its
//     series' windows but not in the group (Stats.GroupLateReadings).
//   - Readings with event times beyond ±2^62 ns are counted and dropped.
//
// The checkpoint format is described in CHECKPOINT.md.
package windows
