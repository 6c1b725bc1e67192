// Package torture is Runnel's fault suite: it runs the built gateway
// binary under load from its own accounting clients and breaks what an
// edge device breaks: SIGKILL at random moments, torn and bit-flipped WAL
// segments, full disks under the data, checkpoint and outbox folders, a
// silent Kafka, and SIGHUP reloads with changed rules while alerts fire.
//
// The accounting clients write readings whose values are unique across a
// whole case (MQTT QoS 1 publishers and HTTP line-protocol writers at
// once), so after each case the suite knows exactly which readings were
// acknowledged and checks, on the gateway's own files and APIs:
//
//   - every acknowledged reading is in the WAL exactly once (cases that
//     damage the WAL on purpose only excuse the readings acknowledged
//     before the damage);
//   - every series' 1h window (count and sum, over the HTTP API after a
//     restart and replay) equals what the WAL holds for it;
//   - no id is in an outbox twice;
//   - every 1s window the WAL closes is in Kafka at least once, with the
//     WAL's count and sum, and the first copies of a key arrive in window
//     order;
//   - the gateway is up (or restarted) and ready again.
//
// The suite is bounded in time and runs only when asked:
//
//	make torture                  # TORTURE=short: a few rounds per case (CI)
//	make torture TORTURE=long     # >= 30 kill rounds, longer outages
//
// It needs root for the full-disk cases (tmpfs mounts); without root they
// skip with a message, and fail under REQUIRE_TEST_TOOLS=1.
package torture
