package gateway

import (
	"testing"

	"github.com/runnel-iot/runnel/ingest"
	"github.com/runnel-iot/runnel/wal"
)

// TestLateSinkKeepsOrigins: the late log stores each late reading's WAL
// origin and gives back the newest after a reopen, which is what lets the
// pipeline's replay add nothing twice.
func TestLateSinkKeepsOrigins(t *testing.T) {
	dir := t.TempDir()
	open := func() lateSink {
		dl, err := ingest.OpenDeadLetters(dir, ingest.DefaultDeadLetterConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return lateSink{dl}
	}
	s := open()
	if _, _, ok, err := s.LastOrigin(); ok || err != nil {
		t.Fatalf("empty late log: ok %v, err %v", ok, err)
	}
	s.Late(41, 0, wal.Reading{Series: "m,device=a", Field: "v", Value: 1, TimeNs: 1e9}, 2e9)
	s.Late(42, 1, wal.Reading{Series: "m,device=a", Field: "v", Value: 2, TimeNs: 1e9}, 2e9)
	if err := s.log.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.log.Close()
	idx, seq, ok, err := s.LastOrigin()
	if err != nil || !ok || idx != 42 || seq != 1 {
		t.Fatalf("LastOrigin after reopen = %d, %d, %v, %v; want 42, 1, true, nil", idx, seq, ok, err)
	}
}
