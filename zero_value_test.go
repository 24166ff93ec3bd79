package resil_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
)

// TestRunErrorMeansZeroValue: with a non-nil error, Run returns T's zero
// value even when fn returned a value with its error, whichever stage sits
// directly around fn (the hot paths call fn without the generic chain walk).
func TestRunErrorMeansZeroValue(t *testing.T) {
	errBoom := errors.New("boom")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name string
		p    resil.Pipeline[int]
		ctx  context.Context
		err  error // what Run must return, matched with errors.Is
	}{
		{"empty", resil.New[int](), context.Background(), errBoom},
		{"breaker", resil.New[int]().Breaker(resil.NewBreaker(resil.BreakerPolicy{})), context.Background(), errBoom},
		{"retry, permanent", resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0), RetryIf: func(error) bool { return false }}), context.Background(), errBoom},
		{"retry, attempts run out", resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}), context.Background(), errBoom},
		{"fallback, ctx ended", resil.New[int]().Fallback(func(context.Context, error) (int, error) { return 1, nil }), canceled, errBoom},
		{"timeout", resil.New[int]().Timeout(time.Hour), context.Background(), errBoom},
		{"breaker around retry", resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 1}).Breaker(resil.NewBreaker(resil.BreakerPolicy{})), context.Background(), errBoom},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := c.p.Run(c.ctx, func(context.Context) (int, error) { return 7, errBoom })
			assert.ErrorIs(t, err, c.err)
			assert.Zero(t, v)
		})
	}
}
