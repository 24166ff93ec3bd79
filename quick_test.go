package resil_test

import (
	"context"
	"errors"
	"testing"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/require"
)

func TestQuickSmoke(t *testing.T) {
	calls := 0
	p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0)}).Breaker(resil.NewBreaker(resil.BreakerPolicy{}))
	v, err := p.Run(context.Background(), func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, errors.New("flaky")
		}
		return 7, nil
	})
	require.NoError(t, err)
	require.Equal(t, 7, v)
	require.Equal(t, 3, calls)
}
