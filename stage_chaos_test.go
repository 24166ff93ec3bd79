package resil_test

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

// chaosOutcome is what one call through a Chaos stage saw.
type chaosOutcome struct{ delayed, faulted bool }

// chaosRun makes calls through p, one after another, and says for each
// whether it was delayed (time passed before fn) and whether it faulted
// (fn was not called). It must run inside a synctest bubble.
func chaosRun(t *testing.T, p resil.Pipeline[int], calls int) []chaosOutcome {
	t.Helper()
	out := make([]chaosOutcome, calls)
	for i := range out {
		start := time.Now()
		called := false
		_, err := p.Run(t.Context(), func(context.Context) (int, error) {
			called = true
			return 1, nil
		})
		out[i] = chaosOutcome{delayed: time.Since(start) > 0, faulted: !called}
		require.Equal(t, !called, err != nil)
	}
	return out
}

func TestChaosZeroRatesPassThrough(t *testing.T) {
	p := resil.New[int]().Chaos(resil.ChaosPolicy{Latency: time.Hour, Fault: errors.New("never")})
	ctx := context.Background()
	fn := func(context.Context) (int, error) { return 7, nil }
	for range 100 {
		v, err := p.Run(ctx, fn)
		require.NoError(t, err)
		require.Equal(t, 7, v)
	}
	allocs := testing.AllocsPerRun(100, func() { _, _ = p.Run(ctx, fn) })
	assert.Zero(t, allocs)
	// A LatencyRate with no Latency injects nothing either.
	q := resil.New[int]().Chaos(resil.ChaosPolicy{LatencyRate: 1})
	assert.Zero(t, testing.AllocsPerRun(100, func() { _, _ = q.Run(ctx, fn) }))
}

func TestChaosFault(t *testing.T) {
	custom := errors.New("injected 503")
	tests := []struct {
		name  string
		fault error
		want  error
	}{
		{"default fault", nil, resil.ErrChaosFault},
		{"custom fault", custom, custom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &obsRecorder{}
			p := resil.New[int]().Chaos(resil.ChaosPolicy{FaultRate: 1, Fault: tt.fault}).Observe(log)
			dep := resiltest.Script[int](resiltest.Return(1))
			_, err := p.Run(t.Context(), dep.Call)
			require.Equal(t, tt.want, err)
			assert.Zero(t, dep.Count(), "a faulted call does not run the wrapped stages")
			rejected := log.kinds(resil.EventRejected)
			require.Len(t, rejected, 1)
			assert.Equal(t, tt.want, rejected[0].Err)
		})
	}
	assert.True(t, resil.IsTransient(resil.ErrChaosFault))
	assert.Equal(t, "resil: injected fault", resil.ErrChaosFault.Error())
}

func TestChaosFaultIsRetriedLikeARealOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[int](resiltest.Return(1))
		p := resil.New[int]().
			Chaos(resil.ChaosPolicy{FaultRate: 0.5, Seed: 7}).
			Retry(resil.RetryPolicy{MaxAttempts: 20, Backoff: resil.Constant(time.Millisecond)})
		for range 50 {
			v, err := p.Run(t.Context(), dep.Call)
			require.NoError(t, err)
			require.Equal(t, 1, v)
		}
		resiltest.AssertAttempts(t, dep, 50) // the injected faults never reached it
	})
}

func TestChaosLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[int](resiltest.Return(3))
		p := resil.New[int]().Chaos(resil.ChaosPolicy{LatencyRate: 1, Latency: time.Second})
		start := time.Now()
		v, err := p.Run(t.Context(), dep.Call)
		require.NoError(t, err)
		assert.Equal(t, 3, v)
		calls := dep.Calls()
		require.Len(t, calls, 1)
		assert.Equal(t, time.Second, calls[0].Start.Sub(start), "the latency is waited before the wrapped stages")
	})
}

func TestChaosLatencyHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		p := resil.New[int]().Chaos(resil.ChaosPolicy{LatencyRate: 1, Latency: time.Hour, FaultRate: 1})
		dep := resiltest.Script[int](resiltest.Return(1))
		start := time.Now()
		_, err := p.Run(ctx, dep.Call)
		require.Equal(t, context.DeadlineExceeded, err)
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
		assert.Zero(t, dep.Count())
	})
}

func TestChaosLatencyThenFault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := resil.New[int]().Chaos(resil.ChaosPolicy{LatencyRate: 1, Latency: time.Second, FaultRate: 1})
		start := time.Now()
		_, err := p.Run(t.Context(), func(context.Context) (int, error) { return 1, nil })
		require.ErrorIs(t, err, resil.ErrChaosFault)
		assert.Equal(t, time.Second, time.Since(start), "a slow failure")
	})
}

func TestChaosSeedIsReproducible(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.ChaosPolicy{FaultRate: 0.3, LatencyRate: 0.5, Latency: time.Millisecond, Seed: 42}
		a := chaosRun(t, resil.New[int]().Chaos(policy), 500)
		b := chaosRun(t, resil.New[int]().Chaos(policy), 500)
		assert.Equal(t, a, b, "the same seed gives the same sequence")
		policy.Seed = 43
		c := chaosRun(t, resil.New[int]().Chaos(policy), 500)
		assert.NotEqual(t, a, c, "another seed, another sequence")
	})
}

// TestChaosRatesAndIndependence checks, over many seeded calls, that each
// kind of injection happens at its rate and that the two draws are
// independent: each combination appears at the product of its rates.
func TestChaosRatesAndIndependence(t *testing.T) {
	tests := []struct {
		name                   string
		faultRate, latencyRate float64
		seed                   uint64
	}{
		{"seeded", 0.3, 0.6, 1},
		{"another seed", 0.5, 0.5, 99},
		{"random", 0.2, 0.7, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const calls = 10000
				p := resil.New[int]().Chaos(resil.ChaosPolicy{
					FaultRate: tt.faultRate, LatencyRate: tt.latencyRate, Latency: time.Microsecond, Seed: tt.seed,
				})
				var both, onlyF, onlyL, none float64
				for _, o := range chaosRun(t, p, calls) {
					switch {
					case o.faulted && o.delayed:
						both++
					case o.faulted:
						onlyF++
					case o.delayed:
						onlyL++
					default:
						none++
					}
				}
				f, l := tt.faultRate, tt.latencyRate
				// 4 standard deviations of a share of 10000 draws is at most 0.02.
				assert.InDelta(t, f*l, both/calls, 0.02)
				assert.InDelta(t, f*(1-l), onlyF/calls, 0.02)
				assert.InDelta(t, (1-f)*l, onlyL/calls, 0.02)
				assert.InDelta(t, (1-f)*(1-l), none/calls, 0.02)
			})
		})
	}
}

func TestChaosRateOneAndZeroNeedNoDraw(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// With FaultRate 1 (no draw), the latency sequence is the one a
		// seed gives with no fault draws at all.
		base := resil.ChaosPolicy{LatencyRate: 0.5, Latency: time.Millisecond, Seed: 5}
		withFault := base
		withFault.FaultRate = 1
		a := chaosRun(t, resil.New[int]().Chaos(base), 200)
		b := chaosRun(t, resil.New[int]().Chaos(withFault), 200)
		for i := range a {
			assert.Equal(t, a[i].delayed, b[i].delayed, "call %d", i)
			assert.True(t, b[i].faulted)
		}
	})
}

func TestChaosConcurrentSeeded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := resil.New[int]().Chaos(resil.ChaosPolicy{FaultRate: 0.5, LatencyRate: 0.5, Latency: time.Millisecond, Seed: 3})
		var wg sync.WaitGroup
		var mu sync.Mutex
		faults := 0
		for range 8 {
			wg.Go(func() {
				for range 500 {
					_, err := p.Run(t.Context(), func(context.Context) (int, error) { return 1, nil })
					if err != nil {
						mu.Lock()
						faults++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		assert.InDelta(t, 2000, faults, 200)
	})
}

func TestChaosPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		policy resil.ChaosPolicy
		msg    string
	}{
		{"negative fault rate", resil.ChaosPolicy{FaultRate: -0.1}, "resil: ChaosPolicy.FaultRate must be in [0, 1], got -0.1"},
		{"fault rate above 1", resil.ChaosPolicy{FaultRate: 1.5}, "resil: ChaosPolicy.FaultRate must be in [0, 1], got 1.5"},
		{"NaN fault rate", resil.ChaosPolicy{FaultRate: math.NaN()}, "resil: ChaosPolicy.FaultRate must be in [0, 1], got NaN"},
		{"negative latency rate", resil.ChaosPolicy{LatencyRate: -1}, "resil: ChaosPolicy.LatencyRate must be in [0, 1], got -1"},
		{"latency rate above 1", resil.ChaosPolicy{LatencyRate: math.Inf(1)}, "resil: ChaosPolicy.LatencyRate must be in [0, 1], got +Inf"},
		{"NaN latency rate", resil.ChaosPolicy{LatencyRate: math.NaN()}, "resil: ChaosPolicy.LatencyRate must be in [0, 1], got NaN"},
		{"negative latency", resil.ChaosPolicy{Latency: -time.Millisecond}, "resil: ChaosPolicy.Latency must be >= 0, got -1ms"},
		{"zero value", resil.ChaosPolicy{}, ""},
		{"full", resil.ChaosPolicy{FaultRate: 1, LatencyRate: 1, Latency: time.Second, Seed: 1}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Validate()
			if tt.msg == "" {
				require.NoError(t, err)
				require.NotPanics(t, func() { resil.New[int]().Chaos(tt.policy) })
				return
			}
			require.EqualError(t, err, tt.msg)
			require.PanicsWithValue(t, tt.msg, func() { resil.New[int]().Chaos(tt.policy) })
		})
	}
}

// FuzzChaosPolicy checks that Validate and Chaos agree on every policy: an
// error exactly when Chaos panics, with the same message.
func FuzzChaosPolicy(f *testing.F) {
	f.Add(0.5, 0.5, int64(time.Millisecond), uint64(1))
	f.Add(math.NaN(), 1.0, int64(0), uint64(0))
	f.Add(math.Copysign(0, -1), 1.0000001, int64(-1), uint64(7))
	f.Fuzz(func(t *testing.T, faultRate, latencyRate float64, latency int64, seed uint64) {
		policy := resil.ChaosPolicy{FaultRate: faultRate, LatencyRate: latencyRate, Latency: time.Duration(latency), Seed: seed}
		err := policy.Validate()
		valid := !math.IsNaN(faultRate) && faultRate >= 0 && faultRate <= 1 &&
			!math.IsNaN(latencyRate) && latencyRate >= 0 && latencyRate <= 1 && latency >= 0
		if valid {
			require.NoError(t, err)
			require.NotPanics(t, func() { resil.New[int]().Chaos(policy) })
			return
		}
		require.Error(t, err)
		require.PanicsWithValue(t, err.Error(), func() { resil.New[int]().Chaos(policy) })
	})
}
