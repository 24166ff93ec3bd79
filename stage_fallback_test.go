package resil_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFallback(t *testing.T) {
	errCache := errors.New("cache miss")
	t.Run("called with the error; its value and error are returned", func(t *testing.T) {
		var seen error
		p := resil.New[string]().Fallback(func(_ context.Context, err error) (string, error) {
			seen = err
			return "stale", errCache
		})
		v, err := p.Run(context.Background(), func(context.Context) (string, error) { return "", errFlaky })
		assert.Same(t, errFlaky, seen)
		assert.Equal(t, "stale", v, "the value is kept even with an error")
		assert.Same(t, errCache, err)
	})
	t.Run("not called on success", func(t *testing.T) {
		p := resil.New[string]().Fallback(func(context.Context, error) (string, error) {
			t.Fatal("fallback called")
			return "", nil
		})
		v, err := p.Run(context.Background(), func(context.Context) (string, error) { return "fresh", nil })
		require.NoError(t, err)
		assert.Equal(t, "fresh", v)
	})
	t.Run("not called when its context has ended", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		p := resil.New[string]().Fallback(func(context.Context, error) (string, error) {
			t.Fatal("fallback called")
			return "", nil
		})
		_, err := p.Run(ctx, func(context.Context) (string, error) {
			cancel()
			return "", errFlaky
		})
		assert.Same(t, errFlaky, err, "the wrapped stages' error, unchanged")
	})
	t.Run("serves after a breaker rejects", func(t *testing.T) {
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1})
		p := resil.New[string]().Breaker(b).Fallback(func(_ context.Context, err error) (string, error) {
			assert.ErrorIs(t, err, resil.ErrBreakerOpen)
			return "default", nil
		})
		_, _ = resil.New[string]().Breaker(b).Run(context.Background(), func(context.Context) (string, error) { return "", errFlaky })
		v, err := p.Run(context.Background(), func(context.Context) (string, error) { return "fresh", nil })
		require.NoError(t, err)
		assert.Equal(t, "default", v)
	})
}

// TestFallbackValueThroughOuterStages: a Fallback's value that comes with
// an error passes every stage that returns the error unchanged, whatever
// path the stage takes: a closed or half-open Breaker, a Hedge that runs
// its attempts inline or races them, a Retry whose attempt is not
// retryable.
func TestFallbackValueThroughOuterStages(t *testing.T) {
	errDown := errors.New("down")
	stale := func(context.Context, error) (int, error) { return 7, errDown }
	failing := func(context.Context) (int, error) { return 0, errDown }
	cases := []struct {
		name string
		wrap func(resil.Pipeline[int]) resil.Pipeline[int]
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"breaker", func(p resil.Pipeline[int]) resil.Pipeline[int] {
			return p.Breaker(resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1000}))
		}, nil},
		{"hedge, raced", func(p resil.Pipeline[int]) resil.Pipeline[int] {
			return p.Hedge(resil.HedgePolicy{Delay: time.Second})
		}, nil},
		{"hedge, inline", func(p resil.Pipeline[int]) resil.Pipeline[int] {
			return p.Hedge(resil.HedgePolicy{Delay: time.Hour})
		}, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Minute)
		}},
		{"retry, not retryable", func(p resil.Pipeline[int]) resil.Pipeline[int] {
			return p.Retry(resil.RetryPolicy{RetryIf: func(error) bool { return false }})
		}, nil},
	}
	for _, c := range cases {
		for _, observed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/observed=%v", c.name, observed), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					p := c.wrap(resil.New[int]().Fallback(stale))
					if observed {
						p = p.Observe(&obsRecorder{})
					}
					ctx, cancel := context.Background(), context.CancelFunc(func() {})
					if c.ctx != nil {
						ctx, cancel = c.ctx()
					}
					defer cancel()
					v, err := p.Run(ctx, failing)
					require.ErrorIs(t, err, errDown)
					assert.Equal(t, 7, v)
				})
			})
		}
	}
}

// TestFallbackValueThroughBreakerStates: the same pipeline keeps the
// Fallback's value whether its breaker admits the call closed (and trips)
// or as a half-open trial.
func TestFallbackValueThroughBreakerStates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errDown := errors.New("down")
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second})
		p := resil.New[int]().
			Fallback(func(context.Context, error) (int, error) { return 7, errDown }).
			Breaker(b)
		failing := func(context.Context) (int, error) { return 0, errDown }

		v, err := p.Run(context.Background(), failing)
		require.ErrorIs(t, err, errDown)
		assert.Equal(t, 7, v, "closed")
		require.Equal(t, resil.StateOpen, b.State())

		time.Sleep(time.Second)
		v, err = p.Run(context.Background(), failing)
		require.ErrorIs(t, err, errDown)
		assert.Equal(t, 7, v, "half-open trial")
	})
}
