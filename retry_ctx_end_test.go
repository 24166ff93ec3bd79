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
