package resil

import (
	"context"
	"strconv"
	"time"
)

// RetryPolicy configures a Retry stage. The zero value is valid: 3 attempts
// with ExponentialJitter(100ms, 10s) between them, retrying what
// IsTransient accepts, bounded only by the context.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts in all, the first included.
	// 0 means 3; 1 means no retry. Negative is invalid.
	MaxAttempts int
	// Backoff gives the delay before each retry. nil means
	// ExponentialJitter(100ms, 10s). A server's hint (an error with a
	// RetryAfter() time.Duration method) > 0 takes its place for that wait.
	Backoff Backoff
	// MaxElapsed bounds the whole retry sequence, measured from the start
	// of the first attempt: no wait that would end after it is begun.
	// 0 means no bound beyond the context's. Negative is invalid.
	MaxElapsed time.Duration
	// RetryIf decides which unmarked errors are retried (Permanent and
	// Transient marks decide before it). nil means IsTransient.
	RetryIf func(error) bool
	// OnRetry, if set, is called before each wait for a retry (also a wait
	// of 0), on the goroutine running the call, with the attempt that failed
	// and the delay chosen. It must not block for long: the retry waits for
	// it, and the time it takes counts against MaxElapsed and the context's
	// deadline (a retry it delays past them is not made, and no EventRetry
	// is reported for it).
	OnRetry func(RetryEvent)
	// Budget, if set, caps the retries of every Retry stage that shares it
	// (see RetryBudget). Each run of this stage that makes an attempt
	// counts as a call; each retry is asked of the budget before its wait,
	// and a denied retry is not made: Retry returns at once with an error
	// that matches ErrRetryBudgetExhausted and is a *RetryError. A granted
	// retry that is not made after all (the context ends during its wait,
	// or OnRetry or the observer panics announcing it) is given back. nil
	// means no budget; a budget not made by NewRetryBudget (a zero
	// RetryBudget) is invalid.
	Budget *RetryBudget
}

// RetryEvent describes a failed attempt about to be retried. Retry sets
// every field; the zero RetryEvent describes no attempt.
type RetryEvent struct {
	Attempt int           // the attempt that just failed, from 1
	Err     error         // its error
	Delay   time.Duration // the wait before the next attempt
}

// Validate returns nil when p is a valid policy, or an error naming the
// first invalid field and its value, with the message Retry would panic
// with. Use it for configuration loaded at run time.
func (p RetryPolicy) Validate() error {
	if p.MaxAttempts < 0 {
		return configError("RetryPolicy.MaxAttempts must be >= 0, got " + strconv.Itoa(p.MaxAttempts))
	}
	if p.MaxElapsed < 0 {
		return configError("RetryPolicy.MaxElapsed must be >= 0, got " + p.MaxElapsed.String())
	}
	if p.Budget != nil && p.Budget.width == 0 {
		return configError("RetryPolicy.Budget must be made by NewRetryBudget, got a zero RetryBudget")
	}
	return nil
}

// configError is an invalid-configuration message, prefixed "resil: ".
type configError string

func (e configError) Error() string { return "resil: " + string(e) }

func mustValid(err error) {
	if err != nil {
		panic(err.Error())
	}
}

type retryStage[T any] struct {
	p     *retryPolicy
	inner stageFunc[T] // the stages it wraps; nil: fn itself
	_     linePad
}

// retryPolicy is a RetryPolicy with its defaults filled in, built once by
// Retry.
type retryPolicy struct {
	maxAttempts int
	backoff     Backoff
	maxElapsed  time.Duration
	retryIf     func(error) bool
	onRetry     func(RetryEvent)
	budget      *RetryBudget
	// defaultIf: RetryIf was nil, so retryable takes the one-walk path
	// (markedOrTransient) instead of markOf and then IsTransient.
	defaultIf bool
	// direct: the stage wraps fn itself and its first attempt needs neither
	// a start time (no MaxElapsed) nor a budget deposit.
	direct bool
}

// defaultBackoff is RetryPolicy's Backoff when none is given.
var defaultBackoff = ExponentialJitter(100*time.Millisecond, 10*time.Second)

// Retry returns a pipeline that runs the stages added before it again when
// they fail with a retryable error, waiting policy's backoff between
// attempts. It runs them on the caller's goroutine and allocates nothing on
// a call that succeeds without a positive wait (a wait of 0 included);
// giving up allocates the error it returns, and a positive wait uses one
// timer for the whole call.
//
// An error marked Permanent is never retried and one marked Transient always
// is (the outermost mark wins); RetryIf decides the rest. A non-retryable
// error is returned unchanged. No wait is begun that would end after
// MaxElapsed or the context's deadline, nor one that would end at the
// deadline (the context ends with it, and no attempt could follow): Retry
// gives up at once instead. When
// attempts run out or Retry gives up early, the error is a *RetryError
// wrapping the last attempt's error; when the policy's Budget denies a
// retry, it is one that also matches ErrRetryBudgetExhausted. When the
// context ends during a wait, or has ended by the time an attempt fails,
// Run returns at once with an error that matches ctx.Err()
// (context.DeadlineExceeded once its deadline has come, also before its
// timer says so) and wraps the last attempt's error; when it has ended
// before the first attempt, Retry returns ctx.Err() without running
// anything. A running attempt is never cut short: put a Timeout after Retry
// for that.
//
// It panics when policy is invalid (see RetryPolicy.Validate).
func (p Pipeline[T]) Retry(policy RetryPolicy) Pipeline[T] {
	mustValid(policy.Validate())
	rp := &retryPolicy{
		maxAttempts: policy.MaxAttempts,
		backoff:     policy.Backoff,
		maxElapsed:  policy.MaxElapsed,
		retryIf:     policy.RetryIf,
		onRetry:     policy.OnRetry,
		budget:      policy.Budget,
	}
	if rp.maxAttempts == 0 {
		rp.maxAttempts = 3
	}
	if rp.backoff == nil {
		rp.backoff = defaultBackoff
	}
	if rp.retryIf == nil {
		rp.retryIf = IsTransient
		rp.defaultIf = true
	}
	rp.direct = p.outer == nil && rp.maxElapsed <= 0 && rp.budget == nil
	return p.with(retryStage[T]{p: rp, inner: p.outer}.compile())
}

// retryable reports whether err may be retried: marks first, then RetryIf.
// plain says isPlain(err).
func (p *retryPolicy) retryable(err error, plain bool) bool {
	if plain { // no mark, no rule but its value (see plainTypes)
		if p.defaultIf {
			return err != context.Canceled && err != ErrBreakerOpen
		}
		return p.retryIf(err)
	}
	if p.defaultIf {
		return markedOrTransient(err)
	}
	switch markOf(err) {
	case markPermanent:
		return false
	case markTransient:
		return true
	}
	return p.retryIf(err)
}

// compile returns the stage's run, which makes the first attempt and
// returns on success; retries happen in retry. The split keeps the path of a
// call that succeeds at once small: no timer, no loop state, a small frame.
// The common case, a Retry that wraps fn itself in an unobserved call with
// no MaxElapsed and no Budget (p.direct), is tested first and calls fn
// with nothing else to load or check.
//
//go:noinline // see stageFunc
func (s retryStage[T]) compile() stageFunc[T] {
	return func(ctx context.Context, n next[T]) (T, error) {
		if err := ctx.Err(); err != nil {
			var zero T
			return zero, err
		}
		if s.p.direct && n.m == nil { // the common case: fn is called here
			v, err := n.fn(ctx)
			if err == nil {
				return v, nil
			}
			n.attempt = 1
			var zero T // fn's value is dropped: see next.run
			return s.retry(ctx, n, 0, zero, err)
		}
		var start int64 // when the first attempt started; read only if needed
		if s.p.maxElapsed > 0 {
			start = clock()
		}
		if s.p.budget != nil {
			s.p.budget.deposit() // a call is one run of this stage
		}
		n.attempt = 1
		var (
			v   T
			err error
		)
		switch { // n.run inlined: see next.run
		case s.inner != nil:
			v, err = s.inner(ctx, n)
		case n.m == nil:
			v, err = n.fn(ctx)
			if err != nil {
				var zero T
				v = zero // fn's value is dropped: see next.run
			}
		default:
			v, err = n.run(ctx, s.inner)
		}
		if err == nil {
			return v, nil
		}
		return s.retry(ctx, n, start, v, err)
	}
}

// retry goes on after the first attempt failed with v and err (v is T's
// zero value unless a Fallback inside supplied it): it decides, waits and
// makes the next attempts.
func (s retryStage[T]) retry(ctx context.Context, n next[T], start int64, v T, err error) (T, error) {
	var (
		zero  T
		timer *time.Timer
	)
	p := s.p
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			n.attempt = attempt
			v, err = n.run(ctx, s.inner)
			if err == nil {
				return v, nil
			}
		}
		plain := isPlain(err)
		if !p.retryable(err, plain) {
			return v, err
		}
		if cerr := endErr(ctx); cerr != nil {
			return zero, &stopError{errs: [2]error{cerr, err}}
		}
		if attempt >= p.maxAttempts {
			return zero, &RetryError{Attempts: attempt, Err: err}
		}
		var (
			delay time.Duration
			ok    bool
		)
		if !plain {
			if delay, ok = retryAfter(err); !ok {
				notePlain(err) // the walks found nothing: the next may be spared them
			}
		}
		if !ok || delay <= 0 {
			delay = p.backoff(attempt)
			if delay < 0 {
				delay = 0
			}
		}
		if !p.mayWait(ctx, start, delay) {
			return zero, &RetryError{Attempts: attempt, Err: err}
		}
		var spent int64 // the budget bucket this retry is recorded in
		if p.budget != nil {
			var ok bool
			if spent, ok = p.budget.take(clock()); !ok {
				n.emit(ctx, Event{Kind: EventRejected, Attempt: attempt, Err: ErrRetryBudgetExhausted})
				return zero, &budgetError{r: &RetryError{Attempts: attempt, Err: err}}
			}
		}
		announced := p.onRetry != nil || n.m != nil
		if announced {
			if !s.announce(ctx, &n, RetryEvent{Attempt: attempt, Err: err, Delay: delay}, start, spent) {
				// OnRetry took the time the wait had, or its context
				// ended meanwhile: the retry is not made, nor reported.
				if cerr := endErr(ctx); cerr != nil {
					return zero, &stopError{errs: [2]error{cerr, err}}
				}
				return zero, &RetryError{Attempts: attempt, Err: err}
			}
			// The observer takes time of its own too: the wait, begun
			// after it, must still end within the bounds.
			if ctx.Err() == nil && !p.mayWait(ctx, start, delay) {
				if p.budget != nil {
					p.budget.refund(spent)
				}
				return zero, &RetryError{Attempts: attempt, Err: err}
			}
		}
		if delay == 0 && !announced {
			continue // nothing ran since ctx was looked at, above
		}
		if delay > 0 {
			if timer == nil {
				timer = time.NewTimer(delay)
			} else {
				timer.Reset(delay)
			}
			select {
			case <-ctx.Done():
				timer.Stop()
			case <-timer.C:
			}
		}
		// The context may have ended during the wait, or before it began
		// (OnRetry or the observer cancelled it), or as the timer fired
		// (select then picks either): the retry is not made.
		if cerr := endErr(ctx); cerr != nil {
			if p.budget != nil {
				p.budget.refund(spent)
			}
			return zero, &stopError{errs: [2]error{cerr, err}}
		}
	}
}

// announce reports a retry about to be made to OnRetry and then to the
// observer, and reports whether it is still to be made. When OnRetry took
// so long that the wait would now end after MaxElapsed (counted from
// start) or the context's deadline, or the context ended meanwhile, the
// observer hears nothing of it (EventRetry promises a retry) and the
// answer is false. When either panics (or calls runtime.Goexit), the
// retry is not made. Either way, the budget gets back what it recorded
// for it in bucket spent.
func (s retryStage[T]) announce(ctx context.Context, n *next[T], e RetryEvent, start, spent int64) bool {
	p := s.p
	announced := false
	if p.budget != nil {
		defer func() {
			if !announced {
				p.budget.refund(spent)
			}
		}()
	}
	if p.onRetry != nil {
		p.onRetry(e)
		if endErr(ctx) != nil || !p.mayWait(ctx, start, e.Delay) {
			return false
		}
	}
	n.emit(ctx, Event{Kind: EventRetry, Attempt: e.Attempt, Err: e.Err, Delay: e.Delay})
	announced = true
	return true
}

// mayWait reports whether a wait of delay, begun now, ends within
// MaxElapsed (counted from start) and before the context's deadline (a wait
// that ends at the deadline ends with the context done, and the attempt
// after it could not run). That holds for a wait of 0 too: ctx.Err() shows
// a deadline only once the context's timer has fired, a little after it,
// and the attempt that just failed may have seen the deadline pass first.
// It reads the clock once, and not at all without MaxElapsed and a
// deadline.
func (p *retryPolicy) mayWait(ctx context.Context, start int64, delay time.Duration) bool {
	at, has := deadlineAt(ctx)
	if !has && p.maxElapsed == 0 {
		return true
	}
	now := clock()
	if has && addSat(now, int64(delay)) >= at {
		return false
	}
	if p.maxElapsed > 0 {
		elapsed := time.Duration(now - start)
		if elapsed >= p.maxElapsed || delay > p.maxElapsed-elapsed {
			return false
		}
	}
	return true
}
