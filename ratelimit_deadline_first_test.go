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

// TestRateLimitDeadlineEndedBeforeCancel: a context whose own deadline
// ended it (Done closed, Err DeadlineExceeded) and whose caller cancelled
// only afterwards has ended by its deadline: RateLimit answers
// ErrRateLimited for it (no turn lies before the deadline), not
// context.Canceled, for a context.WithTimeout as for a Timeout stage's
// context, armed or not.
func TestRateLimitDeadlineEndedBeforeCancel(t *testing.T) {
	inner := func() resil.Pipeline[int] {
		return resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1, Burst: 1}))
	}
	fn := func(context.Context) (int, error) { return 1, nil }

	t.Run("context.WithTimeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			parent, cancel := context.WithCancel(context.Background())
			ctx, stop := context.WithTimeout(parent, 10*time.Millisecond)
			defer stop()
			<-ctx.Done()
			cancel()
			require.Equal(t, context.DeadlineExceeded, ctx.Err())
			_, err := inner().Run(ctx, fn)
			assert.ErrorIs(t, err, resil.ErrRateLimited)
			assert.NotErrorIs(t, err, context.Canceled)
		})
	})
	t.Run("resil Timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			parent, cancel := context.WithCancel(context.Background())
			_, _ = resil.New[int]().Timeout(10*time.Millisecond).Run(parent, func(ctx context.Context) (int, error) {
				<-ctx.Done() // ends by its deadline
				cancel()     // the caller gives up afterwards
				require.Equal(t, context.DeadlineExceeded, ctx.Err())
				_, err := inner().Run(ctx, fn)
				assert.ErrorIs(t, err, resil.ErrRateLimited, "ctx.Err() is DeadlineExceeded: the deadline ended it")
				assert.NotErrorIs(t, err, context.Canceled, "ctx.Err() is %v, yet RateLimit says %v", ctx.Err(), err)
				return 0, err
			})
		})
	})
	// Unarmed: nothing looked at the Timeout's context before its deadline,
	// and the caller cancelled by the first look: by the timeoutCtx doc it
	// takes the cancel, its Err says so, and RateLimit agrees with it.
	t.Run("resil Timeout, unarmed", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			parent, cancel := context.WithCancel(context.Background())
			time.AfterFunc(15*time.Millisecond, cancel)
			_, runErr := resil.New[int]().Timeout(10*time.Millisecond).Run(parent, func(ctx context.Context) (int, error) {
				time.Sleep(20 * time.Millisecond) // works in memory, never looks at ctx
				_, err := inner().Run(ctx, fn)
				assert.Equal(t, context.Canceled, ctx.Err())
				assert.ErrorIs(t, err, context.Canceled, "ctx.Err() is %v, yet RateLimit says %v", ctx.Err(), err)
				return 0, err
			})
			assert.ErrorIs(t, runErr, context.Canceled)
			assert.NotErrorIs(t, runErr, resil.ErrTimeout, "Run: %v", runErr)
		})
	})
}
