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
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// evLog is an Observer that keeps every event; safe for concurrent use.
type evLog struct {
	mu  sync.Mutex
	evs []resil.Event
}

func (l *evLog) Observe(_ context.Context, e resil.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

// of returns the events of kind k, in the order they were reported.
func (l *evLog) of(k resil.EventKind) []resil.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []resil.Event
	for _, e := range l.evs {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

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
		var calls atomic.Int32
		p := resil.New[string]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})
		start := time.Now()
		v, err := p.Run(t.Context(), func(ctx context.Context) (string, error) {
			calls.Add(1)
			time.Sleep(hedgeDelay / 2)
			return "first", nil
		})
		require.NoError(t, err)
		assert.Equal(t, "first", v)
		assert.Equal(t, hedgeDelay/2, time.Since(start))
		time.Sleep(10 * hedgeDelay)
		assert.Equal(t, int32(1), calls.Load(), "no hedge after the first answer")
	})
}

func TestHedgeWinnerReturnsAndLosersAreCancelledAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var cancelledAt atomic.Int64 // when the slow first attempt saw its ctx end
		var n atomic.Int32
		p := resil.New[string]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})
		v, err := p.Run(t.Context(), func(ctx context.Context) (string, error) {
			if n.Add(1) == 1 {
				err := sleepCtx(ctx, time.Hour)
				cancelledAt.Store(int64(time.Since(start)))
				return "", err
			}
			time.Sleep(10 * time.Millisecond)
			return "hedge", nil
		})
		require.NoError(t, err)
		assert.Equal(t, "hedge", v)
		assert.Equal(t, hedgeDelay+10*time.Millisecond, time.Since(start), "the hedge's answer is returned when it arrives")
		synctest.Wait() // let the loser see its cancellation
		assert.Equal(t, int64(hedgeDelay+10*time.Millisecond), cancelledAt.Load(), "the loser's ctx ends when the winner answers")
	})
}

func TestHedgeScheduleAndAttemptNumbers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu     sync.Mutex
			starts []time.Duration
		)
		log := &evLog{}
		start := time.Now()
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 3}).Observe(log)
		boom := errors.New("slow failure")
		_, err := p.Run(t.Context(), func(ctx context.Context) (int, error) {
			mu.Lock()
			starts = append(starts, time.Since(start))
			mu.Unlock()
			time.Sleep(time.Hour) // ignores ctx: the schedule alone decides
			return 0, boom
		})
		require.ErrorIs(t, err, boom)
		assert.Equal(t, []time.Duration{0, hedgeDelay, 2 * hedgeDelay, 3 * hedgeDelay}, starts)
		attempts := log.of(resil.EventAttempt)
		require.Len(t, attempts, 4)
		for i, e := range attempts {
			assert.Equal(t, i+1, e.Attempt)
		}
	})
}

func TestHedgeFailureDoesNotAdvanceSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var n atomic.Int32
		var secondAt time.Duration
		p := resil.New[string]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})
		v, err := p.Run(t.Context(), func(ctx context.Context) (string, error) {
			if n.Add(1) == 1 {
				return "", errors.New("fast failure")
			}
			secondAt = time.Since(start)
			return "second", nil
		})
		require.NoError(t, err)
		assert.Equal(t, "second", v)
		assert.Equal(t, hedgeDelay, secondAt, "the second attempt waits for its time")
	})
}

func TestHedgeAllFailReturnsLastArrivedError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		errs := []error{errors.New("e1"), errors.New("e2"), errors.New("e3")}
		// Attempt 1 fails at 10D, attempt 2 (started at D) at 1.5D,
		// attempt 3 (started at 2D) at 3D: e1 arrives last.
		took := []time.Duration{10 * hedgeDelay, hedgeDelay / 2, hedgeDelay}
		var n atomic.Int32
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 2})
		_, err := p.Run(t.Context(), func(ctx context.Context) (int, error) {
			i := n.Add(1) - 1
			time.Sleep(took[i])
			return 0, errs[i]
		})
		require.ErrorIs(t, err, errs[0])
		assert.Equal(t, 10*hedgeDelay, time.Since(start))
		assert.Equal(t, int32(3), n.Load())
	})
}

func TestHedgeStopsWhenNoAttemptCanStartBeforeDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*hedgeDelay+hedgeDelay/2)
		defer cancel()
		start := time.Now()
		var n atomic.Int32
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 5})
		_, err := p.Run(ctx, func(ctx context.Context) (int, error) {
			i := n.Add(1)
			time.Sleep(hedgeDelay / 10)
			return 0, fmt.Errorf("e%d", i)
		})
		require.EqualError(t, err, "e3")
		assert.Equal(t, 2*hedgeDelay+hedgeDelay/10, time.Since(start), "returns when the third fails, not at the deadline")
		assert.NoError(t, ctx.Err())
	})
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
			var n atomic.Int32
			p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay, MaxHedges: 10})
			_, err := p.Run(ctx, func(ctx context.Context) (int, error) {
				n.Add(1)
				return 0, sleepCtx(ctx, time.Hour)
			})
			require.Equal(t, context.DeadlineExceeded, err)
			assert.Equal(t, int32(4), n.Load())
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
		var n atomic.Int32
		var firstErr atomic.Value
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: hedgeDelay})
		type boom struct{ code int }
		require.PanicsWithValue(t, boom{42}, func() {
			_, _ = p.Run(t.Context(), func(ctx context.Context) (int, error) {
				if n.Add(1) == 1 {
					err := sleepCtx(ctx, time.Hour)
					firstErr.Store(err)
					return 0, err
				}
				panic(boom{42})
			})
		})
		synctest.Wait()
		assert.Equal(t, context.Canceled, firstErr.Load(), "the other attempts are cancelled")
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
		var n atomic.Int32
		p := resil.New[int]().
			Timeout(3 * hedgeDelay).
			Hedge(resil.HedgePolicy{Delay: hedgeDelay}).
			Timeout(time.Second)
		start := time.Now()
		v, err := p.Run(t.Context(), func(ctx context.Context) (int, error) {
			i := n.Add(1)
			if i == 1 {
				return 0, sleepCtx(ctx, time.Hour)
			}
			time.Sleep(hedgeDelay)
			return int(i), nil
		})
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
				var n atomic.Int32
				v, err := p.Run(t.Context(), func(ctx context.Context) (int, error) {
					if n.Add(1) < 3 {
						return 0, sleepCtx(ctx, time.Hour)
					}
					return g, nil
				})
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
		var n atomic.Int32
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: time.Millisecond, MaxHedges: 200})
		start := time.Now()
		v, err := p.Run(t.Context(), func(ctx context.Context) (int, error) {
			i := n.Add(1)
			if i == 150 {
				return int(i), nil
			}
			<-ctx.Done()
			return 0, ctx.Err()
		})
		require.NoError(t, err)
		assert.Equal(t, 150, v)
		assert.Equal(t, 149*time.Millisecond, time.Since(start))
		synctest.Wait()
		assert.Equal(t, int32(150), n.Load())
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
