// Package fleet is `runnel fleet`: the central service that merges every
// gateway's closed windows and group sketches into fleet-wide windows.
//
// Any number of instances run in one Kafka consumer group (franz-go), in
// two stages, as Kafka Streams does:
//
//   - rekey reads runnel.summaries and runnel.sketches (read_committed) and
//     writes each record, unchanged with its headers, to the repartition
//     topic keyed by fleet key: measurement, field, window spec, the
//     fleet.group_by tags and the window start (never gateway or device);
//     group sketches by group, group key, size, the fleet.group_by tags and
//     start: a gateway group by several attributes (by: measurement,tag:site)
//     writes its key as a series key, env,site=plant1, whose measurement is
//     the group key and whose tags give the group-by values, so sketches
//     merge per site as summaries do (other gateway keys carry no tags:
//     empty values). The partition is
//     a hash of the key without the start (the lineage), so a window and
//     the one before it live together.
//   - merge reads the repartition topic, so one instance owns each fleet
//     key, de-duplicates by runnel-id, merges (count, sum, min, max; mean
//     and M2 by Chan et al.'s parallel update; sketches.Quantile, HLL and
//     TopK merges) and closes a window when every gateway of its lineage's
//     previous closed window has sent at least as many records, or after
//     fleet.grace. A record after the close yields a corrected record
//     (revision + 1) under the same key.
//
// Both stages are consume-transform-produce in kgo.GroupTransactSession
// transactions: read_committed input, output and input offsets committed
// together. The merge stage writes each changed window's state to the
// compacted changelog (to the partition number of its input partition) in
// the same transaction as its output to runnel.fleet, so an instance that
// is assigned a partition restores it from the changelog, read_committed
// up to the last stable offset, never from the start of the input. An
// aborted transaction drops all local state and restores it the same way.
//
// Placement: a fleet window's partition is chosen by its lineage, so the
// work spreads over as many instances as there are lineages (measurement x
// field x window spec x group-by values, and sketch groups) up to the
// partition count; a fleet with one measurement and no group_by merges on
// one instance. Lineages are kept for good (one small record each), so a
// record for a window older than its lineage's latest closed one that is no
// longer held (fleet.retain) is dropped and counted, never re-opened as a
// partial window that would overwrite the full one on the compacted topic.
//
// HTTP (Handler): every instance answers every query alike, whoever owns
// the keys. Answers come from a view each instance keeps of two topics,
// read_committed, all partitions: runnel.fleet for closed windows and the
// changelog for the latest committed state of every open window (as a
// Kafka Streams standby replica of every partition would). Nothing is
// forwarded, so an answer never depends on another instance being up; it
// holds only committed merges and lags the owner by one transaction. The
// price is that each instance reads the whole changelog and holds every
// open window's state (sketches encoded until a query renders them).
// Until the view has read both topics to their ends as of its start, an
// answer carries "partial": true.
//
// Formats: input by gateway/schema/summary.schema.json and
// sketch.schema.json (decoded by the fleet's own structs), output by
// fleet/schema/fleet.schema.json.
package fleet
