//go:build race

package ingest

// raceEnabled: the race detector allocates, and makes sync.Pool drop items
// at random, so allocation counts mean nothing under it.
const raceEnabled = true
