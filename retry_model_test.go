package resil_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// This file checks the Retry stage against a reference model: the contract
// of API.md (Retry, Errors and classification, RetryBudget) and the Retry
// doc comments, written out as a plain loop over fake time. Seeded random
// scenarios run through both, in a synctest bubble, and everything that can
// be observed is compared: the attempts and the instant each starts, what
// OnRetry and an observer are told and when, the value, the error (as
// errors.Is and errors.As see it), when Run returns, and what a shared
// RetryBudget still grants afterwards.
//
// The model decides, where the contract leaves a choice, as the Retry doc
// comments do:
//   - the checks run in this order after a failed attempt: the error's
//     classification (a non-retryable error is returned unchanged, even
//     when the context has ended), the context (ended: an error that
//     matches ctx.Err() and wraps the attempt's error, even on the last
//     attempt), the attempts left, the bounds, then the budget;
//   - a wait that would end exactly at the context's deadline is not begun
//     (at its deadline the context is done, and the attempt after the wait
//     could not run); one that would end exactly at MaxElapsed is;
//   - OnRetry is called before the observer's EventRetry, and the time both
//     take counts against the bounds: a retry they delay past a bound is
//     not made (a RetryError, or the context's error when it ended), and
//     its budget is given back.
//
// A context's deadline (or a cancellation by a timer) takes effect when its
// timer fires, at that instant of fake time; a look at the context at that
// same instant may come before or after it. The model then tries every
// order: the first n looks at that instant see the context live, the rest
// see it ended, for each n.

// Leaves and wrappers of the errors an attempt fails with.
type rmErrKind int

const (
	rmA               rmErrKind = iota // errRmA, unmarked
	rmB                                // errRmB, unmarked
	rmCanceled                         // context.Canceled
	rmDeadline                         // context.DeadlineExceeded
	rmBreakerOpen                      // resil.ErrBreakerOpen
	rmIsCanceled                       // an error whose Is method matches context.Canceled
	rmTransientMethod                  // an error with Transient() bool
	rmPlainStruct                      // an error type with no method but Error
	rmHint                             // an error with RetryAfter() time.Duration, wrapping its kid if any
	rmAsHint                           // an error whose As method supplies a RetryAfter hint
	rmPermanent                        // resil.Permanent(kid)
	rmTransient                        // resil.Transient(kid)
	rmWrap                             // fmt.Errorf("...: %w", kid)
	rmWrap2                            // fmt.Errorf("%w, %w", kids...)
	rmJoin                             // errors.Join(kids...)
)

var (
	errRmA = errors.New("model: A")
	errRmB = errors.New("model: B")
)

type rmIsCanceledErr struct{ _ byte } // not zero-size: each one is a distinct pointer

func (*rmIsCanceledErr) Error() string        { return "model: is canceled" }
func (*rmIsCanceledErr) Is(target error) bool { return target == context.Canceled }

type rmTransientErr struct{ v bool }

func (e *rmTransientErr) Error() string   { return fmt.Sprint("model: transient ", e.v) }
func (e *rmTransientErr) Transient() bool { return e.v }

type rmPlainErr struct{ n int }

func (e *rmPlainErr) Error() string { return fmt.Sprint("model: plain ", e.n) }

type rmHintErr struct {
	d     time.Duration
	inner error
}

func (e *rmHintErr) Error() string             { return fmt.Sprintf("model: retry after %v", e.d) }
func (e *rmHintErr) RetryAfter() time.Duration { return e.d }
func (e *rmHintErr) Unwrap() error             { return e.inner }

type rmAsHintErr struct{ d time.Duration }

func (e *rmAsHintErr) Error() string { return fmt.Sprintf("model: as retry after %v", e.d) }

// As sets any target a *rmHintErr can be assigned to.
func (e *rmAsHintErr) As(target any) bool {
	v := reflect.ValueOf(target).Elem()
	h := reflect.ValueOf(&rmHintErr{d: e.d})
	if !h.Type().AssignableTo(v.Type()) {
		return false
	}
	v.Set(h)
	return true
}

// rmErrSpec describes an error as a tree, so that the model can classify it
// from its shape, without asking resil.
type rmErrSpec struct {
	kind rmErrKind
	v    bool          // rmTransientMethod's answer
	d    time.Duration // rmHint's hint
	kids []*rmErrSpec
}

func (s *rmErrSpec) build() error {
	kids := make([]error, len(s.kids))
	for i, k := range s.kids {
		kids[i] = k.build()
	}
	switch s.kind {
	case rmA:
		return errRmA
	case rmB:
		return errRmB
	case rmCanceled:
		return context.Canceled
	case rmDeadline:
		return context.DeadlineExceeded
	case rmBreakerOpen:
		return resil.ErrBreakerOpen
	case rmIsCanceled:
		return &rmIsCanceledErr{}
	case rmTransientMethod:
		return &rmTransientErr{s.v}
	case rmPlainStruct:
		return &rmPlainErr{}
	case rmHint:
		e := &rmHintErr{d: s.d}
		if len(kids) > 0 {
			e.inner = kids[0]
		}
		return e
	case rmAsHint:
		return &rmAsHintErr{s.d}
	case rmPermanent:
		return resil.Permanent(kids[0])
	case rmTransient:
		return resil.Transient(kids[0])
	case rmWrap:
		return fmt.Errorf("model: %w", kids[0])
	case rmWrap2:
		return fmt.Errorf("model: %w, %w", kids[0], kids[1])
	default:
		return errors.Join(kids...)
	}
}

func (s *rmErrSpec) String() string {
	var kids []string
	for _, k := range s.kids {
		kids = append(kids, k.String())
	}
	args := strings.Join(kids, ", ")
	switch s.kind {
	case rmA:
		return "A"
	case rmB:
		return "B"
	case rmCanceled:
		return "Canceled"
	case rmDeadline:
		return "DeadlineExceeded"
	case rmBreakerOpen:
		return "ErrBreakerOpen"
	case rmIsCanceled:
		return "IsCanceled"
	case rmTransientMethod:
		return fmt.Sprintf("TransientMethod(%v)", s.v)
	case rmPlainStruct:
		return "PlainStruct"
	case rmHint:
		if args == "" {
			return fmt.Sprintf("Hint(%v)", s.d)
		}
		return fmt.Sprintf("Hint(%v, %s)", s.d, args)
	case rmAsHint:
		return fmt.Sprintf("AsHint(%v)", s.d)
	case rmPermanent:
		return "Permanent(" + args + ")"
	case rmTransient:
		return "Transient(" + args + ")"
	case rmWrap:
		return "Errorf(" + args + ")"
	case rmWrap2:
		return "Errorf2(" + args + ")"
	default:
		return "Join(" + args + ")"
	}
}

// mark is the first Permanent or Transient mark in the order errors.Is
// walks the tree (the node, then its kids in order): "permanent",
// "transient" or "".
func (s *rmErrSpec) mark() string {
	switch s.kind {
	case rmPermanent:
		return "permanent"
	case rmTransient:
		return "transient"
	}
	for _, k := range s.kids {
		if m := k.mark(); m != "" {
			return m
		}
	}
	return ""
}

// isTransient is IsTransient's rules, in the order errors.Is walks.
func (s *rmErrSpec) isTransient() bool {
	var rule func(s *rmErrSpec) (v, decided bool)
	rule = func(s *rmErrSpec) (bool, bool) {
		switch s.kind {
		case rmPermanent:
			return false, true
		case rmTransient:
			return true, true
		case rmTransientMethod:
			return s.v, true
		case rmCanceled, rmIsCanceled, rmBreakerOpen:
			return false, true
		}
		for _, k := range s.kids {
			if v, ok := rule(k); ok {
				return v, true
			}
		}
		return false, false
	}
	if v, ok := rule(s); ok {
		return v
	}
	return true
}

// hint is the first RetryAfter hint in the order errors.As walks.
func (s *rmErrSpec) hint() (time.Duration, bool) {
	if s.kind == rmHint || s.kind == rmAsHint {
		return s.d, true
	}
	for _, k := range s.kids {
		if d, ok := k.hint(); ok {
			return d, true
		}
	}
	return 0, false
}

// has reports whether kind is anywhere in the tree.
func (s *rmErrSpec) has(kind rmErrKind) bool {
	if s.kind == kind {
		return true
	}
	for _, k := range s.kids {
		if k.has(kind) {
			return true
		}
	}
	return false
}

type rmBackoffKind int

const (
	rmConstant rmBackoffKind = iota
	rmExponential
	rmJitter
)

type rmAttempt struct {
	dur time.Duration // how long fn takes
	ok  bool          // succeeds (with 100+its index), else fails with err
	err *rmErrSpec
}

// rmScenario is one random case. Durations are from the start of Run.
type rmScenario struct {
	seed        uint64
	maxAttempts int
	backoff     rmBackoffKind
	d, max      time.Duration // Constant(d); Exponential(d, max); ExponentialJitter(d, max)
	maxElapsed  time.Duration
	retryIf     string // "" (nil), "always", "never", "is A"

	cancelBefore bool          // ctx cancelled before Run
	hasDeadline  bool          // ctx has a deadline,
	deadline     time.Duration // this long after Run starts (<= 0: passed before)
	cancelAt     time.Duration // a timer cancels ctx then; 0: none
	fnCancels    int           // attempt that cancels ctx as it starts; 0: none
	onRetryCancs int           // OnRetry call that cancels ctx; 0: none
	onRetryPanic int           // OnRetry call that panics; 0: none
	obsPanic     int           // attempt whose EventRetry the observer panics on; 0: none

	inner        bool // a Timeout(time.Hour) inside Retry: never fires, so changes nothing
	onRetry      bool
	onRetrySleep [5]time.Duration // by OnRetry call
	observed     bool
	obsSleep     [5]time.Duration // the observer's, on EventRetry of attempt i+1

	budget      bool
	reservePerS float64 // RetryBudgetPolicy.MinPerSecond
	ratio       float64

	attempts [5]rmAttempt
	errs     [5]error // attempts[i].err built: the very values fn returns
}

// rmTTL is the budget's TTL: far longer than any scenario, so that every
// call and retry of one counts.
const rmTTL = time.Duration(1<<24) * time.Second

func (sc *rmScenario) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed=%d MaxAttempts=%d ", sc.seed, sc.maxAttempts)
	switch sc.backoff {
	case rmConstant:
		fmt.Fprintf(&b, "Constant(%v)", sc.d)
	case rmExponential:
		fmt.Fprintf(&b, "Exponential(%v, %v)", sc.d, sc.max)
	case rmJitter:
		fmt.Fprintf(&b, "ExponentialJitter(%v, %v)", sc.d, sc.max)
	}
	fmt.Fprintf(&b, " MaxElapsed=%v RetryIf=%q\n", sc.maxElapsed, sc.retryIf)
	fmt.Fprintf(&b, "ctx: cancelBefore=%v", sc.cancelBefore)
	if sc.hasDeadline {
		fmt.Fprintf(&b, " deadline=%v", sc.deadline)
	}
	fmt.Fprintf(&b, " cancelAt=%v fnCancels=%d onRetryCancels=%d onRetryPanics=%d observerPanics=%d\n",
		sc.cancelAt, sc.fnCancels, sc.onRetryCancs, sc.onRetryPanic, sc.obsPanic)
	fmt.Fprintf(&b, "inner Timeout(1h)=%v OnRetry=%v sleeps=%v observed=%v sleeps=%v\n", sc.inner, sc.onRetry, sc.onRetrySleep, sc.observed, sc.obsSleep)
	if sc.budget {
		fmt.Fprintf(&b, "budget: MinPerSecond=%g (reserve %g) Ratio=%g TTL=%v\n",
			sc.reservePerS, sc.reservePerS*rmTTL.Seconds(), sc.ratio, rmTTL)
	}
	for i, a := range sc.attempts {
		if a.ok {
			fmt.Fprintf(&b, "attempt %d: %v, ok\n", i+1, a.dur)
		} else {
			fmt.Fprintf(&b, "attempt %d: %v, %v\n", i+1, a.dur, a.err)
		}
	}
	return b.String()
}

func rmGenErr(rng *rand.Rand, depth int, bounded bool) *rmErrSpec {
	if depth >= 3 || rng.IntN(100) < 55 {
		switch r := rng.IntN(100); {
		case r < 30:
			return &rmErrSpec{kind: rmA}
		case r < 40:
			return &rmErrSpec{kind: rmB}
		case r < 48:
			return &rmErrSpec{kind: rmCanceled}
		case r < 53:
			return &rmErrSpec{kind: rmDeadline}
		case r < 57:
			return &rmErrSpec{kind: rmBreakerOpen}
		case r < 62:
			return &rmErrSpec{kind: rmIsCanceled}
		case r < 75:
			return &rmErrSpec{kind: rmTransientMethod, v: rng.IntN(2) == 0}
		case r < 80:
			return &rmErrSpec{kind: rmPlainStruct}
		case r < 85:
			return &rmErrSpec{kind: rmAsHint, d: rmGenHint(rng, bounded)}
		default:
			return &rmErrSpec{kind: rmHint, d: rmGenHint(rng, bounded)}
		}
	}
	kid := func() *rmErrSpec { return rmGenErr(rng, depth+1, bounded) }
	switch r := rng.IntN(100); {
	case r < 15:
		return &rmErrSpec{kind: rmPermanent, kids: []*rmErrSpec{kid()}}
	case r < 30:
		return &rmErrSpec{kind: rmTransient, kids: []*rmErrSpec{kid()}}
	case r < 55:
		return &rmErrSpec{kind: rmWrap, kids: []*rmErrSpec{kid()}}
	case r < 65:
		return &rmErrSpec{kind: rmWrap2, kids: []*rmErrSpec{kid(), kid()}}
	case r < 85:
		kids := []*rmErrSpec{kid(), kid()}
		if rng.IntN(2) == 0 {
			kids = append(kids, kid())
		}
		return &rmErrSpec{kind: rmJoin, kids: kids}
	default:
		return &rmErrSpec{kind: rmHint, d: rmGenHint(rng, bounded), kids: []*rmErrSpec{kid()}}
	}
}

// rmTick is the grid that durations, waits and bounds are drawn on: small
// enough a grid for attempts, waits and bounds to meet often.
const rmTick = 10 * time.Millisecond

// rmGenHint draws a RetryAfter hint; a huge one only when something ends
// the wait it would ask for.
func rmGenHint(rng *rand.Rand, bounded bool) time.Duration {
	hints := []time.Duration{-time.Second, 0, rmTick, 3 * rmTick, 7 * rmTick, time.Hour}
	if bounded {
		hints = append(hints, math.MaxInt64)
	}
	return hints[rng.IntN(len(hints))]
}

func rmGenScenario(seed uint64) *rmScenario {
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	pick := func(ds ...time.Duration) time.Duration { return ds[rng.IntN(len(ds))] }
	ticks := func(lo, hi int) time.Duration { return time.Duration(lo+rng.IntN(hi-lo+1)) * rmTick }
	sc := &rmScenario{seed: seed, maxAttempts: []int{0, 0, 1, 2, 3, 4, 4, 5, 5, 5}[rng.IntN(10)]}
	switch rng.IntN(3) {
	case 0:
		sc.backoff, sc.d = rmConstant, pick(0, 0, rmTick, 2*rmTick, 5*rmTick)
		if rng.IntN(10) == 0 {
			sc.d = time.Second
		}
	default:
		sc.backoff = rmExponential
		if rng.IntN(3) == 0 {
			sc.backoff = rmJitter
		}
		sc.d = pick(rmTick, rmTick, 2*rmTick, 10*rmTick)
		sc.max = sc.d * pick(1, 2, 4, 8)
	}
	if rng.IntN(2) == 0 {
		sc.maxElapsed = ticks(1, 30)
		if rng.IntN(8) == 0 {
			sc.maxElapsed = time.Minute
		}
	}
	sc.retryIf = []string{"", "", "", "", "", "", "always", "always", "never", "is A", "is A", "is A"}[rng.IntN(12)]

	switch r := rng.IntN(100); {
	case r < 3:
		sc.cancelBefore = true
	case r < 8: // cancelled on the caller's goroutine, by fn or OnRetry
		if rng.IntN(2) == 0 {
			sc.fnCancels = 1 + rng.IntN(5)
		} else {
			sc.onRetryCancs = 1 + rng.IntN(4)
		}
	default:
		// A deadline on the grid, where attempts end and waits run out;
		// a cancellation mostly off it, sometimes on it.
		if rng.IntN(100) < 55 {
			sc.hasDeadline = true
			sc.deadline = ticks(1, 30)
			switch rng.IntN(30) {
			case 0:
				sc.deadline = 10 * time.Second
			case 1:
				sc.deadline = pick(-rmTick, 0) // passed before Run
			}
		}
		if rng.IntN(100) < 35 {
			sc.cancelAt = ticks(0, 30) + rmTick/2
			if rng.IntN(5) == 0 {
				sc.cancelAt = ticks(1, 30)
			}
		}
	}
	sc.inner = rng.IntN(5) == 0
	sc.onRetry = rng.IntN(2) == 0
	for i := range sc.onRetrySleep {
		if rng.IntN(10) < 3 {
			sc.onRetrySleep[i] = pick(rmTick, 2*rmTick, 10*rmTick)
		}
	}
	if sc.onRetry && rng.IntN(10) == 0 {
		sc.onRetryPanic = 1 + rng.IntN(4)
	}
	sc.observed = rng.IntN(5) < 2
	if sc.observed && rng.IntN(10) == 0 {
		sc.obsPanic = 1 + rng.IntN(4)
	}
	for i := range sc.obsSleep {
		if rng.IntN(5) == 0 {
			sc.obsSleep[i] = pick(rmTick, 3*rmTick)
		}
	}
	if rng.IntN(100) < 35 {
		sc.budget = true
		sc.reservePerS = []float64{1e-12, 1, 2, 3}[rng.IntN(4)] / rmTTL.Seconds()
		sc.ratio = []float64{1e-9, 1}[rng.IntN(2)]
	}
	bounded := (sc.hasDeadline && sc.deadline > 0) || sc.maxElapsed > 0 || sc.cancelAt > 0
	plainA := 45 // percent of attempts failing with errRmA alone
	if rng.IntN(2) == 0 {
		plainA = 80
	}
	for i := range sc.attempts {
		a := &sc.attempts[i]
		a.dur = pick(0, 0, rmTick, 2*rmTick, 5*rmTick, 10*rmTick)
		if rng.IntN(20) == 0 {
			a.dur = time.Second
		}
		switch r := rng.IntN(100); {
		case r < 12:
			a.ok = true
		case r < 12+plainA:
			a.err = &rmErrSpec{kind: rmA}
		default:
			a.err = rmGenErr(rng, 0, bounded)
		}
		if !a.ok {
			sc.errs[i] = a.err.build()
		}
	}
	// Often, put a bound where the run may well be: at the end of an
	// attempt or of a wait, when the errors ask for no hint.
	landmark := func() time.Duration {
		var at time.Duration
		n := 1 + rng.IntN(3)
		for i := range n {
			at += sc.attempts[i].dur
			if i < n-1 || rng.IntN(2) == 0 {
				if sc.backoff == rmConstant {
					at += sc.d
				} else {
					at += min(sc.d<<i, sc.max)
				}
			}
		}
		return max(at, rmTick)
	}
	if sc.maxElapsed > 0 && rng.IntN(3) == 0 {
		sc.maxElapsed = landmark()
	}
	if sc.hasDeadline && sc.deadline > 0 && rng.IntN(3) == 0 {
		sc.deadline = landmark()
	}
	if sc.hasDeadline && sc.cancelAt == sc.deadline {
		sc.cancelAt += rmTick / 2 // which of the two ended the context would be a race
	}
	return sc
}

// rmRetryRec is a call of OnRetry, or an EventRetry.
type rmRetryRec struct {
	Attempt int
	Err     string // which error: "attempt N" is the error attempt N returned
	Delay   time.Duration
	At      time.Duration
}

type rmEventRec struct {
	Pipeline string
	Kind     resil.EventKind
	Attempt  int
	Err      string
	Delay    time.Duration
	Elapsed  time.Duration
}

// rmErrFacts is what errors.Is and errors.As say of an error.
type rmErrFacts struct {
	Nil          bool
	SameAsLast   bool   // it is the last attempt's error itself
	SameAsCtx    string // it is context.Canceled or DeadlineExceeded itself
	Canceled     bool   // errors.Is(err, context.Canceled)
	Deadline     bool   // errors.Is(err, context.DeadlineExceeded)
	Budget       bool   // errors.Is(err, ErrRetryBudgetExhausted)
	WrapsLast    bool   // errors.Is(err, the last attempt's error)
	RetryError   bool   // errors.As(err, **RetryError)
	Attempts     int    // its Attempts
	RetryErrLast bool   // its Err is the last attempt's error itself
}

func rmFacts(err, last error) rmErrFacts {
	if err == nil {
		return rmErrFacts{Nil: true}
	}
	f := rmErrFacts{
		SameAsLast: last != nil && err == last,
		Canceled:   errors.Is(err, context.Canceled),
		Deadline:   errors.Is(err, context.DeadlineExceeded),
		Budget:     errors.Is(err, resil.ErrRetryBudgetExhausted),
		WrapsLast:  last != nil && errors.Is(err, last),
	}
	switch err {
	case context.Canceled:
		f.SameAsCtx = "Canceled"
	case context.DeadlineExceeded:
		f.SameAsCtx = "DeadlineExceeded"
	}
	var re *resil.RetryError
	if errors.As(err, &re) {
		f.RetryError, f.Attempts, f.RetryErrLast = true, re.Attempts, last != nil && re.Err == last
	}
	return f
}

// rmOutcome is everything a run shows.
type rmOutcome struct {
	Starts  []time.Duration // when each attempt started
	Retries []rmRetryRec    // OnRetry's calls
	Events  []rmEventRec    // the observer's events
	Backoff []int           // the retries ExponentialJitter was asked for (rmJitter only)
	End     time.Duration   // when Run returned (or panicked)
	Value   int
	Err     rmErrFacts
	Panic   any
	Probe   int      // retries the budget grants afterwards; -1 without one
	Away    []string // fn or OnRetry calls made off the caller's goroutine
}

type rmJitterRec struct {
	retry int
	d     time.Duration
}

type rmPanic struct{ call int } // OnRetry's

type rmObsPanic struct{ attempt int } // the observer's

type rmObserver struct {
	sc   *rmScenario
	recs []resil.Event
}

func (o *rmObserver) Observe(_ context.Context, e resil.Event) {
	o.recs = append(o.recs, e)
	if e.Kind == resil.EventRetry && e.Attempt >= 1 && e.Attempt <= len(o.sc.obsSleep) {
		if e.Attempt == o.sc.obsPanic {
			panic(rmObsPanic{e.Attempt})
		}
		time.Sleep(o.sc.obsSleep[e.Attempt-1])
	}
}

// rmBackoff returns the scenario's Backoff, and the record of the jitter it
// drew.
func (sc *rmScenario) rmBackoff() (resil.Backoff, *[]rmJitterRec) {
	switch sc.backoff {
	case rmConstant:
		return resil.Constant(sc.d), nil
	case rmExponential:
		return resil.Exponential(sc.d, sc.max), nil
	}
	recs := new([]rmJitterRec)
	jitter := resil.ExponentialJitter(sc.d, sc.max)
	return func(retry int) time.Duration {
		d := jitter(retry)
		*recs = append(*recs, rmJitterRec{retry, d})
		return d
	}, recs
}

// runCode runs sc through resil, in the caller's synctest bubble.
func (sc *rmScenario) runCode() (rmOutcome, []rmJitterRec) {
	var o rmOutcome
	caller := goid()
	start := time.Now()
	since := func() time.Duration { return time.Since(start) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if sc.cancelBefore {
		cancel()
	}
	if sc.hasDeadline {
		var cancelD context.CancelFunc
		ctx, cancelD = context.WithTimeout(ctx, sc.deadline)
		defer cancelD()
	}
	if sc.cancelAt > 0 {
		defer time.AfterFunc(sc.cancelAt, cancel).Stop()
	}
	errTag := func(err error, attempt int) string {
		if attempt >= 1 && attempt <= len(sc.errs) && err != nil && err == sc.errs[attempt-1] {
			return fmt.Sprint("attempt ", attempt)
		}
		if err == resil.ErrRetryBudgetExhausted {
			return "ErrRetryBudgetExhausted"
		}
		return fmt.Sprintf("other: %v", err)
	}
	backoff, jitter := sc.rmBackoff()
	var budget *resil.RetryBudget
	if sc.budget {
		budget = resil.NewRetryBudget(resil.RetryBudgetPolicy{Ratio: sc.ratio, MinPerSecond: sc.reservePerS, TTL: rmTTL})
	}
	pol := resil.RetryPolicy{
		MaxAttempts: sc.maxAttempts,
		Backoff:     backoff,
		MaxElapsed:  sc.maxElapsed,
		Budget:      budget,
	}
	switch sc.retryIf {
	case "always":
		pol.RetryIf = func(error) bool { return true }
	case "never":
		pol.RetryIf = func(error) bool { return false }
	case "is A":
		pol.RetryIf = func(err error) bool { return errors.Is(err, errRmA) }
	}
	if sc.onRetry {
		pol.OnRetry = func(e resil.RetryEvent) {
			o.Retries = append(o.Retries, rmRetryRec{e.Attempt, errTag(e.Err, e.Attempt), e.Delay, since()})
			if goid() != caller {
				o.Away = append(o.Away, fmt.Sprint("OnRetry ", e.Attempt))
			}
			n := len(o.Retries)
			if n == sc.onRetryCancs {
				cancel()
			}
			if n == sc.onRetryPanic {
				panic(rmPanic{n})
			}
			if n <= len(sc.onRetrySleep) {
				time.Sleep(sc.onRetrySleep[n-1])
			}
		}
	}
	p := resil.New[int]()
	if sc.inner {
		p = p.Timeout(time.Hour)
	}
	p = p.Retry(pol)
	obs := &rmObserver{sc: sc}
	if sc.observed {
		p = p.Named("model").Observe(obs)
	}
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				o.Panic = r
				o.End = since()
			}
		}()
		o.Value, err = p.Run(ctx, func(context.Context) (int, error) {
			i := len(o.Starts)
			o.Starts = append(o.Starts, since())
			if goid() != caller {
				o.Away = append(o.Away, fmt.Sprint("attempt ", i+1))
			}
			if i >= len(sc.attempts) {
				return 0, errors.New("model: no attempt left in the scenario")
			}
			if i+1 == sc.fnCancels {
				cancel()
			}
			a := sc.attempts[i]
			time.Sleep(a.dur)
			if a.ok {
				return 100 + i, nil
			}
			return 7, sc.errs[i]
		})
		o.End = since()
	}()
	var last error
	if n := len(o.Starts); n >= 1 && n <= len(sc.errs) {
		last = sc.errs[n-1]
	}
	if o.Panic == nil {
		o.Err = rmFacts(err, last)
	}
	for _, e := range obs.recs {
		r := rmEventRec{Pipeline: e.Pipeline, Kind: e.Kind, Attempt: e.Attempt, Delay: e.Delay, Elapsed: e.Elapsed}
		switch {
		case e.Err == nil:
		case e.Kind == resil.EventFailure && e.Err == err:
			r.Err = "returned"
		default:
			r.Err = errTag(e.Err, e.Attempt)
		}
		o.Events = append(o.Events, r)
	}
	o.Probe = -1
	if budget != nil {
		calls := 0
		_, _ = resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 20, Backoff: resil.Constant(0), Budget: budget}).
			Run(context.Background(), func(context.Context) (int, error) { calls++; return 0, errRmB })
		o.Probe = calls - 1
	}
	if jitter != nil {
		for _, r := range *jitter {
			o.Backoff = append(o.Backoff, r.retry)
		}
		return o, *jitter
	}
	return o, nil
}

// envelope is Exponential(d, max)'s delay: min(max, d·2^(retry−1)).
func (sc *rmScenario) envelope(retry int) time.Duration {
	d := sc.d
	for i := 1; i < retry && d < sc.max; i++ {
		d *= 2
	}
	return min(d, sc.max)
}

// rmCtx is the model of the caller's context.
type rmCtx struct {
	end  time.Duration // when it ends; math.MaxInt64: never
	err  error
	sync bool // ended by a call on the caller's goroutine: every look from then on sees it
	live int  // how many looks at instant end still see it live (the order tried)
	ties int  // looks made at instant end
}

func (c *rmCtx) endAt(at time.Duration, err error, sync bool) {
	if at < c.end {
		c.end, c.err, c.sync = at, err, sync
	}
}

// ended is a look at the context at t.
func (c *rmCtx) ended(t time.Duration) bool {
	switch {
	case t < c.end:
		return false
	case t > c.end || c.sync:
		return true
	}
	c.ties++
	if c.live > 0 {
		c.live--
		return false
	}
	return true
}

type rmBudget struct {
	reserve, ratio float64
	calls, retries int
}

// take grants a retry when the retries, it included, stay within Ratio ×
// calls + MinPerSecond × TTL: every call and retry of a scenario is within
// one TTL.
func (b *rmBudget) take() bool {
	if float64(b.retries+1) > b.ratio*float64(b.calls)+b.reserve {
		return false
	}
	b.retries++
	return true
}

// model runs sc through the reference, with ExponentialJitter's draws
// taken from jitter in order, and live looks at the context's end instant
// seeing it live. It returns the outcome and how many looks were made at
// that instant.
func (sc *rmScenario) model(jitter []rmJitterRec, live int) (rmOutcome, int) {
	var o rmOutcome
	c := &rmCtx{end: math.MaxInt64, live: live}
	if sc.hasDeadline {
		c.endAt(sc.deadline, context.DeadlineExceeded, false)
	}
	if sc.cancelAt > 0 {
		c.endAt(sc.cancelAt, context.Canceled, false)
	}
	var b *rmBudget
	if sc.budget {
		b = &rmBudget{reserve: sc.reservePerS * rmTTL.Seconds(), ratio: sc.ratio}
	}
	maxAttempts := sc.maxAttempts
	if maxAttempts == 0 {
		maxAttempts = 3
	}
	backoff := func(retry int) time.Duration {
		switch sc.backoff {
		case rmConstant:
			return sc.d
		case rmExponential:
			return sc.envelope(retry)
		}
		o.Backoff = append(o.Backoff, retry)
		if i := len(o.Backoff) - 1; i < len(jitter) {
			return jitter[i].d
		}
		return 0
	}
	retryable := func(s *rmErrSpec) bool {
		switch s.mark() {
		case "permanent":
			return false
		case "transient":
			return true
		}
		switch sc.retryIf {
		case "always":
			return true
		case "never":
			return false
		case "is A":
			return s.has(rmA)
		}
		return s.isTransient()
	}
	// fits: a wait of d begun at t crosses neither MaxElapsed (from the
	// first attempt's start, 0) nor the deadline (nor ends at it).
	fits := func(t, d time.Duration) bool {
		if sc.hasDeadline && d >= sc.deadline-t {
			return false
		}
		if sc.maxElapsed > 0 && (t >= sc.maxElapsed || d > sc.maxElapsed-t) {
			return false
		}
		return true
	}

	var t time.Duration
	event := func(e rmEventRec) {
		if sc.observed {
			e.Pipeline, e.Elapsed = "model", t
			o.Events = append(o.Events, e)
		}
	}
	var (
		result error
		last   error
		value  int
	)
	if sc.cancelBefore {
		result = context.Canceled
	} else if sc.hasDeadline && sc.deadline <= 0 {
		result = context.DeadlineExceeded
	} else {
		if b != nil {
			b.calls++
		}
		for a := 1; ; a++ {
			o.Starts = append(o.Starts, t)
			event(rmEventRec{Kind: resil.EventAttempt, Attempt: a})
			if a == sc.fnCancels {
				c.endAt(t, context.Canceled, true)
			}
			at := sc.attempts[a-1]
			t += at.dur
			if at.ok {
				value = 100 + a - 1
				break
			}
			last = sc.errs[a-1]
			tag := fmt.Sprint("attempt ", a)
			stop := func() { result = &rmStopErr{c.err, last} }
			if !retryable(at.err) {
				result = last
				break
			}
			if c.ended(t) {
				stop()
				break
			}
			if a >= maxAttempts {
				result = &resil.RetryError{Attempts: a, Err: last}
				break
			}
			d, ok := at.err.hint()
			if !ok || d <= 0 {
				d = backoff(a)
			}
			if !fits(t, d) {
				result = &resil.RetryError{Attempts: a, Err: last}
				break
			}
			if b != nil && !b.take() {
				event(rmEventRec{Kind: resil.EventRejected, Attempt: a, Err: "ErrRetryBudgetExhausted"})
				result = &rmBudgetErr{&resil.RetryError{Attempts: a, Err: last}}
				break
			}
			notMade := func() {
				if b != nil {
					b.retries--
				}
			}
			// outOfTime reports whether the retry is not made after all,
			// OnRetry or the observer having taken their time: the
			// context ended, or the wait no longer fits.
			outOfTime := func() bool {
				switch {
				case c.ended(t):
					notMade()
					stop()
				case !fits(t, d):
					notMade()
					result = &resil.RetryError{Attempts: a, Err: last}
				default:
					return false
				}
				return true
			}
			announced := sc.onRetry || sc.observed
			if announced {
				if sc.onRetry {
					o.Retries = append(o.Retries, rmRetryRec{a, tag, d, t})
					n := len(o.Retries)
					if n == sc.onRetryCancs {
						c.endAt(t, context.Canceled, true)
					}
					if n == sc.onRetryPanic {
						notMade()
						o.Panic = rmPanic{n}
						break
					}
					t += sc.onRetrySleep[n-1]
					if outOfTime() {
						break // and not reported
					}
				}
				if sc.observed {
					event(rmEventRec{Kind: resil.EventRetry, Attempt: a, Err: tag, Delay: d})
					if a == sc.obsPanic {
						notMade()
						o.Panic = rmObsPanic{a}
						break
					}
					t += sc.obsSleep[a-1]
				}
				if outOfTime() {
					break
				}
			}
			if d > 0 {
				if c.end-t < d { // the context ends during the wait (c.end >= t)
					t = max(t, c.end)
					notMade()
					stop()
					break
				}
				t += d
				if c.ended(t) {
					notMade()
					stop()
					break
				}
			} else if announced && c.ended(t) {
				notMade()
				stop()
				break
			}
		}
	}
	o.End = t
	if o.Panic == nil {
		o.Err = rmFacts(result, last)
		if result == nil {
			o.Value = value
			event(rmEventRec{Kind: resil.EventSuccess})
		} else {
			event(rmEventRec{Kind: resil.EventFailure, Err: "returned"})
		}
	}
	o.Probe = -1
	if b != nil {
		b.calls++ // the probe's call
		o.Probe = 0
		for o.Probe < 19 && b.take() {
			o.Probe++
		}
	}
	return o, c.ties
}

// rmStopErr is the model's error for a context that ended: it matches the
// context's error and wraps the last attempt's.
type rmStopErr struct{ ctxErr, last error }

func (e *rmStopErr) Error() string   { return fmt.Sprintf("model: %v; last: %v", e.ctxErr, e.last) }
func (e *rmStopErr) Unwrap() []error { return []error{e.ctxErr, e.last} }

// rmBudgetErr is the model's error for a denied retry: a *RetryError that
// matches ErrRetryBudgetExhausted.
type rmBudgetErr struct{ r *resil.RetryError }

func (e *rmBudgetErr) Error() string        { return "model: budget: " + e.r.Error() }
func (e *rmBudgetErr) Unwrap() error        { return e.r }
func (e *rmBudgetErr) Is(target error) bool { return target == resil.ErrRetryBudgetExhausted }

// rmCheck runs sc through resil and the model and fails t unless they agree
// for some order of the looks at the context's end instant.
func rmCheck(t *testing.T, sc *rmScenario) {
	got, jitter := sc.runCode()
	for _, r := range jitter {
		require.True(t, r.d >= 0 && r.d <= sc.envelope(r.retry), "ExponentialJitter(%v, %v)(%d) = %v\n%v", sc.d, sc.max, r.retry, r.d, sc)
	}
	var first rmOutcome
	for live := 0; ; live++ {
		want, ties := sc.model(jitter, live)
		if live == 0 {
			first = want
		}
		if assert.ObjectsAreEqual(want, got) {
			return
		}
		if ties <= live { // every look at the end instant saw the context live
			break
		}
	}
	require.Equal(t, first, got, "the model (want) and resil (got) disagree; replay with -run 'TestRetryModel/seed=%d$'\n%vExponentialJitter drew (retry, delay): %v",
		sc.seed, sc, jitter)
}

// TestRetryModel runs seeded random scenarios through Retry and the
// reference model, in fake time, and compares all that they show.
func TestRetryModel(t *testing.T) {
	forEachSeed(t, 1000, func(seed uint64) func(t *testing.T) {
		sc := rmGenScenario(seed)
		return func(t *testing.T) { rmCheck(t, sc) }
	})
}
