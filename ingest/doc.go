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
//     delivers the messages to local subscribers (see Delivering a durable
//     publish below). One group commit thus releases many messages of one client
//     with one fsync and one write: a client with 1,000 messages in flight
//     is pipelined, not held to one fsync per message, and the write
//     coalescing is the main saving of CPU per message against a broker
//     that writes each PUBACK on its own.
//   - One ordered path for every QoS 1 acknowledgement. Every QoS 1
//     publish of a client goes through this window: stored, not telemetry,
//     with no usable reading (0x99), refused by the ACL (0x87: the publish
//     ACL is checked in OnPublish, where the QoS is known, rather than in
//     mochi's OnACLCheck, which would write the PUBACK itself) or on a topic
//     mochi drops ($SYS: 0x87 from OnPacketProcessed). Reason-coded
//     PUBACKs are encoded by the acker into the same write as the plain
//     ones (never through cl.WritePacket, which buffers behind queued
//     deliveries while a direct write does not), so no PUBACK overtakes
//     another [MQTT-4.6.0-2]. PUBRECs all go through mochi's WritePacket on
//     the read goroutine, the Runnel ones included, so they keep their
//     order too. Acks carry a reason string at most, never the publisher's
//     user properties (Compatibilities.NoInheritedPropertiesOnAck).
//   - Bounded memory, backpressure. The window holds at most
//     mqtt.receive_maximum entries (the receive maximum told to v5
//     clients). A client at the limit blocks in OnPublish, which stops its
//     read loop: TCP slows that client, and only that client. A WAL whose
//     pending budget is full blocks the same way. Payloads are kept past
//     the append only when a local subscriber will get them.
//   - MQTT QoS 2. OnPublish blocks until the readings are durable, then
//     lets mochi send PUBREC, deliver the message itself (properties and
//     all) and run PUBREL/PUBCOMP; this holds the client's read loop for
//     one fsync per QoS 2 message (documented; use QoS 1 for throughput).
//     A v5 failure is answered by the hook with a reason-coded PUBREC
//     (0x99, 0x87, 0x80): mochi answers a hook's reason code with a PUBACK,
//     which a QoS 2 exchange does not allow.
//   - HTTP POST /api/v2/write answers 204 after the points are durable,
//     503 with Retry-After when the WAL cannot take them.
//   - A failed append is never acknowledged. An MQTT v5 client gets PUBACK
//     0x80, then every MQTT client is disconnected, so it resends on
//     reconnect (a duplicate at worst: delivery is at least once).
//   - UDP and MQTT QoS 0 carry no acknowledgement: they are best effort.
//     Their readings are queued only if the WAL has room now (TryAppend),
//     else dropped and counted, so they never block a socket reader, and
//     they ride the next fsync rather than forcing one. QoS 0 readings of
//     every client are gathered into shared appends (coalesce.go): a lone
//     publish is appended at once, and publishes that arrive while the
//     previous group is being appended share one WAL record, so a flood of
//     one-reading messages does not cost a record each. A client that
//     mixes QoS levels on one series may see a QoS 0 reading stored after
//     its next QoS 1 one; windows place both by event time, and an alert
//     rule, which skips readings older than the last it saw, may skip it.
//
// # Delivering a durable publish
//
// A QoS 1 publish reaches subscribers after its PUBACK exactly as its
// publisher sent it. The acker re-injects the packet through mochi's own
// publish path, Server.InjectPacket → processPublish (v2.7.9), not
// Server.Publish (which builds a new packet with no property and the
// inline client as origin). The injecting client is an inline client
// (srv.NewClient(nil, mqtt.LocalListener, id, true)) made once per
// publishing connection and named after the publisher, protocol version
// 5. So:
//
//   - every MQTT 5 property is kept (payload format, content type,
//     response topic, correlation data, user properties, expiry);
//   - the origin is the publisher's client id: no-local [MQTT-3.8.3-3] and
//     retain-as-published work; mochi sets subscription identifiers per
//     subscriber (publishToClient) and retains through retainMessage, with
//     the v5 expiry its sweeps honour [MQTT-3.3.2-5];
//   - a topic alias belongs to the publisher's connection: mochi resolved
//     it to the topic name before OnPublish, and the delivered copy drops
//     the alias (and carries no subscription identifier, which
//     PublishValidate refuses; its packet id stays non-zero, as it wants
//     for QoS > 0);
//   - message expiry counts from receipt: mochi starts it at the injection,
//     so the acker subtracts the time spent storing (rounded up to whole
//     seconds, mochi's unit) and drops a message that expired meanwhile.
//
// Inline clients skip the ACL check, the inflight store and acks, and
// OnPublish passes their packets through. Only a publish someone will get
// (a subscriber now, or retained) is copied for delivery. mochi counts an
// injected packet as received once more in its $SYS statistics. An empty
// retained publish deletes the topic's retained message [MQTT-3.3.1-6] and
// is not decoded as telemetry, whatever its topic.
//
// # Bad input
//
// A payload with problems is counted by listener and reason (Stats), kept,
// cut to a limit, in the dead-letter log (DeadLetters, on disk, readable
// with Recent), and answered precisely where the protocol can carry it:
// MQTT v5 PUBACK/PUBREC 0x99 with a reason string when a message holds no
// usable reading; HTTP 400 with the line and column of the first errors.
//
// "No usable reading" is defined once (Result.requireReadings) and applied
// to every message on every listener (MQTT payload, UDP datagram, HTTP
// body): a message that decodes cleanly to no reading at all — `{}`, `[]`,
// `{"temp":"hot"}`, lines of string fields only, an empty body — is
// rejected whole as no_readings, naming its string fields and the line of
// the first; a message whose problems are already reported (a syntax
// error) keeps them. MQTT 5 gets 0x99, 3.1.1 is acknowledged, counted and
// dead-lettered, HTTP gets 400 (InfluxDB 2 also refuses a write with no
// point). Event times beyond ±2^62 ns (MinTimeNs, MaxTimeNs), which the
// windows engine cannot place, are rejected at decode as out_of_range,
// never acknowledged and then dropped. A bad
// line, object, field or sample never drops its good neighbours: those are
// stored and acknowledged as usual. MQTT 3.1.1 clients cannot be told; their
// bad payloads are acknowledged, counted and kept.
//
// # What the broker bounds
//
// Packet size, clients, messages in flight per client, keep-alive (a
// client asking for none gets mqtt.max_keep_alive; a silent TCP or TLS
// client is dropped after 1.31 to 1.5 × its keep-alive: the socket
// deadline mochi moves per packet is re-armed only once it has moved an
// eighth of its span, see trackedConn.SetDeadline), a deadline for sockets
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
// PUBACK 0x87 for MQTT 5, a disconnect for 3.1.1. Publishes are checked in
// OnPublish (see the ack path above), after mochi resolved a topic alias.
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
// client that published at QoS 1 (the inline client it delivers with has
// no goroutine); Close stops them all and waits. UDP owns
// its reader goroutines; Serve returns after they exit. DeadLetters owns
// one writer goroutine; Close drains and stops it. The HTTP handler runs on
// the gateway's server goroutines.
package ingest
