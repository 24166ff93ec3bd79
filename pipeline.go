package resil

import (
	"context"
	"time"
)

// Pipeline is an immutable chain of stages that Run wraps around a call.
//
// Each stage method returns a new Pipeline whose outermost stage is the one
// just added, wrapping everything added before it; the receiver is left
// unchanged, so one base pipeline can be extended in several directions and
// shared by any number of goroutines without locking. The zero Pipeline is
// the empty pipeline, the same as New[T]().
//
//	New[T]().Timeout(t).Retry(r).Breaker(b).Fallback(f)
//	runs as Fallback(Breaker(Retry(Timeout(fn))))
type Pipeline[T any] struct {
	outer stageFunc[T] // the outermost stage; nil for the empty pipeline
	meta  *meta        // the name and observer events go to; nil when neither is set
}

// stageFunc runs one stage of a call, and through it the stages it wraps.
// What a call carries through the chain comes by value (next), so nothing a
// call needs is allocated: the chain is built once and every call's state
// lives on Run's stack.
//
// Each stage type has a method compile that returns its stageFunc: a closure over
// the stage's settings and the stageFunc of the stages it wraps (inner, nil
// when it wraps fn itself), whose body is the stage's code. A closure call costs
// less than a method call through an interface on a generic type, which Go
// makes through a wrapper that passes the type's dictionary: about 4 ns per
// stage on the hot path. compile is marked go:noinline: a closure built in
// a function that is inlined into the caller's code is compiled there, and
// Go then leaves the small calls in its body (atomic loads, clock, emit)
// as calls.
type stageFunc[T any] func(ctx context.Context, n next[T]) (T, error)

// linePad ends every stage type, so that the closure compile makes of it
// (the function, the type's dictionary, the stage's fields: 64 bytes on
// 64-bit platforms for most stages) fills a cache line of its own. Every
// call reads the closure, from every goroutine that runs the pipeline; a
// smaller one would share its line with whatever the allocator put next
// to it, and if a goroutine writes that on every call (a counter, another
// goroutine's loop state), each call on another core waits for the line:
// BreakerParallel ran 2.5x slower with its closure beside testing.PB.
type linePad [32]byte

// meta is what Named and Observe attach to a pipeline.
type meta struct {
	name string
	obs  Observer
}

// next is what a call carries through the chain. It is passed by value,
// and has at most four fields so that the compiler can keep it in
// registers.
type next[T any] struct {
	fn      func(context.Context) (T, error)
	m       *meta // non-nil only while an observer listens
	start   int64 // when Run started, in clock() time; 0 unless observed
	attempt int   // the attempt number set by the nearest Retry; 0 means 1
}

// New returns the empty pipeline: Run calls fn once with the caller's
// context. Add stages with the methods of Pipeline.
func New[T any]() Pipeline[T] { return Pipeline[T]{} }

// with returns p with run, which wraps p.outer, as its new outermost
// stage.
func (p Pipeline[T]) with(run stageFunc[T]) Pipeline[T] {
	return Pipeline[T]{outer: run, meta: p.meta}
}

// Run calls fn through every stage of p, outermost first, and returns what
// comes back. With a non-nil error the value is T's zero value, except that
// what a Fallback stage returns is returned as it is. A panic in fn reaches
// the caller of Run with its original value, after every stage has released
// what it holds. Run is safe for concurrent use; the core stages run fn on
// the caller's goroutine.
func (p Pipeline[T]) Run(ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	if ctx == nil {
		panic("resil: Run ctx must be non-nil, got nil")
	}
	if fn == nil {
		panic("resil: Run fn must be non-nil, got nil")
	}
	if p.meta == nil || p.meta.obs == nil {
		if p.outer == nil {
			v, err := fn(ctx)
			if err != nil {
				var zero T
				return zero, err
			}
			return v, nil
		}
		return p.outer(ctx, next[T]{fn: fn})
	}
	return p.runObserved(ctx, fn)
}

// runObserved is Run for a pipeline with an observer: it reports the call's
// outcome once the stages return. It is outlined so that the unobserved path
// stays small.
func (p Pipeline[T]) runObserved(ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	n := next[T]{fn: fn, m: p.meta, start: clock()}
	var (
		v   T
		err error
	)
	v, err = n.run(ctx, p.outer)
	if err != nil {
		n.emit(ctx, Event{Kind: EventFailure, Err: err})
	} else {
		n.emit(ctx, Event{Kind: EventSuccess})
	}
	return v, err
}

// The hot stages (Retry's first attempt, a closed Breaker, Fallback) do
// what run does themselves when the call is unobserved: call the next stage
// inward, or fn when none is left. That saves a call, and the copy of next
// it costs, per stage. A stage that calls fn this way must not return the
// value that comes with an error (run returns T's zero value instead).

// run runs the rest of the chain: inner, the stages a stage wraps, or fn
// when inner is nil.
func (n next[T]) run(ctx context.Context, inner stageFunc[T]) (T, error) {
	if inner != nil {
		return inner(ctx, n)
	}
	if n.m != nil {
		n.emit(ctx, Event{Kind: EventAttempt, Attempt: n.attemptNo()})
	}
	v, err := n.fn(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	return v, nil
}

func (n *next[T]) attemptNo() int {
	if n.attempt == 0 {
		return 1
	}
	return n.attempt
}

// emit reports e to the pipeline's observer, if there is one, filling in
// the pipeline's name and the time elapsed since Run started. The observer
// runs synchronously on the caller's goroutine; no stage holds a lock or a
// permit it could lose while it runs.
func (n *next[T]) emit(ctx context.Context, e Event) {
	if n.m != nil { // inlined: an unobserved call pays one compare
		n.report(ctx, e)
	}
}

// report is emit's outlined part, for an observed pipeline.
func (n *next[T]) report(ctx context.Context, e Event) {
	e.Pipeline = n.m.name
	e.Elapsed = time.Duration(clock() - n.start)
	n.m.obs.Observe(ctx, e)
}

// epoch anchors clock: a monotonic reading taken once.
var epoch = time.Now()

// clock returns monotonic nanoseconds since epoch (fake time inside a
// testing/synctest bubble). It is cheaper than time.Now, which also reads
// the wall clock.
func clock() int64 { return int64(time.Since(epoch)) }
