# Runnel build, test and benchmark targets. `make test` is what CI and the
# README run.

PKG      := github.com/runnel-iot/runnel
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X $(PKG)/gateway.Version=$(VERSION) -X $(PKG)/gateway.Commit=$(COMMIT)
GOBUILD  := CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)'
FUZZTIME ?= 4s
CONFIG   ?=
SHELL    := /bin/bash
.SHELLFLAGS := -o pipefail -ec

.PHONY: all build build-arm64 build-armv7 test check-tree fmt-check vet test-race test-386 fuzz bench bench-go telegraf torture run demo demo-check demo-fleet demo-fleet-check clean

all: build

build:
	$(GOBUILD) -o bin/runnel ./gateway/cmd/runnel
	$(GOBUILD) -o bin/firmware-sim ./firmware-sim/cmd/firmware-sim

# Static Linux binaries for a Raspberry Pi 3/4/5 or an ARM64 gateway
# (arm64), and for 32-bit Raspberry Pi OS (armv7).
build-arm64:
	GOOS=linux GOARCH=arm64 $(GOBUILD) -o bin/runnel-linux-arm64 ./gateway/cmd/runnel

build-armv7:
	GOOS=linux GOARCH=arm GOARM=7 $(GOBUILD) -o bin/runnel-linux-armv7 ./gateway/cmd/runnel

test: check-tree fmt-check vet test-race test-386 fuzz

# No binaries, profiles or large files outside the data folders.
check-tree:
	./scripts/check-tree.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...

# The race run ends with the tests that skipped and why (internal/testsum).
test-race:
	go build -o bin/testsum ./internal/testsum
	go test -race -count=1 -timeout 15m -json ./... | bin/testsum
	cd third_party/tidwall-wal && go test -race -count=1 .   # upstream's tests on the patched copy

# A 32-bit run catches 64-bit atomics misalignment (armv7 is 32-bit).
test-386:
	GOARCH=386 go test -count=1 -short ./wal/... ./sketches/... ./alerts/... ./windows/... ./forward/...

# Every fuzz target, briefly (FUZZTIME each); crashers land in testdata/fuzz.
# Go's fuzzing engine can fail with "context deadline exceeded" when its
# time budget ends while a worker is busy (no input is at fault, none is
# written): such a run is tried once more. A real finding writes its input
# and fails at once.
fuzz:
	@set -e; log=$$(mktemp); for pkg in $$(go list ./...); do \
	  for target in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$target ($(FUZZTIME))"; \
	    for try in 1 2; do \
	      if go test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg > $$log 2>&1; then break; fi; \
	      if [ $$try = 1 ] && grep -q 'context deadline exceeded' $$log && ! grep -q 'Failing input written' $$log; then \
	        echo "  fuzzing engine timed out (no failing input); trying again"; continue; fi; \
	      cat $$log; rm -f $$log; exit 1; \
	    done; \
	  done; \
	done; rm -f $$log

# The end-to-end load test of the built binaries (bench/README.md): every
# phase starts a fresh gateway (and, for MQTT, a bare mochi broker as the
# baseline), sustains its load for 20 s and prints a table; the JSON goes
# to bench/results/latest.json. About 5 minutes. Data dirs go to
# data/bench (a disk, not tmpfs: fsync must cost what it costs) and are
# removed after a successful run; BENCH_FLAGS adds flags, e.g.
# BENCH_FLAGS='-phases mqtt-qos1,mixed -phase-duration 30s'. The telegraf
# phase (the peer the issues compare against) runs when bin/telegraf
# (make telegraf) and mosquitto (apt install mosquitto) are there.
BENCH_FLAGS ?=
MOSQUITTO ?= $(shell command -v mosquitto || ls /usr/sbin/mosquitto 2>/dev/null)
bench: build
	./bin/firmware-sim bench -runnel bin/runnel -out bench/results/latest.json -work-dir data/bench \
	  $(if $(wildcard bin/telegraf),-telegraf bin/telegraf) $(if $(MOSQUITTO),-mosquitto $(MOSQUITTO)) $(BENCH_FLAGS)

# Telegraf for make bench's telegraf phase, from the Go module proxy with
# only the plugins the phase uses (Telegraf's custom build tags): about
# 4 minutes on 2 cores, once.
TELEGRAF_VERSION ?= v1.37.2
telegraf:
	GOBIN=$(CURDIR)/bin go install -tags "custom,inputs.mqtt_consumer,aggregators.basicstats,outputs.kafka,parsers.json,serializers.json" \
	  github.com/influxdata/telegraf/cmd/telegraf@$(TELEGRAF_VERSION)

# The fault suite against the built binary (torture/doc.go): SIGKILL
# loops, torn and bit-flipped WAL segments, full disks (tmpfs, as root),
# a silent Kafka, SIGHUP while alerts fire. TORTURE=short (a few rounds,
# CI) or long (>= 30 kill rounds, by hand).
TORTURE ?= short
torture:
	RUNNEL_TORTURE=$(TORTURE) go test -count=1 -timeout $(if $(filter long,$(TORTURE)),60m,15m) -v -run '^Test' ./torture/ 2>&1 | \
	  grep -E --line-buffered '^(=== RUN|--- |\s+\S+_test.go:|ok|FAIL|PASS|panic)'

# The per-package Go micro-benchmarks (decoders, WAL append, sketches, ...).
bench-go:
	go test -run '^$$' -bench . -benchtime 2s -count 1 ./...

run: build
	./bin/runnel run $(if $(CONFIG),-config $(CONFIG))

# The one-command demo: a dev-only in-memory Kafka (kfake), the gateway
# forwarding to it, and simulated sensors, machines and patients. Ctrl-C
# stops everything. Data in data/demo (removed at start).
demo: build
	rm -rf data/demo
	./bin/firmware-sim demo -runnel bin/runnel -config configs/demo.yaml -data-dir data/demo

# The demo, headless and short, on free loopback ports: checks that
# windows close, an alert fires and records reach Kafka (CI runs it). Its
# temp dir goes on success, failure and Ctrl-C alike (the EXIT trap; INT
# and TERM exit through it).
demo-check: build
	d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && trap 'exit 130' INT TERM && \
	./bin/firmware-sim demo -runnel bin/runnel -config configs/demo.yaml -data-dir $$d \
	  -http-addr auto -mqtt-addr auto -udp-addr auto -kafka-addr auto -duration 20s -check > $$d/demo.out 2>&1 \
	  || { cat $$d/demo.out; tail -50 $$d/runnel.log; exit 1; }; tail -3 $$d/demo.out

# The fleet demo: the dev Kafka with three brokers, three gateways (gw-a,
# gw-b, gw-c, each with simulated sensors at site-1 and site-2) and two
# `runnel fleet` instances merging their windows per site; prints example
# fleet queries (fleet HTTP on 127.0.0.1:8090 and :8091). Ctrl-C stops
# everything. Data and logs in data/demo-fleet (removed at start).
demo-fleet: build
	rm -rf data/demo-fleet
	./bin/firmware-sim demo-fleet -runnel bin/runnel -config configs/demo.yaml -fleet-config configs/fleet.yaml -data-dir data/demo-fleet

# The fleet demo, headless, on free loopback ports: waits (at most 75 s)
# until both fleet instances serve a closed window merged from all three
# gateways and the true distinct device counts (CI runs it). Its temp dir goes on success, failure and Ctrl-C
# alike, as demo-check's.
demo-fleet-check: build
	d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && trap 'exit 130' INT TERM && \
	./bin/firmware-sim demo-fleet -runnel bin/runnel -config configs/demo.yaml -fleet-config configs/fleet.yaml -data-dir $$d \
	  -kafka-addr auto -fleet-http auto -check > $$d/demo-fleet.out 2>&1 \
	  || { cat $$d/demo-fleet.out; exit 1; }; tail -3 $$d/demo-fleet.out

clean:
	rm -rf bin
