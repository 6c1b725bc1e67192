// Package demo is `firmware-sim demo` (make demo): a DEV-ONLY in-memory
// Kafka-protocol broker (kfake), the runnel gateway as a child process
// forwarding to it, and the simulator's mixed scenario feeding the gateway
// over MQTT. It builds on package firmwaresim, which does not import it;
// the firmware-sim main hands its Command to firmwaresim.Main.
//
// RunDemo owns the gateway child (SIGTERM at the end, SIGKILL 40 s later),
// the Kafka broker and the simulator's goroutines, and returns after all
// of them stopped.
//
// `firmware-sim demo-fleet` (make demo-fleet, FleetCommand, RunFleetDemo)
// is the fleet's counterpart: the dev Kafka with three brokers, three
// gateways (gw-a, gw-b, gw-c: `runnel run` children with their own data
// dirs and free loopback ports, 10 s tumbling windows) each fed by
// simulated environment sensors at site-1 and site-2, and two `runnel
// fleet` instances (group_by: site) merging their windows. With -check it
// waits until both instances serve one closed fleet window merged from all
// three gateways and list the three on /api/v1/fleet/gateways. Every child
// gets one SIGTERM at the end; on a failure the tail of each child's log is
// printed.
package demo
