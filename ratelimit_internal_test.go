package resil

import (
	"math"
	"testing"
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
