// Package gateway is Runnel's composition root: it loads the configuration,
// wires the pipeline stages together and runs them as one unit with a
// graceful shutdown. It is the only package that imports every stage; the
// stages know nothing of each other or of it.
//
// # What it owns
//
// A running Gateway owns, under <gateway.data_dir>:
//
//   - wal/: the readings WAL (wal.Log), the one log every listener appends
//     to; deadletters/ and late/: rejected payloads and late readings;
//   - checkpoints/: the windows and alerts state with the WAL index it
//     covers (package pipeline: replay from the newest checkpoint, then
//     follow);
//   - outbox/{summaries,sketches,alerts}/: the forward outboxes, one per
//     record kind (pipeline.Kinds; package pipeline turns closed windows,
//     group windows and alert events into Kafka records: keys, ids, JSON
//     schemas in schema/);
//
// and the processes around them: the embedded MQTT broker and the UDP
// listener (ingest), the windows and alerts engines fed by one pipeline
// goroutine (package pipeline, which gateway only wires), the forwarder
// when kafka.brokers is set, and the one HTTP server (http.addr, default
// :8080) with its ServeMux: /healthz, /readyz, /metrics, the write
// endpoint (ingest), the JSON API, live stream and dashboard (httpapi).
//
// Alert events go to the broker (retained QoS 1 on alerts/<rule>/<series>)
// and to the live stream as they are emitted; their outbox append runs off
// the stream (package pipeline). SIGHUP (handled
// by the runnel command) reloads the alert rules through ReloadAlerts.
//
// # Lifecycle
//
// New validates and allocates, starting nothing. Run starts the stages
// sinks first (WAL, dead letters, outboxes and the stream, forwarder, then
// HTTP, MQTT and UDP), so nothing is accepted before it can be stored, and
// then blocks as a run group: the first component that fails, or the
// cancellation of ctx, stops everything. Shutdown follows the data, in
// reverse order of starting: the listeners stop accepting (open live
// streams are ended), the forwarder stops, the stream writes a last
// checkpoint, the outboxes and the WAL are flushed and closed.
//
// The whole shutdown runs under context.WithoutCancel within
// gateway.shutdown_timeout; past it Run returns an error saying so. The
// HTTP stage is bounded on its own: requests in flight get a quarter of the
// timeout (at most 3s) to finish, then the connections left are closed, so
// one stalled client (headers sent, body never) cannot starve the final
// checkpoint and the closing of the outboxes and the WAL. Run returns only
// after the goroutines it started have exited.
//
// While it runs, Run also sets the Go runtime's soft memory limit:
// gateway.memory_limit, or by default one that follows the live heap
// (memlimit.go: a 28 MiB floor for a small gateway, out of the way of a
// large one); GOMEMLIMIT wins over both.
//
// # Secure by default
//
// As mosquitto 2.0 does, New moves every listener that nothing protects to
// loopback (security.go): MQTT without users (or with anonymous access on),
// HTTP without http.tokens, UDP without udp.allow_sources. Run logs one
// line naming what moved and how to open it: configure the credentials
// (`runnel init` writes them), or set security.allow_anonymous_network to
// listen on all interfaces without authentication. http.tokens also guard
// the write endpoint when http_write.tokens is empty. UDP is off unless
// udp.addr is set, and the log warns when it is reachable unfiltered while
// the other listeners demand credentials. security.require_credentials
// (set by the Raspberry Pi and industrial profiles) refuses to start
// without MQTT users and HTTP tokens.
//
// # Configuration
//
// Config is composed of one section per stage (gateway, log, security, wal, http,
// mqtt, udp, http_write, dead_letters, windows, checkpoint, alerts, kafka),
// each a struct with yaml tags, Go types that carry units (time.Duration,
// wal.ByteSize), and its own Validate. Load is the single load path of
// `runnel run` and `runnel check`:
//
//  1. start from DefaultConfig;
//  2. apply the YAML file, strictly: it is walked against the struct by its
//     yaml tags, so an unknown key is an error listing the allowed keys and
//     an unparseable value is an error at its line;
//  3. apply RUNNEL_* environment variables (see EnvVars);
//  4. resolve an empty gateway.id from /etc/machine-id, else the hostname;
//  5. validate.
//
// Every problem is reported at once, one per line, sorted by line, as
// `FILE:LINE: key.path: what is wrong and what is allowed`. A value set by
// the environment is reported as `env RUNNEL_X: key.path: ...`.
//
// Environment variable names are derived from key paths: RUNNEL_ plus the
// path in upper case with dots as underscores (wal.segment_bytes is
// RUNNEL_WAL_SEGMENT_BYTES). Every scalar key and every list of scalars has
// one; a list is written comma-separated ("a:9092, b:9092"). A few keys also
// have a short alias (RUNNEL_DATA_DIR for gateway.data_dir); setting both
// names is an error. A RUNNEL_ variable that names no key is an error, so a
// typo cannot silently leave a default in place.
package gateway
