package gateway

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestConfigFiles loads every example config through Load, the path
// `runnel check` uses, so the examples cannot rot.
func TestConfigFiles(t *testing.T) {
	files, err := filepath.Glob("../configs/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no ../configs/*.yaml files")
	}
	for _, f := range files {
		if filepath.Base(f) == "fleet.yaml" {
			continue // the fleet service's config: fleet's TestConfigFilesKinds loads it
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f); err != nil {
				t.Errorf("runnel check -config %s:\n%v", f, err)
			}
		})
	}
}

// TestDefaultConfigFile checks that configs/gateway.yaml is the complete
// annotated default: its values are DefaultConfig's, it sets every key, and
// it names every key's environment variable.
func TestDefaultConfigFile(t *testing.T) {
	const path = "../configs/gateway.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := testLoader(t).loadBytes(path, data)
	if err != nil {
		t.Fatal(err)
	}
	if want := defaults(); !reflect.DeepEqual(got, want) {
		t.Errorf("%s differs from DefaultConfig:\n got %+v\nwant %+v", path, got, want)
	}

	var c Config
	d := decoder{file: path, lines: map[string]int{}}
	d.decodeFile(data, reflect.ValueOf(&c).Elem())
	for _, v := range EnvVars() {
		if _, set := d.lines[v.Key]; !set {
			t.Errorf("%s does not set %s", path, v.Key)
		}
		if !strings.Contains(string(data), v.Name) {
			t.Errorf("%s does not mention %s (for %s)", path, v.Name, v.Key)
		}
	}
}
