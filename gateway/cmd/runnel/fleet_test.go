package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckFleetConfig: `runnel check` recognises a fleet config by its
// top-level fleet: key and validates it strictly.
func TestCheckFleetConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"check", "-config", "../../../configs/fleet.yaml"}, &stdout, &stderr); code != 0 {
		t.Fatalf("check fleet.yaml: exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "ok (fleet)") {
		t.Errorf("stdout %q", stdout.String())
	}
	bad := filepath.Join(t.TempDir(), "f.yaml")
	if err := os.WriteFile(bad, []byte("fleet:\n  grcae: 1m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	if code := run(context.Background(), []string{"check", "-config", bad}, &stdout, &stderr); code != 2 {
		t.Fatalf("check bad fleet config: exit %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), bad+":2: field grcae not found") {
		t.Errorf("stderr %q", stderr.String())
	}
	if code := run(context.Background(), []string{"fleet", "-config", bad}, &stdout, &stderr); code != 2 {
		t.Errorf("fleet with a bad config: exit %d, want 2", code)
	}
}
