package resil_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resiltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hintError carries a server's retry hint.
type hintError struct{ d time.Duration }

func (e hintError) Error() string             { return fmt.Sprintf("retry after %v", e.d) }
func (e hintError) RetryAfter() time.Duration { return e.d }

func TestRetryAttempts(t *testing.T) {
	fail := func(n int) resiltest.Step { return resiltest.Fail(errFlaky, n) }
	ok := resiltest.Return("ok")
	tests := []struct {
		name        string
		maxAttempts int
		script      []resiltest.Step
		wantCalls   int
		wantErr     bool
	}{
		{"default is 3, succeeds on the 3rd", 0, []resiltest.Step{fail(2), ok}, 3, false},
		{"default is 3, gives up", 0, []resiltest.Step{fail(5), ok}, 3, true},
		{"1 means no retry", 1, []resiltest.Step{fail(1), ok}, 1, true},
		{"5 attempts", 5, []resiltest.Step{fail(4), ok}, 5, false},
		{"success first time", 3, []resiltest.Step{ok}, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := resil.New[string]().Retry(resil.RetryPolicy{MaxAttempts: tt.maxAttempts, Backoff: resil.Constant(0)})
			dep := resiltest.Script[string](tt.script...)
			v, err := p.Run(context.Background(), dep.Call)
			resiltest.AssertAttempts(t, dep, tt.wantCalls)
			if !tt.wantErr {
				require.NoError(t, err)
				assert.Equal(t, "ok", v)
				return
			}
			var re *resil.RetryError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, tt.wantCalls, re.Attempts)
			assert.Same(t, errFlaky, re.Err)
			assert.ErrorIs(t, err, errFlaky)
			assert.Empty(t, v)
		})
	}
}

func TestRetryClassification(t *testing.T) {
	never := func(error) bool { return false }
	always := func(error) bool { return true }
	tests := []struct {
		name      string
		err       error
		retryIf   func(error) bool
		wantCalls int
	}{
		{"unmarked, default RetryIf: transient", errFlaky, nil, 3},
		{"context.Canceled is not retried", context.Canceled, nil, 1},
		{"ErrBreakerOpen is not retried", resil.ErrBreakerOpen, nil, 1},
		{"Permanent beats RetryIf", resil.Permanent(errFlaky), always, 1},
		{"Transient beats RetryIf", resil.Transient(errFlaky), never, 3},
		{"outermost mark wins: Transient(Permanent)", resil.Transient(resil.Permanent(errFlaky)), never, 3},
		{"outermost mark wins: Permanent(Transient)", resil.Permanent(resil.Transient(errFlaky)), always, 1},
		{"mark under fmt.Errorf", fmt.Errorf("get: %w", resil.Permanent(errFlaky)), always, 1},
		{"RetryIf decides unmarked", errFlaky, never, 1},
		{"Transient() method", transientErr(false), nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0), RetryIf: tt.retryIf})
			dep := resiltest.Script[int](resiltest.Fail(tt.err, 1)) // every call fails
			_, err := p.Run(context.Background(), dep.Call)
			resiltest.AssertAttempts(t, dep, tt.wantCalls)
			if tt.wantCalls == 1 {
				assert.Equal(t, tt.err, err, "a non-retryable error is returned unchanged")
			} else {
				var re *resil.RetryError
				assert.ErrorAs(t, err, &re)
			}
		})
	}
}

type transientErr bool

func (e transientErr) Error() string   { return "transient? " + fmt.Sprint(bool(e)) }
func (e transientErr) Transient() bool { return bool(e) }

// TestRetryWaits checks the backoff, OnRetry and server hints in fake time.
func TestRetryWaits(t *testing.T) {
	tests := []struct {
		name      string
		backoff   resil.Backoff
		err       error
		wantWaits []time.Duration
	}{
		{"exponential", resil.Exponential(100*time.Millisecond, time.Second), errFlaky,
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}},
		{"exponential capped", resil.Exponential(400*time.Millisecond, time.Second), errFlaky,
			[]time.Duration{400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}},
		{"constant", resil.Constant(time.Second), errFlaky,
			[]time.Duration{time.Second, time.Second, time.Second, time.Second}},
		{"hint replaces the backoff", resil.Constant(time.Second), fmt.Errorf("wrapped: %w", hintError{3 * time.Second}),
			[]time.Duration{3 * time.Second, 3 * time.Second, 3 * time.Second, 3 * time.Second}},
		{"zero hint is ignored", resil.Constant(time.Second), hintError{0},
			[]time.Duration{time.Second, time.Second, time.Second, time.Second}},
		{"negative hint is ignored", resil.Constant(time.Second), hintError{-time.Hour},
			[]time.Duration{time.Second, time.Second, time.Second, time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var events []resil.RetryEvent
				p := resil.New[int]().Retry(resil.RetryPolicy{
					MaxAttempts: 5,
					Backoff:     tt.backoff,
					OnRetry:     func(e resil.RetryEvent) { events = append(events, e) },
				})
				var starts []time.Time
				_, err := p.Run(context.Background(), func(context.Context) (int, error) {
					starts = append(starts, time.Now())
					return 0, tt.err
				})
				require.Error(t, err)
				require.Len(t, starts, 5)
				var waits []time.Duration
				for i := 1; i < len(starts); i++ {
					waits = append(waits, starts[i].Sub(starts[i-1]))
				}
				assert.Equal(t, tt.wantWaits, waits)
				require.Len(t, events, 4)
				for i, e := range events {
					assert.Equal(t, i+1, e.Attempt)
					assert.Equal(t, tt.wantWaits[i], e.Delay)
					assert.Equal(t, tt.err, e.Err)
				}
			})
		})
	}
}

func TestRetryJitterStaysInEnvelope(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var delays []time.Duration
		p := resil.New[int]().Retry(resil.RetryPolicy{ // the default backoff
			MaxAttempts: 4,
			OnRetry:     func(e resil.RetryEvent) { delays = append(delays, e.Delay) },
		})
		_, err := p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFlaky })
		require.Error(t, err)
		require.Len(t, delays, 3)
		for i, d := range delays {
			assert.GreaterOrEqual(t, d, time.Duration(0))
			assert.LessOrEqual(t, d, 100*time.Millisecond<<i)
		}
	})
}

// TestRetryNeverWaitsPastBounds: when the next wait would cross MaxElapsed
// or the deadline, Retry gives up at once with a *RetryError.
func TestRetryNeverWaitsPastBounds(t *testing.T) {
	tests := []struct {
		name       string
		maxElapsed time.Duration
		deadline   time.Duration
		hint       time.Duration
		wantCalls  int
		wantEnd    time.Duration
	}{
		{"MaxElapsed", 2500 * time.Millisecond, 0, 0, 3, 2 * time.Second},
		{"deadline", 0, 2500 * time.Millisecond, 0, 3, 2 * time.Second},
		{"wait ending exactly at MaxElapsed is allowed", 2 * time.Second, 0, 0, 3, 2 * time.Second},
		// At its deadline the context is done: the attempt after such a
		// wait could not run.
		{"wait ending exactly at the deadline is refused", 0, 2 * time.Second, 0, 2, time.Second},
		{"huge hint, MaxElapsed", time.Minute, 0, math.MaxInt64, 1, 0},
		{"huge hint, deadline", 0, time.Minute, math.MaxInt64, 1, 0},
		{"1h hint, deadline", 0, time.Minute, time.Hour, 1, 0},
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
				p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 10, Backoff: resil.Constant(time.Second), MaxElapsed: tt.maxElapsed})
				var err0 error = errFlaky
				if tt.hint != 0 {
					err0 = hintError{tt.hint}
				}
				dep := resiltest.Script[int](resiltest.Fail(err0, 1)) // every call fails
				begin := time.Now()
				_, err := p.Run(ctx, dep.Call)
				assert.Equal(t, tt.wantEnd, time.Since(begin))
				resiltest.AssertAttempts(t, dep, tt.wantCalls)
				var re *resil.RetryError
				require.ErrorAs(t, err, &re)
				assert.Equal(t, tt.wantCalls, re.Attempts)
			})
		})
	}
}

func TestRetryContext(t *testing.T) {
	t.Run("done before the first attempt", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		dep := resiltest.Script[int](resiltest.Return(1))
		_, err := resil.New[int]().Retry(resil.RetryPolicy{}).Run(ctx, dep.Call)
		assert.Same(t, context.Canceled, err)
		resiltest.AssertAttempts(t, dep, 0)
	})
	t.Run("cancelled during a wait returns at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(time.Second, cancel)
			p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(time.Hour)})
			dep := resiltest.Script[int](resiltest.Fail(errFlaky, 1)) // every call fails
			begin := time.Now()
			_, err := p.Run(ctx, dep.Call)
			assert.Equal(t, time.Second, time.Since(begin))
			resiltest.AssertAttempts(t, dep, 1)
			assert.ErrorIs(t, err, context.Canceled)
			assert.ErrorIs(t, err, errFlaky)
		})
	})
	t.Run("ended by the time an attempt fails", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		_, err := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0)}).Run(ctx, func(context.Context) (int, error) {
			calls++
			cancel()
			return 0, errFlaky
		})
		assert.Equal(t, 1, calls)
		assert.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, errFlaky)
	})
	t.Run("deadline during a wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// The deadline allows the wait, but the wait is longer than
			// the time left once the attempt has run: wait is 1s, and
			// the attempt itself takes 0.5s of a 1.2s deadline.
			ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
			defer cancel()
			p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(time.Second)})
			dep := resiltest.Script[int](resiltest.Fail(errFlaky, 1)) // every call fails
			_, err := p.Run(ctx, dep.Call)
			// The first wait (1s) fits in 1.2s; the second would not.
			resiltest.AssertAttempts(t, dep, 2)
			var re *resil.RetryError
			assert.ErrorAs(t, err, &re)
		})
	})
}

// A Fallback inside Retry may answer an attempt with a value and a
// non-retryable error: Run returns that value, whichever attempt it came
// from and whether or not the pipeline is observed.
func TestRetryKeepsFallbackValue(t *testing.T) {
	errBad := errors.New("bad")
	for _, observed := range []bool{false, true} {
		for answeredOn := 1; answeredOn <= 3; answeredOn++ {
			t.Run(fmt.Sprintf("observed=%v/attempt %d", observed, answeredOn), func(t *testing.T) {
				calls := 0
				p := resil.New[int]().
					Fallback(func(_ context.Context, err error) (int, error) {
						calls++
						if calls < answeredOn {
							return 0, resil.Transient(err)
						}
						return 42, resil.Permanent(err)
					}).
					Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)})
				if observed {
					p = p.Observe(nopObserver{})
				}
				v, err := p.Run(context.Background(), func(context.Context) (int, error) { return 7, errBad })
				require.ErrorIs(t, err, errBad)
				assert.Equal(t, 42, v)
				assert.Equal(t, answeredOn, calls)
			})
		}
	}
}

// fn's own value never comes back with its error, whichever path Retry
// takes to call it.
func TestRetryDropsFnValueWithError(t *testing.T) {
	tests := []struct {
		name   string
		policy resil.RetryPolicy
		obs    bool
	}{
		{"direct", resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}, false},
		{"MaxElapsed", resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0), MaxElapsed: time.Hour}, false},
		{"observed", resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := resil.New[int]().Retry(tt.policy)
			if tt.obs {
				p = p.Observe(nopObserver{})
			}
			for _, e := range []error{resil.Permanent(errFlaky), errFlaky} {
				v, err := p.Run(context.Background(), func(context.Context) (int, error) { return 7, e })
				require.Error(t, err)
				assert.Zero(t, v, "error %v", e)
			}
		})
	}
}

func TestRetryPolicyValidate(t *testing.T) {
	tests := []struct {
		p    resil.RetryPolicy
		want string
	}{
		{resil.RetryPolicy{}, ""},
		{resil.RetryPolicy{MaxAttempts: 1, MaxElapsed: time.Second}, ""},
		{resil.RetryPolicy{MaxAttempts: -1}, "resil: RetryPolicy.MaxAttempts must be >= 0, got -1"},
		{resil.RetryPolicy{MaxElapsed: -1}, "resil: RetryPolicy.MaxElapsed must be >= 0, got -1ns"},
	}
	for _, tt := range tests {
		err := tt.p.Validate()
		if tt.want == "" {
			assert.NoError(t, err)
			assert.NotPanics(t, func() { resil.New[int]().Retry(tt.p) })
			continue
		}
		assert.EqualError(t, err, tt.want)
		assert.PanicsWithValue(t, tt.want, func() { resil.New[int]().Retry(tt.p) })
	}
}

func TestRetryErrorMessage(t *testing.T) {
	assert.Equal(t, "resil: gave up after 3 attempts: flaky", (&resil.RetryError{Attempts: 3, Err: errFlaky}).Error())
	assert.Equal(t, "resil: gave up after 1 attempt: flaky", (&resil.RetryError{Attempts: 1, Err: errFlaky}).Error())
	assert.Same(t, errFlaky, errors.Unwrap(&resil.RetryError{Attempts: 1, Err: errFlaky}))
}
