// Package serieskey splits the escaped keys Runnel writes: line-protocol
// series keys (`meas,tag=value`, with `\,` `\=` `\ ` `\\` escapes; see
// ingest/series.go) and the group keys built the same way (windows
// GroupSpec.By). The windows engine reads its own keys with it, the fleet
// service the keys gateways send.
package serieskey

// Split splits s at every sep not escaped by a backslash; the parts keep
// their escapes.
func Split(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
