package gateway

import (
	"reflect"
	"slices"
	"strings"
)

// envPrefix starts every environment override. A variable with this prefix
// that names no config key is an error, so a typo cannot go unnoticed.
const envPrefix = "RUNNEL_"

// EnvVar is one environment variable that overrides a config key.
type EnvVar struct {
	Name    string // RUNNEL_WAL_SEGMENT_BYTES
	Key     string // wal.segment_bytes
	Default string // the default as written in config; "" when empty
	List    bool   // a comma-separated list: "a:9092, b:9092"
	Alias   bool   // a short name, set beside the derived one
}

// envAlias is a short name for a key whose derived name is long or
// awkward. Each key keeps its derived name too; setting both is an error.
type envAlias struct {
	name, key string
}

// envAliases is the table of short names.
var envAliases = []envAlias{
	{"RUNNEL_DATA_DIR", "gateway.data_dir"},
}

// envName derives the variable of a key path: RUNNEL_ and the path in upper
// case with dots as underscores (wal.segment_bytes → RUNNEL_WAL_SEGMENT_BYTES).
func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// EnvVars lists every environment override in config order, each derived
// name followed by its aliases. It is the table README documents. Safe for
// concurrent use; the caller owns the returned slice.
func EnvVars() []EnvVar {
	def := DefaultConfig()
	var out []EnvVar
	for _, t := range envTargets(reflect.ValueOf(&def).Elem(), "") {
		ev := EnvVar{Name: t.name, Key: t.key, Default: formatValue(t.v), List: isList(t.v.Type())}
		out = append(out, ev)
		for _, a := range envAliases {
			if a.key == t.key {
				ev.Name, ev.Alias = a.name, true
				out = append(out, ev)
			}
		}
	}
	return out
}

// envTarget is one settable leaf of a config struct.
type envTarget struct {
	name, key string
	v         reflect.Value
}

// envTargets lists the leaves of struct v that an environment variable can
// set: every scalar and every list of scalars. Lists of structs and maps
// (rules, tag sets) are file-only.
func envTargets(v reflect.Value, prefix string) []envTarget {
	var out []envTarget
	for _, f := range keyFields(v.Type()) {
		fv, key := v.Field(f.index), joinKey(prefix, f.name)
		switch t := fv.Type(); {
		case isScalar(t) || isList(t):
			out = append(out, envTarget{name: envName(key), key: key, v: fv})
		case t.Kind() == reflect.Pointer && isScalar(t.Elem()):
			out = append(out, envTarget{name: envName(key), key: key, v: fv})
		case t.Kind() == reflect.Struct:
			out = append(out, envTargets(fv, key)...)
		}
	}
	return out
}

// applyEnv sets the leaves of struct v from the RUNNEL_ variables in
// environ ("NAME=value" entries, as os.Environ gives). It returns which
// variable set each key, and every problem: unknown variables, two names
// for one key, unparseable values.
func applyEnv(v reflect.Value, environ []string, aliases []envAlias) (map[string]string, []*ConfigError) {
	byName := map[string]envTarget{}
	var names []string
	for _, t := range envTargets(v, "") {
		byName[t.name] = t
		names = append(names, t.name)
	}
	for _, a := range aliases {
		t, ok := byName[envName(a.key)]
		if !ok {
			panic("BUG: env alias " + a.name + " names unknown key " + a.key)
		}
		t.name = a.name
		byName[a.name] = t
		names = append(names, a.name)
	}

	vars := slices.Clone(environ)
	slices.Sort(vars)
	keys := map[string]string{}
	var errs []*ConfigError
	for _, kv := range vars {
		name, val, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) {
			continue
		}
		t, ok := byName[name]
		if !ok {
			errs = append(errs, &ConfigError{Env: name, Msg: "unknown variable: it names no config key" + didYouMean(name, names)})
			continue
		}
		if other := keys[t.key]; other != "" {
			errs = append(errs, &ConfigError{Env: name, Key: t.key, Msg: "also set by " + other + ": set only one"})
			continue
		}
		keys[t.key] = name
		var err error
		if t.v.Kind() == reflect.Pointer && strings.TrimSpace(val) == "" {
			t.v.SetZero() // unset: the derived default applies
		} else if t.v.Kind() == reflect.Pointer {
			e := reflect.New(t.v.Type().Elem())
			if err = setScalar(e.Elem(), val); err == nil {
				t.v.Set(e)
			}
		} else if isList(t.v.Type()) {
			err = setList(t.v, val)
		} else {
			err = setScalar(t.v, val)
		}
		if err != nil {
			errs = append(errs, &ConfigError{Env: name, Key: t.key, Msg: err.Error()})
		}
	}
	return keys, errs
}
