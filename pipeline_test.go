package resil_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resiltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type ctxKey struct{}

func TestEmptyPipelineRunsFnOnceWithCallersContext(t *testing.T) {
	ctx := context.WithValue(context.Background(), ctxKey{}, "mine")
	for name, p := range map[string]resil.Pipeline[string]{
		"New":  resil.New[string](),
		"zero": {},
	} {
		t.Run(name, func(t *testing.T) {
			calls := 0
			v, err := p.Run(ctx, func(got context.Context) (string, error) {
				calls++
				assert.Equal(t, ctx, got)
				return "ok", nil
			})
			require.NoError(t, err)
			assert.Equal(t, "ok", v)
			assert.Equal(t, 1, calls)
		})
	}
}

func TestRunReturnsZeroValueWithError(t *testing.T) {
	pipelines := map[string]resil.Pipeline[int]{
		"empty":   resil.New[int](),
		"retry":   resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 1}),
		"breaker": resil.New[int]().Breaker(resil.NewBreaker(resil.BreakerPolicy{})),
		"timeout": resil.New[int]().Timeout(time.Hour),
	}
	for name, p := range pipelines {
		t.Run(name, func(t *testing.T) {
			v, err := p.Run(context.Background(), func(context.Context) (int, error) {
				return 42, resil.Permanent(errFlaky)
			})
			require.ErrorIs(t, err, errFlaky)
			assert.Zero(t, v)
		})
	}
}

func TestPipelineIsImmutable(t *testing.T) {
	base := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)})
	withFallback := base.Fallback(func(context.Context, error) (int, error) { return -1, nil })
	withTwoRetries := base.Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)})

	down := func() *resiltest.Fake[int] { return resiltest.Script[int](resiltest.Fail(errFlaky, 1)) } // every call fails

	dep := down()
	_, err := base.Run(context.Background(), dep.Call)
	require.Error(t, err)
	resiltest.AssertAttempts(t, dep, 2) // base: untouched by what was added to it

	dep = down()
	v, err := withFallback.Run(context.Background(), dep.Call)
	require.NoError(t, err)
	assert.Equal(t, -1, v)
	resiltest.AssertAttempts(t, dep, 2)

	dep = down()
	_, err = withTwoRetries.Run(context.Background(), dep.Call)
	require.Error(t, err)
	resiltest.AssertAttempts(t, dep, 6) // 3 outer attempts of 2 inner attempts
}

// TestStageOrder proves that each stage wraps the stages added before it,
// with orders whose outcomes differ.
func TestStageOrder(t *testing.T) {
	noWait := resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)}
	fallback := func(context.Context, error) (int, error) { return -1, nil }
	trip := resil.BreakerPolicy{MinCalls: 1, FailureRatio: 1, OpenFor: time.Hour}

	tests := []struct {
		name      string
		build     func() resil.Pipeline[int]
		wantCalls int
		wantV     int
		wantErr   error // nil: no error
	}{
		{
			name:      "Retry then Fallback: retried, then the fallback serves",
			build:     func() resil.Pipeline[int] { return resil.New[int]().Retry(noWait).Fallback(fallback) },
			wantCalls: 3, wantV: -1,
		},
		{
			name:      "Fallback then Retry: the fallback serves the first attempt, nothing to retry",
			build:     func() resil.Pipeline[int] { return resil.New[int]().Fallback(fallback).Retry(noWait) },
			wantCalls: 1, wantV: -1,
		},
		{
			name: "Retry then Breaker: the breaker sees one failed sequence",
			build: func() resil.Pipeline[int] {
				return resil.New[int]().Retry(noWait).Breaker(resil.NewBreaker(trip))
			},
			wantCalls: 3, wantErr: errFlaky,
		},
		{
			name: "Breaker then Retry: the first failure opens it, the retry is rejected",
			build: func() resil.Pipeline[int] {
				return resil.New[int]().Breaker(resil.NewBreaker(trip)).Retry(noWait)
			},
			wantCalls: 1, wantErr: resil.ErrBreakerOpen,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dep := resiltest.Script[int](resiltest.Fail(errFlaky, 1)) // every call fails
			v, err := tt.build().Run(context.Background(), dep.Call)
			resiltest.AssertAttempts(t, dep, tt.wantCalls)
			assert.Equal(t, tt.wantV, v)
			if tt.wantErr == nil {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, tt.wantErr)
			}
		})
	}
}

// TestTimeoutPerTryAndTotal runs Timeout(perTry).Retry(r).Timeout(total):
// each attempt is cut at 1s, and the whole sequence at 2.5s, in the third
// attempt.
func TestTimeoutPerTryAndTotal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := resil.New[int]().
			Timeout(time.Second).
			Retry(resil.RetryPolicy{MaxAttempts: 5, Backoff: resil.Constant(0)}).
			Timeout(2500 * time.Millisecond)
		dep := resiltest.Script[int](resiltest.Hang())
		begin := time.Now()
		_, err := p.Run(context.Background(), dep.Call)
		var starts []time.Duration
		for _, c := range dep.Calls() {
			starts = append(starts, c.Start.Sub(begin))
		}
		assert.Equal(t, []time.Duration{0, time.Second, 2 * time.Second}, starts)
		assert.Equal(t, 2500*time.Millisecond, time.Since(begin))
		assert.ErrorIs(t, err, resil.ErrTimeout)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

// TestTimeoutOutsideRetryVsInside: the same two stages in the other order
// give a per-sequence timeout.
func TestTimeoutOutsideRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := resil.New[int]().
			Retry(resil.RetryPolicy{MaxAttempts: 5, Backoff: resil.Constant(0)}).
			Timeout(time.Second)
		dep := resiltest.Script[int](resiltest.Hang())
		begin := time.Now()
		_, err := p.Run(context.Background(), dep.Call)
		resiltest.AssertAttempts(t, dep, 1) // the one attempt used up the sequence's time
		assert.Equal(t, time.Second, time.Since(begin))
		assert.ErrorIs(t, err, resil.ErrTimeout)
	})
}

// TestCoreStagesRunFnOnCallersGoroutine: no core stage starts a goroutine.
func TestCoreStagesRunFnOnCallersGoroutine(t *testing.T) {
	p := resil.New[int]().
		Timeout(time.Hour).
		Retry(resil.RetryPolicy{Backoff: resil.Constant(0)}).
		Breaker(resil.NewBreaker(resil.BreakerPolicy{})).
		Fallback(func(context.Context, error) (int, error) { return 0, nil })
	me := goid()
	calls := 0
	_, err := p.Run(context.Background(), func(context.Context) (int, error) {
		calls++
		assert.Equal(t, me, goid())
		if calls < 3 {
			return 0, errFlaky
		}
		return 1, nil
	})
	require.NoError(t, err)
	assert.Equal(t, 3, calls)
}

// TestPanicPropagates: a panic in fn reaches the caller with its original
// value through every core stage; it is not retried and no fallback runs.
func TestPanicPropagates(t *testing.T) {
	type boom struct{ n int }
	b := resil.NewBreaker(resil.BreakerPolicy{})
	fallbacks := 0
	p := resil.New[int]().
		Timeout(time.Hour).
		Retry(resil.RetryPolicy{MaxAttempts: 5, Backoff: resil.Constant(0)}).
		Breaker(b).
		Fallback(func(context.Context, error) (int, error) { fallbacks++; return 0, nil })
	calls := 0
	var attemptCtx context.Context
	func() {
		defer func() {
			assert.Equal(t, boom{7}, recover())
		}()
		_, _ = p.Run(context.Background(), func(ctx context.Context) (int, error) {
			calls++
			attemptCtx = ctx
			panic(boom{7})
		})
		t.Fatal("Run returned after a panic")
	}()
	assert.Equal(t, 1, calls, "a panic is not retried")
	assert.Zero(t, fallbacks, "no fallback for a panic")
	assert.ErrorIs(t, attemptCtx.Err(), context.Canceled, "the Timeout released its context")
	assert.Equal(t, resil.StateClosed, b.State())
}

func TestRunRejectsNilArguments(t *testing.T) {
	p := resil.New[int]()
	assert.PanicsWithValue(t, "resil: Run fn must be non-nil, got nil", func() {
		_, _ = p.Run(context.Background(), nil)
	})
	assert.PanicsWithValue(t, "resil: Run ctx must be non-nil, got nil", func() {
		//lint:ignore SA1012 the nil context is the point of the test
		_, _ = p.Run(nil, func(context.Context) (int, error) { return 0, nil }) //nolint:staticcheck
	})
}

func TestStageConstructorsRejectBadInput(t *testing.T) {
	p := resil.New[int]()
	tests := []struct {
		name string
		f    func()
		want string
	}{
		{"Timeout 0", func() { p.Timeout(0) }, "resil: Timeout d must be > 0, got 0s"},
		{"Timeout negative", func() { p.Timeout(-time.Second) }, "resil: Timeout d must be > 0, got -1s"},
		{"Fallback nil", func() { p.Fallback(nil) }, "resil: Fallback fn must be non-nil, got nil"},
		{"Breaker nil", func() { p.Breaker(nil) }, "resil: Breaker b must be non-nil, got nil"},
		{"Retry MaxAttempts", func() { p.Retry(resil.RetryPolicy{MaxAttempts: -1}) }, "resil: RetryPolicy.MaxAttempts must be >= 0, got -1"},
		{"Retry MaxElapsed", func() { p.Retry(resil.RetryPolicy{MaxElapsed: -time.Second}) }, "resil: RetryPolicy.MaxElapsed must be >= 0, got -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.PanicsWithValue(t, tt.want, tt.f)
		})
	}
}

func TestErrorsOfDifferentStagesMatch(t *testing.T) {
	err := &resil.RetryError{Attempts: 2, Err: resil.ErrTimeout}
	assert.True(t, errors.Is(err, context.DeadlineExceeded))
}
