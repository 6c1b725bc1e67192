package wal

import (
	"testing"
	"time"
)

// Runnel patch: a Read must not wait for a Sync's fsync. A follower of a
// group-committed log reads the records of one group while the next
// group's fsync runs; under an exclusive lock in Sync every read waited
// for the fsync in flight (PATCHES.md).
func TestReadDuringSync(t *testing.T) {
	l, err := Open(t.TempDir(), &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Write(1, []byte("one")); err != nil {
		t.Fatal(err)
	}
	inSync, release := make(chan struct{}), make(chan struct{})
	testSyncHook = func() { close(inSync); <-release }
	defer func() { testSyncHook = nil }()
	synced := make(chan error, 1)
	go func() { synced <- l.Sync() }()
	<-inSync // the fsync is "in flight"
	read := make(chan error, 1)
	go func() {
		data, err := l.Read(1)
		if err == nil && string(data) != "one" {
			t.Errorf("Read(1) = %q", data)
		}
		read <- err
	}()
	select {
	case err := <-read:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("Read waited for the Sync in flight")
	}
	close(release)
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
}
