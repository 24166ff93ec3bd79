package resil

import (
	"context"
	"time"
)

type timeoutStage[T any] struct{ d time.Duration }

// Timeout returns a pipeline that gives the stages added before it a
// context that ends after d, or earlier with the caller's context. It runs
// them on the caller's goroutine and starts no goroutine of its own; the
// context's timer is stopped before Run returns.
//
// When d elapsed while the caller's context was still live and the wrapped
// stages return an error, Run's error matches both ErrTimeout and
// context.DeadlineExceeded with errors.Is and wraps the error that came
// back. When the caller's own deadline came first (at or before start+d),
// the error is returned unchanged, as is every other error. A value that
// comes back without error is returned even when it came late: fn decides
// whether it honours its context.
//
// Put Timeout before Retry for a per-attempt limit, after it for a limit on
// the whole sequence, or both. It panics when d <= 0.
func (p Pipeline[T]) Timeout(d time.Duration) Pipeline[T] {
	if d <= 0 {
		panic("resil: Timeout d must be > 0, got " + d.String())
	}
	return p.with(timeoutStage[T]{d: d})
}

func (s timeoutStage[T]) run(ctx context.Context, n next[T]) (T, error) {
	tctx, cancel := context.WithTimeout(ctx, s.d)
	defer cancel() // also on a panic or Goexit: the timer never outlives Run
	v, err := n.run(tctx)
	if err == nil || tctx.Err() != context.DeadlineExceeded {
		return v, err
	}
	// The deadline passed. It is this stage's only if it came before the
	// parent's: context.WithTimeout keeps the parent's deadline when that is
	// at or before its own.
	own, _ := tctx.Deadline()
	if parent, ok := ctx.Deadline(); ok && !own.Before(parent) {
		return v, err
	}
	err = &timeoutError{d: s.d, err: err}
	n.emit(ctx, Event{Kind: EventTimeout, Attempt: n.attempt, Err: err})
	var zero T
	return zero, err
}
