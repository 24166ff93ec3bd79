package resil

import (
	"context"
	"runtime"
	"strconv"
	"time"
)

// HedgePolicy configures a Hedge stage. Its zero value is not valid: Delay
// must be set, since a good one depends on the latency of what is called
// (its 95th percentile, say).
type HedgePolicy struct {
	// Delay is how long the stage waits for an answer before it starts
	// another attempt; the attempts start Delay apart. Must be > 0.
	Delay time.Duration
	// MaxHedges is how many attempts may start besides the first. 0 means
	// 1. Negative is invalid.
	MaxHedges int
}

// Validate returns nil when p is a valid policy, or an error naming the
// first invalid field and its value, with the message Hedge would panic
// with.
func (p HedgePolicy) Validate() error {
	switch {
	case p.Delay <= 0:
		return configError("HedgePolicy.Delay must be > 0, got " + p.Delay.String())
	case p.MaxHedges < 0:
		return configError("HedgePolicy.MaxHedges must be >= 0, got " + strconv.Itoa(p.MaxHedges))
	}
	return nil
}

// ErrHedgeLost is the cause (see context.Cause) with which a Hedge stage
// cancels the context of the attempts still running when it returns:
// another attempt answered first (or the call ended). It matches
// context.Canceled, so code that only knows the context package sees a
// cancellation. A Breaker inside the Hedge ignores the outcome of an
// attempt cancelled so, whatever unmarked error its fn returns then (with
// the default FailureIf; a Transient mark is a failure, as everywhere):
// the Hedge gave up on it, and what it returns after that says nothing of
// the dependency. Run never returns it.
var ErrHedgeLost error = &sentinel{msg: "resil: another hedged attempt answered first", also: context.Canceled}

type hedgeStage[T any] struct {
	delay    time.Duration
	attempts int          // 1 + MaxHedges
	inner    stageFunc[T] // the stages it wraps; nil: fn itself
	_        linePad
}

// Hedge returns a pipeline that, when the stages added before it have not
// answered after policy.Delay, starts them again alongside ("hedges" the
// call), to cut the tail latency of a dependency that is sometimes slow:
// another attempt starts every Delay until one succeeds or 1+MaxHedges have
// started. A failure does not bring the next attempt forward. The first
// success is returned and the other attempts' context is cancelled at once
// (with cause ErrHedgeLost);
// when every started attempt has failed and none is left to start, the
// error that arrived last is returned. An attempt is left to start only if
// its time comes before the context's deadline. When the context ends, no
// attempt is started and Run returns ctx.Err() at once (a success already
// received is returned instead). The deadline counts as the end once it
// has come, even before ctx.Err() shows it (the context's timer fires a
// moment later): then the error is context.DeadlineExceeded, and a call
// that reaches Hedge at its deadline starts no attempt. The attempts are
// numbered from 1 (Event.Attempt; inside a Retry, from 1 again for each of
// the Retry's attempts), and stages inside Hedge report their events from
// the attempt's goroutine, so several may report at once, and an attempt
// that lost may report after Run has returned.
//
// Goroutines: every attempt runs on a goroutine of its own, the first one
// included, and Run waits for the first answer on the caller's goroutine.
// The first attempt cannot run on the caller's goroutine while a hedge
// might start: Go cannot return from Run while that attempt's fn is still
// on the caller's stack, so a hedge that won would be held up until the
// slow first attempt honoured its cancellation, which is the very tail a
// hedge is there to cut. So the first attempt runs inline only when no
// hedge can start: when the context's deadline comes no later than Delay
// from now. Then Hedge starts no goroutine and allocates nothing.
// Otherwise a call costs a context.WithCancel, a timer, a channel and a
// goroutine per attempt (8 allocations, about 600 bytes, when the first
// attempt answers before Delay).
//
// When Run returns, the context of every attempt still running has been
// cancelled; none outlives Run by more than the time its fn takes to honour
// that. Their late results are discarded. Values that must outlive Run
// should not be bound to the attempt's context (as with Timeout, whose
// context also ends when Run returns).
//
// A panic in an attempt is re-raised on the caller's goroutine, with its
// original value, and runtime.Goexit in an attempt (a t.FailNow, say) ends
// the caller's goroutine too, once the other attempts are cancelled. A
// panic in an attempt that ends after Run returned has no caller to reach
// and is discarded with its result.
//
// Put Hedge outside Timeout(perTry), Breaker, Bulkhead, RateLimit and
// Retry, so that each attempt is bounded, counted and admitted on its own,
// and inside a total Timeout, whose deadline tells it which hedges can
// still run. Hedge only idempotent calls. It panics when policy is
// invalid (see HedgePolicy.Validate).
func (p Pipeline[T]) Hedge(policy HedgePolicy) Pipeline[T] {
	mustValid(policy.Validate())
	hedges := policy.MaxHedges
	if hedges == 0 {
		hedges = 1
	}
	attempts := hedges + 1
	if attempts < hedges { // MaxHedges == math.MaxInt
		attempts = hedges
	}
	return p.with(hedgeStage[T]{delay: policy.Delay, attempts: attempts, inner: p.outer}.compile())
}

//go:noinline // see stageFunc
func (s hedgeStage[T]) compile() stageFunc[T] {
	return func(ctx context.Context, n next[T]) (T, error) {
		var zero T
		if err := ctx.Err(); err != nil {
			return zero, err
		}
		if at, ok := deadlineAt(ctx); ok { // a Timeout's context unarmed: see deadlineAt
			if left := time.Duration(at - clock()); left <= 0 {
				// The deadline has come (ctx's own timer may not have fired
				// yet): an attempt started now could not run.
				return zero, context.DeadlineExceeded
			} else if left <= s.delay {
				// No hedge could start before the deadline: one attempt, inline.
				n.attempt = 1
				v, err := n.run(ctx, s.inner)
				if err != nil {
					if cerr := endErr(ctx); cerr != nil {
						return zero, cerr
					}
				}
				return v, err
			}
		}
		return s.race(ctx, n)
	}
}

// maxHedgeBuffer bounds the result buffer of a hedged call.
const maxHedgeBuffer = 64

// How a hedged attempt ended.
const (
	hedgeExited   uint8 = iota // runtime.Goexit
	hedgeReturned              // fn returned
	hedgePanicked              // fn panicked
)

type hedgeResult[T any] struct {
	v   T
	err error
	how uint8
	p   any // the panic value
}

// race runs the attempts on goroutines and returns the first success, or
// the last failure once no attempt is running or left to start.
func (s hedgeStage[T]) race(ctx context.Context, n next[T]) (T, error) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(ErrHedgeLost) // every exit, panics included, cancels the attempts still running
	// Buffered for every attempt (up to a bound), so that none blocks
	// sending a result nobody reads any more; past the bound, an attempt
	// gives up sending once actx ends (see hedgeAttempt).
	out := make(chan hedgeResult[T], min(s.attempts, maxHedgeBuffer))
	timer := time.NewTimer(s.delay)
	defer timer.Stop()
	started, answered := 1, 0
	lastStart := clock()
	go hedgeAttempt(actx, n, s.inner, 1, out)
	for {
		select {
		case r := <-out:
			answered++
			if r.how != hedgeReturned {
				cancel(ErrHedgeLost)
				reraise(r.how, r.p)
			}
			if r.err == nil {
				return r.v, nil
			}
			if err := endErr(ctx); err != nil {
				// A success that arrived behind this failure is returned,
				// as when ctx.Done is seen first.
				return s.stopped(out, err)
			}
			if answered == started && !s.mayStart(ctx, started, lastStart) {
				return r.v, r.err // a Fallback inside may have supplied r.v
			}
		case <-timer.C:
			if err := ctx.Err(); err != nil {
				return s.stopped(out, err)
			}
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= 0 {
				// Due at the deadline (ctx's own timer may not have fired
				// yet): an attempt started now could not run.
				return s.stopped(out, context.DeadlineExceeded)
			}
			started++
			if started < s.attempts {
				timer.Reset(s.delay)
			}
			// Read after the Reset, as after NewTimer: the timer fires no
			// later than lastStart+Delay, which mayStart takes as the next
			// start's time.
			lastStart = clock()
			go hedgeAttempt(actx, n, s.inner, started, out)
		case <-ctx.Done():
			return s.stopped(out, ctx.Err())
		}
	}
}

// mayStart reports whether another attempt is left to start: attempts
// remain and the next one's time, Delay after the last start, comes before
// the context's deadline.
func (s hedgeStage[T]) mayStart(ctx context.Context, started int, lastStart int64) bool {
	if started >= s.attempts {
		return false
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return true
	}
	wait := s.delay - time.Duration(clock()-lastStart)
	return wait < time.Until(dl)
}

// stopped is race's answer when ctx ended: a success or a panic that had
// already arrived, else err.
func (s hedgeStage[T]) stopped(out chan hedgeResult[T], err error) (T, error) {
	for {
		select {
		case r := <-out:
			if r.how != hedgeReturned {
				reraise(r.how, r.p)
			}
			if r.err == nil {
				return r.v, nil
			}
		default:
			var zero T
			return zero, err
		}
	}
}

// hedgeAttempt runs attempt number attempt of a hedged call through inner
// (the stages the Hedge wraps, nil for fn itself) and sends how it ended to
// out, whether fn returned, panicked or called runtime.Goexit.
func hedgeAttempt[T any](ctx context.Context, n next[T], inner stageFunc[T], attempt int, out chan<- hedgeResult[T]) {
	r := hedgeResult[T]{how: hedgeExited}
	defer func() {
		if r.how == hedgeExited {
			if p := recover(); p != nil {
				r.how, r.p = hedgePanicked, p
			}
		}
		select {
		case out <- r: // always, unless more than maxHedgeBuffer attempts started
		default:
			select {
			case out <- r:
			case <-ctx.Done(): // Run has returned, or is returning ctx.Err()
			}
		}
	}()
	n.attempt = attempt
	r.v, r.err = n.run(ctx, inner)
	r.how = hedgeReturned
}

// reraise ends the caller's goroutine the way an attempt's ended.
func reraise(how uint8, p any) {
	if how == hedgePanicked {
		panic(p)
	}
	runtime.Goexit()
}
