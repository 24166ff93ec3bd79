package resil_test

import (
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExponential(t *testing.T) {
	b := resil.Exponential(100*time.Millisecond, 10*time.Second)
	want := map[int]time.Duration{
		-5: 100 * time.Millisecond, 0: 100 * time.Millisecond, 1: 100 * time.Millisecond,
		2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 7: 6400 * time.Millisecond,
		8: 10 * time.Second, 40: 10 * time.Second, 63: 10 * time.Second, 64: 10 * time.Second,
		1000: 10 * time.Second, math.MaxInt: 10 * time.Second,
	}
	for retry, d := range want {
		assert.Equal(t, d, b(retry), "retry %d", retry)
	}
}

// TestBackoffsNeverOverflow runs every retry number that could overflow a
// shift, up to math.MaxInt, for extreme parameters.
func TestBackoffsNeverOverflow(t *testing.T) {
	params := [][2]time.Duration{
		{1, 1}, {1, math.MaxInt64}, {time.Nanosecond, time.Hour}, {time.Second, math.MaxInt64},
		{math.MaxInt64 / 2, math.MaxInt64}, {math.MaxInt64, math.MaxInt64},
	}
	var retries []int
	for i := 1; i <= 130; i++ {
		retries = append(retries, i)
	}
	retries = append(retries, math.MaxInt32, math.MaxInt-1, math.MaxInt)
	for _, p := range params {
		initial, max := p[0], p[1]
		exp := resil.Exponential(initial, max)
		jit := resil.ExponentialJitter(initial, max)
		prev := time.Duration(0)
		for _, r := range retries {
			d := exp(r)
			assert.GreaterOrEqual(t, d, prev, "never decreasing: initial %v max %v retry %d", initial, max, r)
			assert.LessOrEqual(t, d, max)
			assert.GreaterOrEqual(t, d, initial)
			prev = d
			j := jit(r)
			assert.GreaterOrEqual(t, j, time.Duration(0))
			assert.LessOrEqual(t, j, d)
		}
		assert.Equal(t, max, exp(math.MaxInt))
	}
}

func TestConstant(t *testing.T) {
	assert.Equal(t, time.Second, resil.Constant(time.Second)(math.MaxInt))
	assert.Equal(t, time.Duration(0), resil.Constant(0)(1))
}

func TestBackoffConstructorsRejectBadInput(t *testing.T) {
	tests := []struct {
		name string
		f    func()
		want string
	}{
		{"Constant", func() { resil.Constant(-1) }, "resil: Constant d must be >= 0, got -1ns"},
		{"Exponential initial", func() { resil.Exponential(0, time.Second) }, "resil: Exponential initial must be > 0, got 0s"},
		{"Exponential max", func() { resil.Exponential(time.Second, time.Millisecond) }, "resil: Exponential max must be >= initial (1s), got 1ms"},
		{"ExponentialJitter initial", func() { resil.ExponentialJitter(-time.Second, time.Second) }, "resil: ExponentialJitter initial must be > 0, got -1s"},
		{"ExponentialJitter max", func() { resil.ExponentialJitter(time.Second, 0) }, "resil: ExponentialJitter max must be >= initial (1s), got 0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { assert.PanicsWithValue(t, tt.want, tt.f) })
	}
}

func TestExponentialJitterSpreads(t *testing.T) {
	b := resil.ExponentialJitter(time.Second, time.Second)
	seen := map[time.Duration]bool{}
	for range 100 {
		seen[b(1)] = true
	}
	assert.Greater(t, len(seen), 50, "jitter spreads retries over [0, 1s]")
}

// TestExponentialJitterIsUniform: ExponentialJitter's delays cover
// [0, min(max, initial·2^(retry−1))] evenly, at the first retry, below the
// cap and at the cap. The global random source cannot be seeded, so the
// bounds are loose: a chi-squared statistic over 10 bins (9 degrees of
// freedom) above 60 happens by chance with probability about 1e-9, and
// 30000 samples all missing the lowest or highest 1% about e^-300.
func TestExponentialJitterIsUniform(t *testing.T) {
	const (
		samples = 30000
		bins    = 10
	)
	b := resil.ExponentialJitter(100*time.Millisecond, 10*time.Second)
	tests := []struct {
		retry int
		env   time.Duration
	}{
		{1, 100 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{math.MaxInt, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.retry), func(t *testing.T) {
			var count [bins]int
			lo, hi := tt.env, time.Duration(0)
			for range samples {
				d := b(tt.retry)
				if d < 0 || d > tt.env {
					require.Failf(t, "delay outside [0, envelope]", "retry %d: %v", tt.retry, d)
				}
				lo, hi = min(lo, d), max(hi, d)
				count[min(int(int64(d)*bins/int64(tt.env)), bins-1)]++
			}
			chi2 := 0.0
			for _, c := range count {
				e := float64(samples) / bins
				chi2 += (float64(c) - e) * (float64(c) - e) / e
			}
			assert.Less(t, chi2, 60.0, "bins %v", count)
			assert.Less(t, lo, tt.env/100)
			assert.Greater(t, hi, tt.env-tt.env/100)
		})
	}
}
