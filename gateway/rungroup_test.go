package gateway

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeActor is an actor whose run blocks until stop, or fails at once.
type fakeActor struct {
	name    string
	fail    error         // returned by run at once when set
	hang    bool          // stop waits for its ctx to end
	stopped chan struct{} // closed by stop
	log     *[]string
	mu      *sync.Mutex
}

func (f *fakeActor) actor() actor {
	return actor{
		name: f.name,
		run: func() error {
			if f.fail != nil {
				return f.fail
			}
			<-f.stopped
			return nil
		},
		stop: func(ctx context.Context) error {
			f.mu.Lock()
			*f.log = append(*f.log, f.name)
			f.mu.Unlock()
			defer close(f.stopped)
			if f.hang {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		},
	}
}

func TestGroup(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name      string
		failing   string // actor whose run fails
		hanging   string // actor whose stop hangs
		cancel    bool
		wantErr   string
		wantCause error
	}{
		{name: "cancel stops in reverse order", cancel: true},
		{name: "first failure stops everything", failing: "b", wantErr: "b: boom", wantCause: boom},
		{name: "deadline passes", cancel: true, hanging: "b",
			wantErr: "stop b: context deadline exceeded\nshutdown did not finish within 50ms (gateway.shutdown_timeout)", wantCause: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu    sync.Mutex
				order []string
				g     group
			)
			for _, name := range []string{"a", "b", "c"} {
				f := &fakeActor{name: name, stopped: make(chan struct{}), log: &order, mu: &mu, hang: name == tt.hanging}
				if name == tt.failing {
					f.fail = boom
				}
				g.add(f.actor())
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				cancel()
			}
			var causeSeen error
			err := g.run(ctx, 50*time.Millisecond, func(cause error) { causeSeen = cause })
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
				t.Errorf("run = %v, want %q", err, tt.wantErr)
			}
			if tt.wantCause != nil && !errors.Is(err, tt.wantCause) {
				t.Errorf("run = %v, want it to wrap %v", err, tt.wantCause)
			}
			if tt.failing != "" && !errors.Is(causeSeen, boom) {
				t.Errorf("stopping got cause %v, want %v", causeSeen, boom)
			}
			if want := []string{"c", "b", "a"}; !slices.Equal(order, want) {
				t.Errorf("stop order = %q, want %q", order, want)
			}
		})
	}
}

func TestGroupEarlyNilReturnIsFailure(t *testing.T) {
	var g group
	g.add(actor{name: "quitter", run: func() error { return nil }, stop: func(context.Context) error { return nil }})
	err := g.run(context.Background(), time.Second, func(error) {})
	if err == nil || err.Error() != "quitter: stopped before shutdown" {
		t.Errorf("run = %v, want quitter: stopped before shutdown", err)
	}
}
