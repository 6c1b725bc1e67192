// Package demo is `firmware-sim demo` (make demo): a DEV-ONLY in-memory
// Kafka-protocol broker (kfake), the runnel gateway as a child process
// forwarding to it, and the simulator's mixed scenario feeding the gateway
// over MQTT. It builds on package firmwaresim, which does not import it;
// the firmware-sim main hands its Command to firmwaresim.Main.
//
// RunDemo owns the gateway child (SIGTERM at the end, SIGKILL 40 s later),
// the Kafka broker and the simulator's goroutines, and returns after all
// of them stopped.
package demo
