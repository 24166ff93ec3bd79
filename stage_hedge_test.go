package resil_test

import (
	"context"
	"errors"
	"fmt"
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

// sleepCtx waits d or until ctx ends, and says which.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

const hedgeDelay = 100 * time.Millisecond

func TestHedgeFastFirstAttemptStartsNoHedge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[string](resiltest.Return("first").After(hedgeDelay / 2))
		p := resil.New[string]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})
		start := time.Now()
		v, err := p.Run(t.Context(), dep.Call)
		require.NoError(t, err)
		assert.Equal(t, "first", v)
		assert.Equal(t, hedgeDelay/2, time.Since(start))
		time.Sleep(10 * hedgeDelay)
		resiltest.AssertAttempts(t, dep, 1)
	})
}

func TestHedgeWinnerReturnsAndLosersAreCancelledAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[string](resiltest.Hang(), resiltest.Return("hedge").After(10*time.Millisecond))
		p := resil.New[string]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})
		start := time.Now()
		v, err := p.Run(t.Context(), dep.Call)
		require.NoError(t, err)
		assert.Equal(t, "hedge", v)
		won := hedgeDelay + 10*time.Millisecond
		assert.Equal(t, won, time.Since(start), "the hedge's answer is returned when it arrives")
		synctest.Wait() // let the loser see its cancellation
		calls := dep.Calls()
		require.Len(t, calls, 2)
		assert.Equal(t, won, calls[0].End.Sub(start), "the loser's ctx ends when the winner answers")
		assert.Equal(t, context.Canceled, calls[0].Err)
		assert.Equal(t, 2, dep.MaxConcurrent())
	})
}

func TestHedgeScheduleAndAttemptNumbers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &obsRecorder{}
		boom := errors.New("slow failure")
		dep := resiltest.Script[int](resiltest.Fail(boom, 4).After(time.Hour))
		start := time.Now()
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 3}).Observe(log)
		_, err := p.Run(t.Context(), dep.Call)
		require.ErrorIs(t, err, boom)
		var starts []time.Duration
		for _, c := range dep.Calls() {
			starts = append(starts, c.Start.Sub(start))
		}
		assert.Equal(t, []time.Duration{0, hedgeDelay, 2 * hedgeDelay, 3 * hedgeDelay}, starts)
		assert.Equal(t, 4, dep.MaxConcurrent())
		attempts := log.kinds(resil.EventAttempt)
		require.Len(t, attempts, 4)
		for i, e := range attempts {
			assert.Equal(t, i+1, e.Attempt)
		}
	})
}

// TestHedgeAttemptNumbersInsideRetry pins the numbering Event.Attempt
// documents: a Hedge inside a Retry numbers its attempts from 1 again for
// each of the Retry's attempts.
func TestHedgeAttemptNumbersInsideRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &obsRecorder{}
		boom := errors.New("slow failure")
		dep := resiltest.Script[int](resiltest.Fail(boom, 4).After(3 * hedgeDelay))
		p := resil.New[int]().
			Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 1}).
			Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}).
			Observe(log)
		_, err := p.Run(t.Context(), dep.Call)
		require.ErrorIs(t, err, boom)
		var got []int
		for _, e := range log.kinds(resil.EventAttempt) {
			got = append(got, e.Attempt)
		}
		assert.Equal(t, []int{1, 2, 1, 2}, got)
		retries := log.kinds(resil.EventRetry)
		require.Len(t, retries, 1)
		assert.Equal(t, 1, retries[0].Attempt, "EventRetry carries the Retry's number")
	})
}

// TestHedgeLoserReportsAfterRun pins what EventSuccess's doc says: a
// Breaker inside a Hedge reports the late failure of an attempt that lost,
// after Run returned and after EventSuccess, from the attempt's goroutine.
// (The failure is marked Transient: an unmarked error of an attempt the
// Hedge cancelled is ignored; see TestHedgeLosersAreNotBreakerFailures.)
func TestHedgeLoserReportsAfterRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &obsRecorder{}
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1})
		p := resil.New[int]().Breaker(b).Hedge(resil.HedgePolicy{Delay: hedgeDelay}).Observe(log)
		var calls atomic.Int32
		v, err := p.Run(t.Context(), func(ctx context.Context) (int, error) {
			if calls.Add(1) == 1 {
				time.Sleep(10 * hedgeDelay) // slow, and does not watch ctx
				return 0, resil.Transient(errors.New("late failure"))
			}
			return 1, nil
		})
		require.NoError(t, err)
		assert.Equal(t, 1, v)
		events := log.take()
		require.NotEmpty(t, events)
		assert.Equal(t, resil.EventSuccess, events[len(events)-1].Kind)
		assert.Equal(t, resil.StateClosed, b.State())

		time.Sleep(10 * hedgeDelay)
		synctest.Wait()
		late := log.take()
		require.Len(t, late, 1, "the loser's failure opens the breaker after Run returned")
		assert.Equal(t, resil.EventStateChange, late[0].Kind)
		assert.Equal(t, resil.StateOpen, late[0].To)
		assert.Equal(t, resil.StateOpen, b.State())
	})
}

func TestHedgeFailureDoesNotAdvanceSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[string](resiltest.Fail(errors.New("fast failure"), 1), resiltest.Return("second"))
		start := time.Now()
		p := resil.New[string]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})
		v, err := p.Run(t.Context(), dep.Call)
		require.NoError(t, err)
		assert.Equal(t, "second", v)
		calls := dep.Calls()
		require.Len(t, calls, 2)
		assert.Equal(t, hedgeDelay, calls[1].Start.Sub(start), "the second attempt waits for its time")
	})
}

func TestHedgeAllFailReturnsLastArrivedError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e1 := errors.New("e1")
		// Attempt 1 fails at 10D, attempt 2 (started at D) at 1.5D,
		// attempt 3 (started at 2D) at 3D: e1 arrives last.
		dep := resiltest.Script[int](
			resiltest.Fail(e1, 1).After(10*hedgeDelay),
			resiltest.Fail(errors.New("e2"), 1).After(hedgeDelay/2),
			resiltest.Fail(errors.New("e3"), 1).After(hedgeDelay),
		)
		start := time.Now()
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 2})
		_, err := p.Run(t.Context(), dep.Call)
		require.ErrorIs(t, err, e1)
		assert.Equal(t, 10*hedgeDelay, time.Since(start))
		resiltest.AssertAttempts(t, dep, 3)
	})
}

func TestHedgeStopsWhenNoAttemptCanStartBeforeDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*hedgeDelay+hedgeDelay/2)
		defer cancel()
		fail := func(i int) resiltest.Step { return resiltest.Fail(fmt.Errorf("e%d", i), 1).After(hedgeDelay / 10) }
		dep := resiltest.Script[int](fail(1), fail(2), fail(3), fail(4))
		start := time.Now()
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 5})
		_, err := p.Run(ctx, dep.Call)
		require.EqualError(t, err, "e3")
		resiltest.AssertAttempts(t, dep, 3)
		assert.Equal(t, 2*hedgeDelay+hedgeDelay/10, time.Since(start), "returns when the third fails, not at the deadline")
		assert.NoError(t, ctx.Err())
	})
}

// A hedge whose time comes exactly at the context's deadline does not
// start: the context ends with it. Which of the two timers fires first at
// that instant varies, so the case runs many times.
func TestHedgeNoAttemptAtTheDeadline(t *testing.T) {
	for range 40 {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*hedgeDelay)
			defer cancel()
			var started atomic.Int32
			p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 2})
			_, err := p.Run(ctx, func(ctx context.Context) (int, error) {
				started.Add(1)
				<-ctx.Done()
				return 0, ctx.Err()
			})
			require.ErrorIs(t, err, context.DeadlineExceeded)
			synctest.Wait()
			require.Equal(t, int32(2), started.Load(), "the attempt due at the deadline did not start")
		})
	}
}

func TestHedgeContextEnds(t *testing.T) {
	t.Run("before Run", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		called := false
		_, err := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay}).Run(ctx, func(context.Context) (int, error) {
			called = true
			return 1, nil
		})
		require.ErrorIs(t, err, context.Canceled)
		assert.False(t, called)
	})
	t.Run("during the race: returns at once and starts nothing more", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(hedgeDelay+hedgeDelay/2, cancel)
			start := time.Now()
			var n atomic.Int32
			p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 5})
			_, err := p.Run(ctx, func(context.Context) (int, error) {
				n.Add(1)
				time.Sleep(time.Hour) // ignores ctx
				return 1, nil
			})
			require.Equal(t, context.Canceled, err)
			assert.Equal(t, hedgeDelay+hedgeDelay/2, time.Since(start), "Run does not wait for attempts that ignore ctx")
			time.Sleep(2 * time.Hour)
			assert.Equal(t, int32(2), n.Load())
		})
	})
	t.Run("deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*hedgeDelay+hedgeDelay/2)
			defer cancel()
			dep := resiltest.Script[int](resiltest.Hang())
			p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 10})
			_, err := p.Run(ctx, dep.Call)
			require.Equal(t, context.DeadlineExceeded, err)
			resiltest.AssertAttempts(t, dep, 4)
		})
	})
}

func TestHedgeRunsInlineWhenNoHedgeCanStart(t *testing.T) {
	// Real time here (AllocsPerRun): a deadline far away, the Delay further.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	long := resil.New[int]().Hedge(resil.HedgePolicy{Delay: 2 * time.Hour})
	fn := func(context.Context) (int, error) { return 1, nil }
	allocs := testing.AllocsPerRun(100, func() {
		v, err := long.Run(ctx, fn)
		if err != nil || v != 1 {
			panic("unexpected result")
		}
	})
	assert.Zero(t, allocs, "inline: no goroutine, no timer, no context")

	p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})

	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), hedgeDelay)
		defer cancel()
		var n atomic.Int32
		caller, ran := goid(), 0
		_, err := p.Run(ctx, func(ctx context.Context) (int, error) {
			n.Add(1)
			ran = goid()
			return 0, sleepCtx(ctx, time.Hour)
		})
		require.Equal(t, context.DeadlineExceeded, err)
		assert.Equal(t, int32(1), n.Load())
		assert.Equal(t, caller, ran, "the one attempt runs on the caller's goroutine")
	})
}

func TestHedgeRunsAttemptsOnTheirOwnGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})
		caller := goid()
		var ran [2]atomic.Int64
		var n atomic.Int32
		_, err := p.Run(t.Context(), func(ctx context.Context) (int, error) {
			i := n.Add(1) - 1
			ran[i].Store(int64(goid()))
			if i == 0 {
				return 0, sleepCtx(ctx, time.Hour)
			}
			return 1, nil
		})
		require.NoError(t, err)
		assert.NotEqual(t, int64(caller), ran[0].Load(), "the first attempt too, so that a winning hedge need not wait for it")
		assert.NotEqual(t, int64(caller), ran[1].Load())
		assert.NotEqual(t, ran[0].Load(), ran[1].Load())
	})
}

func TestHedgePanicReachesCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type boom struct{ code int }
		dep := resiltest.Script[int](resiltest.Hang(), resiltest.Panic(boom{42}))
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})
		require.PanicsWithValue(t, boom{42}, func() { _, _ = p.Run(t.Context(), dep.Call) })
		synctest.Wait()
		calls := dep.Calls()
		require.Len(t, calls, 2)
		assert.Equal(t, context.Canceled, calls[0].Err, "the other attempts are cancelled")
		assert.True(t, calls[1].Panicked)
	})
}

func TestHedgeGoexitEndsCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})
		var returned, deferred atomic.Bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer deferred.Store(true)
			_, _ = p.Run(context.Background(), func(ctx context.Context) (int, error) {
				runtime.Goexit()
				return 0, nil
			})
			returned.Store(true)
		}()
		<-done
		assert.True(t, deferred.Load())
		assert.False(t, returned.Load(), "Run must not return after an attempt's Goexit")
	})
}

func TestHedgeInsideRetryAndTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Each attempt has its own per-try timeout; the hedge wins before
		// the first attempt's timeout.
		dep := resiltest.Script[int](resiltest.Hang(), resiltest.Return(2).After(hedgeDelay))
		p := resil.New[int]().
			Timeout(3 * hedgeDelay).
			Hedge(resil.HedgePolicy{Delay: hedgeDelay}).
			Timeout(time.Second)
		start := time.Now()
		v, err := p.Run(t.Context(), dep.Call)
		require.NoError(t, err)
		assert.Equal(t, 2, v)
		assert.Equal(t, 2*hedgeDelay, time.Since(start))
	})
}

func TestHedgePolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		policy resil.HedgePolicy
		msg    string
	}{
		{"zero delay", resil.HedgePolicy{}, "resil: HedgePolicy.Delay must be > 0, got 0s"},
		{"negative delay", resil.HedgePolicy{Delay: -time.Millisecond}, "resil: HedgePolicy.Delay must be > 0, got -1ms"},
		{"negative hedges", resil.HedgePolicy{Delay: time.Second, MaxHedges: -1}, "resil: HedgePolicy.MaxHedges must be >= 0, got -1"},
		{"valid", resil.HedgePolicy{Delay: time.Nanosecond, MaxHedges: 0}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Validate()
			if tt.msg == "" {
				require.NoError(t, err)
				require.NotPanics(t, func() { resil.New[int]().Hedge(tt.policy) })
				return
			}
			require.EqualError(t, err, tt.msg)
			require.PanicsWithValue(t, tt.msg, func() { resil.New[int]().Hedge(tt.policy) })
		})
	}
}

func TestHedgeConcurrentRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 2})
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				dep := resiltest.Script[int](resiltest.Hang().Times(2), resiltest.Return(g))
				v, err := p.Run(t.Context(), dep.Call)
				assert.NoError(t, err)
				assert.Equal(t, g, v)
			})
		}
		wg.Wait()
	})
}

func TestHedgeManyAttemptsLeaveNoGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// More attempts than the result buffer holds: the losers, cancelled,
		// must still end (the bubble fails the test on a goroutine left
		// blocked).
		dep := resiltest.Script[int](resiltest.Hang().Times(149), resiltest.Return(150))
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: time.Millisecond, MaxHedges: 200})
		start := time.Now()
		v, err := p.Run(t.Context(), dep.Call)
		require.NoError(t, err)
		assert.Equal(t, 150, v)
		assert.Equal(t, 149*time.Millisecond, time.Since(start))
		synctest.Wait()
		resiltest.AssertAttempts(t, dep, 150)
		assert.Equal(t, 150, dep.MaxConcurrent())
	})
}

// FuzzHedgePolicy checks that Validate and Hedge agree on every policy.
func FuzzHedgePolicy(f *testing.F) {
	f.Add(int64(time.Millisecond), 0)
	f.Add(int64(0), -1)
	f.Add(int64(math.MaxInt64), math.MaxInt)
	f.Fuzz(func(t *testing.T, delay int64, hedges int) {
		policy := resil.HedgePolicy{Delay: time.Duration(delay), MaxHedges: hedges}
		err := policy.Validate()
		if delay > 0 && hedges >= 0 {
			require.NoError(t, err)
			require.NotPanics(t, func() { resil.New[int]().Hedge(policy) })
			return
		}
		require.Error(t, err)
		require.PanicsWithValue(t, err.Error(), func() { resil.New[int]().Hedge(policy) })
	})
}

// hookCtx is a context whose Err runs a hook once, on the goroutine that
// calls it, before answering: it lets a test act at the moment Run looks at
// the context.
type hookCtx struct {
	context.Context
	hook atomic.Pointer[func()]
}

func (c *hookCtx) Err() error {
	if f := c.hook.Swap(nil); f != nil {
		(*f)()
	}
	return c.Context.Err()
}

// TestHedgeSuccessBehindFailureWhenContextEnds: when ctx has ended by the
// time Run reads a failure, a success that arrived behind that failure is
// returned, as it is when Run sees ctx end first ("a success already
// received is returned instead").
func TestHedgeSuccessBehindFailureWhenContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithCancel(t.Context())
		defer cancel()
		ctx := &hookCtx{Context: parent}
		release := make(chan struct{})
		var n atomic.Int32
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})
		v, err := p.Run(ctx, func(context.Context) (int, error) {
			if n.Add(1) == 1 {
				time.Sleep(hedgeDelay + hedgeDelay/2)
				// When Run looks at ctx for this failure: ctx ends, and
				// the hedge's success lands in the results behind it.
				f := func() {
					cancel()
					close(release)
					synctest.Wait()
				}
				ctx.hook.Store(&f)
				return 0, errors.New("first attempt fails")
			}
			<-release
			return 2, nil
		})
		require.NoError(t, err)
		assert.Equal(t, 2, v)
	})
}

// TestHedgeLosersAreNotBreakerFailures: an attempt that Hedge abandons
// because another answered first is cancelled with cause
// resil.ErrHedgeLost, and a Breaker inside the Hedge ignores whatever it
// returns then (with the default FailureIf): a gRPC client, say, answers a
// cancellation with a status error that does not wrap context.Canceled, and
// every hedge that wins must not count a failure against the dependency.
func TestHedgeLosersAreNotBreakerFailures(t *testing.T) {
	errCanceledStatus := errors.New("rpc error: code = Canceled desc = context canceled") // wraps nothing
	tests := []struct {
		name      string
		failureIf func(error) bool
		wantState resil.BreakerState
	}{
		{"default FailureIf ignores the loser", nil, resil.StateClosed},
		{"a FailureIf of the user's decides", func(error) bool { return true }, resil.StateOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 2, FailureRatio: 0.5, FailureIf: tt.failureIf})
				p := resil.New[int]().Breaker(b).Hedge(resil.HedgePolicy{Delay: hedgeDelay})
				var calls atomic.Int32
				causes := make(chan error, 1)
				v, err := p.Run(context.Background(), func(ctx context.Context) (int, error) {
					if calls.Add(1) == 1 { // slow: loses to the hedge
						<-ctx.Done()
						causes <- context.Cause(ctx)
						return 0, errCanceledStatus
					}
					return 2, nil
				})
				require.NoError(t, err)
				assert.Equal(t, 2, v)
				synctest.Wait() // the loser has returned and been classified
				assert.ErrorIs(t, <-causes, resil.ErrHedgeLost)
				assert.Equal(t, tt.wantState, b.State(), "1 success and the loser's error")
			})
		})
	}
}

// TestHedgeLoserBehindTimeoutNotBreakerFailure: a loser that never looks
// at its context and returns after its per-attempt Timeout's d is still
// the Hedge's loser: the Timeout, first looked at after d with the Hedge's
// cancel already made, cannot tell which came first and takes the cancel,
// so a Breaker inside it ignores the loser's error, as it would have had
// the loser looked at its context in time.
func TestHedgeLoserBehindTimeoutNotBreakerFailure(t *testing.T) {
	errSlow := errors.New("slow work failed")
	synctest.Test(t, func(t *testing.T) {
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1})
		p := resil.New[int]().Breaker(b).Timeout(time.Second).Hedge(resil.HedgePolicy{Delay: 100 * time.Millisecond})
		var calls atomic.Int32
		v, err := p.Run(context.Background(), func(ctx context.Context) (int, error) {
			if calls.Add(1) == 1 {
				time.Sleep(2 * time.Second) // work that does not look at ctx
				return 0, errSlow
			}
			time.Sleep(10 * time.Millisecond)
			return 2, nil
		})
		require.NoError(t, err)
		assert.Equal(t, 2, v)
		time.Sleep(3 * time.Second) // the loser has returned and been classified
		synctest.Wait()
		assert.Equal(t, resil.StateClosed, b.State(), "1 success and the loser's error")
	})
}
