package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/alerts"
	"github.com/runnel-iot/runnel/internal/testutil"
)

func hot(th float64) alerts.Rule {
	return alerts.Rule{Name: "hot", Match: alerts.Match{Field: "v"}, Op: ">", Threshold: &th}
}

func cold() alerts.Rule {
	th := -50.0
	return alerts.Rule{Name: "cold", Match: alerts.Match{Field: "v"}, Op: "<", Threshold: &th}
}

// waitAlerts waits until the alerts outbox holds n records.
func (r *rig) waitAlerts(n int) []alertValue {
	r.t.Helper()
	var vs []alertValue
	testutil.WaitFor(r.t, 20*time.Second, func() (bool, string) {
		vs = r.alertValues()
		return len(vs) >= n, fmt.Sprintf("%d alert records: %+v", len(vs), vs)
	})
	return vs
}

// TestReloadEndsFiringAlerts: a reload that changes or removes the rule
// of a firing alert ends it with a resolved event carrying the reason, in
// the outbox and on OnAlert (MQTT, whose retained topic it updates, and the
// live stream), and writes a checkpoint at once. Before, the alert was
// dropped silently: no resolved event, and the retained topic said firing
// for ever; and no checkpoint, so a crash replayed old readings under the
// new rules.
func TestReloadEndsFiringAlerts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rules  []alerts.Rule
		reason string
	}{
		{"changed", []alerts.Rule{hot(70), cold()}, alerts.ReasonRuleChanged},
		{"removed", []alerts.Rule{cold()}, alerts.ReasonRuleRemoved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const s = "env,device=a"
			r := newRig(t)
			r.al.Rules = []alerts.Rule{hot(50), cold()}
			r.start()
			last := r.append(reading(s, 3600*1000, 60))
			r.waitApplied(last)
			if vs := r.waitAlerts(1); vs[0].Type != alerts.Firing {
				t.Fatalf("first alert record %+v, want firing", vs[0])
			}
			before := r.p.Stats().Checkpoints
			cfg := r.al
			cfg.Rules = tc.rules
			if err := r.p.Reload(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
			vs := r.waitAlerts(2)
			if len(vs) != 2 || vs[1].Type != alerts.Resolved || vs[1].Reason != tc.reason || vs[1].ID != vs[0].ID {
				t.Fatalf("alert records after the reload: %+v; want the firing one, then resolved (%s) with its id", vs, tc.reason)
			}
			ids := map[string]bool{}
			for _, rec := range r.boxes[KindAlerts].records() {
				if ids[rec.ID] {
					t.Fatalf("duplicate message id %s", rec.ID)
				}
				ids[rec.ID] = true
			}
			pub := r.onAlerts()
			if n := len(pub); n != 2 || pub[1].Type != alerts.Resolved || pub[1].Reason != tc.reason {
				t.Fatalf("OnAlert got %+v; want firing then resolved (%s)", pub, tc.reason)
			}
			if got := r.p.Stats().Checkpoints; got != before+1 {
				t.Fatalf("%d checkpoints after the reload, want %d: one right after it", got, before+1)
			}
			if got := r.checkpointIndex(); got != last {
				t.Fatalf("checkpoint covers %d, want %d", got, last)
			}
			if st := r.p.Alerts().Stats(); st.Firing != 0 || st.Resolved != 1 {
				t.Fatalf("after the reload: %d alerts firing, %d resolved; want 0 and 1", st.Firing, st.Resolved)
			}
			if rec := r.p.Alerts().Recent(1); len(rec) != 1 || rec[0].Type != alerts.Resolved || rec[0].Reason != tc.reason {
				t.Fatalf("recent events (the API) after the reload: %+v; want the resolved one (%s)", rec, tc.reason)
			}
		})
	}
}

// TestReplayJudgesReadingsByTheirRules: a reading fired an alert under
// the old rule after the last checkpoint; the gateway crashed and restarts
// with the rule changed. The replay must judge that reading by the rule in
// force when it arrived (the firing event, already in the outbox, is not
// emitted again), then apply the new rule, which ends the alert with a
// resolved event. Before, the replay ran under the new rule: the firing
// alert was forgotten, with no resolved event, and the retained topic said
// firing for ever.
func TestReplayJudgesReadingsByTheirRules(t *testing.T) {
	const s = "env,device=a"
	base := int64(3600 * 1000)
	r := newRig(t)
	r.al.Rules = []alerts.Rule{hot(50)}
	r.start()
	r.waitApplied(r.append(reading(s, base, 10)))
	r.stop()
	ckdir := filepath.Join(r.dir, "checkpoints")
	saved := filepath.Join(t.TempDir(), "saved")
	if err := os.CopyFS(saved, os.DirFS(ckdir)); err != nil {
		t.Fatal(err)
	}
	r.start()
	r.waitApplied(r.append(reading(s, base+1, 60)))
	r.waitAlerts(1)
	r.stop()
	if err := os.RemoveAll(ckdir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(ckdir, os.DirFS(saved)); err != nil {
		t.Fatal(err)
	}

	r.al.Rules = []alerts.Rule{hot(70)}
	r.start()
	testutil.WaitFor(t, 20*time.Second, func() (bool, string) { return r.p.Replayed(), "replayed" })
	vs := r.waitAlerts(2)
	if len(vs) != 2 || vs[0].Type != alerts.Firing || vs[1].Type != alerts.Resolved || vs[1].Reason != alerts.ReasonRuleChanged {
		t.Fatalf("alert records: %+v; want the firing one once, then resolved (rule changed)", vs)
	}
	pub := r.onAlerts()
	if last := pub[len(pub)-1]; last.Type != alerts.Resolved {
		t.Fatalf("the last event published (the retained state) is %+v, want resolved", last)
	}
	// The new rule stays in force after another restart.
	r.stop()
	r.start()
	r.waitApplied(r.append(reading(s, base+2, 65)))
	r.stop()
	if vs := r.alertValues(); len(vs) != 2 {
		t.Fatalf("65 fired under the new rule (> 70)? alert records %+v", vs)
	}
}

// TestReplayUnderOtherWindowsConfig: summaries emitted under one windows
// configuration, a crash before the checkpoint covering them, a restart
// with other window specs: the replay's outputs differ at the same
// positions and must be appended, not skipped as "already emitted" (they
// were: the 30m summary was lost).
func TestReplayUnderOtherWindowsConfig(t *testing.T) {
	const s = "env,device=a"
	base := int64(3600 * 1000)
	r := newRig(t)
	r.start()
	r.waitApplied(r.append(reading(s, base, 1)))
	r.stop()
	ckdir := filepath.Join(r.dir, "checkpoints")
	saved := filepath.Join(t.TempDir(), "saved")
	if err := os.CopyFS(saved, os.DirFS(ckdir)); err != nil {
		t.Fatal(err)
	}
	r.start()
	r.waitApplied(r.append(reading(s, base+3600, 2)))
	r.stop()
	if n := len(r.boxes[KindSummaries].records()); n != 1 {
		t.Fatalf("%d summaries, want 1 (the first hour)", n)
	}
	if err := os.RemoveAll(ckdir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(ckdir, os.DirFS(saved)); err != nil {
		t.Fatal(err)
	}

	r.win.Tumbling = []time.Duration{30 * time.Minute}
	r.start()
	r.waitApplied(2)
	testutil.WaitFor(t, 20*time.Second, func() (bool, string) {
		var specs []string
		for _, rec := range r.boxes[KindSummaries].records() {
			var v summaryValue
			if err := json.Unmarshal(rec.Value, &v); err != nil {
				t.Fatal(err)
			}
			specs = append(specs, v.Spec)
			if v.Spec == "tumbling:30m" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("summaries %v: no tumbling:30m", specs)
	})
}
