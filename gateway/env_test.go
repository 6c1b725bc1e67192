package gateway

import (
	"bufio"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
)

// listConfig stands in for a future section with list keys (kafka.brokers).
type listConfig struct {
	Kafka struct {
		Brokers []string `yaml:"brokers"`
		Ports   []int    `yaml:"ports"`
	} `yaml:"kafka"`
}

func TestEnvList(t *testing.T) {
	tests := []struct {
		name    string
		env     string
		brokers []string
		ports   []int
		err     string
	}{
		{name: "comma-separated with spaces", env: "RUNNEL_KAFKA_BROKERS=a:9092, b:9092 ,c:9092", brokers: []string{"a:9092", "b:9092", "c:9092"}},
		{name: "one item", env: "RUNNEL_KAFKA_BROKERS=a:9092", brokers: []string{"a:9092"}},
		{name: "empty items dropped", env: "RUNNEL_KAFKA_BROKERS=a,,b,", brokers: []string{"a", "b"}},
		{name: "empty value clears", env: "RUNNEL_KAFKA_BROKERS=", brokers: []string{}},
		{name: "typed items", env: "RUNNEL_KAFKA_PORTS=9092, 9093", ports: []int{9092, 9093}},
		{name: "bad typed item", env: "RUNNEL_KAFKA_PORTS=9092,x", err: `env RUNNEL_KAFKA_PORTS: kafka.ports: "x" is not a whole number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c listConfig
			c.Kafka.Brokers = []string{"default:9092"}
			_, errs := applyEnv(reflect.ValueOf(&c).Elem(), []string{tt.env}, nil)
			if tt.err != "" {
				if len(errs) != 1 || errs[0].Error() != tt.err {
					t.Fatalf("errors = %v, want %q", errs, tt.err)
				}
				return
			}
			if len(errs) != 0 {
				t.Fatalf("unexpected errors: %v", errs)
			}
			if tt.brokers != nil && !reflect.DeepEqual(c.Kafka.Brokers, tt.brokers) {
				t.Errorf("brokers = %q, want %q", c.Kafka.Brokers, tt.brokers)
			}
			if tt.ports != nil && !reflect.DeepEqual(c.Kafka.Ports, tt.ports) {
				t.Errorf("ports = %v, want %v", c.Kafka.Ports, tt.ports)
			}
		})
	}
}

func TestYAMLList(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		brokers []string
		err     string
	}{
		{name: "flow list", file: "kafka:\n  brokers: [a:9092, b:9092]\n", brokers: []string{"a:9092", "b:9092"}},
		{name: "block list", file: "kafka:\n  brokers:\n    - a:9092\n    - b:9092\n", brokers: []string{"a:9092", "b:9092"}},
		{name: "scalar for a list", file: "kafka:\n  brokers: a:9092\n", err: `c.yaml:2: kafka.brokers: want a list, got the value "a:9092"`},
		{name: "bad item", file: "kafka:\n  ports:\n    - 1\n    - [2]\n", err: `c.yaml:4: kafka.ports[1]: want a single value, got a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c listConfig
			d := decoder{file: "c.yaml", lines: map[string]int{}}
			d.decodeFile([]byte(tt.file), reflect.ValueOf(&c).Elem())
			if tt.err != "" {
				if len(d.errs) != 1 || d.errs[0].Error() != tt.err {
					t.Fatalf("errors = %v, want %q", d.errs, tt.err)
				}
				return
			}
			if len(d.errs) != 0 || !reflect.DeepEqual(c.Kafka.Brokers, tt.brokers) {
				t.Errorf("brokers = %q (errors %v), want %q", c.Kafka.Brokers, d.errs, tt.brokers)
			}
		})
	}
}

func TestEnvVars(t *testing.T) {
	vars := EnvVars()
	byName := map[string]EnvVar{}
	for _, v := range vars {
		if _, dup := byName[v.Name]; dup {
			t.Errorf("%s names two keys", v.Name)
		}
		byName[v.Name] = v
		if !v.Alias && v.Name != envName(v.Key) {
			t.Errorf("%s is not derived from %s", v.Name, v.Key)
		}
	}
	for _, want := range []EnvVar{
		{Name: "RUNNEL_GATEWAY_ID", Key: "gateway.id", Default: ""},
		{Name: "RUNNEL_GATEWAY_SHUTDOWN_TIMEOUT", Key: "gateway.shutdown_timeout", Default: "30s"},
		{Name: "RUNNEL_DATA_DIR", Key: "gateway.data_dir", Default: "./data", Alias: true},
		{Name: "RUNNEL_GATEWAY_DATA_DIR", Key: "gateway.data_dir", Default: "./data"},
		{Name: "RUNNEL_WAL_SEGMENT_BYTES", Key: "wal.segment_bytes", Default: "1MiB"},
		{Name: "RUNNEL_WAL_RETENTION_AGE", Key: "wal.retention_age", Default: "24h"},
		{Name: "RUNNEL_WAL_SYNC", Key: "wal.sync", Default: "batch"},
		{Name: "RUNNEL_HTTP_ADDR", Key: "http.addr", Default: ":8080"},
	} {
		if got := byName[want.Name]; got != want {
			t.Errorf("EnvVars has %+v, want %+v", got, want)
		}
	}
	for _, a := range envAliases {
		if _, derived := byName[envName(a.key)]; !derived {
			t.Errorf("alias %s names unknown key %s", a.name, a.key)
		}
	}
	// Every variable EnvVars documents is accepted by Load.
	for _, v := range vars {
		value := v.Default
		if v.Key == "gateway.id" {
			value = "gw-1"
		}
		if _, err := testLoader(t, v.Name+"="+value).loadBytes("", nil); err != nil {
			t.Errorf("%s=%q: %v", v.Name, value, err)
		}
	}
}

// TestREADMEEnvTable checks that README's table of environment variables,
// the table that follows the line "<!-- env-table -->", names every
// variable EnvVars returns.
func TestREADMEEnvTable(t *testing.T) {
	f, err := os.Open("../README.md")
	if err != nil {
		t.Skipf("no README.md: %v", err)
	}
	defer f.Close()
	rows, found, err := envTable(f)
	if err != nil {
		t.Fatalf("read README.md: %v", err)
	}
	if !found {
		t.Skip(`README.md has no "<!-- env-table -->" line`)
	}
	for _, v := range EnvVars() {
		if !strings.Contains(rows, v.Name) {
			t.Errorf("README.md env table lacks %s (%s, default %q)", v.Name, v.Key, v.Default)
		}
	}
}

// envTable returns the rows of the first Markdown table after the line
// "<!-- env-table -->", and whether that line was found.
func envTable(r io.Reader) (rows string, found bool, err error) {
	var table strings.Builder
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case !found:
			found = line == "<!-- env-table -->"
		case strings.HasPrefix(line, "|"):
			table.WriteString(line + "\n")
		case table.Len() > 0:
			return table.String(), true, nil
		}
	}
	return table.String(), found, sc.Err()
}

func TestEnvTableParse(t *testing.T) {
	md := "# x\n| RUNNEL_NOT_THIS |\n<!-- env-table -->\n\n| name | key |\n|---|---|\n| `RUNNEL_A` | a |\n\n| RUNNEL_B |\n"
	rows, found, err := envTable(strings.NewReader(md))
	if err != nil || !found || !strings.Contains(rows, "RUNNEL_A") || strings.Contains(rows, "RUNNEL_B") || strings.Contains(rows, "NOT_THIS") {
		t.Errorf("envTable = %q, %v, %v; want only the table after the marker", rows, found, err)
	}
}
