package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRulesFiles loads each example rules file through a config that
// names it, so the examples validate against the default windows.
func TestRulesFiles(t *testing.T) {
	files, err := filepath.Glob("../configs/rules/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example rules files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			abs, err := filepath.Abs(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := testLoader(t).loadBytes("", []byte("alerts:\n  rules_file: "+abs+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Alerts.Rules) < 2 {
				t.Errorf("%d rules loaded", len(cfg.Alerts.Rules))
			}
		})
	}
}

// TestRulesFileErrors checks that a rules file's problems name the rules
// file and line, with rule indexes after the inline rules, and that a
// relative path is taken from the config file's directory.
func TestRulesFileErrors(t *testing.T) {
	dir := t.TempDir()
	rules := "rules:\n  - name: ok\n    op: \">\"\n    threshold: 1\n  - name: bad\n    op: \">\"\n    threshold: 1\n    clear: 5\n    colour: red\n"
	if err := os.WriteFile(filepath.Join(dir, "r.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	config := "alerts:\n  rules_file: r.yaml\n  rules:\n    - name: inline\n      op: \"<\"\n      threshold: 3\n      window: tumbling:2m\n      value: mean\n"
	path := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := testLoader(t).load(path)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{
		path + ":7: alerts.rules[0].window: tumbling:2m is not a configured window",
		filepath.Join(dir, "r.yaml") + ":9: alerts.rules[2].colour: unknown key",
		filepath.Join(dir, "r.yaml") + ":8: alerts.rules[2].clear:",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "alerts.rules[1]") {
		t.Errorf("the valid rule is reported:\n%s", msg)
	}

	if err := os.Remove(filepath.Join(dir, "r.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := testLoader(t).load(path); err == nil || !strings.Contains(err.Error(), "alerts.rules_file: read "+filepath.Join(dir, "r.yaml")) {
		t.Errorf("missing rules file: %v", err)
	}
}
