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
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), "require_credentials: true") {
				if _, err := testLoader(t).loadBytes(f, data); err != nil {
					t.Errorf("runnel check -config %s:\n%v", f, err)
				}
				return
			}
			// A profile that starts only with credentials: refused as it
			// is, loaded once users and tokens are added.
			_, err = testLoader(t).loadBytes(f, data)
			if err == nil || len(flatten(err)) != 1 || !strings.Contains(err.Error(), "security.require_credentials") {
				t.Errorf("runnel check -config %s without credentials = %v, want only the require_credentials error", f, err)
			}
			withUsers := strings.Replace(string(data), "\n  users: []\n",
				"\n  users: [{username: dev, password_hash: \"$2a$10$nWNUqyy/FP/ljPXxbbOJ9OiKEjRLDGpmSAdhX.DTN.U99MPtzwe2a\"}]\n", 1)
			if withUsers == string(data) {
				t.Fatalf("%s: no \"  users: []\" line to fill in", f)
			}
			if _, err := testLoader(t, "RUNNEL_HTTP_TOKENS=token-123456").loadBytes(f, []byte(withUsers)); err != nil {
				t.Errorf("runnel check -config %s with credentials:\n%v", f, err)
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
