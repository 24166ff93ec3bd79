package resil

import "context"

type fallbackStage[T any] struct {
	fn    func(ctx context.Context, err error) (T, error)
	inner stageFunc[T] // the stages it wraps; nil: fn itself
	_     linePad
}

// Fallback returns a pipeline that, when the stages added before it return
// an error, calls fn with that error and returns what fn returns, its value
// included even with an error (a stale cached value, a default, a degraded
// answer). fn is not called when the context this stage received has
// ended, or its deadline has come (before its timer has ended it): then the
// wrapped stages' error is returned unchanged, since nobody waits for a
// substitute. A panic is not caught: fn is not called for it.
// It panics when fn is nil.
func (p Pipeline[T]) Fallback(fn func(ctx context.Context, err error) (T, error)) Pipeline[T] {
	if fn == nil {
		panic("resil: Fallback fn must be non-nil, got nil")
	}
	return p.with(fallbackStage[T]{fn: fn, inner: p.outer}.compile())
}

//go:noinline // see stageFunc
func (s fallbackStage[T]) compile() stageFunc[T] {
	return func(ctx context.Context, n next[T]) (T, error) {
		var (
			v   T
			err error
		)
		switch { // n.run inlined: see next.run
		case s.inner != nil:
			v, err = s.inner(ctx, n)
		case n.m == nil:
			v, err = n.fn(ctx)
		default:
			v, err = n.run(ctx, s.inner)
		}
		if err == nil {
			return v, nil
		}
		return s.fallback(ctx, &n, err)
	}
}

// fallback handles an error of the wrapped stages: outlined, so that the
// success path keeps a small frame.
func (s fallbackStage[T]) fallback(ctx context.Context, n *next[T], err error) (T, error) {
	if ended(ctx) {
		var zero T
		return zero, err
	}
	n.emit(ctx, Event{Kind: EventFallback, Err: err})
	return s.fn(ctx, err)
}
