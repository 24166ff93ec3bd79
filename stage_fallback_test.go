package resil_test

import (
	"context"
	"errors"
	"testing"

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
