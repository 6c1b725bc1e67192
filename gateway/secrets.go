package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// secretFile is one *_file key: a file whose lines are appended to a list
// of secrets, so the secrets need not sit in the config file (systemd's
// LoadCredential= hands them over as files readable only by the service:
// RUNNEL_HTTP_TOKENS_FILE=%d/http-tokens).
type secretFile struct {
	key  string // the *_file key
	path func(*Config) string
	dst  func(*Config) *[]string
}

var secretFiles = []secretFile{
	{"http.tokens_file", func(c *Config) string { return c.HTTP.TokensFile }, func(c *Config) *[]string { return &c.HTTP.Tokens }},
	{"http_write.tokens_file", func(c *Config) string { return c.HTTPWrite.TokensFile }, func(c *Config) *[]string { return &c.HTTPWrite.Tokens }},
}

// passwordFile is a *_file key for a single secret: the file's contents
// without the final newline (a password may hold any character, '#' and
// inner spaces included), stored in a string key that must be empty.
type passwordFile struct {
	key    string // the *_file key
	inline string // the key it stands in for
	path   func(*Config) string
	dst    func(*Config) *string
}

var passwordFiles = []passwordFile{
	{"kafka.sasl.password_file", "password", func(c *Config) string { return c.Kafka.SASL.PasswordFile }, func(c *Config) *string { return &c.Kafka.SASL.Password }},
}

// loadSecretFiles appends the secrets of every *_file key set to their
// lists: one secret per line, blank lines and lines starting with # are
// skipped. A relative path is relative to the config file's directory.
// Errors name the key and the file, never the contents.
func loadSecretFiles(cfg *Config, configDir string) []*ConfigError {
	var errs []*ConfigError
	for _, sf := range secretFiles {
		path := sf.path(cfg)
		if path == "" {
			continue
		}
		b, path, err := readSecretFile(path, configDir)
		if err != nil {
			errs = append(errs, &ConfigError{Key: sf.key, Msg: err.Error()})
			continue
		}
		dst := sf.dst(cfg)
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			*dst = append(*dst, line)
			n++
		}
		if n == 0 {
			errs = append(errs, &ConfigError{Key: sf.key, Msg: fmt.Sprintf("%s holds no secret (one per line)", path)})
		}
	}
	for _, pf := range passwordFiles {
		path := pf.path(cfg)
		if path == "" {
			continue
		}
		dst := pf.dst(cfg)
		if *dst != "" {
			errs = append(errs, &ConfigError{Key: pf.key, Msg: fmt.Sprintf("set %s or %s_file, not both", pf.inline, pf.inline)})
			continue
		}
		b, path, err := readSecretFile(path, configDir)
		if err != nil {
			errs = append(errs, &ConfigError{Key: pf.key, Msg: err.Error()})
			continue
		}
		secret := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if secret == "" {
			errs = append(errs, &ConfigError{Key: pf.key, Msg: fmt.Sprintf("%s holds no secret", path)})
			continue
		}
		*dst = secret
	}
	return errs
}

// readSecretFile reads a *_file key's file; a relative path is relative
// to the config file's directory. The error names the file, never its
// contents.
func readSecretFile(path, configDir string) ([]byte, string, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(configDir, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, path, fmt.Errorf("read %s: %v", path, unwrapPath(err))
	}
	return b, path, nil
}
