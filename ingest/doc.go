// Package ingest is where readings enter Runnel: the embedded MQTT broker,
// the UDP line-protocol listener, the InfluxDB-compatible HTTP write
// handler, and the payload decoders (JSON telemetry, biosignal batches,
// line protocol) they share. It turns payloads into wal.Readings and hands
// them to an Appender it declares itself (the gateway puts the readings WAL
// behind it); it knows nothing of windows or Kafka.
//
// # Acknowledged only when durable
//
// An acknowledgement is a promise that the readings survive a crash or a
// power cut, so it is sent only after the WAL's group commit that holds
// them has been fsynced:
//
//   - MQTT QoS 1. mochi-mqtt calls the OnPublish hook on the publishing
//     client's own read goroutine, before it would write the PUBACK
//     (server.go processPublish, v2.7.9). The hook decodes the payload,
//     queues the readings with Appender.Append (AppendAsync underneath: the
//     read loop goes straight on to the client's next message), records the
//     packet id in the client's ack window, and returns the packet marked
//     as an ignored QoS 0 message, so mochi neither acks nor delivers (not
//     ErrRejectPacket: mochi boxes the packet into a debug log call for
//     that, an allocation per message). When a group commit completes, the
//     WAL calls back in index order; the client's acker goroutine takes the
//     run of finished entries at the head of its window and writes their
//     PUBACKs, oldest first [MQTT-4.6.0-2], in one socket write (4 bytes
//     each, under the client's lock, as mochi's own WritePacket writes), then
//     publishes the messages to local subscribers through mochi's inline
//     client. One group commit thus releases many messages of one client
//     with one fsync and one write: a client with 1,000 messages in flight
//     is pipelined, not held to one fsync per message, and the write
//     coalescing is the main saving of CPU per message against a broker
//     that writes each PUBACK on its own. Every QoS 1 publish of a client,
//     stored or not, goes through this window, so no PUBACK overtakes
//     another.
//   - Bounded memory, backpressure. The window holds at most
//     mqtt.receive_maximum entries (the receive maximum told to v5
//     clients). A client at the limit blocks in OnPublish, which stops its
//     read loop: TCP slows that client, and only that client. A WAL whose
//     pending budget is full blocks the same way. Payloads are kept past
//     the append only when a local subscriber will get them.
//   - MQTT QoS 2. OnPublish blocks until the readings are durable, then
//     lets mochi send PUBREC and run PUBREL/PUBCOMP; this holds the
//     client's read loop for one fsync per QoS 2 message (documented; use
//     QoS 1 for throughput).
//   - HTTP POST /api/v2/write answers 204 after the points are durable,
//     503 with Retry-After when the WAL cannot take them.
//   - A failed append is never acknowledged. An MQTT v5 client gets PUBACK
//     0x80, then every MQTT client is disconnected, so it resends on
//     reconnect (a duplicate at worst: delivery is at least once).
//   - UDP and MQTT QoS 0 carry no acknowledgement: they are best effort.
//     Their readings are queued only if the WAL has room now (TryAppend),
//     else dropped and counted, so they never block a socket reader, and
//     they ride the next fsync rather than forcing one.
//
// # Bad input
//
// A payload with problems is counted by listener and reason (Stats), kept,
// cut to a limit, in the dead-letter log (DeadLetters, on disk, readable
// with Recent), and answered precisely where the protocol can carry it:
// MQTT v5 PUBACK 0x99 with a reason string when a message holds no usable
// reading; HTTP 400 with the line and column of the first errors. A bad
// line, object, field or sample never drops its good neighbours: those are
// stored and acknowledged as usual. MQTT 3.1.1 clients cannot be told; their
// bad payloads are acknowledged, counted and kept.
//
// # What the broker bounds
//
// Packet size, clients, messages in flight per client, keep-alive (a
// client asking for none gets mqtt.max_keep_alive), a deadline for sockets
// that never send CONNECT (mochi sets none), session expiry, queued
// messages per client, and retained messages per client. Quotas against
// one hostile client or host: subscriptions per client
// (mqtt.max_subscriptions), the payload bytes of all retained messages and
// retained wills and the largest one retained (max_retained_bytes,
// max_retained_message_bytes; 0x97 for a will), TCP and TLS sockets that
// have not sent CONNECT (max_pending_connects: closed at accept) and open
// sockets per remote host (max_connections_per_source: 0x9F). The TCP and
// TLS accept loop retries failures (EMFILE) with back-off from 5ms to 1s,
// as net/http does, instead of ending for good; Broker.ListenerProblem
// says so meanwhile, and the gateway reports it in /readyz. The WebSocket
// listener is Runnel's own (brokerws.go): the same deadline and counts, an
// Origin allow-list (cross-origin browser upgrades refused) and optional
// wss. Not bounded yet: queued bytes per session (max_queued counts
// messages) and persisted sessions in total.
//
// # Who may do what
//
// Users authenticate with bcrypt hashes. An unknown username costs the same
// bcrypt work as a known one (a dummy hash), so timing does not reveal
// which usernames exist; at most GOMAXPROCS checks run at once; a source
// host with more than 5 failed logins is refused unchecked for a back-off
// that doubles from 200ms to 30s (Stats.AuthFailures, AuthThrottled).
//
// With mqtt.tls.username_from_cn a verified client certificate's Common
// Name is the username (no password), and mqtt.tls.only turns the plain
// listeners off.
//
// ACL filters limit what each user may publish and subscribe to; %u and %c
// in a filter stand for the username and the client id (telemetry/%u/+
// lets a device publish only as itself). An empty publish list allows
// every topic but the reserved ones; an empty subscribe list allows
// nothing. alerts/... and $SYS/... are reserved for the gateway: only a
// filter that literally starts with alerts/ or $SYS reaches them, never a
// wildcard. Checked at CONNECT (mochi checks neither), with 0x87 (3.1.1:
// 0x05): a will its user may not publish, or retain past the limits; a
// client id whose live or persisted session belongs to another username
// (checks and claims are serialised, so two CONNECTs cannot both pass). A
// QoS 1/2 publish mochi would drop silently ($SYS, wildcards) is answered:
// PUBACK 0x87 for MQTT 5, a disconnect for 3.1.1.
//
// mochi's log lines go through a handler that drops the attributes holding
// whole packets (payloads) and rate-limits warnings per message; denials
// are logged once per cause per 10 s with a count of those suppressed.
//
// The HTTP write endpoint allocates nothing by a declared Content-Length,
// bounds the time to receive a body (http_write.read_timeout), charges
// every body and its decoded readings to one budget for all writes in
// flight (http_write.max_inflight_bytes; 503 with Retry-After past it),
// and decodes and appends a body in chunks, so its readings never cost
// more than one chunk's.
//
// UDP carries no credentials: udp.allow_sources restricts the peers whose
// datagrams are taken (others are dropped and counted as source_denied,
// before any decoding), and the gateway binds an unfiltered UDP listener
// to loopback unless told otherwise.
//
// # Goroutines
//
// The broker owns mochi's listener and client goroutines and one acker per
// client that published at QoS 1; Close stops them all and waits. UDP owns
// its reader goroutines; Serve returns after they exit. DeadLetters owns
// one writer goroutine; Close drains and stops it. The HTTP handler runs on
// the gateway's server goroutines.
package ingest
