package firmwaresim

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Run simulates opt.Devices devices until opt.Duration, opt.Count or the
// end of ctx, then waits (at most opt.DrainTimeout) for outstanding
// acknowledgements, disconnects and returns the report. A cancelled ctx is
// a normal end (Report.Interrupted); the error is for options that do not
// validate and for a gateway that no device could reach.
//
// progress, when not nil, gets a progress line: refreshed in place every
// second when it is a terminal, else a line every opt.ProgressInterval.
func Run(ctx context.Context, opt Options, progress io.Writer) (Report, error) {
	opt = opt.withDefaults()
	if err := opt.Validate(); err != nil {
		return Report{}, err
	}
	if opt.Start.IsZero() {
		opt.Start = time.Now().Truncate(time.Millisecond)
	}
	r := &runner{opt: opt}
	devices := make([]*Device, opt.Devices)
	for i := range devices {
		d, err := NewDevice(opt, i)
		if err != nil {
			return Report{}, err
		}
		devices[i] = d
	}
	conns, closeAll, err := r.connect(ctx, devices)
	if err != nil {
		return Report{}, err
	}
	return r.run(ctx, devices, conns, closeAll, progress), nil
}

type runner struct {
	opt   Options
	st    stats
	start time.Time

	stormMu sync.Mutex
	storm   chan struct{} // closed at each storm, then replaced
}

// connect builds every device's conn; MQTT devices connect, 64 at a time.
// It fails only when no device at all could connect.
func (r *runner) connect(ctx context.Context, devices []*Device) ([]conn, func(), error) {
	conns := make([]conn, len(devices))
	switch r.opt.Transport {
	case TransportUDP:
		pool, err := newUDPPool(r.opt.UDPAddr, len(devices))
		if err != nil {
			return nil, nil, err
		}
		for i := range conns {
			conns[i] = pool.conn(i)
		}
		return conns, pool.close, nil
	case TransportHTTP:
		h := newHTTPSink(&r.opt)
		for i := range conns {
			conns[i] = httpConn{h}
		}
		return conns, h.close, nil
	}
	var (
		wg       sync.WaitGroup
		sem      = make(chan struct{}, 64)
		mu       sync.Mutex
		ok       int
		firstErr error
	)
	for i, d := range devices {
		c, err := newMQTTConn(&r.opt, r.opt.ClientIDPrefix+d.ID, &r.st)
		if err != nil {
			return nil, nil, err
		}
		conns[i] = c
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := c.connect(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
				return
			}
			if ctx.Err() == nil {
				r.st.err("connect")
			}
			if firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	closeAll := func() {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 256)
		for _, c := range conns {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c.close()
			}()
		}
		wg.Wait()
	}
	if ok == 0 && ctx.Err() == nil {
		closeAll()
		return nil, nil, fmt.Errorf("no device could connect to MQTT broker %s: %w", r.opt.Broker, firstErr)
	}
	return conns, closeAll, nil
}

// pending is an ack in a device's window, with its send time.
type pending struct {
	a    ack
	sent time.Time
}

func (r *runner) run(ctx context.Context, devices []*Device, conns []conn, closeAll func(), progress io.Writer) Report {
	r.start = time.Now()
	r.storm = make(chan struct{})
	// Generation ends at Duration even for a device blocked waiting for an
	// ack slot.
	genCtx, stopGen := context.WithCancel(ctx)
	if r.opt.Duration > 0 {
		genCtx, stopGen = context.WithDeadline(ctx, r.start.Add(r.opt.Duration))
	}
	defer stopGen()
	// Acknowledgements are awaited under drainCtx: it outlives an
	// interrupt by DrainTimeout, so the report still counts late acks.
	drainCtx, stopDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDrain()

	var bg sync.WaitGroup // storm and progress goroutines
	bgCtx, stopBG := context.WithCancel(context.Background())
	if every := r.opt.Faults.ReconnectEvery; every > 0 {
		bg.Add(1)
		go func() {
			defer bg.Done()
			r.storms(genCtx, every)
		}()
	}
	var progressDone chan struct{}
	if progress != nil {
		progressDone = make(chan struct{})
		bg.Add(1)
		tty := isTerminal(progress)
		go func() {
			defer bg.Done()
			r.progress(bgCtx, progress, tty, progressDone)
		}()
	}

	var gen, ackers sync.WaitGroup
	for i, d := range devices {
		gen.Add(1)
		ackers.Add(1)
		go func() {
			defer gen.Done()
			r.device(genCtx, drainCtx, d, conns[i], &ackers)
		}()
	}
	gen.Wait()
	interrupted := ctx.Err() != nil
	// Every device stopped generating: give acks DrainTimeout.
	drainTimer := time.AfterFunc(r.opt.DrainTimeout, stopDrain)
	ackers.Wait()
	drainTimer.Stop()
	end := time.Now()
	stopDrain() // ends HTTP requests an acker gave up on
	closeAll()
	stopGen()
	stopBG()
	bg.Wait()
	if progressDone != nil {
		<-progressDone
	}

	st := &r.st
	rep := Report{
		Scenario: r.opt.Scenario, Transport: r.opt.Transport, Format: r.opt.Format, QoS: int(r.opt.QoS),
		Devices: r.opt.Devices, Seed: r.opt.Seed,
		Sent: st.sent.Load(), ReadingsSent: st.readings.Load(), BytesSent: st.bytes.Load(),
		Acknowledged: st.acked.Load(), Rejected: st.rejected.Load(), Errors: st.errorsCopy(),
		Faults: FaultCounts{
			Malformed: st.malformed.Load(), OutOfOrder: st.ooo.Load(), Late: st.late.Load(),
			HighCardinality: st.hc.Load(), Burst: st.burst.Load(), StormReconnects: st.storms.Load(),
		},
		Connects:     st.connects.Load(),
		DurationS:    end.Sub(r.start).Seconds(),
		AckLatencyMs: st.lat.summary(),
		Interrupted:  interrupted,
		Note:         reportNote,
	}
	if r.opt.Transport != TransportMQTT {
		rep.QoS = 0
		rep.Format = "lp"
	}
	if rep.DurationS > 0 {
		rep.Rate = float64(rep.Sent) / rep.DurationS
	}
	return rep
}

// stormCh returns the channel closed by the next storm.
func (r *runner) stormCh() <-chan struct{} {
	r.stormMu.Lock()
	defer r.stormMu.Unlock()
	return r.storm
}

// storms closes the storm channel every period until ctx ends.
func (r *runner) storms(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.stormMu.Lock()
			close(r.storm)
			r.storm = make(chan struct{})
			r.stormMu.Unlock()
		}
	}
}

// device runs one device: it sends each tick at its time, keeps at most
// MaxInFlight messages unacknowledged (waiting for a slot is the
// backpressure), and reconnects on a storm. Its acker goroutine (ackers)
// awaits acknowledgements in send order, which is the order a broker acks
// QoS 1 in [MQTT-4.6.0-2].
func (r *runner) device(ctx, drainCtx context.Context, d *Device, c conn, ackers *sync.WaitGroup) {
	window := make(chan pending, r.opt.MaxInFlight)
	slots := make(chan struct{}, r.opt.MaxInFlight)
	go func() {
		defer ackers.Done()
		r.acker(drainCtx, window, slots)
	}()
	defer close(window)

	timer := time.NewTimer(0)
	defer timer.Stop()
	sent := 0
	send := func(msgs []Message) bool {
		for i := range msgs {
			m := &msgs[i]
			if !c.ready(ctx) {
				r.st.err("not_connected")
				continue
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return false
			}
			a, kind := c.send(drainCtx, m)
			r.st.countSent(m)
			sent++
			if kind != "" {
				r.st.err(kind)
			}
			if a == nil {
				<-slots
				continue
			}
			window <- pending{a: a, sent: time.Now()}
		}
		return true
	}
	for {
		at, msgs := d.Next()
		if r.opt.Duration > 0 && at > r.opt.Duration {
			break
		}
		if !r.waitUntil(ctx, timer, r.start.Add(at), c) {
			return
		}
		if !send(msgs) {
			return
		}
		if r.opt.Count > 0 && sent >= r.opt.Count {
			break
		}
	}
	// A normal end: what an out-of-order tick held back still goes out.
	send(d.Flush())
}

// waitUntil sleeps until t, reconnecting c on storms. It returns false when
// ctx ends.
func (r *runner) waitUntil(ctx context.Context, timer *time.Timer, t time.Time, c conn) bool {
	for {
		storm := r.stormCh()
		d := time.Until(t)
		if d <= 0 {
			select {
			case <-ctx.Done():
				return false
			case <-storm:
				r.reconnect(ctx, c)
				continue
			default:
				return true
			}
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return false
		case <-storm:
			timer.Stop()
			r.reconnect(ctx, c)
		case <-timer.C:
			return true
		}
	}
}

func (r *runner) reconnect(ctx context.Context, c conn) {
	if err := c.reconnect(ctx); err != nil {
		if ctx.Err() == nil {
			r.st.err("connect")
		}
		return
	}
	r.st.storms.Add(1)
}

// acker waits for each acknowledgement in turn, at most AckTimeout each
// and never past drainCtx, and frees its slot.
func (r *runner) acker(drainCtx context.Context, window <-chan pending, slots <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for p := range window {
		if drainCtx.Err() != nil {
			r.st.err("unacked_at_end")
			<-slots
			continue
		}
		timer.Reset(r.opt.AckTimeout)
		select {
		case <-p.a.done():
			timer.Stop()
			acked, kind, rejected := p.a.result()
			switch {
			case acked:
				r.st.acked.Add(1)
				r.st.lat.record(time.Since(p.sent))
			case kind != "":
				r.st.err(kind)
				if rejected {
					r.st.rejected.Add(1)
				}
			}
		case <-timer.C:
			r.st.err("ack_timeout")
		case <-drainCtx.Done():
			timer.Stop()
			r.st.err("unacked_at_end")
		}
		<-slots
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress writes the progress line until ctx ends, then a final one: on a
// terminal one line rewritten in place (\r, then erase to the end of the
// line), elsewhere (a log file, a pipe) a line per period.
func (r *runner) progress(ctx context.Context, w io.Writer, tty bool, done chan<- struct{}) {
	defer close(done)
	every := r.opt.ProgressInterval
	if tty {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	lastN, lastT := int64(0), r.start
	line := func() string {
		now := time.Now()
		n := r.st.sent.Load()
		rate := float64(n-lastN) / now.Sub(lastT).Seconds()
		lastN, lastT = n, now
		return fmt.Sprintf("sent %d  acknowledged %d  errors %d  %.0f msg/s",
			n, r.st.acked.Load(), r.st.errTotal.Load(), rate)
	}
	for {
		select {
		case <-ctx.Done():
			// The last line shows the average rate of the whole run.
			lastN, lastT = 0, r.start
			if tty {
				fmt.Fprintf(w, "\r%s (average)\x1b[K\n", line())
			} else {
				fmt.Fprintln(w, line()+" (average)")
			}
			return
		case <-t.C:
			if tty {
				fmt.Fprintf(w, "\r%s\x1b[K", line())
			} else {
				fmt.Fprintln(w, line())
			}
		}
	}
}
