package fleet

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestConfigFile: configs/fleet.yaml is the complete annotated default and
// names every environment variable.
func TestConfigFile(t *testing.T) {
	const path = "../configs/fleet.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !IsConfig(data) {
		t.Fatalf("%s is not recognised as a fleet config", path)
	}
	got, err := loadBytes(path, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	got.Fleet.Instance = ""
	if len(got.Fleet.GroupBy) == 0 {
		got.Fleet.GroupBy = nil // `group_by: []` in the file
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s differs from DefaultConfig:\n got %+v\nwant %+v", path, got, want)
	}
	for _, ev := range EnvVars {
		if !strings.Contains(string(data), ev[0]) {
			t.Errorf("%s does not mention %s", path, ev[0])
		}
	}
}

// TestConfigFilesKinds: every file in configs/ is either a fleet config
// (loaded here) or a gateway config (gateway's TestConfigFiles).
func TestConfigFilesKinds(t *testing.T) {
	n := 0
	for _, f := range mustGlob(t, "../configs/*.yaml") {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if IsConfig(data) {
			n++
			if _, err := Load(f); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
	}
	if n == 0 {
		t.Error("no fleet config in ../configs")
	}
}

func TestConfigStrict(t *testing.T) {
	_, err := loadBytes("f.yaml", []byte("fleet:\n  group: g\n  graec: 1m\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "f.yaml:3: field graec not found") {
		t.Errorf("unknown key: %v", err)
	}
	_, err = loadBytes("f.yaml", []byte("fleet:\n  group_by: [device]\n  partitions: 0\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "fleet.group_by") || !strings.Contains(err.Error(), "fleet.partitions") {
		t.Errorf("invalid values: %v", err)
	}
	if IsConfig([]byte("gateway:\n  id: x\n")) {
		t.Error("a gateway config taken for a fleet config")
	}
}

func TestConfigEnv(t *testing.T) {
	cfg, err := loadBytes("", nil, []string{"RUNNEL_FLEET_BROKERS=a:1, b:2", "RUNNEL_FLEET_GRACE=30s",
		"RUNNEL_FLEET_GROUP_BY=site,line", "RUNNEL_FLEET_INSTANCE=i1", "PATH=/bin"})
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Fleet
	if !reflect.DeepEqual(f.Brokers, []string{"a:1", "b:2"}) || f.Grace != 30*time.Second ||
		!reflect.DeepEqual(f.GroupBy, []string{"site", "line"}) || f.Instance != "i1" {
		t.Errorf("env not applied: %+v", f)
	}
	if _, err := loadBytes("", nil, []string{"RUNNEL_FLEET_GRAEC=1s"}); err == nil || !strings.Contains(err.Error(), "RUNNEL_FLEET_GRAEC") {
		t.Errorf("unknown variable: %v", err)
	}
	if _, err := loadBytes("", nil, []string{"RUNNEL_FLEET_GRACE=soon"}); err == nil {
		t.Error("bad duration accepted")
	}
}
