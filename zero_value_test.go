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

// TestZeroSharedStateRefused: a Breaker, Bulkhead, RateLimiter or
// RetryBudget not made by its constructor is refused when the pipeline is
// built, with a message that names the argument and its constructor,
// instead of failing obscurely (or not limiting at all) on a call.
func TestZeroSharedStateRefused(t *testing.T) {
	tests := []struct {
		name  string
		build func()
		want  string
	}{
		{"Breaker", func() { resil.New[int]().Breaker(&resil.Breaker{}) },
			"resil: Breaker b must be made by NewBreaker, got a zero Breaker"},
		{"Bulkhead", func() { resil.New[int]().Bulkhead(&resil.Bulkhead{}) },
			"resil: Bulkhead b must be made by NewBulkhead, got a zero Bulkhead"},
		{"RateLimit", func() { resil.New[int]().RateLimit(&resil.RateLimiter{}) },
			"resil: RateLimit l must be made by NewRateLimiter, got a zero RateLimiter"},
		{"Retry's Budget", func() { resil.New[int]().Retry(resil.RetryPolicy{Budget: &resil.RetryBudget{}}) },
			"resil: RetryPolicy.Budget must be made by NewRetryBudget, got a zero RetryBudget"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.PanicsWithValue(t, tt.want, tt.build)
		})
	}
	err := resil.RetryPolicy{Budget: &resil.RetryBudget{}}.Validate()
	assert.EqualError(t, err, "resil: RetryPolicy.Budget must be made by NewRetryBudget, got a zero RetryBudget")
	assert.NoError(t, resil.RetryPolicy{Budget: resil.NewRetryBudget(resil.RetryBudgetPolicy{})}.Validate())
}
