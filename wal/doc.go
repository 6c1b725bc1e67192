// Package wal is Runnel's crash-safe write-ahead log: one log type over
// framed []byte records, used for the readings WAL and, as further
// instances with their own retention, for the forward outbox and the
// dead-letter and late logs. It also defines the Reading, the unit every
// later stage works on, and its compact batch encoding (reading.go).
//
// # What it guarantees
//
// An Append returns only when its records are durable under the configured
// sync mode: in batch mode (the default) after the fsync of the group
// commit that holds them, so an acknowledged record survives a crash of the
// process and a power cut. A record that is acknowledged is read back
// byte-identical and in index order after any restart; a record that is not
// acknowledged may or may not be there, never partly.
//
// # How, on top of tidwall/wal
//
// tidwall/wal stores segment files of uvarint-length-prefixed entries. It
// has no checksums, no tail repair, an inconsistent memory state after a
// failed write, unsafe concurrent reads, and keeps its tail segment in
// memory (see shared/LIBRARY-NOTES.md). Runnel builds it with one patch,
// which allocates a new tail segment's buffers whole instead of growing
// them by append (third_party/tidwall-wal/PATCHES.md). This package adds:
//
//   - Frames. Every record is wrapped in a frame with a magic, a version,
//     its index, its length and a CRC32C (frame.go, FORMAT.md), verified on
//     every read. A frame that fails is skipped, counted
//     (Stats.CorruptRecords) and logged; reading goes on.
//   - Group commit. One writer goroutine takes every queued append, writes
//     them with one WriteBatch, fsyncs once (and fsyncs the directory when a
//     segment file was created), then releases every waiter with its index
//     range. Pending appends are bounded in bytes (Config.MaxPendingBytes):
//     past it Append blocks, honouring its context, so a slow disk slows
//     the producers and memory stays fixed.
//   - Tail repair at open. A torn or corrupt tail of the last segment is cut
//     back to the last frame that verifies; when frames that verify follow
//     the damage, the segment is rewritten keeping them, with hole frames
//     for what was lost. Interrupted truncations are finished. The log
//     always opens; nothing before the damage is lost.
//   - Failure handling. A failed write or fsync fails every append of the
//     group (and of groups written but not yet synced): none is
//     acknowledged. The log is then closed, cut back to exactly the
//     acknowledged records, and reopened before it accepts again, so it
//     keeps working once the disk has space again.
//   - Bounded memory. Segment size and the read cache are configured (1 MiB
//     and one segment by default); the rolled tail is dropped from the cache
//     so an appending log holds about one segment.
//   - Barriers and skips. Sync(ctx, i) waits until an fsync covers index i,
//     forcing one, so an owner can checkpoint under a best-effort load that
//     always has unsynced records. SkipTo(ctx, i) passes the next index
//     over i with skip frames (FORMAT.md), so an index whose record was
//     lost from the tail is never given to a new record.
//   - Retention. The owner says which records it no longer needs (Release);
//     whole segments before that point go once the log is over its size or
//     a segment over its age (Config.RetentionBytes, RetentionAge). The log
//     never removes a record its owner still needs.
//
// # What it owns
//
// An open Log owns one writer goroutine (stopped and waited for by Close),
// its directory, and an exclusive flock on dir/LOCK so that two processes
// never share a log.
//
// # What it does not do
//
// It knows nothing of windows, alerts or Kafka; records are opaque bytes to
// the log. It does not retry a failed append for the caller: the caller
// decides (ingest does not acknowledge, and the client resends). Sync mode
// none does not survive a power cut; interval mode delays acknowledgements
// by up to its interval. A sync error on Linux may hide that earlier
// written pages were lost; cutting back to the acknowledged index and
// reopening is the recovery the log can offer.
package wal
