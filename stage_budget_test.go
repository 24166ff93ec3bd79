package resil_test

import (
	"context"
	"errors"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resiltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRetryBudgetCapsRetriesOfADeadDependency drives a dependency that
// always fails with calls of MaxAttempts 5, from several goroutines through
// two pipelines sharing one budget, and checks the bound the budget exists
// for: attempts <= N·(1+Ratio) + MinPerSecond·max(seconds, TTL).
func TestRetryBudgetCapsRetriesOfADeadDependency(t *testing.T) {
	tests := []struct {
		name    string
		policy  resil.RetryBudgetPolicy
		seconds int
		backoff resil.Backoff
	}{
		{"defaults over 30s", resil.RetryBudgetPolicy{}, 30, resil.Constant(0)},
		{"defaults under one TTL", resil.RetryBudgetPolicy{}, 5, resil.Constant(0)},
		{"ratio 0.5 with waits", resil.RetryBudgetPolicy{Ratio: 0.5, MinPerSecond: 2, TTL: 4 * time.Second}, 20, resil.Constant(10 * time.Millisecond)},
		{"tight reserve", resil.RetryBudgetPolicy{Ratio: 0.1, MinPerSecond: 0.5, TTL: 10 * time.Second}, 60, resil.Constant(0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				budget := resil.NewRetryBudget(tt.policy)
				retry := resil.RetryPolicy{MaxAttempts: 5, Backoff: tt.backoff, Budget: budget}
				ints := resil.New[int]().Retry(retry)
				strs := resil.New[string]().Retry(retry)
				var calls, denied atomic.Int64
				down := errors.New("dependency down")
				intDep := resiltest.Script[int](resiltest.Fail(down, 1))
				strDep := resiltest.Script[string](resiltest.Fail(down, 1))
				const workers, perSecond = 4, 25 // 100 calls per second in all
				var wg sync.WaitGroup
				for w := range workers {
					wg.Go(func() {
						for range tt.seconds * perSecond {
							calls.Add(1)
							var err error
							if w%2 == 0 {
								_, err = ints.Run(t.Context(), intDep.Call)
							} else {
								_, err = strs.Run(t.Context(), strDep.Call)
							}
							if errors.Is(err, resil.ErrRetryBudgetExhausted) {
								denied.Add(1)
							}
							time.Sleep(time.Second / perSecond)
						}
					})
				}
				wg.Wait()

				ratio, minPerSecond, ttl := tt.policy.Ratio, tt.policy.MinPerSecond, tt.policy.TTL
				if ratio == 0 {
					ratio = 0.2
				}
				if minPerSecond == 0 {
					minPerSecond = 10
				}
				if ttl == 0 {
					ttl = 10 * time.Second
				}
				n := float64(calls.Load())
				bound := n*(1+ratio) + minPerSecond*math.Max(float64(tt.seconds), ttl.Seconds())
				got := float64(intDep.Count() + strDep.Count())
				t.Logf("calls %.0f, attempts %.0f, bound %.0f, without a budget %.0f, denied %d", n, got, bound, 5*n, denied.Load())
				assert.LessOrEqual(t, got, bound)
				assert.Positive(t, denied.Load(), "the budget must have denied retries")
				// The budget lets retries through, not only the first attempts:
				// at least half of what Ratio alone allows.
				assert.GreaterOrEqual(t, got-n, ratio*n/2)
			})
		})
	}
}

func TestRetryBudgetDenialReturnsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A reserve of 1 retry in 10s; one call adds 0.2 of a retry.
		budget := resil.NewRetryBudget(resil.RetryBudgetPolicy{MinPerSecond: 0.1, TTL: 10 * time.Second})
		var onRetry []resil.RetryEvent
		log := &obsRecorder{}
		p := resil.New[int]().Retry(resil.RetryPolicy{
			MaxAttempts: 5,
			Backoff:     resil.Constant(time.Second),
			Budget:      budget,
			OnRetry:     func(e resil.RetryEvent) { onRetry = append(onRetry, e) },
		}).Observe(log)
		last := errors.New("still down")
		dep := resiltest.Script[int](resiltest.Fail(last, 1))
		start := time.Now()
		_, err := p.Run(t.Context(), dep.Call)
		assert.Equal(t, time.Second, time.Since(start), "one wait, then no wait for the denied retry")
		resiltest.AssertAttempts(t, dep, 2)
		var re *resil.RetryError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, 2, re.Attempts)
		assert.ErrorIs(t, err, last)
		assert.ErrorIs(t, err, resil.ErrRetryBudgetExhausted)
		assert.Equal(t, "resil: retry budget exhausted; gave up after 2 attempts: still down", err.Error())
		assert.Len(t, onRetry, 1, "OnRetry is called only for the retry that was made")
		rejected := log.kinds(resil.EventRejected)
		require.Len(t, rejected, 1)
		assert.Equal(t, 2, rejected[0].Attempt)
		assert.ErrorIs(t, rejected[0].Err, resil.ErrRetryBudgetExhausted)
		assert.True(t, resil.IsTransient(err), "the dependency's failure stays what it was")

		// Once the retry has left the window, the reserve is back.
		time.Sleep(11 * time.Second)
		_, err = p.Run(t.Context(), dep.Call)
		assert.ErrorIs(t, err, resil.ErrRetryBudgetExhausted)
		resiltest.AssertAttempts(t, dep, 4)
	})
}

// TestRetryBudgetRefundsRetriesNotMade: a retry the budget granted but that
// is never made (the context ends during its wait, or OnRetry or the
// observer panics or exits announcing it) gives its place back, so the next
// call still gets the reserve's one retry. A retry that is made keeps it.
func TestRetryBudgetRefundsRetriesNotMade(t *testing.T) {
	errDown := errors.New("down")
	tests := []struct {
		name    string
		onRetry func(resil.RetryEvent)
		obs     resil.Observer
		cancel  bool // cancel the first call's context during its wait
		made    bool // the first call's retry is made
	}{
		{name: "context ends during the wait", cancel: true},
		{name: "OnRetry panics", onRetry: func(resil.RetryEvent) { panic("boom") }},
		{name: "OnRetry exits", onRetry: func(resil.RetryEvent) { runtime.Goexit() }},
		{name: "the observer panics", obs: &panicky{on: resil.EventRetry, armed: true}},
		{name: "the retry is made", made: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				// Reserve: 0.1/s × 10s = 1 retry; the calls' share is negligible.
				budget := resil.NewRetryBudget(resil.RetryBudgetPolicy{Ratio: 1e-6, MinPerSecond: 0.1, TTL: 10 * time.Second})
				policy := resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(time.Second), Budget: budget}
				first := resil.New[int]().Retry(resil.RetryPolicy{
					MaxAttempts: 2, Backoff: resil.Constant(time.Second), Budget: budget, OnRetry: tt.onRetry,
				})
				if tt.obs != nil {
					first = first.Observe(tt.obs)
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if tt.cancel {
					time.AfterFunc(500*time.Millisecond, cancel)
				}
				var calls atomic.Int32
				done := make(chan struct{})
				go func() {
					defer close(done)
					defer func() { _ = recover() }()
					_, _ = first.Run(ctx, func(context.Context) (int, error) { calls.Add(1); return 0, errDown })
				}()
				<-done
				if tt.made {
					require.Equal(t, int32(2), calls.Load())
				} else {
					require.Equal(t, int32(1), calls.Load(), "no retry was made")
				}

				calls.Store(0)
				_, err := resil.New[int]().Retry(policy).Run(context.Background(), func(context.Context) (int, error) {
					calls.Add(1)
					return 0, errDown
				})
				if tt.made {
					require.ErrorIs(t, err, resil.ErrRetryBudgetExhausted, "the reserve's one retry was spent")
					assert.Equal(t, int32(1), calls.Load())
				} else {
					require.NotErrorIs(t, err, resil.ErrRetryBudgetExhausted, "the reserve's one retry is back")
					assert.Equal(t, int32(2), calls.Load())
				}
			})
		})
	}
}

func TestRetryBudgetNotAskedWithoutRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		budget := resil.NewRetryBudget(resil.RetryBudgetPolicy{MinPerSecond: 0.1, TTL: 10 * time.Second})
		p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0), Budget: budget})
		// Successes, permanent errors and a last attempt use no retry.
		for range 100 {
			_, _ = p.Run(t.Context(), func(context.Context) (int, error) { return 1, nil })
			_, _ = p.Run(t.Context(), func(context.Context) (int, error) { return 0, resil.Permanent(errors.New("no")) })
		}
		q := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 1, Budget: budget})
		for range 100 {
			_, _ = q.Run(t.Context(), func(context.Context) (int, error) { return 0, errors.New("down") })
		}
		attempts := 0
		for range 100 {
			_, _ = p.Run(t.Context(), func(context.Context) (int, error) {
				attempts++
				return 0, errors.New("down")
			})
		}
		// With these 100 calls, 400 in all: 400 × 0.2 + 1 (the reserve) =
		// 81 retries. None went to the 300 calls before.
		assert.Equal(t, 100+81, attempts)
	})
}

func TestRetryBudgetSharedAcrossTypes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		budget := resil.NewRetryBudget(resil.RetryBudgetPolicy{MinPerSecond: 0.3, TTL: 10 * time.Second}) // 3 in reserve
		retry := resil.RetryPolicy{MaxAttempts: 10, Backoff: resil.Constant(0), Budget: budget}
		down := errors.New("down")
		ints := resiltest.Script[int](resiltest.Fail(down, 1))
		_, err := resil.New[int]().Retry(retry).Run(t.Context(), ints.Call)
		require.ErrorIs(t, err, resil.ErrRetryBudgetExhausted)
		assert.Equal(t, 4, ints.Count(), "1 + 3 from the reserve (the call's 0.2 does not make a whole retry)")
		strs := resiltest.Script[string](resiltest.Fail(down, 1))
		_, err = resil.New[string]().Retry(retry).Run(t.Context(), strs.Call)
		require.ErrorIs(t, err, resil.ErrRetryBudgetExhausted)
		assert.Equal(t, 1, strs.Count(), "3.4 allowed, 3 used: no retry left for the other pipeline")
	})
}

func TestRetryBudgetNoAllocs(t *testing.T) {
	budget := resil.NewRetryBudget(resil.RetryBudgetPolicy{MinPerSecond: 1e9})
	p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0), Budget: budget})
	bare := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0)})
	ctx := context.Background()
	ok := func(context.Context) (int, error) { return 1, nil }
	flaky := errors.New("flaky")
	tests := []struct {
		name string
		p    resil.Pipeline[int]
		fn   func() func(context.Context) (int, error)
	}{
		{"success", p, func() func(context.Context) (int, error) { return ok }},
		{"two retries", p, func() func(context.Context) (int, error) {
			n := 0
			return func(context.Context) (int, error) {
				if n++; n < 3 {
					return 0, flaky
				}
				return 1, nil
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fns := make([]func(context.Context) (int, error), 200)
			for i := range fns {
				fns[i] = tt.fn()
			}
			i := 0
			with := testing.AllocsPerRun(100, func() {
				_, _ = tt.p.Run(ctx, fns[i])
				i++
			})
			i = 100
			without := testing.AllocsPerRun(99, func() {
				_, _ = bare.Run(ctx, fns[i])
				i++
			})
			assert.Equal(t, without, with, "the budget adds no allocation")
			assert.Zero(t, with)
		})
	}
}

// A TTL below 10µs counts as 10µs, for the reserve too: MinPerSecond 1e6
// over 10µs is a reserve of 10 retries.
func TestRetryBudgetTinyTTLKeepsReserve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		budget := resil.NewRetryBudget(resil.RetryBudgetPolicy{MinPerSecond: 1e6, TTL: time.Nanosecond})
		p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0), Budget: budget})
		_, err := p.Run(t.Context(), func(context.Context) (int, error) { return 0, errFlaky })
		var re *resil.RetryError
		require.ErrorAs(t, err, &re)
		assert.NotErrorIs(t, err, resil.ErrRetryBudgetExhausted)
		assert.Equal(t, 2, re.Attempts)
	})
}

func TestRetryBudgetPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		policy resil.RetryBudgetPolicy
		msg    string
	}{
		{"negative ratio", resil.RetryBudgetPolicy{Ratio: -0.5}, "resil: RetryBudgetPolicy.Ratio must be >= 0, got -0.5"},
		{"NaN ratio", resil.RetryBudgetPolicy{Ratio: math.NaN()}, "resil: RetryBudgetPolicy.Ratio must be >= 0, got NaN"},
		{"negative per second", resil.RetryBudgetPolicy{MinPerSecond: -1}, "resil: RetryBudgetPolicy.MinPerSecond must be >= 0, got -1"},
		{"NaN per second", resil.RetryBudgetPolicy{MinPerSecond: math.NaN()}, "resil: RetryBudgetPolicy.MinPerSecond must be >= 0, got NaN"},
		{"negative TTL", resil.RetryBudgetPolicy{TTL: -time.Second}, "resil: RetryBudgetPolicy.TTL must be >= 0, got -1s"},
		{"zero value", resil.RetryBudgetPolicy{}, ""},
		{"infinite ratio", resil.RetryBudgetPolicy{Ratio: math.Inf(1), MinPerSecond: math.Inf(1)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Validate()
			if tt.msg == "" {
				require.NoError(t, err)
				require.NotNil(t, resil.NewRetryBudget(tt.policy))
				return
			}
			require.EqualError(t, err, tt.msg)
			require.PanicsWithValue(t, tt.msg, func() { resil.NewRetryBudget(tt.policy) })
		})
	}
}

// FuzzRetryBudgetPolicy checks that Validate and NewRetryBudget agree on
// every policy, and that a valid budget answers without panicking.
func FuzzRetryBudgetPolicy(f *testing.F) {
	f.Add(0.2, 10.0, int64(10*time.Second))
	f.Add(math.Inf(1), 0.0, int64(1))
	f.Add(math.NaN(), -1.0, int64(-1))
	f.Add(1e308, 1e308, int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, ratio, perSecond float64, ttl int64) {
		policy := resil.RetryBudgetPolicy{Ratio: ratio, MinPerSecond: perSecond, TTL: time.Duration(ttl)}
		err := policy.Validate()
		valid := !math.IsNaN(ratio) && ratio >= 0 && !math.IsNaN(perSecond) && perSecond >= 0 && ttl >= 0
		if !valid {
			require.Error(t, err)
			require.PanicsWithValue(t, err.Error(), func() { resil.NewRetryBudget(policy) })
			return
		}
		require.NoError(t, err)
		budget := resil.NewRetryBudget(policy)
		p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0), Budget: budget})
		_, err = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errors.New("down") })
		var re *resil.RetryError
		require.ErrorAs(t, err, &re)
		require.GreaterOrEqual(t, re.Attempts, 1)
	})
}
