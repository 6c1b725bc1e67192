package gateway

import (
	"context"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/runnel-iot/runnel/pipeline"
)

// TestMetrics scrapes a running gateway that stored readings and rejected
// a line, and parses the exposition with Prometheus' own text parser.
func TestMetrics(t *testing.T) {
	g, err := New(testConfig(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	<-g.Ready()
	base := "http://" + g.Addr()
	resp, err := http.Post(base+"/api/v2/write", "text/plain", strings.NewReader(
		"env,device=a temp=1 1700000000000000000\nenv,device=a temp=2 1700000001000000000\nenv,device=b temp= 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("write: %s", resp.Status)
	}
	waitFor(t, 10e9, func() (bool, string) {
		return g.pipeline.Windows().AppliedIndex() >= g.wal.LastIndex(), "windows caught up"
	})

	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("content type %q", ct)
	}
	var parser expfmt.TextParser
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the exposition does not parse: %v", err)
	}
	value := func(name string, labels map[string]string) (float64, bool) {
		f, ok := fams[name]
		if !ok {
			return 0, false
		}
	next:
		for _, m := range f.Metric {
			for k, v := range labels {
				found := false
				for _, lp := range m.Label {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.Counter.GetValue(), true
			case dto.MetricType_GAUGE:
				return m.Gauge.GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.Histogram.GetSampleCount()), true
			case dto.MetricType_UNTYPED:
				return m.Untyped.GetValue(), true
			}
		}
		return 0, false
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"runnel_ingest_readings_total", map[string]string{"listener": "http"}, 2},
		{"runnel_ingest_rejected_total", map[string]string{"listener": "http", "reason": "syntax"}, 1},
		{"runnel_ingest_messages_total", map[string]string{"listener": "http"}, 1},
		{"runnel_wal_records_total", map[string]string{"log": "readings"}, 1},
		{"runnel_wal_fsync_seconds", map[string]string{"log": "readings"}, 1},
		{"runnel_wal_disk_bytes", map[string]string{"log": "readings"}, 1},
		{"runnel_windows_series", nil, 1},
		{"runnel_windows_budget_bytes", nil, 64 << 20},
		{"runnel_windows_bad_time_readings_total", nil, 0}, // every windows discard is exported (issue 16)
		{"runnel_windows_group_late_readings_total", nil, 0},
		{"runnel_ingest_rejected_total", map[string]string{"listener": "mqtt", "reason": "no_readings"}, 0},
		{"runnel_ready", nil, 1},
		{"runnel_dead_letters_total", nil, 1},
		{"runnel_alerts_fired_total", nil, 0},
		{"runnel_alerts_states", nil, 0},
		{"runnel_forward_outbox_depth", map[string]string{"kind": "summaries"}, 0},
		{"runnel_forward_outbox_oldest_unsent_seconds", map[string]string{"kind": "alerts"}, 0},
		{"runnel_forward_enabled", nil, 0},
		{"go_goroutines", nil, 1},
		{"process_resident_memory_bytes", nil, 1},
	} {
		v, ok := value(tc.name, tc.labels)
		if !ok || v < tc.min {
			t.Errorf("%s%v = %v (present %v), want at least %v", tc.name, tc.labels, v, ok, tc.min)
		}
	}
	if f := fams["runnel_wal_fsync_seconds"]; f == nil || f.GetType() != dto.MetricType_HISTOGRAM || len(f.Metric[0].Histogram.Bucket) != 12 {
		t.Errorf("fsync latency is not a histogram with 12 buckets (11 bounds and +Inf): %v", f)
	}
	// The write's batch was applied live: one ingest-to-applied sample.
	if f := fams["runnel_pipeline_ingest_to_applied_seconds"]; f == nil || f.GetType() != dto.MetricType_HISTOGRAM ||
		len(f.Metric[0].Histogram.Bucket) != len(pipeline.AppliedBuckets)+1 || f.Metric[0].Histogram.GetSampleCount() < 1 {
		t.Errorf("ingest-to-applied latency is not a histogram with %d bounds (and +Inf) and a sample: %v", len(pipeline.AppliedBuckets), f)
	}
	if f := fams["runnel_pipeline_ingest_to_alert_seconds"]; f == nil || f.GetType() != dto.MetricType_HISTOGRAM ||
		len(f.Metric[0].Histogram.Bucket) != len(pipeline.AppliedBuckets)+1 {
		t.Errorf("ingest-to-alert latency is not a histogram with %d bounds (and +Inf): %v", len(pipeline.AppliedBuckets), f)
	}
}
