package resil_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRetryNotMadeOnceContextEnded: a context that ends after the failed
// attempt was judged but before the next one starts (here OnRetry cancels
// it) stops Retry, whatever the wait: fn is not called again with a dead
// context, the error matches ctx.Err() and wraps the last attempt's error,
// and the retry the budget granted is given back.
func TestRetryNotMadeOnceContextEnded(t *testing.T) {
	for _, delay := range []time.Duration{0, time.Second} {
		t.Run(delay.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				// Reserve: 0.1/s × 10s = 1 retry; the calls' share is negligible.
				budget := resil.NewRetryBudget(resil.RetryBudgetPolicy{Ratio: 1e-6, MinPerSecond: 0.1, TTL: 10 * time.Second})
				var events []resil.RetryEvent
				p := resil.New[int]().Retry(resil.RetryPolicy{
					MaxAttempts: 3,
					Backoff:     resil.Constant(delay),
					Budget:      budget,
					OnRetry: func(e resil.RetryEvent) {
						events = append(events, e)
						cancel()
					},
				})
				calls := 0
				begin := time.Now()
				_, err := p.Run(ctx, func(ctx context.Context) (int, error) {
					calls++
					require.NoError(t, ctx.Err(), "an attempt is made only while ctx is live")
					return 0, errFlaky
				})
				assert.Zero(t, time.Since(begin), "returns at once")
				assert.Equal(t, 1, calls)
				assert.Len(t, events, 1)
				assert.ErrorIs(t, err, context.Canceled)
				assert.ErrorIs(t, err, errFlaky)

				calls = 0
				_, err = resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0), Budget: budget}).
					Run(context.Background(), func(context.Context) (int, error) { calls++; return 0, errFlaky })
				assert.NotErrorIs(t, err, resil.ErrRetryBudgetExhausted, "the retry not made was given back")
				assert.Equal(t, 2, calls)
			})
		})
	}
}

// TestRetrySlowOnRetryKeepsBounds: OnRetry (or an observer) that takes a
// while before a wait does not carry the wait past MaxElapsed or the
// context's deadline: the bounds are checked again once it returns, and a
// retry that no longer fits is not made (its budget is given back).
func TestRetrySlowOnRetryKeepsBounds(t *testing.T) {
	tests := []struct {
		name       string
		maxElapsed time.Duration
		deadline   time.Duration // 0: none
		delay      time.Duration
		slow       time.Duration // how long OnRetry takes
		wantCalls  int
		wantTook   time.Duration
	}{
		{"MaxElapsed passed in OnRetry", time.Second, 0, 100 * time.Millisecond, 2 * time.Second, 1, 2 * time.Second},
		{"MaxElapsed passed in OnRetry, no wait", time.Second, 0, 0, 2 * time.Second, 1, 2 * time.Second},
		{"wait would cross MaxElapsed", time.Second, 0, 100 * time.Millisecond, 950 * time.Millisecond, 1, 950 * time.Millisecond},
		{"wait would cross the deadline", 0, time.Second, 100 * time.Millisecond, 950 * time.Millisecond, 1, 950 * time.Millisecond},
		{"wait still fits", time.Second, time.Second, 100 * time.Millisecond, 500 * time.Millisecond, 3, 700 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				if tt.deadline > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.deadline)
					defer cancel()
				}
				budget := resil.NewRetryBudget(resil.RetryBudgetPolicy{Ratio: 1e-6, MinPerSecond: 0.1, TTL: 20 * time.Second})
				slow := tt.slow
				p := resil.New[int]().Retry(resil.RetryPolicy{
					MaxAttempts: 3,
					MaxElapsed:  tt.maxElapsed,
					Backoff:     resil.Constant(tt.delay),
					Budget:      budget,
					OnRetry:     func(resil.RetryEvent) { time.Sleep(slow); slow = 0 }, // slow the first time only
				})
				calls := 0
				begin := time.Now()
				_, err := p.Run(ctx, func(context.Context) (int, error) {
					calls++
					if calls == 3 {
						return 1, nil
					}
					return 0, errFlaky
				})
				assert.Equal(t, tt.wantTook, time.Since(begin))
				assert.Equal(t, tt.wantCalls, calls)
				if tt.wantCalls == 3 {
					require.NoError(t, err)
					return
				}
				var re *resil.RetryError
				require.ErrorAs(t, err, &re)
				assert.Equal(t, 1, re.Attempts)
				assert.ErrorIs(t, err, errFlaky)
				assert.NoError(t, ctx.Err(), "gave up before the deadline, not at it")

				calls = 0
				_, err = resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0), Budget: budget}).
					Run(context.Background(), func(context.Context) (int, error) { calls++; return 0, errFlaky })
				assert.NotErrorIs(t, err, resil.ErrRetryBudgetExhausted, "the retry not made was given back")
				assert.Equal(t, 2, calls)
			})
		})
	}
}

// TestRetryAttemptFailingAtTheDeadline: an attempt that fails when the
// caller's deadline has come ends the call with an error that matches
// context.DeadlineExceeded and wraps the attempt's error, whether or not
// the context's timer has fired yet (in fake time both orders happen, so
// each case runs many times).
func TestRetryAttemptFailingAtTheDeadline(t *testing.T) {
	for _, delay := range []time.Duration{0, 100 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			for range 100 {
				synctest.Test(t, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(t.Context(), time.Second)
					defer cancel()
					calls := 0
					p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(delay)})
					_, err := p.Run(ctx, func(context.Context) (int, error) {
						calls++
						time.Sleep(time.Second) // ends on its own timer, due with ctx's
						return 0, errFlaky
					})
					require.ErrorIs(t, err, context.DeadlineExceeded)
					require.ErrorIs(t, err, errFlaky)
					require.Equal(t, 1, calls)
				})
			}
		})
	}
}

// TestRetrySlowOnRetryNotReported: EventRetry promises a retry. When
// OnRetry takes the time the wait had left (MaxElapsed or the deadline),
// or cancels the call, the retry is not made, and the observer hears of a
// failure, not of a retry.
func TestRetrySlowOnRetryNotReported(t *testing.T) {
	tests := []struct {
		name       string
		maxElapsed time.Duration
		deadline   time.Duration
		cancel     bool
		wantErr    error
	}{
		{"past MaxElapsed", time.Second, 0, false, nil},
		{"past the deadline", 0, time.Second, false, context.DeadlineExceeded},
		{"context cancelled", 0, 0, true, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if tt.deadline > 0 {
					var stop context.CancelFunc
					ctx, stop = context.WithTimeout(ctx, tt.deadline)
					defer stop()
				}
				rec := &obsRecorder{}
				p := resil.New[int]().Retry(resil.RetryPolicy{
					MaxAttempts: 3,
					MaxElapsed:  tt.maxElapsed,
					Backoff:     resil.Constant(100 * time.Millisecond),
					OnRetry: func(resil.RetryEvent) {
						if tt.cancel {
							cancel()
							return
						}
						time.Sleep(2 * time.Second)
					},
				}).Observe(rec)
				calls := 0
				_, err := p.Run(ctx, func(context.Context) (int, error) { calls++; return 0, errFlaky })
				require.ErrorIs(t, err, errFlaky)
				if tt.wantErr != nil {
					assert.ErrorIs(t, err, tt.wantErr)
				} else {
					var re *resil.RetryError
					require.ErrorAs(t, err, &re)
					assert.Equal(t, 1, re.Attempts)
				}
				assert.Equal(t, 1, calls)
				assert.Empty(t, rec.kinds(resil.EventRetry), "no retry was made")
				assert.Len(t, rec.kinds(resil.EventFailure), 1)
			})
		})
	}
}
