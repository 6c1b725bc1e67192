// Package conformance is a black-box MQTT 3.1.1 and 5.0 conformance suite
// for the gateway's embedded broker, written from the specifications
// (OASIS MQTT Version 5.0 and 3.1.1): each test cites the normative
// statements it checks ([MQTT-x.y.z-n], or the section for non-normative
// text). The package holds only tests and this doc.
//
// # Targets
//
// TestMain starts two brokers and every test runs once against each, as
// the subtests TestX/bare and TestX/gateway, in the same run:
//
//   - bare: mochi-mqtt/server/v2 in-process on 127.0.0.1:0 with
//     auth.AllowHook and the capabilities the gateway sets where they show
//     on the wire (maximum packet size 256 KiB, receive maximum 1024,
//     inflight and queue 1024, session and message expiry caps 3600 s);
//     none of Runnel's hooks.
//   - gateway: the runnel binary, built once with go build, run as
//     `runnel run` with its defaults on loopback ports (RUNNEL_*_ADDR
//     127.0.0.1:0, a temp data dir, gateway id conf-gw, JSON logs); the
//     MQTT and HTTP addresses come from its "gateway started" log line. It
//     is stopped with SIGTERM and must exit 0. With -short the binary is
//     not built and only the bare broker runs.
//
// Clients: paho.golang (MQTT 5) where its API suffices, paho.mqtt.golang
// for 3.1.1, and a raw client (mochi's packets codec over TCP) for what
// paho hides or will not send: held-back acks, exact ack order, topic
// aliases, several subscription identifiers, oversized packets, alias 0.
// Tests are parallel and use unique client ids and topics; they wait on
// messages with deadlines. Absence ("not sent") is checked with a barrier:
// the client publishes to a topic only it subscribed and waits for that
// message, which the broker queues behind anything sent before it.
// Telemetry topics (telemetry/<dev>/<measurement>, JSON bodies) take the
// gateway's durable path; plain topics are only routed. Expiry tests wait
// on conditions with bounds of a few seconds (mochi sweeps expiries once a
// second in whole seconds); TestSessionExpiry/*/1s waits a fixed 3.5 s,
// as nothing announces an expired session.
//
// # Skips: known gateway gaps, mochi deviations, deliberate differences
//
// A test that fails today is skipped with a greppable reason, so the
// package passes in CI; RUNNEL_CONFORMANCE_STRICT=1 runs them all:
//
//	RUNNEL_CONFORMANCE_STRICT=1 go test -count=1 ./conformance/
//
// knownGatewayGap — the gateway fails, bare mochi passes: none today.
// Issue 16 closed every gap this suite found (QoS 1 publishes losing their
// MQTT 5 properties, expiry and origin; PUBACK order with reason codes;
// PUBREC echoing user properties; no 0x99 for payloads with no usable
// reading; QoS 2 failures without a reason code; an empty retained QoS 1
// telemetry publish not clearing the retained message). The ingest package
// doc explains the mechanism. TestAckOrder/gateway/v5 was a race; check a
// change to the ack path with
//
//	RUNNEL_CONFORMANCE_STRICT=1 go test -race -count=20 -run TestAckOrder ./conformance/
//
// mochiDeviation — mochi v2.7.9 deviates from the spec and the gateway
// inherits it (skipped on both targets):
//
//   - CONNACK carries no Topic Alias Maximum (server.go SendConnack never
//     sets it), yet mochi accepts aliases up to 65535: a conformant client
//     may not use client-to-server aliases [MQTT-3.2.2-17].
//     TestTopicAliasAdvertised. TestTopicAliasInbound sends them anyway and
//     checks that they resolve.
//   - CONNACK carries no Maximum Packet Size though the limit is enforced
//     (§3.2.2.3.6, [MQTT-3.2.2-15]): TestMaximumPacketSizeAdvertised.
//   - Messages held back by a client's Receive Maximum are later sent by
//     processPacket's NextImmediate, which deletes them from the inflight
//     store once written and picks them by creation time in whole seconds:
//     the client's acks are then ignored, the send quota never recovers,
//     later messages are never sent and the held ones can come out of
//     order: TestReceiveMaximumOutbound/*/qos{1,2}/release (QoS 1 always
//     fails; QoS 2 in some runs). Its parent checks what passes: no more
//     than Receive Maximum unacknowledged messages [MQTT-3.3.4-9].
//   - On resume, the session's messages are resent in creation-second order,
//     so a queued message can overtake the resent one [MQTT-4.6.0-1]:
//     TestSessionResume/*/qos1/order (map order: fails about half the runs).
//   - With Session Expiry 0, the socket is closed before the session is
//     deleted (after the OnDisconnect hooks), so an immediate reconnect can
//     find it [MQTT-3.1.2-23]: TestSessionExpiry/*/0s. A race: seen on the
//     gateway (its OnDisconnect hook widens the window) in some runs.
//   - Retained messages sent because of a new subscription carry no
//     subscription identifier: publishRetainedToClient passes the SUBSCRIBE's
//     filter, whose Identifiers map is empty, and publishToClient reads only
//     that map [MQTT-3.3.4-3]: TestSubscriptionIdentifierRetained.
//   - No Local on a shared subscription is answered with SUBACK reason
//     0x82, which SUBACK does not define (§3.9.3), and the connection is
//     kept; a Protocol Error calls for DISCONNECT 0x82 [MQTT-3.8.3-4]:
//     TestSharedSubscription/*/no-local (the refusal itself is checked).
//   - The keep-alive deadline is keepalive + keepalive/2 in whole seconds:
//     a client with a keep-alive of 1 s is cut after 1 s, not 1.5 s
//     [MQTT-3.1.2-22]: TestKeepAliveTimeout/*/1s (2 s is exact and runs).
//   - A refused 3.1.1 client is sent a DISCONNECT packet (server.go
//     DisconnectClient writes one whatever the version); in 3.1.1 only the
//     client sends DISCONNECT (§3.14):
//     TestReservedTopics/gateway/v4/no-disconnect-packet.
//
// bareDeviation — a Runnel requirement beyond the spec that bare mochi
// does not meet by default (skipped on bare):
//
//   - TestAckNoUserProperties/bare: mochi copies the publisher's properties
//     into PUBACK/PUBREC unless Compatibilities.NoInheritedPropertiesOnAck
//     is set. The spec allows user properties on acks; Runnel wants none
//     (issue 16: some clients reject them).
//
// Deliberate differences, checked per target and not skipped:
//
//   - TestServerKeepAlive: the gateway caps keep-alive at max_keep_alive
//     (300 s by default): a client asking for 0 or more gets Server Keep
//     Alive 300 [MQTT-3.2.2-21]; bare mochi keeps the client's value
//     [MQTT-3.2.2-22].
//   - TestReservedTopics: a client's publish to alerts/# is refused by the
//     gateway and not delivered (MQTT 5: PUBACK 0x87; 3.1.1: disconnected,
//     having no way to be told): the topic carries the gateway's own
//     alerts. Bare mochi routes it. ($SYS/# publishes are dropped by mochi
//     itself on both, without PUBACK; not tested.)
//   - TestBadPayloadReason: the gateway answers 0x99 with a reason string
//     for a telemetry payload with no usable reading (PUBACK or PUBREC); bare
//     mochi does not decode and answers 0x00. `{}`, `[]` and
//     `{"temp":"hot"}` are such payloads; an empty retained payload is a
//     retained-message deletion, not telemetry, and gets 0x00
//     (TestRetainedClear).
//   - TestDurableBeforeAck and TestDeadLetter run on the gateway only (the
//     bare broker stores nothing; the bare subtests skip saying so): after a
//     QoS 1/2 ack the readings are counted as stored in the WAL
//     (runnel_ingest_readings_total); bad payloads are in /api/v1/rejects
//     on 3.1.1 and 5.
//   - TestReceiveMaximumInbound uses a plain topic: on a telemetry topic
//     the gateway would fsync each of the 1024 QoS 2 messages before its
//     PUBREC. Both disconnect the 1025th with 0x93.
//   - TestMaximumPacketSizeInbound: both close the connection on a packet
//     over 256 KiB without sending DISCONNECT 0x95 (allowed: §4.13).
package conformance
