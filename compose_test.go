package resil_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/require"
)

// A Hedge inside a Timeout whose next hedge falls due exactly at the
// Timeout's deadline gives up at the deadline: the Timeout's own deadline
// ended the call, so the error matches ErrTimeout, whichever of the two
// timers due at that instant fires first.
func TestComposeHedgeDueAtTimeoutDeadlineIsTimeout(t *testing.T) {
	for range 100 {
		synctest.Test(t, func(t *testing.T) {
			p := resil.New[int]().
				Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 2}).
				Timeout(2 * hedgeDelay)
			_, err := p.Run(context.Background(), func(ctx context.Context) (int, error) {
				<-ctx.Done()
				return 0, ctx.Err()
			})
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.ErrorIs(t, err, resil.ErrTimeout)
		})
	}
}

// A retry without a wait is not made once the context's deadline has come,
// even while ctx.Err() does not show it yet (the context's timer fires
// after its deadline, and the attempt that just failed may have seen the
// deadline pass first): the wait of 0 ends at the deadline, and the attempt
// after it could not run. Here the attempts, a Hedge's inside a per-call
// Timeout, or a plain one that waits on a timer of its own, end exactly at
// the deadline; which of the timers due then fires first varies, so each
// case runs many times.
func TestComposeNoZeroWaitRetryAtTheDeadline(t *testing.T) {
	t.Run("hedge inside retry inside timeout", func(t *testing.T) {
		for range 50 {
			synctest.Test(t, func(t *testing.T) {
				var calls atomic.Int32
				p := resil.New[int]().
					Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 2}).
					Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)}).
					Timeout(2 * hedgeDelay)
				_, err := p.Run(context.Background(), func(ctx context.Context) (int, error) {
					calls.Add(1)
					<-ctx.Done()
					return 0, ctx.Err()
				})
				require.ErrorIs(t, err, resil.ErrTimeout)
				synctest.Wait()
				require.Equal(t, int32(2), calls.Load(), "the hedge due at the deadline does not start, nor a retry")
			})
		}
	})
	t.Run("retry inside timeout", func(t *testing.T) {
		for range 50 {
			synctest.Test(t, func(t *testing.T) {
				calls := 0
				p := resil.New[int]().
					Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)}).
					Timeout(time.Second)
				_, err := p.Run(context.Background(), func(ctx context.Context) (int, error) {
					calls++
					_ = ctx.Done()          // waits on ctx, as a real call would...
					time.Sleep(time.Second) // ...but ends on its own timer
					return 0, errFlaky
				})
				require.ErrorIs(t, err, resil.ErrTimeout)
				require.ErrorIs(t, err, errFlaky)
				require.Equal(t, 1, calls, "no attempt starts at the deadline")
			})
		}
	})
	t.Run("caller's deadline", func(t *testing.T) {
		for range 50 {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				calls := 0
				p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)})
				_, err := p.Run(ctx, func(ctx context.Context) (int, error) {
					calls++
					time.Sleep(time.Second)
					return 0, errFlaky
				})
				require.ErrorIs(t, err, errFlaky)
				require.Equal(t, 1, calls, "no attempt starts at the deadline")
			})
		}
	})
}

// A Fallback is not called once the deadline of the context it received
// has come, even while ctx.Err() does not show it yet: here a Hedge inside
// it gives up when its next attempt falls due exactly at the caller's
// deadline. Which of the timers due then fires first varies, so the case
// runs many times.
func TestComposeFallbackNotCalledAtTheDeadline(t *testing.T) {
	for range 50 {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*hedgeDelay)
			defer cancel()
			called := false
			p := resil.New[int]().
				Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 2}).
				Fallback(func(context.Context, error) (int, error) { called = true; return 7, nil })
			v, err := p.Run(ctx, func(ctx context.Context) (int, error) {
				<-ctx.Done()
				return 0, ctx.Err()
			})
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Zero(t, v)
			require.False(t, called, "nobody waits for a substitute")
		})
	}
}

// A caller that cancels its context with a cause while the call runs says
// nothing of the dependency, whatever stands between the Breaker and fn or
// around it: fn's error, that cause (as net/http returns it), or what a
// Timeout, Hedge or Retry makes of it, is ignored, and the breaker
// (MinCalls 1) stays closed. The error still matches context.Canceled or
// the cause.
func TestComposeBreakerIgnoresCallerCancelCause(t *testing.T) {
	cause := errors.New("a sibling failed")
	cases := []struct {
		name string
		wrap func(b *resil.Breaker) resil.Pipeline[int]
	}{
		{"breaker inside timeout", func(b *resil.Breaker) resil.Pipeline[int] {
			return resil.New[int]().Breaker(b).Timeout(time.Hour)
		}},
		{"timeout inside breaker", func(b *resil.Breaker) resil.Pipeline[int] {
			return resil.New[int]().Timeout(time.Hour).Breaker(b)
		}},
		{"breaker inside hedge", func(b *resil.Breaker) resil.Pipeline[int] {
			return resil.New[int]().Breaker(b).Hedge(resil.HedgePolicy{Delay: time.Minute})
		}},
		{"hedge inside breaker", func(b *resil.Breaker) resil.Pipeline[int] {
			return resil.New[int]().Hedge(resil.HedgePolicy{Delay: time.Minute}).Breaker(b)
		}},
		{"breaker inside retry", func(b *resil.Breaker) resil.Pipeline[int] {
			return resil.New[int]().Breaker(b).Retry(resil.RetryPolicy{Backoff: resil.Constant(0)})
		}},
		{"retry inside breaker", func(b *resil.Breaker) resil.Pipeline[int] {
			return resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0)}).Breaker(b)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1})
				ctx, cancel := context.WithCancelCause(context.Background())
				time.AfterFunc(time.Second, func() { cancel(cause) })
				_, err := c.wrap(b).Run(ctx, func(ctx context.Context) (int, error) {
					<-ctx.Done()
					return 0, fmt.Errorf("get: %w", context.Cause(ctx))
				})
				require.Error(t, err)
				require.True(t, errors.Is(err, context.Canceled) || errors.Is(err, cause), "got %v", err)
				require.Equal(t, resil.StateClosed, b.State())
				synctest.Wait()
				require.Equal(t, resil.StateClosed, b.State())
			})
		})
	}
}

// A caller that cancels while a Hedge inside a Retry runs its second
// attempt gets context.Canceled at once: the Hedge starts nothing more and
// the Retry does not retry a cancellation.
func TestComposeCancelDuringHedgeInsideRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(context.Background())
		time.AfterFunc(hedgeDelay+hedgeDelay/2, func() { cancel(errors.New("gone")) })
		var calls atomic.Int32
		p := resil.New[int]().
			Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 3}).
			Retry(resil.RetryPolicy{MaxAttempts: 5, Backoff: resil.Constant(0)})
		start := time.Now()
		_, err := p.Run(ctx, func(ctx context.Context) (int, error) {
			calls.Add(1)
			time.Sleep(time.Hour) // ignores ctx
			return 1, nil
		})
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, hedgeDelay+hedgeDelay/2, time.Since(start), "returns at once")
		time.Sleep(2 * time.Hour)
		require.Equal(t, int32(2), calls.Load())
	})
}
