package resiltest_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resiltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// outcome is what one call of a fake did, in fake time.
type outcome struct {
	err error
	d   time.Duration
}

// play makes n calls of f one after another inside the current bubble,
// each with a one-minute deadline, and returns what they did.
func play(t *testing.T, f *resiltest.Fake[int], n int) []outcome {
	out := make([]outcome, n)
	for i := range out {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		start := time.Now()
		_, err := f.Call(ctx)
		cancel()
		out[i] = outcome{err, time.Since(start)}
	}
	return out
}

func TestRandomIsReproducibleFromItsSeed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := resiltest.Faults{Seed: 7, FailRate: 0.3, HangRate: 0.05, Latency: 10 * time.Millisecond,
			Jitter: 5 * time.Millisecond, SlowRate: 0.1, Slow: time.Second}
		a := play(t, resiltest.Random(f, 1), 200)
		b := play(t, resiltest.Random(f, 1), 200)
		require.Equal(t, a, b)
		f.Seed = 8
		c := play(t, resiltest.Random(f, 1), 200)
		require.NotEqual(t, a, c)
	})
}

func TestRandomOutcomeDependsOnTheCallNumberOnly(t *testing.T) {
	f := resiltest.Faults{Seed: 3, FailRate: 0.5}
	seq := resiltest.Random(f, 1)
	for range 200 {
		_, _ = seq.Call(context.Background())
	}
	conc := resiltest.Random(f, 1)
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() { _, _ = conc.Call(context.Background()) })
	}
	wg.Wait()
	want := map[int]error{}
	for _, c := range seq.Calls() {
		want[c.Attempt] = c.Err
	}
	for _, c := range conc.Calls() {
		assert.Equal(t, want[c.Attempt], c.Err, "call %d", c.Attempt)
	}
}

func TestRandomRatesAndLatencyDistribution(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errDown := errors.New("down")
		const n = 4000
		f := resiltest.Faults{Seed: 1, FailRate: 0.2, Err: errDown, HangRate: 0.1,
			Latency: 10 * time.Millisecond, Jitter: 10 * time.Millisecond, SlowRate: 0.05, Slow: 10 * time.Second}
		var fails, hangs, slow int
		for _, o := range play(t, resiltest.Random(f, 1), n) {
			switch {
			case errors.Is(o.err, context.DeadlineExceeded):
				hangs++
				assert.Equal(t, time.Minute, o.d)
				continue
			case o.err == errDown:
				fails++
			default:
				require.NoError(t, o.err)
			}
			if o.d >= 10*time.Second {
				slow++
				o.d -= 10 * time.Second
			}
			assert.GreaterOrEqual(t, o.d, 10*time.Millisecond)
			assert.LessOrEqual(t, o.d, 20*time.Millisecond)
		}
		near := func(name string, got int, rate float64) {
			// 5 standard deviations of a binomial count.
			sd := math.Sqrt(n * rate * (1 - rate))
			assert.InDelta(t, n*rate, float64(got), 5*sd, name)
		}
		near("fails", fails, 0.2)
		near("hangs", hangs, 0.1)
		near("slow", slow, 0.05*0.9)
	})
}

func TestRandomZeroFaultsAlwaysSucceedsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, o := range play(t, resiltest.Random(resiltest.Faults{}, 1), 100) {
			require.NoError(t, o.err)
			require.Zero(t, o.d)
		}
	})
}

func TestErrInjectedIsTransient(t *testing.T) {
	dep := resiltest.Random(resiltest.Faults{FailRate: 1}, 1)
	_, err := dep.Call(context.Background())
	require.ErrorIs(t, err, resiltest.ErrInjected)
	require.True(t, resil.IsTransient(err))
}

func TestFaultsValidate(t *testing.T) {
	tests := []struct {
		name string
		f    resiltest.Faults
		msg  string
	}{
		{"FailRate NaN", resiltest.Faults{FailRate: math.NaN()}, "resiltest: Faults.FailRate must be in [0, 1], got NaN"},
		{"FailRate > 1", resiltest.Faults{FailRate: 1.5}, "resiltest: Faults.FailRate must be in [0, 1], got 1.5"},
		{"HangRate < 0", resiltest.Faults{HangRate: -0.1}, "resiltest: Faults.HangRate must be in [0, 1], got -0.1"},
		{"SlowRate > 1", resiltest.Faults{SlowRate: 2}, "resiltest: Faults.SlowRate must be in [0, 1], got 2"},
		{"sum > 1", resiltest.Faults{FailRate: 0.75, HangRate: 0.5}, "resiltest: Faults.FailRate+HangRate must be <= 1, got 1.25"},
		{"Latency", resiltest.Faults{Latency: -time.Second}, "resiltest: Faults.Latency must be >= 0, got -1s"},
		{"Jitter", resiltest.Faults{Jitter: -time.Millisecond}, "resiltest: Faults.Jitter must be >= 0, got -1ms"},
		{"Slow", resiltest.Faults{Slow: -1}, "resiltest: Faults.Slow must be >= 0, got -1ns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.EqualError(t, tt.f.Validate(), tt.msg)
			require.PanicsWithValue(t, tt.msg, func() { resiltest.Random(tt.f, 0) })
		})
	}
	require.NoError(t, resiltest.Faults{FailRate: 0.5, HangRate: 0.5, SlowRate: 1}.Validate())
}

// A soak test as users would write one: many calls through a pipeline,
// every one of which must end in a value, however the dependency behaves.
func TestSoakThroughAPipeline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Random(resiltest.Faults{Seed: 42, FailRate: 0.3, HangRate: 0.05,
			Latency: time.Millisecond, Jitter: 5 * time.Millisecond, SlowRate: 0.05, Slow: time.Second}, "fresh")
		var log resiltest.BreakerLog
		b := resil.NewBreaker(resil.BreakerPolicy{OnStateChange: log.OnStateChange})
		p := resil.New[string]().
			Timeout(100 * time.Millisecond).
			Retry(resil.RetryPolicy{MaxAttempts: 4, Backoff: resil.Exponential(10*time.Millisecond, 100*time.Millisecond)}).
			Breaker(b).
			Fallback(func(context.Context, error) (string, error) { return "stale", nil })
		counts := map[string]int{}
		for range 2000 {
			v, err := p.Run(t.Context(), dep.Call)
			require.NoError(t, err)
			counts[v]++
		}
		assert.Greater(t, counts["fresh"], 1800)
		assert.Positive(t, counts["stale"])
		resiltest.AssertNoCallWhileOpen(t, dep, &log)
	})
}
