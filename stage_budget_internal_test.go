package resil

import (
	"math"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRetryBudgetWindowWithExplicitTime(t *testing.T) {
	// Ratio 1 and a reserve of about nothing, TTL 10s: buckets of 1s.
	b := NewRetryBudget(RetryBudgetPolicy{Ratio: 1, MinPerSecond: 1e-12, TTL: 10 * time.Second})
	sec := int64(time.Second)
	base := (clock()/sec + 100) * sec // a bucket boundary in the future of NewRetryBudget

	assert.False(t, withdraw(b, base), "no calls, no reserve: no retry")
	for range 3 {
		b.depositAt(base)
	}
	for i := range 3 {
		assert.True(t, withdraw(b, base+int64(i)), "retry %d of 3 calls", i+1)
	}
	assert.False(t, withdraw(b, base+3), "a fourth retry would exceed Ratio × calls")

	// The calls of bucket 0 still count in bucket 9: one more call, one
	// more retry.
	b.depositAt(base + 9*sec)
	assert.True(t, withdraw(b, base+9*sec+sec/2))
	assert.False(t, withdraw(b, base+9*sec+sec/2))
}

func TestRetryBudgetExpiry(t *testing.T) {
	b := NewRetryBudget(RetryBudgetPolicy{Ratio: 1, MinPerSecond: 1e-12, TTL: 10 * time.Second})
	sec := int64(time.Second)
	base := (clock()/sec + 100) * sec
	b.depositAt(base)
	require.True(t, withdraw(b, base))
	// At 9.9s the call counts (bucket 9) and so does its retry.
	assert.False(t, withdraw(b, base+9*sec+9*sec/10))
	// At 10s the call has left the window, the retry not yet (it counts
	// for up to 11s): a new call allows no retry.
	b.depositAt(base + 10*sec)
	assert.False(t, withdraw(b, base+10*sec))
	// At 11s the old retry is gone: the new call's retry is allowed.
	assert.True(t, withdraw(b, base+11*sec))
}

func TestRetryBudgetReserve(t *testing.T) {
	// 2 retries per second over 5s: a reserve of 10 retries.
	b := NewRetryBudget(RetryBudgetPolicy{MinPerSecond: 2, TTL: 5 * time.Second})
	now := (clock()/int64(time.Second) + 100) * int64(time.Second)
	for i := range 10 {
		require.True(t, withdraw(b, now), "reserve retry %d", i+1)
	}
	assert.False(t, withdraw(b, now))
	// Five calls at the default Ratio 0.2 add one retry.
	for range 5 {
		b.depositAt(now)
	}
	assert.True(t, withdraw(b, now))
	assert.False(t, withdraw(b, now))
}

func TestRetryBudgetInfiniteRatio(t *testing.T) {
	b := NewRetryBudget(RetryBudgetPolicy{Ratio: math.Inf(1), MinPerSecond: 1e-12})
	now := clock()
	assert.False(t, withdraw(b, now), "no calls: an infinite ratio allows nothing yet")
	b.depositAt(now)
	for range 1000 {
		require.True(t, withdraw(b, now))
	}
}

// budgetReplay checks, at every retry the budget allows, the rule it
// promises: the retries of (t-TTL, t], the new one included, are at most
// Ratio × the calls of (t-TTL, t] + reserve; and at the end, the bound over
// the whole run: Ratio × all calls + reserve for each TTL the run begins.
type budgetReplay struct {
	t              *testing.T
	b              *RetryBudget
	ttl            int64
	ratio, reserve float64
	calls, retries []int64
}

func (r *budgetReplay) call(now int64, deposit func()) {
	deposit()
	r.calls = append(r.calls, now)
}

func (r *budgetReplay) retry(now int64) {
	if !withdraw(r.b, now) {
		return
	}
	r.retries = append(r.retries, now)
	in := func(ts []int64) int {
		n := 0
		for _, x := range ts {
			if x > now-r.ttl && x <= now {
				n++
			}
		}
		return n
	}
	require.LessOrEqual(r.t, float64(in(r.retries)), r.ratio*float64(in(r.calls))+r.reserve, "retry at %d", now)
}

func (r *budgetReplay) finish(start, end int64) {
	require.NotEmpty(r.t, r.retries, "the budget never allowed a retry")
	ttls := float64((end-start)/r.ttl + 1)
	require.LessOrEqual(r.t, float64(len(r.retries)), r.ratio*float64(len(r.calls))+r.reserve*ttls)
}

func newBudgetReplay(t *testing.T, rng *rand.Rand) *budgetReplay {
	ttl := time.Duration(1+rng.IntN(20)) * 100 * time.Millisecond
	ratio := rng.Float64()
	perSecond := rng.Float64() * 20
	return &budgetReplay{
		t:       t,
		b:       NewRetryBudget(RetryBudgetPolicy{Ratio: ratio, MinPerSecond: perSecond, TTL: ttl}),
		ttl:     int64(ttl),
		ratio:   ratio,
		reserve: perSecond * ttl.Seconds(),
	}
}

// TestRetryBudgetRuleHolds replays random traffic at explicit times.
func TestRetryBudgetRuleHolds(t *testing.T) {
	for seed := range uint64(20) {
		t.Run("", func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			r := newBudgetReplay(t, rng)
			start := clock()
			now := start
			for range 2000 {
				now += rng.Int64N(r.ttl / 20)
				if rng.IntN(3) == 0 {
					r.call(now, func() { r.b.depositAt(now) })
				} else {
					r.retry(now)
				}
			}
			r.finish(start, now)
		})
	}
}

// TestRetryBudgetRuleHoldsWithDatedCalls replays random traffic in fake
// time through deposit, whose calls are dated by the last clock reading:
// bursts of calls make the batch grow, pauses make it shrink.
func TestRetryBudgetRuleHoldsWithDatedCalls(t *testing.T) {
	for seed := range uint64(10) {
		t.Run("", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 2))
				r := newBudgetReplay(t, rng)
				start := clock()
				for range 40 {
					gap := time.Duration(rng.Int64N(r.ttl / 5))
					if rng.IntN(4) == 0 {
						gap = time.Duration(r.ttl + rng.Int64N(r.ttl)) // a pause
					}
					burst := rng.IntN(300)
					for range burst {
						time.Sleep(gap / time.Duration(burst+1))
						if rng.IntN(4) == 0 {
							r.retry(clock())
						} else {
							r.call(clock(), r.b.deposit)
						}
					}
				}
				r.finish(start, clock())
			})
		})
	}
}

// withdraw asks b for a retry at now, recording it when allowed.
func withdraw(b *RetryBudget, now int64) bool {
	_, ok := b.take(now)
	return ok
}

// TestRetryBudgetStaleAsk: a retry asked with a clock reading that went
// stale before the lock was taken (its goroutine stalled for over a TTL, as
// a tiny TTL under contention allows) is decided at the latest time the
// budget knows of: it neither escapes the retries made since nor wipes
// their count by taking their bucket's slot for its older bucket.
func TestRetryBudgetStaleAsk(t *testing.T) {
	// A reserve of 1 retry per TTL of 1s (buckets of 100ms), no calls.
	b := NewRetryBudget(RetryBudgetPolicy{MinPerSecond: 1, TTL: time.Second})
	sec := int64(time.Second)
	base := (clock()/sec + 100) * sec
	require.True(t, withdraw(b, base+2*sec), "the reserve's one retry")
	// Read at 0.9s, 11 buckets earlier: the same slot as the 2s bucket.
	assert.False(t, withdraw(b, base+2*sec-11*sec/10), "stale reading: decided as of 2s")
	assert.False(t, withdraw(b, base+2*sec), "the 2s retry still counts")
}

// TestRetryBudgetDepositNearSaturation: within depositMargin of a bucket's
// saturation, deposit counts by compare-and-swap (depositAt, which reads
// the clock), not by the plain add that concurrent callers loading the same
// count could carry into the bucket's tag; the count stops at saturation.
func TestRetryBudgetDepositNearSaturation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewRetryBudget(RetryBudgetPolicy{TTL: 10 * time.Second})
		b.deposit() // starts the current bucket
		idx := b.cur.Load()
		c := &b.calls[floorMod(idx, budgetSlots)]
		tag := uint64(uint32(idx)) << 32
		b.batch.Store(4) // the plain add would serve this count: (n+1)&3 != 0

		c.Store(tag | (math.MaxUint32 - 2))
		time.Sleep(time.Millisecond) // fake time: a clock reading tells
		before := b.last.Load()
		b.deposit()
		assert.NotEqual(t, before, b.last.Load(), "the count near saturation was taken by depositAt")
		assert.Equal(t, tag|(math.MaxUint32-1), c.Load())
		b.deposit()
		b.deposit()
		assert.Equal(t, tag|math.MaxUint32, c.Load(), "saturated, the tag intact")

		c.Store(tag | 1) // far from saturation: the plain add, no clock reading
		before = b.last.Load()
		b.deposit()
		assert.Equal(t, before, b.last.Load())
		assert.Equal(t, tag|2, c.Load())
	})
}
