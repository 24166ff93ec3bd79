package resil

import (
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRateLimiterReserve drives the limiter's decision with explicit
// instants.
func TestRateLimiterReserve(t *testing.T) {
	l := NewRateLimiter(RateLimitPolicy{Rate: 10, Burst: 2}) // interval 100ms, tau 100ms
	const ms = int64(time.Millisecond)
	now := int64(1000 * ms)

	for range 2 {
		wait, ok := l.reserve(now, 0)
		require.True(t, ok)
		require.Zero(t, wait)
	}
	wait, ok := l.reserve(now, 0)
	require.False(t, ok)
	require.Equal(t, 100*ms, wait, "a rejection reports when a call would pass")

	wait, ok = l.reserve(now, 150*ms)
	require.True(t, ok)
	require.Equal(t, 100*ms, wait)
	wait, ok = l.reserve(now, 150*ms)
	require.False(t, ok, "the next turn is 200ms away")
	require.Equal(t, 200*ms, wait)

	l.unreserve(now, 100*ms) // the last turn goes back
	wait, ok = l.reserve(now, 150*ms)
	require.True(t, ok)
	require.Equal(t, 100*ms, wait)

	// Long after, the bucket is full again, never fuller.
	now += 10_000 * ms
	for range 2 {
		_, ok = l.reserve(now, 0)
		require.True(t, ok)
	}
	_, ok = l.reserve(now, 0)
	require.False(t, ok)
}

// TestRateLimiterExtremes: intervals, bursts and waits at the ends of their
// ranges neither overflow nor turn a rejection into a pass.
func TestRateLimiterExtremes(t *testing.T) {
	cases := []struct {
		name   string
		policy RateLimitPolicy
	}{
		{"tiny rate", RateLimitPolicy{Rate: math.SmallestNonzeroFloat64, Burst: 3, MaxWait: math.MaxInt64}},
		{"huge burst", RateLimitPolicy{Rate: 1e-9, Burst: math.MaxInt, MaxWait: math.MaxInt64}},
		{"huge rate", RateLimitPolicy{Rate: math.MaxFloat64, Burst: math.MaxInt, MaxWait: math.MaxInt64}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := NewRateLimiter(tc.policy)
			assert.Positive(t, l.interval)
			assert.LessOrEqual(t, l.interval, int64(maxSpan))
			assert.LessOrEqual(t, l.tau, int64(maxSpan))
			now := int64(1e18) // ~32 years of uptime
			for range 100 {
				wait, ok := l.reserve(now, l.maxWait)
				require.GreaterOrEqual(t, wait, int64(0))
				if !ok {
					require.Greater(t, wait, l.maxWait)
				}
			}
			assert.Greater(t, l.tat.Load(), now, "tat moved forward without wrapping")
		})
	}
}

// FuzzRateLimitPolicy: a policy is valid exactly when NewRateLimiter
// accepts it, and a valid one yields a limiter whose arithmetic cannot
// overflow: waits are never negative, a rejection's wait exceeds the
// allowed one, and the state only moves forward.
func FuzzRateLimitPolicy(f *testing.F) {
	f.Add(10.0, 5, int64(time.Second), int64(1e15))
	f.Add(math.SmallestNonzeroFloat64, math.MaxInt, int64(math.MaxInt64), int64(0))
	f.Add(math.MaxFloat64, 0, int64(0), int64(1<<61))
	f.Add(math.NaN(), -1, int64(-1), int64(0))
	f.Fuzz(func(t *testing.T, rate float64, burst int, maxWait, now int64) {
		p := RateLimitPolicy{Rate: rate, Burst: burst, MaxWait: time.Duration(maxWait)}
		err := p.Validate()
		if err != nil {
			require.PanicsWithValue(t, err.Error(), func() { NewRateLimiter(p) })
			return
		}
		l := NewRateLimiter(p)
		require.True(t, l.interval >= 1 && l.interval <= maxSpan)
		require.True(t, l.tau >= 0 && l.tau <= maxSpan)
		require.True(t, l.maxWait >= 0 && l.maxWait <= maxSpan)
		now = max(now, 0) % (1 << 61) // clock() readings: up to ~73 years
		prev := l.tat.Load()
		for range 50 {
			wait, ok := l.reserve(now, l.maxWait)
			require.GreaterOrEqual(t, wait, int64(0))
			if !ok {
				require.Greater(t, wait, l.maxWait)
			}
			tat := l.tat.Load()
			require.GreaterOrEqual(t, tat, prev)
			prev = tat
		}
	})
}

// TestRateLimiterAdmitLooksAgainBeforeRejecting: a call whose clock reading
// went stale before it reached the bucket (it was preempted while another
// call, with a later reading, took a token) must not be refused a token
// that is due by now; a bucket that is really empty still refuses, with
// RetryAfter counted from the fresh reading.
func TestRateLimiterAdmitLooksAgainBeforeRejecting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewRateLimiter(RateLimitPolicy{Rate: 10, Burst: 2}) // interval 100ms, tau 100ms
		stale := clock()
		time.Sleep(50 * time.Millisecond)
		fresh := clock()

		_, _, _, ok := l.admit(fresh, 0)
		require.True(t, ok, "the first of the burst")
		_, ok = l.reserve(stale, 0)
		require.False(t, ok, "reserve alone, with the stale reading, refuses the second token")

		at, wait, _, ok := l.admit(stale, 0)
		require.True(t, ok, "the second token of the burst is due: admit looks at the clock again")
		assert.Equal(t, fresh, at, "decided at the fresh reading")
		assert.Zero(t, wait)

		at, wait, _, ok = l.admit(stale, 0)
		require.False(t, ok, "the bucket is empty")
		assert.Equal(t, fresh, at)
		assert.Equal(t, int64(100*time.Millisecond), wait, "a token is due 100ms after the fresh reading")

		// The time since the stale reading counts against the wait a call accepts.
		at, wait, _, ok = l.admit(stale, int64(120*time.Millisecond))
		require.False(t, ok, "120ms from the stale reading is 70ms from now: too short for a turn 100ms away")
		assert.Equal(t, fresh, at)
		assert.Equal(t, int64(100*time.Millisecond), wait)
	})
}
