package windows

import (
	"unsafe"

	"github.com/runnel-iot/runnel/sketches"
)

// Memory accounting. Every structure the engine keeps per series, device,
// pair and group window is charged at its allocation size (rounded up to
// the Go allocator's size class) plus an estimate of map overhead, so the
// accounted MemoryBytes stays above the live heap the state really uses.
//
// A pair is charged at least pairReserve: its open windows (one per
// tumbling spec with its quantile sketch, charged whether the window has
// made its sketch yet or not), a full pane ring per sliding
// spec, its reservoir and a full closed history per spec. Admission of a new
// pair checks that reservation against the budget less a headroom for the
// overflow state, so the history pairs grow into later is already paid for
// and the budget holds.

const (
	ptrBytes = 8
	// mapEntryBytes estimates a Go map entry of a string key and a pointer
	// value: 24 bytes of slot, control bytes, and up to 2x for load factor
	// and growth.
	mapEntryBytes = 64
)

var (
	// An open or pooled tumbling window is charged as if its quantile
	// sketch were embedded, whether it has one yet or not (tumWin.q): a
	// window of one value grows one with its next, which the budget must
	// already hold. This is what windows were charged when the sketch was
	// embedded, so checkpoints keep their accounting.
	winBytes    = allocSize(int64(unsafe.Sizeof(tumWin{})) + int64(unsafe.Sizeof(sketches.Quantile{})))
	paneBytes   = int64(unsafe.Sizeof(pane{}))
	recBytes    = int64(unsafe.Sizeof(closedRec{}))
	groupRecB   = int64(unsafe.Sizeof(GroupSummary{}))
	seriesSize  = allocSize(int64(unsafe.Sizeof(series{})))
	deviceSize  = allocSize(int64(unsafe.Sizeof(device{})))
	pairSize    = allocSize(int64(unsafe.Sizeof(pair{})))
	gwSize      = allocSize(int64(unsafe.Sizeof(groupWin{})))
	gkSize      = allocSize(int64(unsafe.Sizeof(groupKey{})))
	specStSize  = int64(unsafe.Sizeof(specState{}))
	specCoSize  = int64(unsafe.Sizeof(specCold{}))
	gattrsSize  = int64(unsafe.Sizeof(groupAttrs{}))
	sampleBytes = int64(unsafe.Sizeof(sketches.Sample{}))
)

// Go allocator size classes up to 32 KiB (runtime/sizeclasses.go).
var sizeClasses = [...]int64{
	8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256,
	288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280,
	1408, 1536, 1792, 2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528,
	6784, 6912, 8192, 9472, 9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072,
	20480, 21760, 24576, 27264, 28672, 32768,
}

// allocSize rounds n up to the size the Go allocator gives it.
func allocSize(n int64) int64 {
	if n <= 0 {
		return 0
	}
	for _, c := range sizeClasses {
		if n <= c {
			return c
		}
	}
	const page = 8192
	return (n + page - 1) / page * page
}

func seriesBytes(keyLen, groups int) int64 {
	b := seriesSize + allocSize(int64(keyLen)) + mapEntryBytes
	if groups > 0 {
		b += allocSize(int64(groups) * gattrsSize)
		// Unescaped tag values are copies; charge the key once more.
		b += allocSize(int64(keyLen))
	}
	return b
}

func deviceBytes(keyLen int) int64 {
	return deviceSize + allocSize(int64(keyLen)) + mapEntryBytes
}

// seriesReserve is what admitting a new series costs beyond its pair.
func (e *Engine) seriesReserve(keyLen int, newDevice bool) int64 {
	b := seriesBytes(keyLen, len(e.groups)) + 4*ptrBytes
	if newDevice {
		b += deviceBytes(keyLen) + 4*ptrBytes + 8*ptrBytes
	}
	return b
}

func (e *Engine) reservoirBytes() int64 {
	return allocSize(int64(unsafe.Sizeof(sketches.Reservoir{}))) + allocSize(int64(e.cfg.ReservoirSize)*sampleBytes)
}

// pairBaseBytes is a new pair before any window: struct, field, spec
// states and reservoir.
func (e *Engine) pairBaseBytes(fieldLen int) int64 {
	return pairSize + allocSize(int64(fieldLen)) + allocSize(int64(len(e.specs))*specStSize) + allocSize(int64(len(e.specs))*specCoSize) + e.reservoirBytes()
}

// pairReserveBytes is the least a pair is charged; see the top of the file.
func (e *Engine) pairReserveBytes() int64 {
	b := e.pairBaseBytes(16)
	for _, sp := range e.specs {
		if sp.kind == KindTumbling {
			b += winBytes + 2*ptrBytes
		} else {
			b += int64(sp.initCap) * paneBytes
		}
		b += int64(e.cfg.ClosedHistory) * recBytes
	}
	return b
}

// headroomBytes is kept free of regular series and group windows so the
// overflow state, which is never refused, fits the budget: two overflow
// pairs and two overflow windows per group.
func (e *Engine) headroomBytes() int64 {
	h := 2 * (e.pairReserve + seriesBytes(len(OverflowSeries), len(e.groups)))
	for _, g := range e.groups {
		h += 2 * g.winBytes()
	}
	return h
}

// baseBytes is the fixed cost of an engine: scratch, pools and maps.
func (e *Engine) baseBytes() int64 {
	return int64(unsafe.Sizeof(*e)) + winPoolMax*ptrBytes + 4096
}

// chargePair changes a pair's actual bytes by delta and the accounted total
// by the change of max(actual, reserve).
func (e *Engine) chargePair(p *pair, delta int64) {
	old := max(p.bytes, e.pairReserve)
	p.bytes += delta
	e.mem += max(p.bytes, e.pairReserve) - old
}

func (e *Engine) chargeDevice(d *device, delta int64) {
	d.bytes += delta
	e.mem += delta
}
