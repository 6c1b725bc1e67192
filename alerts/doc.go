// Package alerts is Runnel's threshold alert engine: configured rules, one
// state machine per (rule, series, field), and the firing and resolved
// events they produce. It is a pure engine: no goroutines, no I/O, no
// clock. The gateway feeds it from the goroutine that feeds the windows
// engine, checkpoints it with the windows state, and publishes its events
// (MQTT `alerts/<rule>/<TopicLevel(series)>`, HTTP, SSE, Kafka).
//
// # Rules
//
// A rule matches readings by measurement, tags and field (exact strings or
// path.Match globs, see Match), judges either the raw reading ("reading")
// or an aggregate of a closed window of one window spec ("mean" of
// "tumbling:1m"), and compares it: > >= < <= a threshold, outside a
// low..high band, or "missing" (no reading for For). Config.Validate checks
// every combination and reports every problem at once.
//
// # State machine
//
// Each (rule, series, field) moves inactive → pending → firing → inactive:
//
//   - inactive → pending when a value meets the condition; the alert's
//     start is that value's event time. With For = 0 it fires at once.
//   - pending → firing on the first value that still meets the condition
//     at least For after the start: one "firing" event. Time is event time
//     (the reading's TimeNs, or the window's EndNs for aggregates), so a
//     pending alert of a device that stops sending stays pending (pair it
//     with a missing rule).
//   - pending → inactive, silently, on a value that does not meet it.
//   - firing → inactive on a value past the clear edge: one "resolved"
//     event with the firing event's ID. Hysteresis: for > and >= the value
//     must be below Clear, for < and <= above it; for outside within
//     [ClearLow, ClearHigh]. Without Clear it resolves as soon as the
//     condition is false, so values hovering around a threshold flap;
//     a clear edge a noise amplitude away from the threshold stops that.
//
// Out of order: a value older than the newest one its state already
// evaluated is counted (Stats.OutOfOrder) and ignored, so late data never
// fires, resolves or restarts an alert retroactively. Equal times are
// evaluated in order. NaN and ±Inf are counted (NonFinite) and ignored, so
// events always encode as JSON.
//
// Missing data works in processing time: the largest batch IngestNs
// applied so far (the WAL stamps it; the wall clock is never read). A
// matching reading creates or refreshes the state and records that time.
// After the readings of every batch (an empty batch is a clock tick), a
// state silent for at least For fires once (Value: seconds of silence,
// Threshold: For in seconds, StartNs: the last reading's ingest time); the
// next matching reading resolves it (AtNs: that batch's ingest time).
//
// Alert IDs are a hash of gateway id, rule, series, field and start time:
// the same for the firing and the resolved event, and the same on replay.
//
// # Order and determinism
//
// Apply works in a fixed order: the batch's readings in order (each
// against its matching rules in config order), then the closed windows in
// order, then the missing-data rules in config order (states by last
// reading). Events carry (wal index, seq). Everything the engine decides
// depends only on the sequence of Apply calls, so a replay gives the same
// events; MarshalBinary at any point, UnmarshalBinary into a new engine
// and the remaining Apply calls give exactly the events of an
// uninterrupted run, also in the middle of a For period.
//
// # Memory
//
// At most MaxStates states. Pending and firing states are never evicted
// (that would lose a resolved event). When a new state is needed and
// there is no room, the engine evicts the least recently evaluated
// inactive threshold state (Stats.Forgotten: only its out-of-order guard
// is lost), else the least recently seen watched missing-data state
// (Stats.Evicted: that series is no longer watched until it sends again),
// else the new state is not created and the value not evaluated
// (Stats.Overflow). Which rules match a (series, field) is cached in a
// two-generation map of bounded size, so a reading that matches no rule
// costs one map lookup and no allocation, and memory does not grow with
// cardinality. Recent keeps the last Config.Recent events.
//
// # Reload
//
// Reload keeps the states of rules whose name and definition
// (fingerprint) are unchanged and drops the others without an event: a
// changed rule starts from inactive, and a consumer may hold a firing
// event whose resolved event will never come. A checkpoint records each
// state's rule fingerprint, so loading it into an engine with changed
// rules keeps the unchanged rules' state only.
//
// # Concurrency
//
// One mutex guards the engine. Apply, MarshalBinary and UnmarshalBinary
// belong to the goroutine applying the WAL; Active, Recent, Rules and
// Stats may be called from any goroutine and return copies.
package alerts
