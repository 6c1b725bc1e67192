package gateway

import (
	"bufio"
	"bytes"
	"runtime"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// TestProcessMetrics parses the go_* and process_* families with
// Prometheus' text parser and checks that every family the gateway
// exposed through VictoriaMetrics/metrics is still there, plus the
// open-file families, with sane values.
func TestProcessMetrics(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	writeProcessMetrics(promWriter{bw})
	bw.Flush()
	var parser expfmt.TextParser
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, buf.String())
	}
	names := strings.Fields(`go_sched_latencies_seconds go_mutex_wait_seconds_total go_gc_mark_assist_cpu_seconds_total
		go_gc_cpu_seconds_total go_gc_pauses_seconds go_scavenge_cpu_seconds_total go_memlimit_bytes
		go_memstats_alloc_bytes go_memstats_alloc_bytes_total go_memstats_buck_hash_sys_bytes
		go_memstats_frees_total go_memstats_gc_cpu_fraction go_memstats_gc_sys_bytes
		go_memstats_heap_alloc_bytes go_memstats_heap_idle_bytes go_memstats_heap_inuse_bytes
		go_memstats_heap_objects go_memstats_heap_released_bytes go_memstats_heap_sys_bytes
		go_memstats_last_gc_time_seconds go_memstats_lookups_total go_memstats_mallocs_total
		go_memstats_mcache_inuse_bytes go_memstats_mcache_sys_bytes go_memstats_mspan_inuse_bytes
		go_memstats_mspan_sys_bytes go_memstats_next_gc_bytes go_memstats_other_sys_bytes
		go_memstats_stack_inuse_bytes go_memstats_stack_sys_bytes go_memstats_sys_bytes go_cgo_calls_count
		go_cpu_count go_gc_duration_seconds go_gc_forced_count go_gomaxprocs go_goroutines go_threads
		go_info go_info_ext`)
	if runtime.GOOS == "linux" {
		names = append(names, strings.Fields(`process_cpu_seconds_system_total process_cpu_seconds_total
		process_cpu_seconds_user_total process_major_pagefaults_total process_minor_pagefaults_total
		process_num_threads process_resident_memory_bytes process_start_time_seconds
		process_virtual_memory_bytes process_virtual_memory_peak_bytes process_resident_memory_peak_bytes
		process_resident_memory_anon_bytes process_resident_memory_file_bytes
		process_resident_memory_shared_bytes process_io_read_bytes_total process_io_written_bytes_total
		process_io_read_syscalls_total process_io_write_syscalls_total process_io_storage_read_bytes_total
		process_io_storage_written_bytes_total process_open_fds process_max_fds`)...)
	}
	for _, n := range names {
		if fams[n] == nil {
			t.Errorf("family %s missing", n)
		}
	}
	if len(fams) != len(names) {
		t.Errorf("%d families, want %d", len(fams), len(names))
	}
	positive := func(name string) {
		t.Helper()
		f := fams[name]
		if f == nil {
			return
		}
		m := f.Metric[0]
		v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
		if v <= 0 {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	// (CPU seconds may still be 0 in a fresh test binary: 10 ms ticks.)
	for _, n := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "go_gomaxprocs", "process_resident_memory_bytes",
		"process_open_fds", "process_max_fds", "process_start_time_seconds"} {
		positive(n)
	}
	if f := fams["process_cpu_seconds_total"]; f != nil && f.GetType() != dto.MetricType_COUNTER {
		t.Errorf("process_cpu_seconds_total is a %v", f.GetType())
	}
	for _, n := range []string{"go_sched_latencies_seconds", "go_gc_pauses_seconds"} {
		f := fams[n]
		if f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
			t.Errorf("%s is not a histogram: %v", n, f)
			continue
		}
		h := f.Metric[0].Histogram
		if nb := len(h.Bucket); nb < 2 || nb > maxRuntimeBuckets+1 {
			t.Errorf("%s: %d buckets, want 2 to %d", n, nb, maxRuntimeBuckets+1)
		}
		for _, b := range h.Bucket {
			if b.GetUpperBound() > 1 && b.GetUpperBound() != h.Bucket[len(h.Bucket)-1].GetUpperBound() {
				t.Errorf("%s: bucket le=%v above 1s", n, b.GetUpperBound())
			}
		}
	}
	if q := fams["go_gc_duration_seconds"]; q == nil || q.GetType() != dto.MetricType_SUMMARY || len(q.Metric[0].Summary.Quantile) != 5 {
		t.Errorf("go_gc_duration_seconds is not a summary of 5 quantiles: %v", q)
	}
}
