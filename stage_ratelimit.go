package resil

import (
	"context"
	"math"
	"strconv"
	"sync/atomic"
	"time"
)

// RateLimitPolicy configures a rate limiter: a token bucket that refills at
// Rate tokens per second and holds at most Burst. It has no usable zero
// value: Rate must be set.
type RateLimitPolicy struct {
	// Rate is the sustained number of calls per second, never exceeded. It
	// must be > 0 and finite; there is no default. The interval between
	// calls, 1s/Rate, is rounded up to a whole nanosecond (the limiter's
	// resolution): rates above 1e9 act as 1e9, a rate between 5e8 and 1e9
	// as 5e8, and so on; intervals above 2^60ns (about 36 years) act as
	// 2^60ns.
	Rate float64
	// Burst is the size of the bucket: how many calls may pass at once
	// after a quiet period. The bucket starts full. 0 means 1. Negative is
	// invalid. A bucket whose refill, (Burst-1)/Rate, would take longer
	// than 2^60ns holds only what 2^60ns refills, plus one.
	Burst int
	// MaxWait is how long a call may wait for its turn. A call whose turn
	// lies further away fails at once with ErrRateLimited. 0 means a call
	// never waits: it passes at once or is rejected. Negative is invalid.
	MaxWait time.Duration
}

// Validate returns nil when p is a valid policy, or an error naming the
// first invalid field and its value, with the message NewRateLimiter would
// panic with. Use it for configuration loaded at run time.
func (p RateLimitPolicy) Validate() error {
	switch {
	case !(p.Rate > 0) || math.IsInf(p.Rate, 1):
		return configError("RateLimitPolicy.Rate must be > 0 and finite, got " + strconv.FormatFloat(p.Rate, 'g', -1, 64))
	case p.Burst < 0:
		return configError("RateLimitPolicy.Burst must be >= 0, got " + strconv.Itoa(p.Burst))
	case p.MaxWait < 0:
		return configError("RateLimitPolicy.MaxWait must be >= 0, got " + p.MaxWait.String())
	}
	return nil
}

// ErrRateLimited is matched, with errors.Is, by the error a RateLimit stage
// returns for a call whose turn lay beyond its MaxWait or its context's
// deadline. That error also has a method RetryAfter() time.Duration (which
// an outer Retry uses as its wait) saying when a call would pass at once.
// IsTransient reports true for it: the call may pass later.
var ErrRateLimited error = &transientSentinel{sentinel{msg: "resil: rate limited"}}

// transientSentinel is a sentinel that IsTransient reports as transient
// through its Transient method, whatever else it matches.
type transientSentinel struct{ sentinel }

// Transient reports true: the condition passes with time.
func (*transientSentinel) Transient() bool { return true }

// rateLimitedError is what a RateLimit stage returns for a rejected call.
// It matches ErrRateLimited (its Unwrap) and carries the time until a call
// would pass.
type rateLimitedError struct{ after time.Duration }

func (e *rateLimitedError) Error() string {
	return "resil: rate limited, retry after " + e.after.String()
}

func (e *rateLimitedError) Unwrap() error { return ErrRateLimited }

// RetryAfter returns how long after the rejection a call would pass
// without waiting, if no other call took the token first. It is exact to
// the nanosecond, and > 0 except for a call refused because its deadline
// had come: then it is 0 while a token was free (a call made now passes),
// and always for a limiter shared through a store, whose fleet is not
// asked about a call that could not use a turn (0: no hint).
func (e *rateLimitedError) RetryAfter() time.Duration { return e.after }

// Transient reports true: the call may pass later.
func (e *rateLimitedError) Transient() bool { return true }

// maxSpan caps the limiter's intervals and waits so that no sum of them can
// overflow an int64 of nanoseconds (2^60ns is about 36 years).
const maxSpan = 1 << 60

// RateLimiter is a token bucket shared by the pipelines that use it: it
// lets calls pass at a sustained rate, with bursts up to the bucket's size.
// Create it with NewRateLimiter; the zero RateLimiter is not usable
// (Pipeline.RateLimit refuses it). It is
// safe for concurrent use and may limit any number of pipelines of any T.
//
// It keeps a single word of state, the "theoretical arrival time" of the
// generic cell rate algorithm (GCRA, the token bucket expressed as a time):
// the instant at which the bucket would be full again. A call reads it,
// computes its turn, and claims the turn with one compare-and-swap: no
// lock, no allocation, one monotonic clock read. A waiting call holds its
// turn from the moment it is admitted, so waiters pass in the order they
// were admitted, each at its own time.
type RateLimiter struct {
	// tat is the theoretical arrival time, in clock() nanoseconds: the
	// bucket holds min(Burst, (now+tau+interval-tat)/interval) tokens. It
	// starts far in the past (a full bucket).
	tat atomic.Int64
	// Read-only after NewRateLimiter.
	interval int64      // nanoseconds per token, in [1, maxSpan]
	tau      int64      // (Burst-1)·interval, capped at maxSpan: how far tat may run ahead of now
	maxWait  int64      // RateLimitPolicy.MaxWait in nanoseconds, capped at maxSpan
	share    *rateShare // nil unless made by NewSharedRateLimiter (shared_state.go)
}

// NewRateLimiter returns a limiter with a full bucket, configured by
// policy. It panics when policy is invalid (see RateLimitPolicy.Validate).
func NewRateLimiter(policy RateLimitPolicy) *RateLimiter {
	mustValid(policy.Validate())
	burst := policy.Burst
	if burst == 0 {
		burst = 1
	}
	// A float interval rounds up to a whole nanosecond, so that the limiter
	// never runs faster than Rate; it runs slower by less than one part in
	// interval (a part in 10^7 at 100 calls/s).
	interval := int64(min(max(math.Ceil(1e9/policy.Rate), 1), maxSpan))
	tau := int64(maxSpan)
	if int64(burst-1) <= maxSpan/interval {
		tau = interval * int64(burst-1)
	}
	l := &RateLimiter{
		interval: interval,
		tau:      tau,
		maxWait:  min(int64(policy.MaxWait), maxSpan),
	}
	l.tat.Store(math.MinInt64)
	return l
}

// reserve decides whether a call made at now, willing to wait up to
// maxWait nanoseconds, may pass. When it may, it claims the call's turn and
// returns how long the call must wait for it (0: at once) and true. When it
// may not, it claims nothing and returns how long until a call would pass
// without waiting (> 0) and false.
//
// Every decision of a local limiter goes through reserve (and a cancelled
// wait through unreserve): it is the one place where the bucket's state is
// kept. A shared limiter asks its share instead (see admit), whose local
// bucket is a local limiter.
func (l *RateLimiter) reserve(now, maxWait int64) (wait int64, ok bool) {
	for {
		tat := l.tat.Load()
		base := max(tat, now) // a tat in the past is a full bucket
		wait = base - l.tau - now
		if wait > maxWait {
			return wait, false // wait > maxWait >= 0: a call would pass after wait
		}
		if l.tat.CompareAndSwap(tat, base+l.interval) {
			return max(wait, 0), true
		}
	}
}

// peek returns how long after now a call would pass without waiting (0
// while a token is free). It takes nothing.
func (l *RateLimiter) peek(now int64) int64 {
	return max(max(l.tat.Load(), now)-l.tau-now, 0)
}

// admit is reserve for a call that read the clock at now, with one more
// look at the clock before a local limiter turns it away: another call that
// read the clock after now may have claimed its turn before this one (this
// goroutine was preempted between its clock read and reserve), leaving tat
// ahead of a now that is no longer current, and a token that is due by now
// would be refused. It returns the instant the decision was made at and the
// bucket that claimed the turn, which are what unreserve must be given. A
// fleet limiter decides on its server's clock, so it is asked once; by is
// nil for a turn the fleet granted, which is never given back.
func (l *RateLimiter) admit(now, maxWait int64) (at, wait int64, by *RateLimiter, ok bool) {
	if l.share != nil {
		return l.share.admit(now, maxWait) // a round trip
	}
	return l.admitLocal(now, maxWait)
}

// admitLocal is admit for a local limiter (a shared one's local share
// included).
func (l *RateLimiter) admitLocal(now, maxWait int64) (at, wait int64, by *RateLimiter, ok bool) {
	wait, ok = l.reserve(now, maxWait)
	if ok {
		return now, wait, l, true
	}
	fresh := clock()
	if fresh <= now {
		return now, wait, l, false
	}
	// The time since now counts against the call's wait.
	maxWait = max(maxWait-(fresh-now), 0)
	wait, ok = l.reserve(fresh, maxWait)
	return fresh, wait, l, ok
}

// unreserve gives back the turn that reserve claimed at now with a wait
// > 0, for a call that will not pass after all. The token returns to the
// bucket when no call has claimed a turn after it; otherwise the later
// calls keep their turns (they are already waiting for them) and the
// bucket's bound holds, as golang.org/x/time/rate does when a reservation
// is cancelled. l is the bucket that claimed the turn (admit's by).
func (l *RateLimiter) unreserve(now, wait int64) {
	// The call waited, so its turn began at base = now+wait+tau and it
	// moved tat to base+interval.
	mine := now + wait + l.tau + l.interval
	l.tat.CompareAndSwap(mine, mine-l.interval)
}

type rateLimitStage[T any] struct {
	l     *RateLimiter
	inner stageFunc[T] // the stages it wraps; nil: fn itself
	_     linePad
}

// RateLimit returns a pipeline that lets calls into the stages added before
// it at l's rate. A call whose context has been cancelled fails at once
// with ctx.Err() (context.Canceled), whatever its deadline; otherwise one
// whose deadline has come, whether or not its context's timer has fired,
// fails at once with an error that matches ErrRateLimited (no turn lies
// before it). Neither takes a token, so calls nobody waits for any more do
// not spend the rate of those still live.
// Otherwise a call that finds a token passes at once. A call whose
// turn comes within the policy's MaxWait and before its context's deadline
// waits for it (on the caller's goroutine, with one timer); if the context
// ends during the wait, the call returns ctx.Err() and gives its turn back
// (when no later call has claimed a turn after it: those keep theirs, and
// the rate bound holds). A limiter shared through a store asks it for
// every call's turn; a call whose context ends during that round trip
// returns ctx.Err() and does not run (the turn it was granted stays
// taken), and one whose turn, waited for from the store's answer, would
// come at or after its deadline fails at once with an error that matches
// ErrRateLimited (the store's token stays spent: the store decided before
// the answer came back).
// Any other call fails at once, taking no token, with an error that matches
// ErrRateLimited and whose RetryAfter() says how long until a call would
// pass without waiting, so that a Retry added after RateLimit waits exactly
// that long. A rejection is reported as EventRejected.
//
// A call that passes at once takes no lock, reads the clock once (a
// Timeout's context is looked at without arming it or reading the clock
// again) and allocates nothing. Before a call is turned away the clock is read again,
// so that a call delayed between its first reading and the bucket is not
// refused a token that has come due meanwhile. RateLimit panics when l is
// nil or was not made by NewRateLimiter (a zero RateLimiter).
func (p Pipeline[T]) RateLimit(l *RateLimiter) Pipeline[T] {
	if l == nil {
		panic("resil: RateLimit l must be non-nil, got nil")
	}
	if l.interval == 0 {
		panic("resil: RateLimit l must be made by NewRateLimiter, got a zero RateLimiter")
	}
	return p.with(rateLimitStage[T]{l: l, inner: p.outer}.compile())
}

//go:noinline // see stageFunc
func (s rateLimitStage[T]) compile() stageFunc[T] {
	return func(ctx context.Context, n next[T]) (T, error) {
		l := s.l
		now := clock()
		if past, err := endedAt(ctx, now); past || err != nil {
			return s.refuse(ctx, n, now, err)
		}
		maxWait := l.maxWait
		if maxWait > 0 && l.share == nil {
			// Look for a token before asking ctx for its deadline: Deadline
			// arms a Timeout's context (a timer, a context.WithDeadline),
			// which a call that passes at once must not pay for. A local
			// limiter decides in memory, so looking twice on the way to a
			// wait costs little; a shared one is asked once, below.
			at, _, _, ok := l.admit(now, 0)
			if ok {
				return n.run(ctx, s.inner)
			}
			now = at
		}
		if maxWait > 0 {
			// No turn at or beyond the context's deadline: the context ends
			// with it, so the call could not use it. time.Until saturates
			// instead of overflowing, at math.MinInt64 for a deadline
			// centuries past: clamp it before subtracting, or it wraps to
			// math.MaxInt64 and the call waits on a context already done.
			if deadline, ok := ctx.Deadline(); ok {
				maxWait = min(maxWait, max(int64(time.Until(deadline)), 1)-1)
			}
		}
		now, wait, by, ok := l.admit(now, maxWait)
		if !ok {
			return s.reject(ctx, n, wait)
		}
		if l.share != nil && (wait == 0 || by == nil) {
			// The store's round trip may have outlasted the context. And
			// a wait the fleet granted, slept from its answer (the turn
			// may come up to a round trip earlier, never later), may now
			// end at or after the deadline: the turn is no use to the
			// call, which is refused at once rather than left waiting for
			// its context to end (the fleet's token stays spent).
			if err := ctx.Err(); err != nil {
				var zero T
				return zero, err
			}
			if by == nil && wait > 0 {
				if dl, ok := deadlineAt(ctx); ok && addSat(clock(), wait) >= dl {
					return s.reject(ctx, n, wait)
				}
			}
		}
		if wait > 0 {
			if err := s.await(ctx, by, now, wait); err != nil {
				var zero T
				return zero, err
			}
		}
		return n.run(ctx, s.inner)
	}
}

// refuse turns away, taking no token, a call whose context has ended (err,
// its Err; a cancellation comes first) or whose deadline has come (err nil:
// no turn lies before it).
func (s rateLimitStage[T]) refuse(ctx context.Context, n next[T], now int64, err error) (T, error) {
	if err != nil {
		var zero T
		return zero, err
	}
	var after int64 // a shared limiter's bucket is not asked for a call that cannot use a turn
	if s.l.share == nil {
		after = s.l.peek(now)
	}
	return s.reject(ctx, n, after)
}

// reject is outlined: it allocates the error, which the passing path never
// needs.
func (s rateLimitStage[T]) reject(ctx context.Context, n next[T], after int64) (T, error) {
	err := &rateLimitedError{after: time.Duration(after)}
	n.emit(ctx, Event{Kind: EventRejected, Attempt: n.attempt, Err: err})
	var zero T
	return zero, err
}

// await waits for a turn that by claimed at now, wait nanoseconds ahead,
// and gives the turn back to by (nil: the fleet's, kept) when ctx ends
// first.
func (s rateLimitStage[T]) await(ctx context.Context, by *RateLimiter, now, wait int64) error {
	t := time.NewTimer(time.Duration(wait))
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		t.Stop()
		if by != nil {
			by.unreserve(now, wait)
		}
		return ctx.Err()
	}
}
