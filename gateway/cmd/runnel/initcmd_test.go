package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/runnel-iot/runnel/gateway"
)

// TestInit checks `runnel init`: a 0600 config that loads as run loads
// it, holding bcrypt hashes of the printed passwords and the printed
// tokens, and never written over an existing file.
func TestInit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.yaml")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"init", "-o", path, "-device", "pump-7"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o600 {
		t.Errorf("mode %o, want 600", m)
	}
	cfg, err := gateway.Load(path)
	if err != nil {
		t.Fatalf("runnel check: %v\n%s", err, out.String())
	}
	secret := func(label string) string {
		m := regexp.MustCompile(regexp.QuoteMeta(label) + `\s+(\S+)`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no %q in:\n%s", label, out.String())
		}
		return m[1]
	}
	pw := map[string]string{"admin": secret("mqtt user admin:"), "pump-7": secret("mqtt user pump-7:")}
	for _, u := range cfg.MQTT.Users {
		if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(pw[u.Username])) != nil {
			t.Errorf("user %s: the printed password does not match its hash", u.Username)
		}
	}
	if len(cfg.MQTT.Users) != 2 || !cfg.Security.RequireCredentials {
		t.Errorf("users %d, require_credentials %v", len(cfg.MQTT.Users), cfg.Security.RequireCredentials)
	}
	if !slices.Equal(cfg.HTTP.Tokens, []string{secret("http token (API):")}) || !slices.Equal(cfg.HTTPWrite.Tokens, []string{secret("http write token:")}) {
		t.Errorf("tokens %q %q do not match the printed ones:\n%s", cfg.HTTP.Tokens, cfg.HTTPWrite.Tokens, out.String())
	}
	before, _ := os.ReadFile(path)
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"init", "-o", path}, &out, &errb); code != 2 {
		t.Errorf("init over an existing file: exit %d, want 2", code)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("init changed an existing file")
	}
}

// TestInitProfile checks `runnel init -profile`: every profile in configs/
// that requires credentials gets them and loads; the profile's own keys
// and comments are kept.
func TestInitProfile(t *testing.T) {
	for _, profile := range []string{"raspberry-pi.yaml", "industrial.yaml"} {
		t.Run(profile, func(t *testing.T) {
			src := filepath.Join("..", "..", "..", "configs", profile)
			base, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := gateway.Load(src); err == nil {
				t.Fatalf("%s loads without credentials; the test expects it to require them", profile)
			}
			path := filepath.Join(t.TempDir(), "gw.yaml")
			var out, errb bytes.Buffer
			if code := run(context.Background(), []string{"init", "-profile", src, "-o", path}, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			cfg, err := gateway.Load(path)
			if err != nil {
				t.Fatalf("the written config does not load: %v", err)
			}
			var raw struct {
				Gateway struct {
					DataDir string `yaml:"data_dir"`
				} `yaml:"gateway"`
				WAL struct {
					Sync string `yaml:"sync"`
				} `yaml:"wal"`
			}
			if err := yaml.Unmarshal(base, &raw); err != nil {
				t.Fatal(err)
			}
			if cfg.Gateway.DataDir != raw.Gateway.DataDir || (raw.WAL.Sync != "" && string(cfg.WAL.Sync) != raw.WAL.Sync) {
				t.Errorf("profile settings lost: data_dir %q (profile %q), wal.sync %q (profile %q)",
					cfg.Gateway.DataDir, raw.Gateway.DataDir, cfg.WAL.Sync, raw.WAL.Sync)
			}
			if len(cfg.MQTT.Users) != 2 || len(cfg.HTTP.Tokens) != 1 || len(cfg.HTTPWrite.Tokens) != 1 || !cfg.Security.RequireCredentials {
				t.Errorf("users %d, tokens %d/%d", len(cfg.MQTT.Users), len(cfg.HTTP.Tokens), len(cfg.HTTPWrite.Tokens))
			}
			written, _ := os.ReadFile(path)
			// The profile's comments and its own settings survive.
			firstComment := string(bytes.SplitN(base, []byte("\n"), 2)[0])
			if !bytes.Contains(written, []byte(firstComment)) {
				t.Errorf("the profile's comment %q is gone:\n%s", firstComment, written)
			}
		})
	}
}
