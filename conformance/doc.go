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
// knownGatewayGap — the gateway fails, bare mochi passes (issue 16):
//
//   - QoS 1 publishes lose their MQTT 5 properties. The ingest hook acks a
//     QoS 1 publish itself and re-publishes it with the inline client's
//     srv.Publish(topic, payload, retain, qos), which keeps no property, no
//     expiry and not the publisher as origin. Every topic, live and
//     retained; QoS 0 and 2 are fine. Tests:
//     TestPublishProperties/gateway/{telemetry,plain}/{live,retained}/qos1
//     [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17]
//     [MQTT-3.3.2-18] [MQTT-3.3.2-20];
//     TestUserProperties/gateway/qos1 [MQTT-3.3.2-17] [MQTT-3.3.2-18];
//     TestRequestResponse/gateway/qos1 (§4.10);
//     TestMessageExpiryLive/gateway/qos1 (60 s arrives as 3600 s)
//     [MQTT-3.3.2-6];
//     TestRetainedMessageExpiry/gateway/qos1/60s [MQTT-3.3.2-6] and
//     /qos1/1s (still retained after 6 s) [MQTT-3.3.2-5];
//     TestMessageExpiryQueued/gateway/qos1 (a queued message is delivered
//     after its 1 s expiry) [MQTT-3.3.2-5];
//     TestNoLocal/gateway/qos1 (the inline client is the origin)
//     [MQTT-3.8.3-3].
//   - An empty retained QoS 1 publish on a telemetry topic is answered
//     PUBACK 0x99 (no readings) and does not clear the retained message:
//     TestRetainedClear/gateway/telemetry/qos1 [MQTT-3.3.1-6]
//     [MQTT-3.3.1-7]. Found by this suite; not in issue 16's list. An
//     empty payload on a telemetry topic is a retained-message deletion
//     first, and should get 0x00.
//   - Payloads with no usable reading are acknowledged 0x00 and not
//     dead-lettered: `{}`, `{"temp":"hot"}`, `[]`:
//     TestBadPayloadReason/gateway/{empty-object,string-field,empty-array}/qos{1,2}
//     (README: 0x99 with a reason string; §3.4.2.1) and
//     TestDeadLetter/gateway/{v4,v5}/{empty-object,string-field,empty-array}.
//   - A v5 QoS 2 publish with no usable reading gets PUBREC 0x00, even for
//     a syntax error (issue 16: reason codes on every QoS):
//     TestBadPayloadReason/gateway/{syntax,not-json}/qos2 [MQTT-3.5.2-1].
//   - PUBACK order: reason-coded PUBACKs go through cl.WritePacket (held in
//     mochi's write buffer while deliveries are queued for the same client)
//     while plain ones are written to the socket at once, so a 0x99 is
//     overtaken: TestAckOrder/gateway/v5 [MQTT-4.6.0-2]. A race: it fails
//     6 to 9 runs in 10 here; check a fix with
//     RUNNEL_CONFORMANCE_STRICT=1 go test -race -count=20 -run TestAckOrder ./conformance/
//   - PUBREC echoes the publisher's user properties and other properties
//     (mochi's default; QoS 1 PUBACKs, written by the gateway, carry none):
//     TestAckNoUserProperties/gateway/{telemetry,plain}/qos2.
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
//     for a telemetry payload with no usable reading; bare mochi does not
//     decode and answers 0x00.
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
