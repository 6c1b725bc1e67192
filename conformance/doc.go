// Package conformance is a black-box MQTT 3.1.1 and 5.0 conformance suite
// (test files only), run against a bare mochi broker and the built gateway.
package conformance
