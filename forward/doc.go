// Package forward keeps Runnel's outbound records on disk until Kafka has
// them: durable outboxes, and the producer that drains them at-least-once
// (or, with kafka.delivery exactly_once, in Kafka transactions, exactly
// once for read_committed consumers) through outages.
//
// forward knows records (topic, key, value, headers, id), not windows or
// alerts: the gateway turns closed-window summaries, alert events and
// sketch snapshots into Records and appends them to the outbox of their
// kind. It is the only package that imports franz-go.
//
// # Outbox lifecycle
//
// An Outbox is one wal.Log instance (dir/<kind>/log, 64 KiB to 1 MiB
// segments: a sixteenth of its quota) plus its acknowledged position
// (dir/<kind>/ack, wal checkpoint files; FORMAT.md). Append encodes the
// records (versioned, FORMAT.md), writes them with the log's group commit
// and returns once they are fsynced; it never touches the network. A
// Forwarder reads the outbox from the acknowledged position, and Kafka's
// acknowledgements move that position forward. When it moved, at most once
// a second per outbox (and at Close), the position is written, atomically;
// the log is then released behind it, so acknowledged segments leave the
// disk. The rate is bounded for flash wear: each write is two fsyncs, so
// a gateway's three outboxes cost at most 6 fsyncs a second for their
// positions whatever the traffic (every 50 ms while a block-policy append
// waits for room, as only a written position frees segments). The segment holding
// the newest entry is always kept, so Last can tell the gateway after a
// crash what it had already appended (its Origin).
//
// # Full outbox
//
// Each outbox has a disk quota (OutboxConfig.MaxBytes). When an append
// would exceed it:
//
//   - drop_oldest (default): the oldest segments go, sent or not, until the
//     append fits (never the newest segment). Unsent entries dropped are
//     counted (OutboxStats.Dropped) and logged; the reader skips them.
//     Append does not wait for Kafka. Alerts get the largest default quota.
//   - block: Append waits, honouring its ctx, until Kafka acknowledged
//     enough; the caller's pipeline stalls and nothing is lost. With
//     forwarding off it waits until ctx ends.
//
// # Full disk
//
// An append that fails (a full disk, an I/O error) returns the error and
// stores nothing; the log cuts itself back to what it acknowledged and
// reopens (wal.Log), so the same append can be retried and succeeds once
// space returns. Meanwhile Health reports the outbox cannot accept
// (Stats.Failing). A failed write of the acknowledged position is counted
// (AckWriteErrors) and retried at the persist rate; until it succeeds the
// outbox only resends more after a crash.
//
// # Delivery
//
// Each outbox has its own delivery loop and its own kgo producer client
// (acks=all, idempotent, compression, TLS and SASL from KafkaConfig). The
// loop works in rounds of at most 8192 records or 4 batches of bytes, so
// memory is bounded whatever the backlog: it reads entries, hands them to
// the producer in manual-flushing mode (buffered, nothing sent), lingers
// for more, flushes, and waits until every record of the round has an
// outcome. The acknowledged position then moves to the longest prefix of
// acknowledged (or skipped) entries. A round's Kafka records are views of
// the outbox's entries, not copies: it holds the log segments (1 MiB at
// most each) its entries lie in until its outcomes are in.
//
// On a failure the next round comes after a backoff (exponential from
// backoff.initial to backoff.max, full jitter; retried forever, while the
// outbox keeps filling within its quota) and sends, in outbox order, every
// entry after the prefix that was not acknowledged. Per-key order holds
// across retries: a key maps to one partition; within a round everything
// is buffered before anything is sent, kgo fails every record buffered
// behind a failed one in the same partition, and nothing more is produced
// until the round's outcomes are in. So for each key, consumers see the
// first occurrence of every id in outbox order (resends may repeat ids).
// A record Kafka refuses for itself (too large, invalid) is sent alone
// once more (the batch may have been too large), then skipped and
// counted (OutboxStats.Undeliverable); so is an entry that does not
// decode.
//
// # At-least-once, and where duplicates come from
//
// An entry leaves the outbox only after Kafka acknowledged it with
// acks=all. A record may reach Kafka more than once when:
//   - an attempt fails after the broker wrote some of it (a timeout, a lost
//     connection): its unacknowledged records are sent again;
//   - the process stops or crashes after Kafka acknowledged records but
//     before the position was persisted (up to a second of them, or the
//     records in flight at a shutdown): they are sent again on start;
//   - the newest ack file is unreadable: the one before it is used.
//
// Idempotent production removes duplicates only within one producer
// session. Every record carries its deterministic id in the runnel-id
// header, first among its headers, so consumers drop the duplicates.
//
// # Exactly once (kafka.delivery: exactly_once)
//
// Each outbox is sent by its own transactional producer, transactional id
// runnel-<client_id>-<kind> (client_id defaults to the gateway id). A round
// is one transaction: its records and one position record, the outbox
// index the round advances to, keyed <client_id>|<kind> in the compacted
// positions topic (kafka.positions_topic, created with one partition and
// cleanup.policy=compact when missing). Kafka commits both or neither. The
// round is flushed and every promise checked; any failure aborts the whole
// transaction and, after the backoff, the sender synchronises again.
//
// Synchronising (at start and after any failure) commits a transaction
// holding only a sync record in the same partition: its InitProducerID
// fences any older producer with the same id and aborts its open
// transaction (a gateway killed between produce and commit), and its
// offset bounds the read that follows: the partition is read with
// isolation level read_committed up to it, and sending resumes after the
// last committed position found, not after the local ack file, which is
// written after the commit and may lag it (a gateway killed between commit
// and the local write). The local file is used only while Kafka has no
// position, or when Kafka's is behind it (the positions topic lost). The
// outbox is released only behind what Kafka committed; quotas and drop
// policies apply as in at-least-once mode (a dropped or undeliverable
// entry is counted and skipped: it is in no transaction, never half-sent).
//
// A producer fenced by a newer one with the same transactional id (a
// second gateway process with the same id) stops forwarding that outbox
// and reports it in Status.Fenced and FencedReason (the gateway's /readyz
// turns not ready). A transaction Kafka aborted by its timeout while the
// uplink was down is recovered by kgo (KIP-360) and redone. The
// transaction timeout is 2*(request_timeout+linger)+5s, at least 10s.
//
// Consumers reading with read_committed see every record once, in per-key
// order; read_uncommitted consumers also see the records of aborted
// transactions. Readings enter the gateway at least once from clients and
// are de-duplicated in windows by the WAL index, so a summary is the same
// record whatever the crashes.
//
// # The idempotent-producer hang
//
// An idempotent kgo producer waits forever for the answer to a request it
// sent, ignoring contexts and record timeouts, so a broker that accepts
// connections and never answers would hang delivery (LIBRARY-NOTES). The
// at-least-once clients set AllowIdempotentProduceCancellation (kgo
// refuses it with a transactional id: a transactional round that
// outlives its deadline is aborted instead), and every round's
// records share an attempt context cancelled at request_timeout (plus
// linger): kgo then aborts the request and fails the records, which stay
// in the outbox for the next round. The context ends by cancellation, not
// by deadline, because kgo recognises a failed head-of-line record while it
// reloads its producer id only by context.Canceled. MetadataMinAge is a
// quarter of request_timeout (at most kgo's default, 5s), because kgo holds
// records after a broker failure until its next metadata refresh.
//
// # What it owns, and what it does not do
//
// An Outbox owns its directory (with the log's exclusive lock) and one
// goroutine that persists the position; Close stops it. Forwarder.Run owns
// one goroutine and one kgo client per outbox, plus a probe goroutine with
// a client of its own that keeps Status.Connected meaningful when idle and
// when Kafka goes silent (a metadata request once Kafka was not heard from
// for 3s, answered within 5s or the uplink is down: a silent broker is
// reported within 8s, not at request_timeout); it returns after all have
// stopped. At least once, forward does not deduplicate (consumers do, by
// id); it creates no topic but the positions topic (exactly_once), and
// does not order records across keys or outboxes. A
// kgo client never adopts the new id of a recreated topic; the loop purges
// the topic from its client when Kafka reports UNKNOWN_TOPIC_ID.
package forward
