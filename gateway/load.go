package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/runnel-iot/runnel/alerts"
	"gopkg.in/yaml.v3"
)

// Load is the one load path of the gateway: `runnel run` and `runnel check`
// both call it. It starts from DefaultConfig, applies the YAML file at path
// (none when path is ""), then the RUNNEL_* environment variables, resolves
// an empty gateway.id from the machine, and validates the result.
//
// Every problem is reported at once: the error is an errors.Join of
// *ConfigError, one per line when printed, sorted by file line, each of the
// form `FILE:LINE: key.path: what is wrong and what is allowed` (or
// `env RUNNEL_X: key.path: ...` for a value that came from the environment).
//
// Load reads the file, the process environment and /etc/machine-id; it is
// safe for concurrent use.
func Load(path string) (Config, error) {
	return defaultLoader().load(path)
}

// loader holds Load's inputs from the machine, so tests can replace them.
type loader struct {
	environ       []string
	machineIDFile string
	hostname      func() (string, error)
}

func defaultLoader() loader {
	return loader{environ: os.Environ(), machineIDFile: "/etc/machine-id", hostname: os.Hostname}
}

func (l loader) load(path string) (Config, error) {
	var data []byte
	if path != "" {
		var err error
		data, err = os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("read config %s: %w", path, unwrapPath(err))
		}
	}
	return l.loadBytes(path, data)
}

// loadBytes is load after the file was read; name is the file name used in
// messages, data its contents.
func (l loader) loadBytes(name string, data []byte) (Config, error) {
	cfg := DefaultConfig()
	d := decoder{file: name, lines: map[string]int{}}
	d.decodeFile(data, reflect.ValueOf(&cfg).Elem())
	envKeys, envErrs := applyEnv(reflect.ValueOf(&cfg).Elem(), l.environ, envAliases)
	errs := append(d.errs, envErrs...)
	for _, e := range loadSecretFiles(&cfg, filepath.Dir(name)) {
		switch {
		case envKeys[e.Key] != "":
			e.Env = envKeys[e.Key]
		case d.line(e.Key) > 0:
			e.File, e.Line = name, d.line(e.Key)
		}
		errs = append(errs, e)
	}
	rules := l.loadRulesFile(&cfg, filepath.Dir(name))
	if rules != nil {
		errs = append(errs, rules.errs...)
	}

	idFrom, idUnresolved := "", false
	if cfg.Gateway.ID == "" {
		id, from, err := resolveID(l.machineIDFile, l.hostname)
		if err != nil {
			errs = append(errs, &ConfigError{Key: "gateway.id", Msg: err.Error()})
			idUnresolved = true
		}
		cfg.Gateway.ID, idFrom = id, from
	}

	for _, err := range flatten(cfg.Validate()) {
		ce, ok := err.(*ConfigError)
		if !ok {
			panic("BUG: Config.Validate returned a " + reflect.TypeOf(err).String())
		}
		if ce.Key == "gateway.id" && idUnresolved {
			continue // already reported: no default could be found
		}
		switch {
		case envKeys[ce.Key] != "":
			ce.Env = envKeys[ce.Key]
		case rules != nil && rules.lines[ruleKey(ce.Key)] > 0:
			ce.File, ce.Line = rules.file, rules.line(ce.Key)
		case d.line(ce.Key) > 0:
			ce.File, ce.Line = name, d.line(ce.Key)
		case ce.Key == "gateway.id" && idFrom != "":
			ce.Msg += " (resolved from " + idFrom + "; set gateway.id or RUNNEL_GATEWAY_ID)"
		default:
			ce.Msg += " (default value)"
		}
		errs = append(errs, ce)
	}
	if len(errs) > 0 {
		sortErrors(errs)
		joined := make([]error, len(errs))
		for i, e := range errs {
			joined[i] = e
		}
		return Config{}, errors.Join(joined...)
	}
	return cfg, nil
}

// sortErrors orders problems as an operator reads them: down the file, then
// the environment, then the rest by key.
func sortErrors(errs []*ConfigError) {
	rank := func(e *ConfigError) int {
		switch {
		case e.File != "" && e.Line > 0:
			return 0
		case e.File != "":
			return 1
		case e.Env != "":
			return 2
		}
		return 3
	}
	slices.SortStableFunc(errs, func(a, b *ConfigError) int {
		if r := rank(a) - rank(b); r != 0 {
			return r
		}
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return strings.Compare(a.Env+a.Key, b.Env+b.Key)
	})
}

// resolveID finds the default gateway id: the trimmed contents of the
// machine-id file, else the hostname. from says which one it used.
func resolveID(machineIDFile string, hostname func() (string, error)) (id, from string, err error) {
	b, mErr := os.ReadFile(machineIDFile)
	if id := strings.TrimSpace(string(b)); mErr == nil && id != "" {
		return id, machineIDFile, nil
	}
	if mErr == nil {
		mErr = errors.New("file is empty")
	}
	h, hErr := hostname()
	if h = strings.TrimSpace(h); hErr == nil && h != "" {
		return h, "hostname", nil
	}
	if hErr == nil {
		hErr = errors.New("hostname is empty")
	}
	return "", "", fmt.Errorf("not set, and no default could be found (read %s: %v; hostname: %v): set gateway.id or RUNNEL_GATEWAY_ID", machineIDFile, mErr, hErr)
}

// decoder walks a YAML node tree against a config struct, using the yaml
// tags, so that unknown keys and wrong types are errors with their line. It
// records the line of every key path it sets for later validation errors.
type decoder struct {
	file  string
	lines map[string]int // key path → line of its key in the file
	errs  []*ConfigError
}

func (d *decoder) errorf(n *yaml.Node, key, format string, args ...any) {
	d.errs = append(d.errs, &ConfigError{File: d.file, Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// line returns the line that set key, or of the nearest enclosing key.
func (d *decoder) line(key string) int {
	for key != "" {
		if l, ok := d.lines[key]; ok {
			return l
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// decodeFile decodes a whole file into v, the config struct. An empty file
// or one with only comments sets nothing.
func (d *decoder) decodeFile(data []byte, v reflect.Value) {
	d.decodeFileAt(data, v, "")
}

// decodeFileAt is decodeFile for a file that holds the keys under prefix
// (a rules file holds alerts.rules).
func (d *decoder) decodeFileAt(data []byte, v reflect.Value, prefix string) {
	if len(bytes.TrimSpace(data)) == 0 {
		return
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return
		}
		d.errs = append(d.errs, syntaxError(d.file, err))
		return
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		d.errs = append(d.errs, &ConfigError{File: d.file, Line: extra.Line, Msg: "more than one YAML document: a config file is one document"})
		return
	}
	if len(doc.Content) == 0 {
		return
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return
	}
	if root.Kind != yaml.MappingNode {
		d.errorf(root, prefix, "the top level must be a mapping of sections (%s), got %s", strings.Join(keyNames(keyFields(v.Type())), ", "), kindName(root))
		return
	}
	d.decode(root, v, prefix)
}

// syntaxError turns a YAML syntax error into a ConfigError, lifting the
// line yaml.v3 puts in its message into the FILE:LINE position.
func syntaxError(file string, err error) *ConfigError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, tail, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, tail
			}
		}
	}
	return &ConfigError{File: file, Line: line, Msg: "invalid YAML: " + msg}
}

// decode sets v from node n; key is v's key path.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	t := v.Type()
	switch {
	case isScalar(t):
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, key, "want a single value, got %s", kindName(n))
			return
		}
		if n.Tag == "!!null" {
			v.SetZero()
			return
		}
		if err := setScalar(v, n.Value); err != nil {
			d.errorf(n, key, "%v", err)
		}
	case t.Kind() == reflect.Pointer:
		// An optional setting (nil: unset, the default applies).
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			v.SetZero()
			return
		}
		e := reflect.New(t.Elem())
		d.decode(n, e.Elem(), key)
		v.Set(e)
	case t.Kind() == reflect.Struct:
		d.decodeStruct(n, v, key)
	case t.Kind() == reflect.Slice:
		d.decodeSlice(n, v, key)
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String:
		d.decodeMap(n, v, key)
	default:
		panic("BUG: config key " + key + " has unsupported type " + t.String())
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty section keeps its defaults
	}
	fields := keyFields(v.Type())
	allowed := keyNames(fields)
	if n.Kind != yaml.MappingNode {
		d.errorf(n, key, "want a mapping with keys %s, got %s", strings.Join(allowed, ", "), kindName(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		name := kn.Value
		path := joinKey(key, name)
		if first, dup := seen[name]; dup {
			d.errorf(kn, path, "duplicate key, first set on line %d", first)
			continue
		}
		seen[name] = kn.Line
		idx := slices.IndexFunc(fields, func(f keyField) bool { return f.name == name })
		if idx < 0 {
			d.errorf(kn, path, "unknown key%s; allowed keys: %s", didYouMean(name, allowed), strings.Join(allowed, ", "))
			continue
		}
		d.lines[path] = kn.Line
		d.decode(vn, v.Field(fields[idx].index), path)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		v.SetZero()
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, key, "want a list, got %s", kindName(n))
		return
	}
	if len(n.Content) == 0 {
		v.SetZero() // [] is the same as unset, as in the defaults
		return
	}
	out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, en := range n.Content {
		path := key + "[" + strconv.Itoa(i) + "]"
		d.lines[path] = en.Line
		d.decode(en, out.Index(i), path)
	}
	v.Set(out)
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		v.SetZero()
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, key, "want a mapping, got %s", kindName(n))
		return
	}
	out := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		path := joinKey(key, kn.Value)
		d.lines[path] = kn.Line
		e := reflect.New(v.Type().Elem()).Elem()
		d.decode(vn, e, path)
		out.SetMapIndex(reflect.ValueOf(kn.Value).Convert(v.Type().Key()), e)
	}
	v.Set(out)
}

func joinKey(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "nothing"
}

// loadRulesFile appends the rules of alerts.rules_file, when set, to the
// inline ones. It returns the file's decoder (its errors and key lines,
// with rule indexes numbered after the inline rules), or nil.
//
// A relative path is relative to the directory of the config file (the
// working directory without one).
func (l loader) loadRulesFile(cfg *Config, configDir string) *decoder {
	path := cfg.Alerts.RulesFile
	if path == "" {
		return nil
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(configDir, path)
	}
	rd := &decoder{file: path, lines: map[string]int{}}
	data, err := os.ReadFile(path)
	if err != nil {
		rd.errs = append(rd.errs, &ConfigError{Key: "alerts.rules_file", Msg: fmt.Sprintf("read %s: %v", path, unwrapPath(err))})
		return rd
	}
	var file struct {
		Rules []alerts.Rule `yaml:"rules"`
	}
	rd.decodeFileAt(data, reflect.ValueOf(&file).Elem(), "alerts")
	n := len(cfg.Alerts.Rules)
	shift := func(key string) string {
		rest, ok := strings.CutPrefix(key, "alerts.rules[")
		if !ok {
			return key
		}
		i := strings.IndexByte(rest, ']')
		j, err := strconv.Atoi(rest[:max(i, 0)])
		if i < 0 || err != nil {
			return key
		}
		return "alerts.rules[" + strconv.Itoa(j+n) + rest[i:]
	}
	lines := make(map[string]int, len(rd.lines))
	for k, v := range rd.lines {
		lines[shift(k)] = v
	}
	rd.lines = lines
	for _, e := range rd.errs {
		e.Key = shift(e.Key)
	}
	cfg.Alerts.Rules = append(cfg.Alerts.Rules, file.Rules...)
	return rd
}

// ruleKey is the key of the rule a key path is under ("alerts.rules[3]"),
// or key itself.
func ruleKey(key string) string {
	if rest, ok := strings.CutPrefix(key, "alerts.rules["); ok {
		if i := strings.IndexByte(rest, ']'); i >= 0 {
			return key[:len("alerts.rules[")+i+1]
		}
	}
	return key
}
