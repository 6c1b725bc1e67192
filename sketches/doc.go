// Package sketches holds the mergeable, fixed-size summaries that Runnel's
// windows keep per series and per group: HyperLogLog distinct counts
// (HLL), Count-Min frequencies (CountMin) with top-k heavy hitters (TopK),
// reservoir samples of raw readings (Reservoir) and relative-error quantiles
// with a resolution that adapts to the data's range (Quantile).
//
// The package is pure data structures: it starts no goroutine, does no I/O,
// never reads the clock and imports no other Runnel package. No type is safe
// for concurrent use; the owning window serialises access.
//
// # Guarantees
//
//   - Size is fixed at construction and reported by SizeBytes (the struct
//     plus its tables, exact up to allocator rounding), which the windows
//     memory budget charges.
//   - Updates (Add and friends) do not allocate. The exceptions are
//     documented where they apply: a TopK key longer than 64 bytes entering
//     the top-k grows that slot's buffer once, and a TopK or Reservoir decoded
//     by UnmarshalBinary grows its buffers to full capacity once.
//   - Merge combines two sketches built with the same parameters and returns
//     an error wrapping ErrParamMismatch otherwise, leaving the receiver
//     unchanged.
//   - MarshalBinary output starts with a version byte (1; Quantile 2, whose
//     version 1 still decodes) and a kind byte ('H', 'C', 'T', 'R', 'Q')
//     followed by the parameters, so a blob from another sketch, version or
//     parameter set is rejected. UnmarshalBinary never panics, rejects
//     truncated, trailing or inconsistent input with an error wrapping
//     ErrCorrupt (ErrVersion, ErrParamMismatch), validates sizes before
//     allocating (allocation stays within a small multiple of the input) and
//     leaves the receiver unchanged on error. FORMAT.md describes every
//     encoding byte by byte, with golden vectors that the tests pin.
//
// # Fleet parameters
//
// Parameters are fleet-wide constants so that every gateway's sketches merge
// upstream; a small device lowers its series cap, not its precision.
//
//   - HLL: precision HLLPrecision = 14, 16384 dense registers (16 KiB),
//     standard error 1.04/√16384 ≈ 0.81%. Always dense, because axiomhq's
//     sparse mode allocates on insert. Items hash with MetroHash64 seed 1337,
//     as axiomhq's encoding pins.
//   - CountMin: CountMinEpsilon = 0.001, CountMinDelta = 0.01, so 5 rows of
//     2719 uint64 counters (106 KiB), conservative update, xxhash64 double
//     hashing. An estimate is never below the true count and exceeds it by
//     more than εN with probability at most δ.
//   - TopK: TopKCapacity = 32 candidates over a fleet CountMin.
//   - Reservoir: ReservoirCapacity = 32 samples (value, event time) with
//     Algorithm L; the seeded PCG state is part of the encoding.
//   - Quantile: 256 uint32 bins shared by negative and positive values plus
//     a zero bin, 1,112 bytes. The resolution starts at level 0, relative
//     error α₀ ≈ 0.0078% (±0.0013 at 17), and halves only when the data's
//     key range no longer fits the bins, down to level 8, QuantileAlpha = 2%;
//     the level depends on the set of values, not their order, so any split,
//     merge or order of a stream gives the same bytes (until a range
//     collapses at level 8). Rank error is at most
//     one bin's share: 10,000 readings uniform in [16.8, 17.4] answer p50,
//     p90 and p99 within 0.2% in rank. Exact count, min and max; quantiles
//     clamp to [min, max]. At level 8, lowest magnitudes collapse first when
//     the range outgrows the bins.
//
// What the package does not do: it does not decide window boundaries, hash
// series identities for callers, or compress encodings beyond varints.
package sketches
