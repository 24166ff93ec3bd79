package resil_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/require"
)

// Edges of Hedge and Chaos at a context's deadline. A context's Err shows
// its deadline only once its timer has fired, a moment after the deadline;
// a call that reaches a stage at that instant (woken by a timer of its own
// due then) may find Err still nil. The stages count the deadline as the
// end, so fn does not start. Which of the timers due at the same instant
// fires first varies, so each case runs many times.

const edgeRuns = 100

// countingFn returns fn that counts its calls in n and returns 1.
func countingFn(n *atomic.Int32) func(context.Context) (int, error) {
	return func(context.Context) (int, error) {
		n.Add(1)
		return 1, nil
	}
}

// A Hedge reached at its context's deadline, where no hedge could start and
// the one attempt would run inline, starts none.
func TestHedgeInlineNoAttemptOnceTheDeadlineHasCome(t *testing.T) {
	t.Run("caller at the deadline", func(t *testing.T) {
		for range edgeRuns {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), hedgeDelay)
				defer cancel()
				time.Sleep(hedgeDelay) // wakes at the deadline; ctx's timer may not have fired
				var calls atomic.Int32
				p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})
				_, err := p.Run(ctx, countingFn(&calls))
				require.ErrorIs(t, err, context.DeadlineExceeded)
				require.Zero(t, calls.Load(), "no attempt starts at the deadline")
			})
		}
	})
	t.Run("bulkhead slot freed at the deadline", func(t *testing.T) {
		for range edgeRuns {
			synctest.Test(t, func(t *testing.T) {
				b := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1, MaxWait: time.Hour})
				hold := resil.New[int]().Bulkhead(b)
				held := make(chan struct{})
				go func() {
					_, _ = hold.Run(context.Background(), func(context.Context) (int, error) {
						close(held)
						time.Sleep(hedgeDelay) // frees the slot at the waiter's deadline
						return 0, nil
					})
				}()
				<-held
				ctx, cancel := context.WithTimeout(t.Context(), hedgeDelay)
				defer cancel()
				var calls atomic.Int32
				p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay}).Bulkhead(b)
				_, err := p.Run(ctx, countingFn(&calls))
				require.ErrorIs(t, err, context.DeadlineExceeded)
				require.Zero(t, calls.Load(), "no attempt starts at the deadline")
			})
		}
	})
}

// A Chaos latency that ends exactly at the context's deadline ends the call
// with the deadline: fn does not start, and no fault is reported.
func TestChaosLatencyEndingAtTheDeadlineRunsNothing(t *testing.T) {
	t.Run("caller's deadline", func(t *testing.T) {
		for range edgeRuns {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), hedgeDelay)
				defer cancel()
				var calls atomic.Int32
				p := resil.New[int]().Chaos(resil.ChaosPolicy{LatencyRate: 1, Latency: hedgeDelay})
				_, err := p.Run(ctx, countingFn(&calls))
				require.Equal(t, context.DeadlineExceeded, err)
				require.Zero(t, calls.Load(), "fn does not start at the deadline")
			})
		}
	})
	t.Run("inside a Timeout", func(t *testing.T) {
		for range edgeRuns {
			synctest.Test(t, func(t *testing.T) {
				var calls atomic.Int32
				p := resil.New[int]().
					Chaos(resil.ChaosPolicy{LatencyRate: 1, Latency: hedgeDelay}).
					Timeout(hedgeDelay)
				_, err := p.Run(context.Background(), countingFn(&calls))
				require.ErrorIs(t, err, resil.ErrTimeout)
				require.ErrorIs(t, err, context.DeadlineExceeded)
				require.Zero(t, calls.Load(), "fn does not start at the deadline")
			})
		}
	})
	t.Run("with a fault", func(t *testing.T) {
		for range edgeRuns {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), hedgeDelay)
				defer cancel()
				log := &obsRecorder{}
				p := resil.New[int]().
					Chaos(resil.ChaosPolicy{LatencyRate: 1, Latency: hedgeDelay, FaultRate: 1}).
					Observe(log)
				_, err := p.Run(ctx, countingFn(new(atomic.Int32)))
				require.Equal(t, context.DeadlineExceeded, err, "as when ctx ends during the wait")
				require.Empty(t, log.kinds(resil.EventRejected))
			})
		}
	})
	t.Run("outside a Hedge", func(t *testing.T) {
		for range edgeRuns {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), hedgeDelay)
				defer cancel()
				var calls atomic.Int32
				p := resil.New[int]().
					Hedge(resil.HedgePolicy{Delay: hedgeDelay}).
					Chaos(resil.ChaosPolicy{LatencyRate: 1, Latency: hedgeDelay})
				_, err := p.Run(ctx, countingFn(&calls))
				require.ErrorIs(t, err, context.DeadlineExceeded)
				require.Zero(t, calls.Load(), "no attempt starts at the deadline")
			})
		}
	})
}

// lagCtx is a context whose deadline has a lagging Err, as a real one's
// does until its timer fires: Err stays nil, and Done never closes, past
// the deadline.
type lagCtx struct {
	context.Context
	dl time.Time
}

func (c lagCtx) Deadline() (time.Time, bool) { return c.dl, true }

// TestHedgeFailureAtTheDeadline: a failure that arrives once the deadline
// has come, before the context's timer says so, ends the call with
// context.DeadlineExceeded, as on every other path: inline (no hedge could
// start before the deadline) and hedged.
func TestHedgeFailureAtTheDeadline(t *testing.T) {
	for _, tt := range []struct {
		delay time.Duration
		calls int32
	}{{2 * time.Second, 1}, {100 * time.Millisecond, 2}} {
		t.Run(tt.delay.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := lagCtx{Context: t.Context(), dl: time.Now().Add(time.Second)}
				p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: tt.delay})
				var calls atomic.Int32
				_, err := p.Run(ctx, func(context.Context) (int, error) {
					calls.Add(1)
					time.Sleep(time.Second)
					return 0, errFlaky
				})
				require.ErrorIs(t, err, context.DeadlineExceeded)
				time.Sleep(time.Second) // the losing attempt ignores its context: let it end
				require.Equal(t, tt.calls, calls.Load())
			})
		})
	}
}
