package resiltest

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Step is one entry of a script: what a call of a Fake does. Build it with
// Return, Fail, Hang or Panic, and change it with After and Times. A Step
// is an immutable value: its methods return a changed copy.
//
// The zero Step returns T's zero value and a nil error, once, at once.
type Step struct {
	kind  stepKind
	value any   // stepReturn: the value; nil means T's zero value
	err   error // stepFail
	pv    any   // stepPanic: the panic value
	delay time.Duration
	times int // calls the step serves; 0 means 1
}

type stepKind uint8

const (
	stepReturn stepKind = iota
	stepFail
	stepHang
	stepPanic
)

// Return is a step whose call returns v and a nil error. v's type must be
// the T of the Fake that plays it (Return(42) is an int: use
// Return[int64](42) for a Fake[int64]); Script panics otherwise.
func Return[T any](v T) Step { return Step{kind: stepReturn, value: v} }

// Fail is a step whose call returns T's zero value and err, for the next
// times calls. Mark err with resil.Permanent or resil.Transient to decide
// how resil classifies it. It panics when times < 1 or err is nil.
func Fail(err error, times int) Step {
	if err == nil {
		panic("resiltest: Fail err must be non-nil, got nil")
	}
	if times < 1 {
		panic("resiltest: Fail times must be >= 1, got " + strconv.Itoa(times))
	}
	return Step{kind: stepFail, err: err}.Times(times)
}

// Hang is a step whose call blocks until its context ends and then returns
// ctx.Err(), like a dependency that never answers. With a context that
// never ends it blocks forever: give the call a deadline (a Timeout stage).
// Inside a testing/synctest bubble a hung call is durably blocked, so fake
// time moves on to the deadline at once.
func Hang() Step { return Step{kind: stepHang} }

// Panic is a step whose call panics with v, after recording itself.
func Panic(v any) Step { return Step{kind: stepPanic, pv: v} }

// After returns s with a latency: its call waits d before it plays s. A
// call whose context ends during the wait returns ctx.Err() at once, as a
// dependency that honours its context does. d <= 0 means no wait.
func (s Step) After(d time.Duration) Step {
	s.delay = d
	return s
}

// Times returns s serving the next n calls instead of one. It panics when
// n < 1.
func (s Step) Times(n int) Step {
	if n < 1 {
		panic("resiltest: Step.Times n must be >= 1, got " + strconv.Itoa(n))
	}
	s.times = n
	return s
}

func (s Step) count() int {
	if s.times == 0 {
		return 1
	}
	return s.times
}

// String describes the step, as in "fail(unexpected EOF)×2 after 1s".
func (s Step) String() string {
	var out string
	switch s.kind {
	case stepReturn:
		out = fmt.Sprintf("return(%v)", s.value)
	case stepFail:
		out = "fail(" + s.err.Error() + ")"
	case stepHang:
		out = "hang"
	case stepPanic:
		out = fmt.Sprintf("panic(%v)", s.pv)
	}
	if s.count() > 1 {
		out += "×" + strconv.Itoa(s.count())
	}
	if s.delay > 0 {
		out += " after " + s.delay.String()
	}
	return out
}

// Call is the record of one call of a Fake (or one request a
// FlakyHandler served). Times come from the time package, so inside a
// testing/synctest bubble they are the bubble's fake time. The zero Call
// records no call (Attempt 0).
type Call struct {
	// Attempt is the call's number on its fake, from 1. When one Run of a
	// pipeline is all that calls the fake, it is the attempt number.
	Attempt  int
	Start    time.Time // when the call began
	End      time.Time // when it returned or panicked; zero while it runs
	Deadline time.Time // its context's deadline; zero when there was none
	Err      error     // the error it returned; nil for a success
	Panicked bool      // it panicked (with a Panic step)
	Status   int       // the status a FlakyHandler answered; 0 for a dropped connection and for a Fake

	seq uint64 // the order of its start among calls and breaker transitions
}

// seq orders call starts and breaker transitions across every Fake,
// FlakyHandler and BreakerLog, so that "started while open" is decided by
// order, not by clock readings that may be equal.
var seq atomic.Uint64

// Recorder is what the assertions read: a Fake, a FlakyHandler, or any
// record of calls in the order they started. Waits and the assertions
// need a non-nil Recorder: they panic when given nil.
type Recorder interface {
	// Calls returns the record of every call so far, in the order they
	// started.
	Calls() []Call
}

// Fake is a dependency for tests: each call plays the next step of its
// script (Script) or a seeded random outcome (Random) and is recorded.
// Pass its Call method where a pipeline wants a function. It is safe for
// concurrent use: concurrent calls take the steps in the order they start.
// Create it with Script or Random; the zero Fake is Script[T](): every call
// returns T's zero value and a nil error. Its methods panic, naming the
// method, when called on a nil *Fake.
type Fake[T any] struct {
	steps []Step           // the script; its last step repeats
	gen   func(n int) Step // the step for call n, when there is no script
	mu    sync.Mutex
	calls []Call // guarded by mu
	in    int    // calls running; guarded by mu
	peak  int    // most calls running at once; guarded by mu
}

// Script returns a Fake that plays steps in order: Fail(err, 2) serves two
// calls, then the next step serves the next. When the script runs out, its
// last step repeats forever, so Script[int](Fail(err, 2), Return(42))
// fails twice and then always returns 42; check Count to bound the calls.
// With no steps, every call returns T's zero value and a nil error. It
// panics when a Return step's value is not a T.
func Script[T any](steps ...Step) *Fake[T] {
	for i, s := range steps {
		if s.kind == stepReturn && s.value != nil {
			if _, ok := s.value.(T); !ok {
				panic(fmt.Sprintf("resiltest: Script[%v] step %d returns a %T, want %v",
					typeName[T](), i+1, s.value, typeName[T]()))
			}
		}
	}
	return &Fake[T]{steps: append([]Step(nil), steps...)}
}

func typeName[T any]() string { return reflect.TypeFor[T]().String() }

// mustBe panics, naming method, when f is nil: a nil *Fake passed where a
// Recorder or a function is wanted would otherwise fail with a bare nil
// dereference far from the mistake.
func (f *Fake[T]) mustBe(method string) {
	if f == nil {
		panic("resiltest: " + method + " called on a nil *Fake[" + typeName[T]() + "]")
	}
}

// stepFor returns the step call n (from 1) plays.
func (f *Fake[T]) stepFor(n int) Step {
	if f.gen != nil {
		return f.gen(n)
	}
	if len(f.steps) == 0 {
		return Step{}
	}
	for _, s := range f.steps {
		if n <= s.count() {
			return s
		}
		n -= s.count()
	}
	return f.steps[len(f.steps)-1]
}

// Call plays the step of this call (the n-th call plays the n-th step of
// the script) and records it. Its type is what Pipeline.Run wants:
// p.Run(ctx, fake.Call).
func (f *Fake[T]) Call(ctx context.Context) (T, error) {
	f.mustBe("Call")
	var c Call
	if d, ok := ctx.Deadline(); ok {
		c.Deadline = d
	}
	f.mu.Lock()
	// Dated and numbered under the lock, so that calls are recorded in
	// the order they started, also when they start at once.
	c.Start, c.seq = time.Now(), seq.Add(1)
	c.Attempt = len(f.calls) + 1
	idx := len(f.calls)
	f.calls = append(f.calls, c)
	f.in++
	f.peak = max(f.peak, f.in)
	f.mu.Unlock()

	s := f.stepFor(c.Attempt)
	var zero T
	if s.delay > 0 {
		t := time.NewTimer(s.delay)
		select {
		case <-ctx.Done():
			t.Stop()
			err := ctx.Err()
			f.finish(idx, err, false)
			return zero, err
		case <-t.C:
		}
	}
	switch s.kind {
	case stepFail:
		f.finish(idx, s.err, false)
		return zero, s.err
	case stepHang:
		<-ctx.Done()
		err := ctx.Err()
		f.finish(idx, err, false)
		return zero, err
	case stepPanic:
		f.finish(idx, nil, true)
		panic(s.pv)
	}
	f.finish(idx, nil, false)
	if s.value == nil {
		return zero, nil
	}
	return s.value.(T), nil
}

func (f *Fake[T]) finish(idx int, err error, panicked bool) {
	f.mu.Lock()
	c := &f.calls[idx]
	c.End, c.Err, c.Panicked = time.Now(), err, panicked
	f.in--
	f.mu.Unlock()
}

// Calls returns a copy of the record of every call so far, in the order
// they started.
func (f *Fake[T]) Calls() []Call {
	f.mustBe("Calls")
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

// Count returns the number of calls so far, those still running included.
func (f *Fake[T]) Count() int {
	f.mustBe("Count")
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// MaxConcurrent returns the most calls that ran at the same time, for
// tests of bulkheads and hedging.
func (f *Fake[T]) MaxConcurrent() int {
	f.mustBe("MaxConcurrent")
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peak
}
