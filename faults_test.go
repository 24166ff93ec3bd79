package resil_test

import (
	"context"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/require"
)

// TestLongBackoffCancelled: a 1h backoff whose context is cancelled at 1s
// returns after exactly 1s of fake time, with ctx.Err() matched, after one
// attempt; a deadline at 1s gives up at once instead of waiting.
func TestLongBackoffCancelled(t *testing.T) {
	backoffs := []struct {
		name string
		b    resil.Backoff
	}{
		{"Constant", resil.Constant(time.Hour)},
		{"Exponential", resil.Exponential(time.Hour, time.Hour)},
		{"ExponentialJitter", resil.ExponentialJitter(time.Hour, 2*time.Hour)},
	}
	for _, bo := range backoffs {
		t.Run(bo.name+"/cancel", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 5, Backoff: bo.b})
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(time.Second, cancel)
				attempts := 0
				start := time.Now()
				_, err := p.Run(ctx, func(context.Context) (int, error) { attempts++; return 0, errFlaky })
				require.Equal(t, time.Second, time.Since(start))
				require.ErrorIs(t, err, ctx.Err())
				require.ErrorIs(t, err, context.Canceled)
				require.ErrorIs(t, err, errFlaky, "the last attempt's error is wrapped")
				require.Equal(t, 1, attempts)
			})
		})
		if bo.name == "ExponentialJitter" {
			continue // its first delay may be under the deadline
		}
		t.Run(bo.name+"/deadline", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 5, Backoff: bo.b})
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				attempts := 0
				start := time.Now()
				_, err := p.Run(ctx, func(context.Context) (int, error) { attempts++; return 0, errFlaky })
				require.Equal(t, 1, attempts)
				require.Zero(t, time.Since(start), "a wait that would cross the deadline is not begun")
				var re *resil.RetryError
				require.ErrorAs(t, err, &re)
				require.Equal(t, 1, re.Attempts)
				require.ErrorIs(t, err, errFlaky)
			})
		})
	}
}

// hintErr is a failure that carries a server's RetryAfter hint.
type hintErr struct{ d time.Duration }

func (e hintErr) Error() string             { return "busy, retry after " + e.d.String() }
func (e hintErr) RetryAfter() time.Duration { return e.d }

// TestHostileRetryAfter: hints of 0, negative, 1h, math.MaxInt64 and
// math.MinInt64 never make Retry wait past the context or MaxElapsed, never
// a negative time, and never overflow. A hint <= 0 is ignored and the
// backoff applies.
func TestHostileRetryAfter(t *testing.T) {
	const backoff = 100 * time.Millisecond
	hints := []struct {
		name string
		d    time.Duration
	}{
		{"zero", 0},
		{"negative", -time.Second},
		{"MinInt64", math.MinInt64},
		{"1h", time.Hour},
		{"MaxInt64", math.MaxInt64},
	}
	bounds := []struct {
		name   string
		policy resil.RetryPolicy
		ctx    func() (context.Context, context.CancelFunc)
		limit  time.Duration // the bound: no wait may end after it
	}{
		{
			name:   "deadline 10s",
			policy: resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(backoff)},
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 10*time.Second)
			},
			limit: 10 * time.Second,
		},
		{
			name:   "MaxElapsed 10s",
			policy: resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(backoff), MaxElapsed: 10 * time.Second},
			ctx:    func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			limit:  10 * time.Second,
		},
		{
			name:   "cancel at 10s",
			policy: resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(backoff)},
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(10*time.Second, cancel)
				return ctx, cancel
			},
			limit: 10 * time.Second,
		},
	}
	for _, h := range hints {
		for _, bd := range bounds {
			t.Run(h.name+"/"+bd.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					var delays []time.Duration
					pol := bd.policy
					pol.OnRetry = func(e resil.RetryEvent) { delays = append(delays, e.Delay) }
					p := resil.New[int]().Retry(pol)
					ctx, cancel := bd.ctx()
					defer cancel()
					attempts := 0
					start := time.Now()
					_, err := p.Run(ctx, func(context.Context) (int, error) {
						attempts++
						return 0, hintErr{h.d}
					})
					elapsed := time.Since(start)
					require.Error(t, err)
					require.GreaterOrEqual(t, elapsed, time.Duration(0))
					require.LessOrEqual(t, elapsed, bd.limit, "no wait past the bound")
					for _, d := range delays {
						require.GreaterOrEqual(t, d, time.Duration(0), "never a negative wait")
					}
					if h.d <= 0 {
						// Ignored: the backoff applies; all 3 attempts run.
						require.Equal(t, []time.Duration{backoff, backoff}, delays)
						require.Equal(t, 3, attempts)
						require.Equal(t, 2*backoff, elapsed)
						var re *resil.RetryError
						require.ErrorAs(t, err, &re)
						return
					}
					// 1h and MaxInt64 cross every bound: Retry gives up at
					// once, except when only a cancellation (which it cannot
					// foresee) bounds it: then it waits until the cancel.
					require.Equal(t, 1, attempts)
					if bd.name == "cancel at 10s" {
						require.Equal(t, []time.Duration{h.d}, delays)
						require.Equal(t, 10*time.Second, elapsed)
						require.ErrorIs(t, err, context.Canceled)
						return
					}
					require.Empty(t, delays)
					require.Zero(t, elapsed)
					var re *resil.RetryError
					require.ErrorAs(t, err, &re)
					require.Equal(t, 1, re.Attempts)
				})
			})
		}
	}
}
