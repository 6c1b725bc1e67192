package gateway

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The go_* and process_* families of GET /metrics, written through the
// same promWriter as Runnel's own and read at scrape time: the Go runtime
// from runtime/metrics and runtime.MemStats, the process from /proc/self
// (stat, status, io, fd, limits). The names are the ones Prometheus'
// client_golang and VictoriaMetrics/metrics (which this replaced) use, so
// existing dashboards keep working. A /proc file that cannot be read (not
// Linux, a locked-down container) leaves its families out: a scrape never
// fails for it.

// processStart stands in for the process start time: package init runs
// within milliseconds of it.
var processStart = time.Now()

// clockTicks is USER_HZ, the unit of the CPU times in /proc/self/stat:
// 100 on every Linux architecture Runnel builds for.
const clockTicks = 100

// runtimeMetrics maps runtime/metrics names to the exposed families.
var runtimeMetrics = []struct{ src, name, typ, help string }{
	{"/sched/latencies:seconds", "go_sched_latencies_seconds", "histogram", "Time goroutines spent runnable before running."},
	{"/sync/mutex/wait/total:seconds", "go_mutex_wait_seconds_total", "counter", "Time goroutines spent blocked on a sync.Mutex or RWMutex."},
	{"/cpu/classes/gc/mark/assist:cpu-seconds", "go_gc_mark_assist_cpu_seconds_total", "counter", "CPU time goroutines spent helping the GC."},
	{"/cpu/classes/gc/total:cpu-seconds", "go_gc_cpu_seconds_total", "counter", "CPU time spent on GC."},
	{"/gc/pauses:seconds", "go_gc_pauses_seconds", "histogram", "Stop-the-world GC pause latencies."},
	{"/cpu/classes/scavenge/total:cpu-seconds", "go_scavenge_cpu_seconds_total", "counter", "CPU time spent returning memory to the OS."},
	{"/gc/gomemlimit:bytes", "go_memlimit_bytes", "gauge", "The Go soft memory limit (GOMEMLIMIT)."},
}

// writeProcessMetrics writes the go_* and process_* families.
func writeProcessMetrics(p promWriter) {
	writeRuntimeMetrics(p)
	writeMemStats(p)
	writeProcStat(p)
	writeProcStatus(p)
	writeProcIO(p)
	writeProcFDs(p)
}

func writeRuntimeMetrics(p promWriter) {
	samples := make([]metrics.Sample, len(runtimeMetrics))
	for i, m := range runtimeMetrics {
		samples[i].Name = m.src
	}
	metrics.Read(samples)
	for i, m := range runtimeMetrics {
		switch v := samples[i].Value; v.Kind() {
		case metrics.KindUint64:
			p.family(m.name, m.typ, m.help, one(float64(v.Uint64())))
		case metrics.KindFloat64:
			p.family(m.name, m.typ, m.help, one(v.Float64()))
		case metrics.KindFloat64Histogram:
			p.histogram(m.name, m.help, runtimeHistogram(v.Float64Histogram()))
		} // KindBad: not in this Go version; left out
	}
}

// maxRuntimeBuckets bounds the buckets of a runtime histogram: the runtime
// keeps over a hundred, too many series for a scrape of an edge device.
const maxRuntimeBuckets = 30

// runtimeHistogram turns a runtime/metrics histogram into at most
// maxRuntimeBuckets buckets, those above 1 s folded into +Inf (the runtime
// keeps buckets up to hours that only add series). Its sum is unknown.
func runtimeHistogram(h *metrics.Float64Histogram) histSample {
	bounds, counts := h.Buckets[1:], h.Counts // bucket i is (Buckets[i], Buckets[i+1]]
	last := len(bounds)
	for last > 0 && (bounds[last-1] > 1 || math.IsInf(bounds[last-1], 1)) {
		last--
	}
	step := max(1, (last+maxRuntimeBuckets-1)/maxRuntimeBuckets)
	hs := histSample{sum: math.NaN()}
	var n uint64
	for i, c := range counts {
		n += c
		if i < last && ((i+1)%step == 0 || i == last-1) {
			hs.bounds = append(hs.bounds, bounds[i])
			hs.counts = append(hs.counts, n)
			n = 0
		}
	}
	hs.counts = append(hs.counts, n) // +Inf
	return hs
}

func writeMemStats(p promWriter) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	for _, g := range []struct {
		name string
		v    uint64
		help string
	}{
		{"alloc_bytes", ms.Alloc, "Bytes of allocated heap objects."},
		{"buck_hash_sys_bytes", ms.BuckHashSys, "Bytes of the profiling bucket hash table."},
		{"gc_sys_bytes", ms.GCSys, "Bytes of GC metadata."},
		{"heap_alloc_bytes", ms.HeapAlloc, "Bytes of allocated heap objects."},
		{"heap_idle_bytes", ms.HeapIdle, "Bytes in idle heap spans."},
		{"heap_inuse_bytes", ms.HeapInuse, "Bytes in in-use heap spans."},
		{"heap_objects", ms.HeapObjects, "Allocated heap objects."},
		{"heap_released_bytes", ms.HeapReleased, "Bytes of heap returned to the OS."},
		{"heap_sys_bytes", ms.HeapSys, "Bytes of heap obtained from the OS."},
		{"mcache_inuse_bytes", ms.MCacheInuse, "Bytes of mcache structures in use."},
		{"mcache_sys_bytes", ms.MCacheSys, "Bytes of mcache structures obtained from the OS."},
		{"mspan_inuse_bytes", ms.MSpanInuse, "Bytes of mspan structures in use."},
		{"mspan_sys_bytes", ms.MSpanSys, "Bytes of mspan structures obtained from the OS."},
		{"next_gc_bytes", ms.NextGC, "Heap size target of the next GC."},
		{"other_sys_bytes", ms.OtherSys, "Bytes of other runtime allocations."},
		{"stack_inuse_bytes", ms.StackInuse, "Bytes in stack spans."},
		{"stack_sys_bytes", ms.StackSys, "Bytes of stack memory obtained from the OS."},
		{"sys_bytes", ms.Sys, "Bytes obtained from the OS."},
	} {
		p.gauge("go_memstats_"+g.name, g.help, one(float64(g.v)))
	}
	p.counter("go_memstats_alloc_bytes_total", "Bytes allocated for heap objects, ever.", one(float64(ms.TotalAlloc)))
	p.counter("go_memstats_frees_total", "Heap objects freed.", one(float64(ms.Frees)))
	p.counter("go_memstats_lookups_total", "Pointer lookups by the runtime.", one(float64(ms.Lookups)))
	p.counter("go_memstats_mallocs_total", "Heap objects allocated.", one(float64(ms.Mallocs)))
	p.gauge("go_memstats_gc_cpu_fraction", "Fraction of CPU time used by the GC since start.", one(ms.GCCPUFraction))
	p.gauge("go_memstats_last_gc_time_seconds", "Time of the last GC, in seconds since the epoch.", one(float64(ms.LastGC)/1e9))
	p.counter("go_cgo_calls_count", "Calls into C.", one(float64(runtime.NumCgoCall())))
	p.gauge("go_cpu_count", "Logical CPUs usable by the process.", one(float64(runtime.NumCPU())))
	p.summary("go_gc_duration_seconds", "Stop-the-world GC pauses (the last 256).",
		gcPauseQuantiles(&ms), float64(ms.PauseTotalNs)/1e9, uint64(ms.NumGC))
	p.counter("go_gc_forced_count", "GCs forced by the application (runtime.GC, debug.FreeOSMemory).", one(float64(ms.NumForcedGC)))
	p.gauge("go_gomaxprocs", "GOMAXPROCS.", one(float64(runtime.GOMAXPROCS(0))))
	p.gauge("go_goroutines", "Goroutines.", one(float64(runtime.NumGoroutine())))
	threads, _ := runtime.ThreadCreateProfile(nil)
	p.gauge("go_threads", "OS threads created.", one(float64(threads)))
	p.gauge("go_info", "Go version.", sample{fmt.Sprintf("version=%q", runtime.Version()), 1})
	p.gauge("go_info_ext", "Go toolchain and platform.",
		sample{fmt.Sprintf("compiler=%q,GOARCH=%q,GOOS=%q", runtime.Compiler, runtime.GOARCH, runtime.GOOS), 1})
}

// gcPauseQuantiles returns the 0, 0.25, 0.5, 0.75 and 1 quantiles of the
// recent GC pauses (MemStats keeps the last 256).
func gcPauseQuantiles(ms *runtime.MemStats) []sample {
	n := min(int(ms.NumGC), len(ms.PauseNs))
	pauses := make([]float64, n)
	for i := range n {
		pauses[i] = float64(ms.PauseNs[i]) / 1e9
	}
	slices.Sort(pauses)
	var out []sample
	for _, q := range []float64{0, 0.25, 0.5, 0.75, 1} {
		v := 0.0
		if n > 0 {
			v = pauses[int(q*float64(n-1))]
		}
		out = append(out, sample{fmt.Sprintf("quantile=%q", strconv.FormatFloat(q, 'g', -1, 64)), v})
	}
	return out
}

// writeProcStat writes what /proc/self/stat holds: CPU time, page
// faults, threads, virtual and resident memory.
func writeProcStat(p promWriter) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return
	}
	// Fields after the command, which is in parentheses and may hold
	// spaces: state, ppid, ... (proc(5), fields 3 onwards).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return
	}
	num := func(k int) float64 { v, _ := strconv.ParseFloat(f[k], 64); return v }
	user, system := num(11)/clockTicks, num(12)/clockTicks
	p.counter("process_cpu_seconds_system_total", "CPU time in the kernel.", one(system))
	p.counter("process_cpu_seconds_total", "CPU time, user and kernel.", one(user+system))
	p.counter("process_cpu_seconds_user_total", "CPU time in user space.", one(user))
	p.counter("process_major_pagefaults_total", "Page faults that read from disk.", one(num(9)))
	p.counter("process_minor_pagefaults_total", "Page faults served from memory.", one(num(7)))
	p.gauge("process_num_threads", "OS threads.", one(num(17)))
	p.gauge("process_resident_memory_bytes", "Resident set size.", one(num(21)*float64(os.Getpagesize())))
	p.gauge("process_start_time_seconds", "Start time of the process, in seconds since the epoch.", one(float64(processStart.Unix())))
	p.gauge("process_virtual_memory_bytes", "Virtual memory size.", one(num(20)))
}

// writeProcStatus writes the peaks and the split of resident memory from
// /proc/self/status.
func writeProcStatus(p promWriter) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	kb := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(k, "Vm") && !strings.HasPrefix(k, "Rss") {
			continue
		}
		if n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64); err == nil {
			kb[k] = n * 1024
		}
	}
	for _, g := range []struct{ key, name, help string }{
		{"VmPeak", "process_virtual_memory_peak_bytes", "Peak virtual memory size."},
		{"VmHWM", "process_resident_memory_peak_bytes", "Peak resident set size."},
		{"RssAnon", "process_resident_memory_anon_bytes", "Resident anonymous memory (heap, stacks)."},
		{"RssFile", "process_resident_memory_file_bytes", "Resident file mappings (binary, mapped files)."},
		{"RssShmem", "process_resident_memory_shared_bytes", "Resident shared memory."},
	} {
		if v, ok := kb[g.key]; ok {
			p.gauge(g.name, g.help, one(v))
		}
	}
}

// writeProcIO writes the process's I/O counters from /proc/self/io.
func writeProcIO(p promWriter) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return // not readable in some containers
	}
	v := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		if k, s, ok := strings.Cut(line, ": "); ok {
			n, _ := strconv.ParseFloat(strings.TrimSpace(s), 64)
			v[k] = n
		}
	}
	p.counter("process_io_read_bytes_total", "Bytes read through read(2) and the like.", one(v["rchar"]))
	p.counter("process_io_written_bytes_total", "Bytes written through write(2) and the like.", one(v["wchar"]))
	p.counter("process_io_read_syscalls_total", "Read system calls.", one(v["syscr"]))
	p.counter("process_io_write_syscalls_total", "Write system calls.", one(v["syscw"]))
	p.counter("process_io_storage_read_bytes_total", "Bytes read from storage.", one(v["read_bytes"]))
	p.counter("process_io_storage_written_bytes_total", "Bytes written to storage.", one(v["write_bytes"]))
}

// writeProcFDs writes the open file descriptors and their limit: the WAL
// segments, sockets and MQTT clients all take one.
func writeProcFDs(p promWriter) {
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		p.gauge("process_open_fds", "Open file descriptors.", one(float64(len(fds))))
	}
	b, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		return
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if n, err := strconv.ParseFloat(f[0], 64); err == nil { // the soft limit
					p.gauge("process_max_fds", "Limit on open file descriptors (soft).", one(n))
				}
			}
		}
	}
}
