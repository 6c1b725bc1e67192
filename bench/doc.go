// Package bench is `firmware-sim bench` (make bench): the end-to-end load
// test of the built binaries. Each phase starts the gateway as a child
// process with a fresh data dir on free loopback ports, drives it with a
// load of its own (MQTT QoS 0 and 1, UDP, HTTP writes, query and alert
// probes, forwarding to a dev Kafka), and reads the child's CPU time and
// peak RSS from /proc and its counters from /metrics. The MQTT phases
// repeat the same load against a bare mochi broker (`firmware-sim
// bare-broker`, also a child), so the comparison is like for like.
// README.md in this folder explains every figure; results/ holds the
// published runs.
//
// It builds on package firmwaresim (the dev Kafka, the CLI helpers), which
// does not import it; the firmware-sim main hands its Command to
// firmwaresim.Main.
package bench
