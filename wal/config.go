package wal

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SyncMode says when an append counts as durable.
type SyncMode string

const (
	// SyncBatch fsyncs once per group commit and releases the group's
	// callers after that fsync returned. The default, and the only mode in
	// which an acknowledged reading survives a power cut.
	SyncBatch SyncMode = "batch"
	// SyncInterval writes each group at once but fsyncs at most once per
	// Config.SyncInterval; callers are released after the fsync that covers
	// them. Fewer fsyncs (kind to SD cards) for more latency.
	SyncInterval SyncMode = "interval"
	// SyncNone never fsyncs: callers are released once the group is written
	// to the operating system. It survives a crash of the gateway process but
	// not a power cut. Unsafe; for benchmarks and throwaway setups.
	SyncNone SyncMode = "none"
)

var syncModes = []SyncMode{SyncBatch, SyncInterval, SyncNone}

// Config is the configuration of one log. The readings WAL takes it from the
// `wal` section of the gateway config; the other logs (outbox, dead letters,
// late readings) are instances with their own values.
type Config struct {
	// Sync is batch, interval or none; see SyncMode.
	Sync SyncMode `yaml:"sync"`
	// SyncInterval bounds the time between fsyncs in interval mode.
	SyncInterval time.Duration `yaml:"sync_interval"`
	// SegmentBytes is the target size of one segment file. The tail segment
	// is held in memory whole, so it bounds the log's memory.
	SegmentBytes ByteSize `yaml:"segment_bytes"`
	// SegmentCache is how many older segments readers may keep in memory.
	SegmentCache int `yaml:"segment_cache"`
	// MaxPendingBytes bounds the appended bytes waiting for the writer; past
	// it Append blocks, so a slow disk slows producers instead of growing
	// memory.
	MaxPendingBytes ByteSize `yaml:"max_pending_bytes"`
	// RetentionBytes and RetentionAge say how much history the log keeps once
	// its owner no longer needs it: a segment that lies wholly before the
	// owner's release point (Log.Release) is removed when the log is larger
	// than RetentionBytes or the segment was last written more than
	// RetentionAge ago. RetentionBytes 0 keeps no such history;
	// RetentionAge 0 sets no age limit.
	RetentionBytes ByteSize      `yaml:"retention_bytes"`
	RetentionAge   time.Duration `yaml:"retention_age"`
}

// DefaultConfig returns the defaults of the readings WAL: fsync per group,
// 1 MiB segments with one cached, 8 MiB of pending appends, and 256 MiB or
// 24 h of history kept behind the checkpoint.
func DefaultConfig() Config {
	return Config{
		Sync:            SyncBatch,
		SyncInterval:    50 * time.Millisecond,
		SegmentBytes:    1 * MiB,
		SegmentCache:    1,
		MaxPendingBytes: 8 * MiB,
		RetentionBytes:  256 * MiB,
		RetentionAge:    24 * time.Hour,
	}
}

// ConfigError is one invalid setting. Key is the setting's path relative to
// the log's config section (`sync`, `segment_bytes`), so the gateway can
// point at the file line that set it.
type ConfigError struct {
	Key string
	Msg string
}

func (e *ConfigError) Error() string     { return e.Key + ": " + e.Msg }
func (e *ConfigError) ConfigKey() string { return e.Key }

// Validate reports every invalid setting at once, joined with errors.Join;
// each is a *ConfigError.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if !isSyncMode(c.Sync) {
		bad("sync", "%q is not one of %s", c.Sync, joinModes())
	}
	// Bounds, each with its reason.
	if c.Sync == SyncInterval && (c.SyncInterval < time.Millisecond || c.SyncInterval > 10*time.Second) {
		bad("sync_interval", "%s is out of range: interval mode needs 1ms to 10s (acks wait up to this long)", c.SyncInterval)
	}
	if c.SegmentBytes < 64*KiB || c.SegmentBytes > 1*GiB {
		bad("segment_bytes", "%s is out of range 64KiB to 1GiB (the tail segment is held in memory)", c.SegmentBytes)
	}
	if c.SegmentCache < 1 || c.SegmentCache > 64 {
		bad("segment_cache", "%d is out of range 1 to 64 (each cached segment is held in memory)", c.SegmentCache)
	}
	if c.MaxPendingBytes < 64*KiB || c.MaxPendingBytes > 1*GiB {
		bad("max_pending_bytes", "%s is out of range 64KiB to 1GiB", c.MaxPendingBytes)
	}
	if c.RetentionBytes < 0 {
		bad("retention_bytes", "%s must not be negative", c.RetentionBytes)
	}
	if c.RetentionAge < 0 {
		bad("retention_age", "%s must not be negative", c.RetentionAge)
	}
	return errors.Join(errs...)
}

func isSyncMode(m SyncMode) bool {
	for _, s := range syncModes {
		if m == s {
			return true
		}
	}
	return false
}

func joinModes() string {
	s := make([]string, len(syncModes))
	for i, m := range syncModes {
		s[i] = string(m)
	}
	return strings.Join(s, ", ")
}

// ByteSize is a size in bytes. In config it is written as a whole number of
// bytes or with a binary unit: 512KiB, 4MiB, 1GiB (KB, MB and GB are read as
// the binary units too, as operators write them).
type ByteSize int64

// Binary size units.
const (
	KiB ByteSize = 1 << 10
	MiB ByteSize = 1 << 20
	GiB ByteSize = 1 << 30
)

var byteUnits = []struct {
	suffix string
	mult   ByteSize
}{
	{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB},
	{"GB", GiB}, {"MB", MiB}, {"KB", KiB},
	{"G", GiB}, {"M", MiB}, {"K", KiB}, {"B", 1},
}

// ParseByteSize parses a size as written in config.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := ByteSize(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > int64(1<<62)/int64(mult) {
		return 0, fmt.Errorf("%q is not a size: want a whole number of bytes or one with a unit, like 512KiB, 4MiB, 1GiB", s)
	}
	return ByteSize(n) * mult, nil
}

// UnmarshalText lets YAML and environment overrides set a ByteSize.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalText writes the size in the largest unit that divides it.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

func (b ByteSize) String() string {
	for _, u := range []struct {
		s string
		m ByteSize
	}{{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if b != 0 && b%u.m == 0 {
			return strconv.FormatInt(int64(b/u.m), 10) + u.s
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}
