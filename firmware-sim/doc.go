// Package firmwaresim simulates a fleet of devices sending telemetry to a
// Runnel gateway, as a load generator and as the source of the end-to-end
// scenarios; its thin main is firmware-sim/cmd/firmware-sim. It also hosts
// the dev-only stand-ins of `make demo`: an MQTT subscriber (Subscribe), an
// in-memory Kafka-protocol broker on franz-go's kfake (RunKafka: never for
// production) and a bare mochi-mqtt broker as a benchmark baseline
// (RunBareBroker). The demo (package firmware-sim/demo) and the end-to-end
// benchmark harness (package bench, in the top-level bench/ folder) build
// on this package and plug their subcommands into Main; it imports neither.
//
// # Event time, ticks and determinism
//
// Every device is a Device: a schedule of ticks and signal models, all
// driven by event time, never by the wall clock. Tick k covers the event
// span [t_k, t_k+1) with t_k+1 = t_k + 1/Rate (1/(Rate×BurstFactor) during a
// burst); its messages carry the readings of that span and are sent at
// wall time start + t_k+1 (a device sends what it measured once the span is
// over). Devices start spread over the first tick, so a fleet does not send
// in lockstep. When the gateway cannot keep up, ticks go out back to back
// and event time falls behind wall time; it never runs ahead, so the
// gateway's future-skew check never rejects a simulated reading.
//
// Randomness comes from math/rand/v2 PCG streams seeded from (Seed, device
// index, model): the same Options (with Start fixed) give byte-identical
// payloads per device, and turning a fault on does not change the signals.
// Episodes (a tachycardia, a desaturation, an ECG lead-off, a machine
// fault) are drawn lazily in episode order and kept only near the current
// time, so memory does not grow with the length of a run.
//
// # Scenarios and payloads
//
// The formats are exactly those of package ingest (see ingest/doc.go):
//
//   - env: telemetry/<device>/env {"ts":ms,"temp":..,"hum":..,"tags":{"site":..}}
//     (an array when ReadingsPerMessage > 1); a daily cycle in UTC event
//     time (warmest at 15:00) plus noise.
//   - vibration: 100 Hz x, y, z in g. JSON: three biosignal batches
//     (biosignal/<device>/accel_x, _y, _z) and telemetry/<device>/vibration
//     {"rms":..}; line protocol: vibration,device=..,site=.. x=..,y=..,z=..
//     per sample, rms on the last line. rms = sqrt(mean(x²+y²+(z−1)²)).
//   - biosignal: an ECG batch (biosignal/<device>/ecg, field "value") and
//     telemetry/<device>/vitals {"hr":..,"spo2":..}. The ECG is synthetic
//     (250 Hz, PQRST-like, paced by the simulated heart rate) or a replay of
//     MIT-BIH record 100 lead MLII (360 Hz, looped, heart rate from the
//     record's beat annotations). Episodes make the example alert rules
//     fire within 5 minutes of event time whatever the seed: HR above 140
//     for more than 10 s, SpO2 below 90 for more than 15 s (recovering
//     above 92), no ECG for more than 5 s (a lead-off). Replay devices take
//     their heart rate from the record, so only synthetic ones raise HR
//     alerts.
//   - mix: device i is env, vibration or biosignal by i%10 (5:3:2).
//
// Over UDP and HTTP, and over MQTT with Format "lp", everything is line
// protocol with the same measurement, tag and field names (a batch is one
// line per sample). A batch longer than MaxBatchSamples (a low rate) is
// split, so it fits one datagram and the gateway's per-message limit.
//
// # Faults
//
// Malformed payloads are certain to fail the gateway's decoder (not
// merely likely to): truncated JSON, a string timestamp, trailing garbage,
// or, in line protocol, a bad first line among good ones. Out-of-order
// holds a tick's messages back behind the next tick's; late stamps a
// message Faults.LateBy in the past; high cardinality gives a message a
// device id never used before; a reconnect storm disconnects every MQTT
// client at once and reconnects it; a burst multiplies the tick rate.
// Every fault is counted in the Report.
//
// # Acknowledgements
//
// With MaxInFlight 1 a device waits for each acknowledgement before its
// next publish; with more, it pipelines and a per-device acker goroutine
// awaits the acknowledgements in send order (the order an MQTT broker
// acks QoS 1 in), so the bound is a semaphore, not a slice per message.
// Ack latency goes to a fixed-size log-linear histogram. Acknowledgements
// are what the client saw: paho can complete a token before the broker
// acked after an automatic reconnect (paho issue #563), so the gateway's
// own counts are the truth; the report says so.
//
// # Goroutines
//
// Run owns one goroutine per device, one acker per device, the storm and
// progress goroutines, HTTP request goroutines (at most MaxInFlight per
// device) and paho's; it returns after all of them ended and every client
// disconnected, at most DrainTimeout after the last tick (or the
// interrupt). KafkaBroker owns its consumer goroutine until Close.
package firmwaresim
