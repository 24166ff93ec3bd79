package resil_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// passFn is a call that succeeds with 1.
func passFn(context.Context) (int, error) { return 1, nil }

// retryAfterOf returns the RetryAfter hint in err's chain.
func retryAfterOf(t *testing.T, err error) time.Duration {
	t.Helper()
	var h interface{ RetryAfter() time.Duration }
	require.ErrorAs(t, err, &h)
	return h.RetryAfter()
}

func TestRateLimitPolicyValidate(t *testing.T) {
	cases := []struct {
		name   string
		policy resil.RateLimitPolicy
		want   string // "" means valid
	}{
		{"rate only", resil.RateLimitPolicy{Rate: 1}, ""},
		{"all set", resil.RateLimitPolicy{Rate: 0.001, Burst: min(1<<40, math.MaxInt), MaxWait: time.Hour}, ""},
		{"huge rate", resil.RateLimitPolicy{Rate: math.MaxFloat64}, ""},
		{"zero rate", resil.RateLimitPolicy{}, "resil: RateLimitPolicy.Rate must be > 0 and finite, got 0"},
		{"negative rate", resil.RateLimitPolicy{Rate: -2.5}, "resil: RateLimitPolicy.Rate must be > 0 and finite, got -2.5"},
		{"NaN rate", resil.RateLimitPolicy{Rate: math.NaN()}, "resil: RateLimitPolicy.Rate must be > 0 and finite, got NaN"},
		{"infinite rate", resil.RateLimitPolicy{Rate: math.Inf(1)}, "resil: RateLimitPolicy.Rate must be > 0 and finite, got +Inf"},
		{"negative burst", resil.RateLimitPolicy{Rate: 1, Burst: -1}, "resil: RateLimitPolicy.Burst must be >= 0, got -1"},
		{"negative max wait", resil.RateLimitPolicy{Rate: 1, MaxWait: -time.Millisecond}, "resil: RateLimitPolicy.MaxWait must be >= 0, got -1ms"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				assert.NotPanics(t, func() { resil.NewRateLimiter(tc.policy) })
				return
			}
			require.EqualError(t, err, tc.want)
			assert.PanicsWithValue(t, tc.want, func() { resil.NewRateLimiter(tc.policy) })
		})
	}
	t.Run("nil limiter", func(t *testing.T) {
		assert.PanicsWithValue(t, "resil: RateLimit l must be non-nil, got nil", func() {
			resil.New[int]().RateLimit(nil)
		})
	})
}

// TestRateLimitRateAndBurst calls as often as it can pass, every
// millisecond of fake time, and compares what passes with a token bucket
// kept in nanoseconds of refill: it holds up to Burst·interval and a call
// takes interval.
func TestRateLimitRateAndBurst(t *testing.T) {
	cases := []struct {
		name     string
		policy   resil.RateLimitPolicy
		duration time.Duration
		interval time.Duration // 1s/Rate
		want     int           // calls that pass in [0, duration]
	}{
		{"10/s burst 5", resil.RateLimitPolicy{Rate: 10, Burst: 5}, 10 * time.Second, 100 * time.Millisecond, 5 + 100},
		// With a bucket of 1, the refill between a full bucket and the next
		// millisecond is lost, as in any token bucket: one pass per 334ms.
		{"3/s burst 0 means 1", resil.RateLimitPolicy{Rate: 3}, 10 * time.Second, 333333334, 30},
		// The interval rounds up (never faster than Rate): the 30th refill
		// comes 20ns after 10s.
		{"3/s burst 3", resil.RateLimitPolicy{Rate: 3, Burst: 3}, 10 * time.Second, 333333334, 3 + 29},
		{"0.5/s burst 2", resil.RateLimitPolicy{Rate: 0.5, Burst: 2}, 10 * time.Second, 2 * time.Second, 2 + 5},
		{"1000/s burst 10", resil.RateLimitPolicy{Rate: 1000, Burst: 10}, time.Second, time.Millisecond, 10 + 1000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := resil.NewRateLimiter(tc.policy)
				p := resil.New[int]().RateLimit(l)
				burst := time.Duration(max(tc.policy.Burst, 1))
				bucket := burst * tc.interval // the model, full
				total := 0
				for at := time.Duration(0); at <= tc.duration; at += time.Millisecond {
					if at > 0 {
						time.Sleep(time.Millisecond)
						bucket = min(bucket+time.Millisecond, burst*tc.interval)
					}
					want := 0
					for bucket >= tc.interval {
						bucket -= tc.interval
						want++
					}
					got := 0
					for {
						_, err := p.Run(t.Context(), passFn)
						if err != nil {
							require.ErrorIs(t, err, resil.ErrRateLimited)
							break
						}
						got++
					}
					require.Equal(t, want, got, "at %v", at)
					total += got
				}
				assert.Equal(t, tc.want, total)
			})
		})
	}
}

func TestRateLimitRetryAfterExact(t *testing.T) {
	cases := []struct {
		name string
		rate float64
		want time.Duration
	}{
		{"10/s", 10, 100 * time.Millisecond},
		{"3/s", 3, 333333334},
		{"7/s", 7, 142857143},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: tc.rate}))
				_, err := p.Run(t.Context(), passFn)
				require.NoError(t, err)

				_, err = p.Run(t.Context(), passFn)
				require.ErrorIs(t, err, resil.ErrRateLimited)
				assert.True(t, resil.IsTransient(err))
				require.Equal(t, tc.want, retryAfterOf(t, err))

				// Rejected calls take no token: a thousand of them change nothing.
				for range 1000 {
					_, err = p.Run(t.Context(), passFn)
					require.Error(t, err)
				}
				time.Sleep(tc.want - time.Nanosecond)
				_, err = p.Run(t.Context(), passFn)
				require.ErrorIs(t, err, resil.ErrRateLimited)
				require.Equal(t, time.Nanosecond, retryAfterOf(t, err))

				time.Sleep(time.Nanosecond)
				_, err = p.Run(t.Context(), passFn)
				require.NoError(t, err)
			})
		})
	}
}

// TestRateLimitOuterRetryWaitsRetryAfter: a Retry added after RateLimit
// waits exactly the limiter's RetryAfter, and the retry passes.
func TestRateLimitOuterRetryWaitsRetryAfter(t *testing.T) {
	for _, rate := range []float64{10, 3, 1.5} {
		t.Run("", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: rate})
				var delays []time.Duration
				p := resil.New[int]().RateLimit(l).Retry(resil.RetryPolicy{
					MaxAttempts: 2,
					Backoff:     resil.Constant(time.Hour), // replaced by the hint
					OnRetry:     func(e resil.RetryEvent) { delays = append(delays, e.Delay) },
				})
				_, err := p.Run(t.Context(), passFn) // spends the bucket
				require.NoError(t, err)

				start := time.Now()
				calls := 0
				v, err := p.Run(t.Context(), func(context.Context) (int, error) { calls++; return 7, nil })
				require.NoError(t, err)
				assert.Equal(t, 7, v)
				assert.Equal(t, 1, calls)
				interval := time.Duration(math.Ceil(1e9 / rate))
				assert.Equal(t, []time.Duration{interval}, delays)
				assert.Equal(t, interval, time.Since(start))
			})
		})
	}
}

// TestRateLimitNeverFasterThanRate: a rate whose interval is not a whole
// number of nanoseconds runs slower, never faster: calls every nanosecond
// through a 7e8/s limiter with a bucket of 1 pass one per 2ns (5e8/s),
// where the nearest nanosecond (1ns) would pass them all.
func TestRateLimitNeverFasterThanRate(t *testing.T) {
	for _, rate := range []float64{7e8, 3, 7, 1.0 / 3} {
		t.Run(fmt.Sprint(rate), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: rate}))
				interval := time.Duration(math.Ceil(1e9 / rate))
				window := 1000 * interval
				step := max(interval/7, 1)
				passed := 0
				var elapsed time.Duration // the last call's time
				for at := time.Duration(0); at < window; at += step {
					if at > 0 {
						time.Sleep(step)
					}
					if _, err := p.Run(t.Context(), passFn); err == nil {
						passed++
					}
					elapsed = at
				}
				assert.LessOrEqual(t, float64(passed), 1+rate*elapsed.Seconds(), "Burst + Rate·window")
				// With a bucket of 1, a call passes at the first step at or
				// after its token is due, and the next token comes an
				// interval after that call.
				period := (interval + step - 1) / step * step
				assert.Equal(t, int(elapsed/period)+1, passed)
			})
		})
	}
}

// TestRateLimitMaxWait: calls wait their turns in order up to MaxWait; a
// call whose turn lies beyond fails at once.
func TestRateLimitMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 10, MaxWait: 250 * time.Millisecond})
		p := resil.New[int]().RateLimit(l)
		start := time.Now()
		entered := make([]time.Duration, 3)
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Go(func() {
				_, err := p.Run(t.Context(), func(context.Context) (int, error) {
					entered[i] = time.Since(start)
					return 0, nil
				})
				assert.NoError(t, err)
			})
			synctest.Wait() // i has its turn before i+1 asks
		}
		_, err := p.Run(t.Context(), passFn)
		require.ErrorIs(t, err, resil.ErrRateLimited)
		assert.Equal(t, 300*time.Millisecond, retryAfterOf(t, err))
		assert.Zero(t, time.Since(start), "a rejection does not wait")
		wg.Wait()
		assert.Equal(t, []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond}, entered)
	})
}

// TestRateLimitDeadline: a turn beyond ctx's deadline is rejected at once
// and takes no token; a turn before it is waited for.
func TestRateLimitDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 10, MaxWait: time.Second})
		p := resil.New[int]().RateLimit(l)
		_, err := p.Run(t.Context(), passFn)
		require.NoError(t, err)

		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = p.Run(ctx, passFn)
		require.ErrorIs(t, err, resil.ErrRateLimited)
		assert.Equal(t, 100*time.Millisecond, retryAfterOf(t, err))
		assert.Zero(t, time.Since(start))

		// Its turn is at the deadline, where the context ends: refused at
		// once, as Retry refuses a wait that ends there.
		ctx2, cancel2 := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel2()
		_, err = p.Run(ctx2, passFn)
		require.ErrorIs(t, err, resil.ErrRateLimited)
		assert.Zero(t, time.Since(start))

		ctx3, cancel3 := context.WithTimeout(t.Context(), 100*time.Millisecond+1)
		defer cancel3()
		_, err = p.Run(ctx3, func(ctx context.Context) (int, error) {
			require.NoError(t, ctx.Err(), "fn runs before its deadline")
			return 1, nil
		}) // its turn is just before the deadline: it waits
		require.NoError(t, err)
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
	})
}

// TestRateLimitCancelWhileWaiting: a ctx that ends during the wait returns
// ctx.Err() without running fn, and the turn goes back when no later call
// has built on it.
func TestRateLimitCancelWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 10, MaxWait: time.Second})
		p := resil.New[int]().RateLimit(l)
		start := time.Now()
		_, err := p.Run(t.Context(), passFn) // turn 0
		require.NoError(t, err)

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() {
			_, err := p.Run(ctx, func(context.Context) (int, error) {
				t.Error("fn ran after its ctx was cancelled")
				return 0, nil
			})
			done <- err
		}()
		time.Sleep(50 * time.Millisecond)
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		assert.Equal(t, 50*time.Millisecond, time.Since(start))

		_, err = p.Run(t.Context(), passFn) // gets the cancelled call's turn
		require.NoError(t, err)
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
	})
}

// TestRateLimitCancelBehindLaterTurns pins what happens when a later call
// has claimed a turn after the cancelled one: the later call keeps its
// turn, and the cancelled turn is not handed out again (the bucket's bound
// would break).
func TestRateLimitCancelBehindLaterTurns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 10, MaxWait: time.Second})
		p := resil.New[int]().RateLimit(l)
		start := time.Now()
		_, err := p.Run(t.Context(), passFn) // turn 0
		require.NoError(t, err)

		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Go(func() { // turn 100ms, cancelled
			_, err := p.Run(ctx, passFn)
			assert.ErrorIs(t, err, context.Canceled)
		})
		synctest.Wait()
		var second time.Duration
		wg.Go(func() { // turn 200ms
			_, err := p.Run(t.Context(), passFn)
			assert.NoError(t, err)
			second = time.Since(start)
		})
		synctest.Wait()
		cancel()
		wg.Wait()
		assert.Equal(t, 200*time.Millisecond, second)
		_, err = p.Run(t.Context(), passFn)
		require.NoError(t, err)
		assert.Equal(t, 300*time.Millisecond, time.Since(start))
	})
}

// TestRateLimitConcurrentBurst: of many concurrent calls, exactly Burst
// pass while no token refills (the interval is 1000s).
func TestRateLimitConcurrentBurst(t *testing.T) {
	l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 0.001, Burst: 50})
	p := resil.New[int]().RateLimit(l)
	var passed, rejected atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 20 {
				_, err := p.Run(context.Background(), passFn)
				if err == nil {
					passed.Add(1)
				} else if errors.Is(err, resil.ErrRateLimited) {
					rejected.Add(1)
				}
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int64(50), passed.Load())
	assert.Equal(t, int64(64*20-50), rejected.Load())
}

func TestRateLimitRejectedEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log obsRecorder
		p := resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1})).Named("api").Observe(&log)
		_, err := p.Run(t.Context(), passFn)
		require.NoError(t, err)
		_, err = p.Run(t.Context(), passFn)
		require.Error(t, err)
		rejected := log.kinds(resil.EventRejected)
		require.Len(t, rejected, 1)
		assert.Equal(t, "api", rejected[0].Pipeline)
		assert.ErrorIs(t, rejected[0].Err, resil.ErrRateLimited)
		assert.Empty(t, log.kinds(resil.EventAttempt)[1:], "the rejected call made no attempt")
	})
}

func TestRateLimitErrors(t *testing.T) {
	assert.True(t, resil.IsTransient(resil.ErrRateLimited))
	assert.True(t, resil.IsTransient(resil.ErrBulkheadFull))
	assert.EqualError(t, resil.ErrRateLimited, "resil: rate limited")
}

func TestRateLimitAllocs(t *testing.T) {
	l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1e9, Burst: min(1<<40, math.MaxInt)})
	p := resil.New[int]().RateLimit(l)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := p.Run(ctx, passFn); err != nil {
			panic(err)
		}
	})
	assert.Zero(t, allocs)
}

// TestRateLimitPassingCallDoesNotArmTimeout: a call that finds a token does
// not wait, so it must not ask a Timeout's context for its deadline, which
// would arm that context's timer (and allocate a context.WithDeadline) on
// every call. With MaxWait set or not, RateLimit inside Timeout costs only
// the Timeout's own context.
func TestRateLimitPassingCallDoesNotArmTimeout(t *testing.T) {
	for _, maxWait := range []time.Duration{0, time.Second} {
		t.Run(maxWait.String(), func(t *testing.T) {
			l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1e9, Burst: min(1<<40, math.MaxInt), MaxWait: maxWait})
			p := resil.New[int]().RateLimit(l).Timeout(time.Hour)
			ctx := context.Background()
			allocs := testing.AllocsPerRun(1000, func() {
				if _, err := p.Run(ctx, passFn); err != nil {
					panic(err)
				}
			})
			assert.LessOrEqual(t, allocs, 1.0, "the Timeout's context, never armed")
		})
	}
}

// TestRateLimitDeadlineCenturiesPast: a deadline so far past that
// time.Until saturates at math.MinInt64 (the zero time.Time) is still a
// deadline the turn lies beyond: the call is refused at once with
// ErrRateLimited, taking no token, instead of waiting on a context that
// has already ended.
func TestRateLimitDeadlineCenturiesPast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 10, MaxWait: time.Second})
		p := resil.New[int]().RateLimit(l)
		start := time.Now()
		_, err := p.Run(t.Context(), passFn) // takes the token: the next turn is at 100ms
		require.NoError(t, err)

		ctx, cancel := context.WithDeadline(t.Context(), time.Time{})
		defer cancel()
		_, err = p.Run(ctx, passFn)
		require.ErrorIs(t, err, resil.ErrRateLimited)
		assert.Equal(t, 100*time.Millisecond, retryAfterOf(t, err))

		time.Sleep(100 * time.Millisecond)
		_, err = p.Run(t.Context(), passFn)
		require.NoError(t, err, "the refused call took no token")
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
	})
}

// TestRateLimitEndedContextTakesNoToken: a call nobody waits for any more
// (its context cancelled, or its deadline come) is refused at once and
// takes no token, so it does not spend the rate of the calls still live: a
// cancelled one gets ctx.Err(), one past its deadline ErrRateLimited (no
// turn lies before the deadline) with the bucket's true RetryAfter.
func TestRateLimitEndedContextTakesNoToken(t *testing.T) {
	tests := []struct {
		name    string
		ctx     func(parent context.Context) (context.Context, context.CancelFunc)
		wantErr error
	}{
		{"cancelled", func(p context.Context) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(p)
			cancel()
			return ctx, cancel
		}, context.Canceled},
		{"cancelled with a cause", func(p context.Context) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancelCause(p)
			cancel(errors.New("gave up"))
			return ctx, func() {}
		}, context.Canceled},
		{"deadline past", func(p context.Context) (context.Context, context.CancelFunc) {
			return context.WithDeadline(p, time.Now().Add(-time.Second))
		}, resil.ErrRateLimited},
		{"deadline now", func(p context.Context) (context.Context, context.CancelFunc) {
			return context.WithDeadline(p, time.Now())
		}, resil.ErrRateLimited},
	}
	for _, tt := range tests {
		for _, maxWait := range []time.Duration{0, time.Second} {
			t.Run(fmt.Sprintf("%s/MaxWait=%v", tt.name, maxWait), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 10, MaxWait: maxWait})
					p := resil.New[int]().RateLimit(l)
					ctx, cancel := tt.ctx(t.Context())
					defer cancel()
					calls := 0
					_, err := p.Run(ctx, func(context.Context) (int, error) { calls++; return 1, nil })
					require.ErrorIs(t, err, tt.wantErr)
					assert.Zero(t, calls)
					if tt.wantErr == resil.ErrRateLimited {
						assert.Zero(t, retryAfterOf(t, err), "a token is free")
					}
					_, err = p.Run(t.Context(), passFn)
					require.NoError(t, err, "the refused call took no token")
					_, err = p.Run(ctx, passFn)
					require.ErrorIs(t, err, tt.wantErr)
					if tt.wantErr == resil.ErrRateLimited {
						assert.Equal(t, 100*time.Millisecond, retryAfterOf(t, err), "the bucket's next turn")
					}
				})
			})
		}
	}
}

// countingShare counts the turns a shared limiter asks its fleet for.
type countingShare struct{ asked atomic.Int64 }

func (s *countingShare) Reserve(time.Duration) (time.Duration, resil.ShareAnswer) {
	s.asked.Add(1)
	return 0, resil.ShareYes
}

// A shared limiter does not ask its fleet for a turn a call that has ended
// could not use.
func TestRateLimitEndedContextAsksNoFleet(t *testing.T) {
	share := &countingShare{}
	l, _ := resil.NewSharedRateLimiter(resil.RateLimitPolicy{Rate: 10}, share)
	p := resil.New[int]().RateLimit(l)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := p.Run(ctx, passFn)
	require.ErrorIs(t, err, context.Canceled)
	dead, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	_, err = p.Run(dead, passFn)
	require.ErrorIs(t, err, resil.ErrRateLimited)
	assert.Zero(t, share.asked.Load())
	_, err = p.Run(context.Background(), passFn)
	require.NoError(t, err)
	assert.Equal(t, int64(1), share.asked.Load())
}
