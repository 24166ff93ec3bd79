package resil

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

type timeoutStage[T any] struct {
	d     time.Duration
	inner stageFunc[T] // the stages it wraps; nil: fn itself
	_     linePad
}

// Timeout returns a pipeline that gives the stages added before it a
// context that ends after d, or earlier with the caller's context. It runs
// them on the caller's goroutine and starts no goroutine of its own; the
// context's timer, if it has one, is stopped before Run returns.
//
// When d elapsed while the caller's context was still live and the wrapped
// stages return an error, Run's error matches both ErrTimeout and
// context.DeadlineExceeded with errors.Is and wraps the error that came
// back. When the caller's own deadline came first (at or before start+d),
// the error is returned unchanged, as is every other error. The context
// does not watch the caller's until something waits on it (see below): one
// that nothing looked at before d elapsed and whose caller's context was
// cancelled by the first look (before the call, or during it) cannot tell
// which came first, and takes the cancel: it reports context.Canceled and
// the error is returned unchanged, so that a caller's or a Hedge's
// cancellation is never reported as a timeout, nor counted by a Breaker
// inside as a failure. A value that comes back without error is returned
// even when it came late: fn decides whether it honours its context.
//
// The context costs one small allocation and one clock read. It arms a
// timer, as context.WithTimeout does at once, only when something waits on
// it: a call of Done or Deadline, a context derived from it, a
// context.AfterFunc. Until then Err answers from the clock. A call that
// returns without waiting (a cache hit, work in memory) pays for no timer;
// one that waits pays about what context.WithTimeout costs. Either way the
// context keeps context.Context's whole contract: Err is non-nil exactly
// when Done is closed, and stays so.
//
// Put Timeout before Retry for a per-attempt limit, after it for a limit on
// the whole sequence, or both. It panics when d <= 0.
func (p Pipeline[T]) Timeout(d time.Duration) Pipeline[T] {
	if d <= 0 {
		panic("resil: Timeout d must be > 0, got " + d.String())
	}
	return p.with(timeoutStage[T]{d: d, inner: p.outer}.compile())
}

//go:noinline // see stageFunc
func (s timeoutStage[T]) compile() stageFunc[T] {
	return func(ctx context.Context, n next[T]) (T, error) {
		at := addSat(clock(), int64(s.d)) // a d of centuries must not wrap into the past
		if dl, ok := deadlineAt(ctx); ok && dl <= at {
			// The caller's deadline comes first, or with this one: it is the
			// caller's, and the caller's context already carries it. An
			// outer Timeout's context (per-attempt and total limits both)
			// is read without arming it, as Deadline would: a call that
			// never waits pays for no timer, however many Timeouts it runs
			// through. (A deadline made from a wall-clock time has no
			// monotonic reading and compares by the wall clock, as
			// context.WithDeadline's own timer does.)
			return n.run(ctx, s.inner)
		}
		tc := &timeoutCtx{parent: ctx, at: at}
		defer tc.release() // also on a panic or Goexit: no timer outlives Run
		v, err := n.run(tc, s.inner)
		if err == nil || !tc.expired() {
			return v, err
		}
		// The caller's deadline, if any, is later than this one (see above), so
		// the deadline that passed is this stage's.
		err = &timeoutError{d: s.d, err: err}
		n.emit(ctx, Event{Kind: EventTimeout, Attempt: n.attempt, Err: err})
		var zero T
		return zero, err
	}
}

// timeoutCtx is the context a Timeout stage gives the stages it wraps: the
// caller's context, ended at the clock() time at. It is armed, that is backed
// by a context.WithDeadline and its timer, the first time something may
// wait on it (Done, Deadline) or it has ended (Err finds the deadline past,
// the parent done, or the stage released). Until then it holds no timer and
// Err reads the clock. Every non-nil Err comes from the armed context, so
// Err, Done and context.Cause agree.
//
// Unarmed, it does not watch the parent, so when it is first looked at
// after its deadline and the parent has ended too, it cannot always tell
// which came first. It takes the parent's end: a parent that ended by its
// own deadline ended after this one (a parent deadline before it is
// handled by the stage without a timeoutCtx), so the parent's
// context.DeadlineExceeded is this deadline's too; a parent cancelled may
// have been cancelled before the deadline (by the caller, or by a Hedge
// giving up on the attempt), and a timeout is not claimed that may not
// have happened. (Whatever looks at it before the deadline sees a parent
// that ended first, as context.WithTimeout would.)
type timeoutCtx struct {
	parent context.Context
	at     int64         // the deadline, in clock() time
	state  atomic.Uint32 // armed and released bits
	mu     sync.Mutex    // held while arming
	armed  context.Context
	cancel context.CancelFunc // armed's; both set once, before the armed bit
}

const (
	ctxArmed    = 1 << iota // armed and cancel are set
	ctxReleased             // the stage has returned
)

// arm returns the context behind c, creating it on the first call.
func (c *timeoutCtx) arm() context.Context {
	if c.state.Load()&ctxArmed != 0 {
		return c.armed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load()&ctxArmed == 0 {
		// The deadline as a time.Time: the wall clock as of now, and a
		// monotonic reading exactly at c.at (now.Sub(epoch) is now in
		// clock() time, without a second clock read).
		now := time.Now()
		nowAt := int64(now.Sub(epoch))
		dl := now.Add(time.Duration(c.at - nowAt))
		// First looked at after its deadline, with the parent ended too
		// by now: the parent's end is taken, as context.WithDeadline
		// does with a parent already done (see timeoutCtx).
		c.armed, c.cancel = context.WithDeadline(c.parent, dl)
		// One atomic word holds both bits, so of arm and release, the one
		// that sets its bit second sees the other's and cancels.
		if c.state.Or(ctxArmed)&ctxReleased != 0 {
			c.cancel()
		}
	}
	return c.armed
}

// expired reports whether c's own deadline ended it: Err is
// context.DeadlineExceeded, or Err is still nil while the deadline has
// passed. An armed context's Err lags its deadline until its timer's
// callback has run, and the wrapped stages may have seen the deadline pass
// first, on a timer due at the same instant (a Hedge's next attempt, a
// Bulkhead's MaxWait, fn's own): the parent is still live (its end would
// have ended the armed context with it), so the deadline that passed is
// c's.
func (c *timeoutCtx) expired() bool {
	switch c.Err() {
	case context.DeadlineExceeded:
		return true
	case nil:
		return clock() >= c.at
	}
	return false
}

// release ends c when its stage returns, stopping the timer if c is armed.
func (c *timeoutCtx) release() {
	if c.state.Or(ctxReleased)&ctxArmed != 0 {
		c.cancel()
	}
}

// Deadline returns the stage's deadline. It arms c: a caller that asks for
// the deadline is about to wait on it.
func (c *timeoutCtx) Deadline() (time.Time, bool) { return c.arm().Deadline() }

// Done returns a channel closed when c ends. It arms c.
func (c *timeoutCtx) Done() <-chan struct{} { return c.arm().Done() }

// Err returns nil while c is live; once it has ended, the reason, from the
// armed context. It reads the clock until c is armed.
func (c *timeoutCtx) Err() error {
	s := c.state.Load()
	if s&ctxArmed != 0 {
		return c.armed.Err()
	}
	if s&ctxReleased != 0 || c.parent.Err() != nil || clock() >= c.at {
		return c.arm().Err()
	}
	return nil
}

// Value returns the parent's value for key, or once c is armed the armed
// context's (which is the parent's but for context's own keys, which
// context looks up only after Done or a non-nil Err, that is once armed).
func (c *timeoutCtx) Value(key any) any {
	if c.state.Load()&ctxArmed != 0 {
		return c.armed.Value(key)
	}
	return c.parent.Value(key)
}

// String describes c for debugging, as the context package's types do.
func (c *timeoutCtx) String() string {
	name := "context.Context"
	if s, ok := c.parent.(interface{ String() string }); ok {
		name = s.String()
	}
	return name + ".WithDeadline(resil.Timeout)"
}

// deadlineAt returns ctx's deadline in clock() time, and whether it has
// one, reading no clock: a Timeout's context answers from its deadline
// without arming its timer. A deadline centuries away or past saturates.
func deadlineAt(ctx context.Context) (int64, bool) {
	if tc, ok := ctx.(*timeoutCtx); ok {
		return tc.at, true
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return 0, false
	}
	// dl.Sub(epoch) compares monotonic readings, as the Timeout stage does
	// (by the wall clock for a deadline made from one).
	return int64(dl.Sub(epoch)), true
}

// endErr returns ctx.Err(), or context.DeadlineExceeded when ctx's deadline
// has come before its timer has ended it. It reads the clock only for a
// live context with a deadline that its Err does not compare with the
// clock itself (an unarmed Timeout's context does).
func endErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if tc, ok := ctx.(*timeoutCtx); ok && tc.state.Load()&ctxArmed == 0 {
		return nil // unarmed, its Err compared the clock with its deadline
	}
	if at, ok := deadlineAt(ctx); ok && at <= clock() {
		return context.DeadlineExceeded
	}
	return nil
}

// ended reports whether ctx has ended, or its deadline has come: ctx.Err()
// shows a deadline only once the context's timer has fired, a little after
// it, and the call may have seen the deadline pass first.
func ended(ctx context.Context) bool {
	past, err := endedAt(ctx, clock())
	return past || err != nil
}

// endedAt reports how ctx stands at now, a clock() reading, for a stage
// about to take something for the call (a rate limiter's token): whether
// its deadline has come (at or before now, unless it was cancelled first:
// err context.Canceled), and otherwise its Err. It reads no clock, and
// looks through a Timeout's context without arming it.
func endedAt(ctx context.Context, now int64) (pastDeadline bool, err error) {
	for {
		tc, ok := ctx.(*timeoutCtx)
		if !ok {
			break
		}
		if tc.at <= now {
			// Its deadline has passed: it ended by it, unless its parent
			// was cancelled by the time it is first looked at (see
			// timeoutCtx). Armed, its Err says which; unarmed, its
			// parent's state does, as arming it now would find it.
			if tc.state.Load()&ctxArmed != 0 {
				if err := tc.Err(); err == context.Canceled {
					return false, err
				}
				return true, nil
			}
			if _, err := endedAt(tc.parent, now); err == context.Canceled {
				return false, err
			}
			return true, nil
		}
		if tc.state.Load()&(ctxArmed|ctxReleased) != 0 {
			return false, tc.Err() // armed: an atomic load; released: its stage has returned
		}
		ctx = tc.parent // its deadline is later than tc.at; its end is tc's
	}
	// A context cancelled before its deadline ended by the cancellation,
	// though the deadline has passed since: the caller gave up on the call,
	// and is told so rather than that no turn was left.
	if err = ctx.Err(); err == context.Canceled {
		return false, err
	}
	if at, ok := deadlineAt(ctx); ok && at <= now {
		return true, nil
	}
	return false, err
}
