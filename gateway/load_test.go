package gateway

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/wal"
)

// testLoader is a loader whose machine id is "machine-1" and whose
// environment is env.
func testLoader(t *testing.T, env ...string) loader {
	t.Helper()
	mid := filepath.Join(t.TempDir(), "machine-id")
	if err := os.WriteFile(mid, []byte("machine-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return loader{environ: env, machineIDFile: mid, hostname: func() (string, error) { return "host-1", nil }}
}

// defaults is DefaultConfig as testLoader resolves it.
func defaults() Config {
	c := DefaultConfig()
	c.Gateway.ID = "machine-1"
	return c
}

// checkErrorLines compares an error's lines with want. A wanted line that
// ends in "..." matches as a prefix (for messages owned by other packages);
// any other must match exactly.
func checkErrorLines(t *testing.T, err error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want:\n%s", strings.Join(want, "\n"))
	}
	got := strings.Split(err.Error(), "\n")
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		if p, isPrefix := strings.CutSuffix(want[i], "..."); isPrefix {
			ok = strings.HasPrefix(got[i], p)
		} else {
			ok = got[i] == want[i]
		}
	}
	if !ok {
		t.Errorf("error lines:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

const walKeys = "sync, sync_interval, segment_bytes, segment_cache, max_pending_bytes, retention_bytes, retention_age"

// sections lists the config sections as the loader names them.
var sections = strings.Join(keyNames(keyFields(reflect.TypeOf(Config{}))), ", ")

func TestLoad(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  []string
		want func(*Config) // applied to defaults(); nil when an error is wanted
		errs []string
	}{
		{name: "empty file gives defaults", file: "", want: func(*Config) {}},
		{name: "comments only give defaults", file: "# nothing\n\n# here\n", want: func(*Config) {}},
		{name: "empty section keeps defaults", file: "wal:\nlog:\n", want: func(*Config) {}},
		{
			name: "values of every type",
			file: "gateway:\n  id: pi-042\n  data_dir: /var/lib/runnel\n  shutdown_timeout: 10s\n" +
				"log:\n  level: debug\n  format: json\n" +
				"wal:\n  sync: interval\n  sync_interval: 100ms\n  segment_bytes: 512KiB\n  segment_cache: 4\n  retention_bytes: 1GiB\n  retention_age: 1h\n" +
				"http:\n  addr: 127.0.0.1:9090\n",
			want: func(c *Config) {
				c.Gateway = GatewayConfig{ID: "pi-042", DataDir: "/var/lib/runnel", ShutdownTimeout: 10 * time.Second}
				c.Log = LogConfig{Level: "debug", Format: "json"}
				c.WAL.Sync, c.WAL.SyncInterval = wal.SyncInterval, 100*time.Millisecond
				c.WAL.SegmentBytes, c.WAL.SegmentCache = 512*wal.KiB, 4
				c.WAL.RetentionBytes, c.WAL.RetentionAge = wal.GiB, time.Hour
				c.HTTP.Addr = "127.0.0.1:9090"
			},
		},
		{
			name: "anchors and aliases",
			file: "gateway:\n  shutdown_timeout: &d 15s\nwal:\n  retention_age: *d\n",
			want: func(c *Config) { c.Gateway.ShutdownTimeout, c.WAL.RetentionAge = 15*time.Second, 15*time.Second },
		},
		{
			name: "unknown top-level key",
			file: "gateway:\n  id: a\nmqttt:\n  port: 1883\n",
			errs: []string{`c.yaml:3: mqttt: unknown key (did you mean mqtt?); allowed keys: ` + sections},
		},
		{
			name: "unknown nested key with a close match",
			file: "wal:\n  segmnt_bytes: 4MiB\n",
			errs: []string{`c.yaml:2: wal.segmnt_bytes: unknown key (did you mean segment_bytes?); allowed keys: ` + walKeys},
		},
		{
			name: "duplicate key",
			file: "log:\n  level: info\n  level: debug\n",
			errs: []string{`c.yaml:3: log.level: duplicate key, first set on line 2`},
		},
		{
			name: "wrong type: word for a number",
			file: "wal:\n  segment_cache: many\n",
			errs: []string{`c.yaml:2: wal.segment_cache: "many" is not a whole number`},
		},
		{
			name: "wrong type: list for a scalar",
			file: "http:\n  addr: [a, b]\n",
			errs: []string{`c.yaml:2: http.addr: want a single value, got a list`},
		},
		{
			name: "wrong type: scalar for a section",
			file: "\nwal: fast\n",
			errs: []string{`c.yaml:2: wal: want a mapping with keys ` + walKeys + `, got the value "fast"`},
		},
		{
			name: "top level is not a mapping",
			file: "- a\n- b\n",
			errs: []string{`c.yaml:1: the top level must be a mapping of sections (` + sections + `), got a list`},
		},
		{
			name: "bad duration",
			file: "gateway:\n  shutdown_timeout: abc\n",
			errs: []string{`c.yaml:2: gateway.shutdown_timeout: "abc" is not a duration: want a number with a unit, like 500ms, 10s, 5m, 1h`},
		},
		{
			name: "duration without unit",
			file: "gateway:\n  shutdown_timeout: 30\n",
			errs: []string{`c.yaml:2: gateway.shutdown_timeout: "30" is not a duration: want a number with a unit, like 500ms, 10s, 5m, 1h`},
		},
		{
			name: "bad size",
			file: "wal:\n  segment_bytes: lots\n",
			errs: []string{`c.yaml:2: wal.segment_bytes: "lots" is not a size...`},
		},
		{
			name: "enum not in set",
			file: "wal:\n  sync: fast\n",
			errs: []string{`c.yaml:2: wal.sync: "fast" is not one of batch, interval, none`},
		},
		{
			name: "log enums",
			file: "log:\n  level: verbose\n  format: xml\n",
			errs: []string{
				`c.yaml:2: log.level: "verbose" is not one of debug, info, warn, error`,
				`c.yaml:3: log.format: "xml" is not one of text, json`,
			},
		},
		{
			name: "out of range number",
			file: "wal:\n  segment_cache: 100\n",
			errs: []string{`c.yaml:2: wal.segment_cache: 100 is out of range 1 to 64...`},
		},
		{
			name: "out of range duration",
			file: "gateway:\n  shutdown_timeout: 1h\n",
			errs: []string{`c.yaml:2: gateway.shutdown_timeout: 1h0m0s is out of range 1s to 10m (too short cannot flush the WAL; too long outlasts supervisors' kill timeouts)`},
		},
		{
			name: "invalid explicit id",
			file: "gateway:\n  id: \"pi 042\"\n",
			errs: []string{`c.yaml:2: gateway.id: "pi 042" is not a valid id: use ` + idAllowed},
		},
		{
			name: "id too long",
			file: "gateway:\n  id: " + strings.Repeat("a", 65) + "\n",
			errs: []string{`c.yaml:2: gateway.id: "` + strings.Repeat("a", 65) + `" is not a valid id: use ` + idAllowed},
		},
		{
			name: "http addr without port",
			file: "http:\n  addr: localhost\n",
			errs: []string{`c.yaml:2: http.addr: "localhost" is not a host:port address: want host:port like ":8080" or "127.0.0.1:8080", port 0 to 65535`},
		},
		{
			name: "http port out of range",
			file: "http:\n  addr: \":70000\"\n",
			errs: []string{`c.yaml:2: http.addr: ":70000" is not a host:port address: want host:port like ":8080" or "127.0.0.1:8080", port 0 to 65535`},
		},
		{
			name: "several errors, sorted by line",
			file: "gateway:\n" + //           1
				"  shutdown_timeout: 0s\n" + // 2 out of range (validation)
				"log:\n" + //                  3
				"  level: loud\n" + //         4 enum (validation)
				"  colour: red\n" + //         5 unknown key (walk)
				"wal:\n" + //                  6
				"  sync: sometimes\n" + //     7 enum (wal validation)
				"  segment_bytes: big\n" + //  8 bad size (walk)
				"http:\n" + //                 9
				"  addr: nowhere\n", //        10 (validation)
			errs: []string{
				`c.yaml:2: gateway.shutdown_timeout: 0s is out of range 1s to 10m...`,
				`c.yaml:4: log.level: "loud" is not one of debug, info, warn, error`,
				`c.yaml:5: log.colour: unknown key; allowed keys: level, format`,
				`c.yaml:7: wal.sync: "sometimes" is not one of batch, interval, none`,
				`c.yaml:8: wal.segment_bytes: "big" is not a size...`,
				`c.yaml:10: http.addr: "nowhere" is not a host:port address...`,
			},
		},
		{
			name: "invalid YAML",
			file: "log:\n  level: info\n bad\n",
			errs: []string{`c.yaml:2: invalid YAML: ...`},
		},
		{
			name: "two documents",
			file: "log:\n  level: info\n---\nlog:\n  level: debug\n",
			errs: []string{`c.yaml:3: more than one YAML document: a config file is one document`},
		},
		{
			name: "env override wins over file",
			file: "wal:\n  sync: interval\n",
			env:  []string{"RUNNEL_WAL_SYNC=none", "RUNNEL_GATEWAY_SHUTDOWN_TIMEOUT=5s", "RUNNEL_WAL_SEGMENT_BYTES=1MiB", "PATH=/bin"},
			want: func(c *Config) {
				c.WAL.Sync, c.WAL.SegmentBytes = wal.SyncNone, wal.MiB
				c.Gateway.ShutdownTimeout = 5 * time.Second
			},
		},
		{
			name: "env alias",
			env:  []string{"RUNNEL_DATA_DIR=/srv/runnel", "RUNNEL_GATEWAY_ID=env-id"},
			want: func(c *Config) { c.Gateway.DataDir, c.Gateway.ID = "/srv/runnel", "env-id" },
		},
		{
			name: "env alias and derived name both set",
			env:  []string{"RUNNEL_DATA_DIR=/a", "RUNNEL_GATEWAY_DATA_DIR=/b"},
			errs: []string{`env RUNNEL_GATEWAY_DATA_DIR: gateway.data_dir: also set by RUNNEL_DATA_DIR: set only one`},
		},
		{
			name: "bad env value fails validation",
			file: "wal:\n  sync: batch\n",
			env:  []string{"RUNNEL_WAL_SYNC=fast"},
			errs: []string{`env RUNNEL_WAL_SYNC: wal.sync: "fast" is not one of batch, interval, none`},
		},
		{
			name: "bad env value fails parsing",
			env:  []string{"RUNNEL_GATEWAY_SHUTDOWN_TIMEOUT=soon"},
			errs: []string{`env RUNNEL_GATEWAY_SHUTDOWN_TIMEOUT: gateway.shutdown_timeout: "soon" is not a duration: want a number with a unit, like 500ms, 10s, 5m, 1h`},
		},
		{
			name: "unknown RUNNEL_ variable",
			env:  []string{"RUNNEL_WAL_SYNK=batch"},
			errs: []string{`env RUNNEL_WAL_SYNK: unknown variable: it names no config key (did you mean RUNNEL_WAL_SYNC?)`},
		},
		{
			name: "unknown RUNNEL_ variable, nothing close",
			env:  []string{"RUNNEL_COLOUR=red"},
			errs: []string{`env RUNNEL_COLOUR: unknown variable: it names no config key`},
		},
		{
			name: "file errors come before env errors",
			file: "log:\n  level: loud\n",
			env:  []string{"RUNNEL_LOG_FORMAT=xml"},
			errs: []string{
				`c.yaml:2: log.level: "loud" is not one of debug, info, warn, error`,
				`env RUNNEL_LOG_FORMAT: log.format: "xml" is not one of text, json`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := testLoader(t, tt.env...).loadBytes("c.yaml", []byte(tt.file))
			if tt.want == nil {
				checkErrorLines(t, err, tt.errs)
				return
			}
			if err != nil {
				t.Fatalf("unexpected error:\n%v", err)
			}
			want := defaults()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("config:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLoadErrorsAreConfigErrors(t *testing.T) {
	_, err := testLoader(t, "RUNNEL_LOG_FORMAT=xml").loadBytes("c.yaml", []byte("wal:\n  sync: fast\n"))
	errs := flatten(err)
	if len(errs) != 2 {
		t.Fatalf("got %d errors, want 2: %v", len(errs), err)
	}
	want := []ConfigError{
		{File: "c.yaml", Line: 2, Key: "wal.sync"},
		{Env: "RUNNEL_LOG_FORMAT", Key: "log.format"},
	}
	for i, e := range errs {
		var ce *ConfigError
		if !errors.As(e, &ce) {
			t.Fatalf("error %d is %T, want *ConfigError", i, e)
		}
		if ce.File != want[i].File || ce.Line != want[i].Line || ce.Env != want[i].Env || ce.Key != want[i].Key {
			t.Errorf("error %d = %+v, want position %+v", i, *ce, want[i])
		}
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("log:\n  level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := testLoader(t).load(good)
	if err != nil || cfg.Log.Level != "warn" {
		t.Errorf("load %s = level %q, %v; want warn, nil", good, cfg.Log.Level, err)
	}

	missing := filepath.Join(dir, "missing.yaml")
	_, err = testLoader(t).load(missing)
	if want := "read config " + missing + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("load missing file: got %v, want %q", err, want)
	}

	cfg, err = testLoader(t, "RUNNEL_HTTP_ADDR=:9999").load("")
	if err != nil || cfg.HTTP.Addr != ":9999" || cfg.WAL != wal.DefaultConfig() {
		t.Errorf("load no file = %+v, %v; want defaults with env applied", cfg, err)
	}
}

func TestConfigErrorFormat(t *testing.T) {
	tests := []struct {
		err  ConfigError
		want string
	}{
		{ConfigError{File: "c.yaml", Line: 3, Key: "wal.sync", Msg: "bad"}, "c.yaml:3: wal.sync: bad"},
		{ConfigError{File: "c.yaml", Msg: "bad"}, "c.yaml: bad"},
		{ConfigError{File: "c.yaml", Env: "RUNNEL_WAL_SYNC", Key: "wal.sync", Msg: "bad"}, "env RUNNEL_WAL_SYNC: wal.sync: bad"},
		{ConfigError{Key: "wal.sync", Msg: "bad"}, "wal.sync: bad"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestValidateKeys(t *testing.T) {
	c := DefaultConfig() // gateway.id is empty until Load resolves it
	c.WAL.SegmentCache = 0
	var keys []string
	for _, err := range flatten(c.Validate()) {
		ce, ok := err.(*ConfigError)
		if !ok {
			t.Fatalf("Validate returned %T, want *ConfigError", err)
		}
		keys = append(keys, ce.Key)
	}
	if want := []string{"gateway.id", "wal.segment_cache"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("Validate keys = %q, want %q", keys, want)
	}
	c.Gateway.ID, c.WAL.SegmentCache = "x", 1
	if err := c.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func TestGatewayID(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	machineID := write("machine-id", "  0123456789abcdef0123456789abcdef\n")
	empty := write("empty", "\n")
	missing := filepath.Join(dir, "missing")
	host := func(h string, err error) func() (string, error) {
		return func() (string, error) { return h, err }
	}
	noHost := host("", errors.New("uname failed"))

	tests := []struct {
		name      string
		machineID string
		hostname  func() (string, error)
		file      string
		wantID    string
		errs      []string
	}{
		{name: "machine-id", machineID: machineID, hostname: host("h", nil), wantID: "0123456789abcdef0123456789abcdef"},
		{name: "hostname when machine-id is missing", machineID: missing, hostname: host("pi-042", nil), wantID: "pi-042"},
		{name: "hostname when machine-id is empty", machineID: empty, hostname: host("pi-042", nil), wantID: "pi-042"},
		{name: "explicit id wins", machineID: machineID, hostname: host("h", nil), file: "gateway:\n  id: plant1.gw-7\n", wantID: "plant1.gw-7"},
		{
			name: "nothing to resolve from", machineID: missing, hostname: noHost,
			errs: []string{`gateway.id: not set, and no default could be found (read ` + missing + `: open ` + missing + `: no such file or directory; hostname: uname failed): set gateway.id or RUNNEL_GATEWAY_ID`},
		},
		{
			name: "resolved hostname is not a valid id", machineID: missing, hostname: host("my host", nil),
			errs: []string{`gateway.id: "my host" is not a valid id: use ` + idAllowed + ` (resolved from hostname; set gateway.id or RUNNEL_GATEWAY_ID)`},
		},
		{
			name: "invalid explicit id", machineID: machineID, hostname: host("h", nil), file: "gateway:\n  id: a/b\n",
			errs: []string{`c.yaml:2: gateway.id: "a/b" is not a valid id: use ` + idAllowed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := loader{machineIDFile: tt.machineID, hostname: tt.hostname}
			cfg, err := l.loadBytes("c.yaml", []byte(tt.file))
			if tt.errs != nil {
				checkErrorLines(t, err, tt.errs)
				return
			}
			if err != nil || cfg.Gateway.ID != tt.wantID {
				t.Errorf("gateway.id = %q, %v; want %q", cfg.Gateway.ID, err, tt.wantID)
			}
		})
	}
}

// FuzzLoad checks the loader's invariants on arbitrary files: it never
// panics, a config it accepts validates, and every problem it reports
// points into the file.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"", "gateway:\n  id: a\n", "wal:\n  sync: fast\n  segment_bytes: 4MiB\n", "- 1\n", "a: &x 1\nb: *x\n",
		"http: {addr: ':0'}\n", "log:\n  level: [1]\n", "wal: ~\n", "gateway:\n  shutdown_timeout: 1h\n---\n",
	} {
		f.Add([]byte(s))
	}
	l := loader{machineIDFile: "/nonexistent/machine-id", hostname: func() (string, error) { return "fuzz", nil }}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := l.loadBytes("f.yaml", data)
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("Load accepted a config that does not validate: %v", verr)
			}
			return
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, "f.yaml") {
				t.Fatalf("error line does not point into the file: %q", line)
			}
		}
	})
}
