package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// group runs the gateway's started components as one unit, in the manner
// of prometheus' run group: the first component that fails stops them all.
// Each component is added right after its start succeeded, paired with
// its stop; the group stops components in reverse order of starting, so
// sources stop before the sinks they feed.
//
// A group is used by one goroutine (Gateway.Run); it is not safe for
// concurrent use.
type group struct {
	actors []actor
}

// actor is one started component.
type actor struct {
	name string
	// run blocks until stop is called or the component fails. nil for a
	// component without a goroutine of its own (the WAL is driven by its
	// callers). A return before stop is a failure, even a nil one.
	run func() error
	// stop stops the component and waits for it, honouring ctx's deadline.
	stop func(ctx context.Context) error
}

func (g *group) add(a actor) { g.actors = append(g.actors, a) }

// run runs every actor's run in its own goroutine and blocks until ctx is
// done or one of them returns. It then calls stopping with the failure
// (nil on cancellation), stops every actor within timeout, and waits for
// every goroutine it started. The error joins the failure and every stop
// error; it is nil after a clean stop on ctx cancellation.
func (g *group) run(ctx context.Context, timeout time.Duration, stopping func(cause error)) error {
	errc := make(chan error, len(g.actors))
	var stopped atomic.Bool
	var wg sync.WaitGroup
	for _, a := range g.actors {
		if a.run == nil {
			continue
		}
		wg.Go(func() {
			err := a.run()
			if err == nil && !stopped.Load() {
				err = errors.New("stopped before shutdown")
			}
			if err != nil {
				errc <- fmt.Errorf("%s: %w", a.name, err)
			}
		})
	}

	var cause error
	select {
	case <-ctx.Done():
	case cause = <-errc:
	}
	stopped.Store(true)
	stopping(cause)
	stopErr := g.stopAll(ctx, timeout)
	wg.Wait()
	close(errc)
	errs := []error{cause, stopErr}
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// abort stops the actors started before a start failed and returns the
// failure joined with any stop error.
func (g *group) abort(ctx context.Context, timeout time.Duration, cause error) error {
	return errors.Join(cause, g.stopAll(ctx, timeout))
}

// stopAll stops the actors in reverse order of starting, under one
// deadline. Cleanup runs under context.WithoutCancel: the ctx that asked
// for the shutdown is usually already cancelled.
func (g *group) stopAll(ctx context.Context, timeout time.Duration) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var errs []error
	for i := len(g.actors) - 1; i >= 0; i-- {
		a := g.actors[i]
		if err := a.stop(sctx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", a.name, err))
		}
	}
	if sctx.Err() != nil {
		errs = append(errs, fmt.Errorf("shutdown did not finish within %s (gateway.shutdown_timeout)", formatDuration(timeout)))
	}
	return errors.Join(errs...)
}

// goActor is an actor whose run is fn, given a context that stop cancels.
// stop waits for fn to return (within its ctx); when the group never ran
// (a later start failed), stop calls cleanup instead, so whatever the
// start opened is still released.
func goActor(name string, parent context.Context, fn func(ctx context.Context) error, cleanup func() error) actor {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	done := make(chan struct{})
	var started atomic.Bool
	return actor{
		name: name,
		run: func() error {
			started.Store(true)
			defer close(done)
			return fn(ctx)
		},
		stop: func(sctx context.Context) error {
			cancel()
			if !started.Load() {
				// Never ran, or about to run with a cancelled ctx: the group
				// waits for every run it started either way.
				if cleanup != nil {
					return cleanup()
				}
				return nil
			}
			select {
			case <-done:
				return nil
			case <-sctx.Done():
				return fmt.Errorf("gave up waiting: %w", sctx.Err())
			}
		},
	}
}
