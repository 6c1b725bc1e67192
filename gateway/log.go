package gateway

import (
	"io"
	"log/slog"
)

// NewLogger returns the gateway's logger: a text or JSON slog handler on w
// at the configured level. An invalid cfg (see LogConfig.Validate) falls
// back to text at info. The logger is safe for concurrent use as far as w
// is; slog handlers serialise their writes.
func NewLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: logLevel(cfg.Level)}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func logLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
