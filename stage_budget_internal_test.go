package resil

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRetryBudgetWindowWithExplicitTime(t *testing.T) {
	// Ratio 1 and a reserve of about nothing, TTL 10s: buckets of 1s.
	b := NewRetryBudget(RetryBudgetPolicy{Ratio: 1, MinPerSecond: 1e-12, TTL: 10 * time.Second})
	sec := int64(time.Second)
	base := (clock()/sec + 100) * sec // a bucket boundary in the future of NewRetryBudget

	assert.False(t, b.withdraw(base), "no calls, no reserve: no retry")
	for range 3 {
		b.deposit(base)
	}
	for i := range 3 {
		assert.True(t, b.withdraw(base+int64(i)), "retry %d of 3 calls", i+1)
	}
	assert.False(t, b.withdraw(base+3), "a fourth retry would exceed Ratio × calls")

	// The calls of bucket 0 still count in bucket 9: one more call, one
	// more retry.
	b.deposit(base + 9*sec)
	assert.True(t, b.withdraw(base+9*sec+sec/2))
	assert.False(t, b.withdraw(base+9*sec+sec/2))
}

func TestRetryBudgetExpiry(t *testing.T) {
	b := NewRetryBudget(RetryBudgetPolicy{Ratio: 1, MinPerSecond: 1e-12, TTL: 10 * time.Second})
	sec := int64(time.Second)
	base := (clock()/sec + 100) * sec
	b.deposit(base)
	require.True(t, b.withdraw(base))
	// At 9.9s the call counts (bucket 9) and so does its retry.
	assert.False(t, b.withdraw(base+9*sec+9*sec/10))
	// At 10s the call has left the window, the retry not yet (it counts
	// for up to 11s): a new call allows no retry.
	b.deposit(base + 10*sec)
	assert.False(t, b.withdraw(base+10*sec))
	// At 11s the old retry is gone: the new call's retry is allowed.
	assert.True(t, b.withdraw(base+11*sec))
}

func TestRetryBudgetReserve(t *testing.T) {
	// 2 retries per second over 5s: a reserve of 10 retries.
	b := NewRetryBudget(RetryBudgetPolicy{MinPerSecond: 2, TTL: 5 * time.Second})
	now := (clock()/int64(time.Second) + 100) * int64(time.Second)
	for i := range 10 {
		require.True(t, b.withdraw(now), "reserve retry %d", i+1)
	}
	assert.False(t, b.withdraw(now))
	// Five calls at the default Ratio 0.2 add one retry.
	for range 5 {
		b.deposit(now)
	}
	assert.True(t, b.withdraw(now))
	assert.False(t, b.withdraw(now))
}

func TestRetryBudgetInfiniteRatio(t *testing.T) {
	b := NewRetryBudget(RetryBudgetPolicy{Ratio: math.Inf(1), MinPerSecond: 1e-12})
	now := clock()
	assert.False(t, b.withdraw(now), "no calls: an infinite ratio allows nothing yet")
	b.deposit(now)
	for range 1000 {
		require.True(t, b.withdraw(now))
	}
}

// TestRetryBudgetRuleHolds replays random traffic and checks the rule the
// budget promises at every retry it allows: the retries of (t-TTL, t], the
// new one included, are at most Ratio × the calls of (t-TTL, t] + reserve.
func TestRetryBudgetRuleHolds(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		ttl := time.Duration(1+rng.IntN(20)) * 100 * time.Millisecond
		ratio := rng.Float64()
		perSecond := rng.Float64() * 20
		b := NewRetryBudget(RetryBudgetPolicy{Ratio: ratio, MinPerSecond: perSecond, TTL: ttl})
		reserve := perSecond * ttl.Seconds()
		var calls, retries []int64
		now := clock()
		allowed := 0
		for range 2000 {
			now += rng.Int64N(int64(ttl) / 20)
			if rng.IntN(3) == 0 {
				b.deposit(now)
				calls = append(calls, now)
				continue
			}
			if !b.withdraw(now) {
				continue
			}
			allowed++
			retries = append(retries, now)
			inWindow := func(ts []int64) int {
				n := 0
				for _, x := range ts {
					if x > now-int64(ttl) && x <= now {
						n++
					}
				}
				return n
			}
			require.LessOrEqual(t, float64(inWindow(retries)), ratio*float64(inWindow(calls))+reserve,
				"seed %d: retry at %d", seed, now)
		}
		require.Positive(t, allowed, "seed %d: the budget never allowed a retry", seed)
	}
}
