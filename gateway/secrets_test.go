package gateway

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSecretFiles checks the *_file keys: tokens read from files (relative
// to the config file, or from the environment), and errors that name the
// key and file but never the contents.
func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("api-tokens", "# API tokens\nfile-token-1\n\n  file-token-2  \n")
	writeTokens := write("write-tokens", "write-token-1\n")
	cfgFile := filepath.Join(dir, "gateway.yaml")
	data := []byte("http:\n  tokens: [inline-token]\n  tokens_file: api-tokens\n")
	cfg, err := testLoader(t, "RUNNEL_HTTP_WRITE_TOKENS_FILE="+writeTokens).loadBytes(cfgFile, data)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"inline-token", "file-token-1", "file-token-2"}; !slices.Equal(cfg.HTTP.Tokens, want) {
		t.Errorf("http.tokens %q, want %q", cfg.HTTP.Tokens, want)
	}
	if want := []string{"write-token-1"}; !slices.Equal(cfg.HTTPWrite.Tokens, want) {
		t.Errorf("http_write.tokens %q, want %q", cfg.HTTPWrite.Tokens, want)
	}

	write("empty", "# nothing\n")
	_, err = testLoader(t).loadBytes(cfgFile, []byte("http:\n  tokens_file: empty\nhttp_write:\n  tokens_file: missing\n"))
	msg := errString(err)
	for _, want := range []string{
		cfgFile + ":2: http.tokens_file: " + filepath.Join(dir, "empty") + " holds no secret",
		cfgFile + ":4: http_write.tokens_file: read " + filepath.Join(dir, "missing") + ": no such file or directory",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "file-token") {
		t.Error("an error shows a secret")
	}
}

// TestSASLPasswordFile checks kafka.sasl.password_file: the password is the
// file's contents without the final newline, from the file or the
// environment; an empty file, and a password set both ways, are errors
// that never show the password.
func TestSASLPasswordFile(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "kafka-password")
	if err := os.WriteFile(pw, []byte("s3cret #not a comment\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "gateway.yaml")
	base := "kafka:\n  brokers: [\"127.0.0.1:9092\"]\n  tls:\n    enabled: true\n  sasl:\n    mechanism: PLAIN\n    username: gw\n"
	cfg, err := testLoader(t).loadBytes(cfgFile, []byte(base+"    password_file: kafka-password\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kafka.SASL.Password != "s3cret #not a comment" {
		t.Errorf("password %q, want the file's line", cfg.Kafka.SASL.Password)
	}
	cfg, err = testLoader(t, "RUNNEL_KAFKA_SASL_PASSWORD_FILE="+pw).loadBytes(cfgFile, []byte(base))
	if err != nil || cfg.Kafka.SASL.Password != "s3cret #not a comment" {
		t.Errorf("from the environment: password %q, err %v", cfg.Kafka.SASL.Password, err)
	}

	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = testLoader(t).loadBytes(cfgFile, []byte(base+"    password_file: empty\n"))
	if msg := errString(err); !strings.Contains(msg, "kafka.sasl.password_file: "+empty+" holds no secret") {
		t.Errorf("empty file: %s", msg)
	}
	_, err = testLoader(t).loadBytes(cfgFile, []byte(base+"    password: inline\n    password_file: kafka-password\n"))
	msg := errString(err)
	if !strings.Contains(msg, "kafka.sasl.password_file: set password or password_file, not both") {
		t.Errorf("both set: %s", msg)
	}
	if strings.Contains(msg, "s3cret") || strings.Contains(msg, "inline") {
		t.Errorf("an error shows the password: %s", msg)
	}
}
