// Package pipeline is the core of Runnel: it turns the readings WAL into
// windows, alerts and Kafka records. Pipeline replays the WAL from the
// newest checkpoint, then follows it; feeds each batch to the windows
// engine and, with the windows it closed, to the alerts engine; turns
// every output into a record in the outbox of its kind (Kinds, the one
// table of record kinds: outbox and topic, schema, key and id), appended
// off the stream goroutine (writer.go); publishes alert events as they
// are emitted; and checkpoints the engines' state once the
// WAL has fsynced what it covers and the outboxes hold what it emitted.
//
// # Seams
//
// It declares what it needs of the stages around it (ports.go): Log (the
// readings WAL: readers, Notify, the Sync barrier, SkipTo, Release),
// Outbox, Checkpoints and LateLog. The gateway passes the real ones
// (FromWAL, *forward.Outbox, FromCheckpoints, its late log); tests pass
// fakes that inject faults. It imports wal, windows, alerts and forward
// for their types; gateway imports it, never the reverse.
//
// # Promises
//
//   - Nothing lost, nothing repeated: outputs carry their origin (WAL
//     index, position, configuration fingerprint); after a crash the replay
//     regenerates them and skips those an outbox holds. Late readings
//     likewise (LateLog).
//   - Checkpoints on their interval and at shutdown under any traffic:
//     Log.Sync forces the fsync best-effort appends skip.
//   - A checkpoint never stalls the stream for long nor copies the state:
//     it is streamed, a chunk between batches, copy-on-write per series,
//     and committed (fsyncs) off the stream goroutine (checkpoint.go).
//   - Indexes are never reused: a WAL that ends below what the checkpoint
//     or an outbox covers skips past it (Log.SkipTo), logged and counted.
//   - Storage errors hold, never stop (hold.go): retried with backoff,
//     reported by Health, resumed on their own.
//   - Configuration changes neither lose nor invent outputs (config.go).
package pipeline
