package wal

import (
	"context"
	"errors"
	"log/slog"
)

// ErrClosed is returned by Append and readers once Close has begun.
var ErrClosed = errors.New("wal: log closed")

// Log is a placeholder; the real implementation lands with the WAL work.
type Log struct{}

// Open opens (creating if needed) the log in dir.
func Open(dir string, cfg Config, logger *slog.Logger) (*Log, error) { return &Log{}, nil }

// Append appends records as one group and returns their index range once
// they are durable under the configured sync mode.
func (l *Log) Append(ctx context.Context, records [][]byte) (first, last uint64, err error) {
	return 0, 0, errors.New("not implemented")
}

// Close drains pending appends and closes the log.
func (l *Log) Close() error { return nil }
