package redisstore_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/redisstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// limiters makes n replicas' stores (each with its own client) and their
// limiter called name.
func limiters(t *testing.T, addr string, n int, opts redisstore.Options, policy resil.RateLimitPolicy) []*resil.RateLimiter {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = time.Second // a loaded test machine is not an outage
	}
	var ls []*resil.RateLimiter
	for range n {
		s := redisstore.New(client(t, addr), opts)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		ls = append(ls, s.RateLimiter("quota", policy))
	}
	return ls
}

func limited(l *resil.RateLimiter) error {
	_, err := resil.New[int]().RateLimit(l).Run(context.Background(), func(context.Context) (int, error) { return 1, nil })
	return err
}

func retryAfterOf(t *testing.T, err error) time.Duration {
	t.Helper()
	require.ErrorIs(t, err, resil.ErrRateLimited)
	var h interface{ RetryAfter() time.Duration }
	require.ErrorAs(t, err, &h)
	return h.RetryAfter()
}

func TestFleetRateLimitSharesOneBucket(t *testing.T) {
	srv := startRedis(t)
	policy := resil.RateLimitPolicy{Rate: 1, Burst: 5}
	ls := limiters(t, srv.Addr(), 3, redisstore.Options{}, policy)
	var (
		wg               sync.WaitGroup
		passed, rejected atomic.Int64
	)
	start := time.Now()
	for _, l := range ls {
		for range 4 {
			wg.Go(func() {
				for range 5 {
					if err := limited(l); err == nil {
						passed.Add(1)
					} else {
						after := retryAfterOf(t, err)
						assert.Greater(t, after, time.Duration(0))
						assert.LessOrEqual(t, after, time.Second)
						rejected.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	require.Less(t, time.Since(start), time.Second, "the test needs the bucket not to refill")
	assert.EqualValues(t, 5, passed.Load(), "Burst for the whole fleet")
	assert.EqualValues(t, 55, rejected.Load())
}

func TestFleetRateLimitRetryAfterPasses(t *testing.T) {
	srv := startRedis(t)
	ls := limiters(t, srv.Addr(), 2, redisstore.Options{}, resil.RateLimitPolicy{Rate: 20})
	require.NoError(t, limited(ls[0]))
	after := retryAfterOf(t, limited(ls[1]))
	assert.LessOrEqual(t, after, 50*time.Millisecond)
	time.Sleep(after) // the wait the error asks for, on the server's real clock
	require.NoError(t, limited(ls[1]))
}

// TestFleetRateLimitTinyRate: a valid Rate so small that a token's interval
// overflows still limits the fleet, as a local limiter with the same policy
// limits one process (each replica's local share alone would let a call
// through on each replica).
func TestFleetRateLimitTinyRate(t *testing.T) {
	for _, burst := range []int{0, 1, 3} {
		policy := resil.RateLimitPolicy{Rate: 1e-310, Burst: burst}
		local := resil.NewRateLimiter(policy)
		srv := startRedis(t)
		ls := limiters(t, srv.Addr(), 2, redisstore.Options{}, policy)
		passed, want := 0, 0
		for i := range 6 {
			if limited(ls[i%2]) == nil {
				passed++
			}
			if limited(local) == nil {
				want++
			}
		}
		assert.Equal(t, want, passed, "Burst %d", burst)
		assert.Equal(t, max(1, min(burst, 2)), want, "Burst %d: the bucket refills for 2^60ns at most", burst)
	}
}

func TestFleetRateLimitWaitsForTurn(t *testing.T) {
	srv := startRedis(t)
	ls := limiters(t, srv.Addr(), 2, redisstore.Options{}, resil.RateLimitPolicy{Rate: 10, MaxWait: time.Second})
	// start comes before the first turn is granted, so that a stall between
	// the grant and the clock read cannot shorten what took measures.
	start := time.Now()
	require.NoError(t, limited(ls[0]))
	require.NoError(t, limited(ls[1]))
	took := time.Since(start)
	assert.GreaterOrEqual(t, took, 90*time.Millisecond, "the fleet's next turn is 100ms after the first")
	assert.Less(t, took, 100*time.Millisecond+slack)
}

func TestFleetRateLimitLocalShareWhenRedisIsDown(t *testing.T) {
	srv := startRedis(t)
	const syncEvery = 100 * time.Millisecond
	var stores []*redisstore.Store
	var ls []*resil.RateLimiter
	for range 3 {
		s := redisstore.New(client(t, srv.Addr()), redisstore.Options{SyncEvery: syncEvery, Timeout: storeTimeout})
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		stores = append(stores, s)
		ls = append(ls, s.RateLimiter("quota", resil.RateLimitPolicy{Rate: 3, Burst: 6}))
	}
	require.Eventually(t, func() bool {
		for _, s := range stores {
			if s.Replicas() != 3 {
				return false
			}
		}
		return true
	}, converge, time.Millisecond, "every store counts the three replicas")
	srv.Stop()
	// Each replica allows its share: 1/s, a bucket of 2.
	for i, l := range ls {
		for n := range 2 {
			start := time.Now()
			require.NoError(t, limited(l), "replica %d call %d", i, n)
			assert.LessOrEqual(t, time.Since(start), storeTimeout+slack, "no call waits on Redis longer than Timeout")
		}
		// At 1/s, the next turn is most of a second away (the whole
		// policy, 3/s with a bucket of 6, would have let the call pass).
		assert.Greater(t, retryAfterOf(t, limited(l)), 500*time.Millisecond)
	}
	srv.Start() // empty: a full fleet bucket of 6
	require.Eventually(t, func() bool {
		return limited(ls[0]) == nil
	}, converge, 10*time.Millisecond, "the store reconnects and asks Redis again")
	assert.True(t, stores[0].Connected())
}

// TestFleetRateLimitNeverFasterThanRate: the fleet's arrival time, a double
// of microseconds since 1970 (a quarter microsecond apart today), is
// rounded up when a turn is added to it, never down, so the fleet never
// runs faster than Rate: every turn moves it by at least 1e6/300 µs, and
// 1000 turns by at least 1000 such intervals (rounded to nearest, each
// turn lost 1/12 µs). Only the turns the fleet granted move it: on a
// loaded machine a round trip may miss Options.Timeout, and the calls
// until the next sync take the local share, so the test counts what moved.
func TestFleetRateLimitNeverFasterThanRate(t *testing.T) {
	srv := startRedis(t)
	const turns = 1000
	const interval = 1e6 / 300.0
	ls := limiters(t, srv.Addr(), 1, redisstore.Options{}, resil.RateLimitPolicy{Rate: 300, Burst: 2 * turns})
	c := client(t, srv.Addr())
	tat := func() float64 {
		v, err := c.Get(context.Background(), "resil:{limiter:quota}:tat").Float64()
		require.NoError(t, err)
		return v
	}
	require.NoError(t, limited(ls[0]))
	first := tat()
	last, moved := first, 0
	for range turns {
		require.NoError(t, limited(ls[0]))
		if now := tat(); now != last {
			require.GreaterOrEqual(t, now-last, interval, "turn %d", moved+1)
			last = now
			moved++
		}
	}
	require.Greater(t, moved, turns/2, "most turns went through the fleet")
	assert.GreaterOrEqual(t, last-first, float64(moved)*interval)
}
