package redisstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/resil-go/resil"
	"github.com/resil-go/resil/redisstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFleetLocalShareBurstIsBurstOverN: with 99 live replicas and Burst
// 297, each replica's local bucket holds Burst/N rounded up, 3, while Redis
// is down (1/99·297 in floats is a hair above 3: not 4, the fleet 297 and
// not 396).
func TestFleetLocalShareBurstIsBurstOverN(t *testing.T) {
	srv := startRedis(t)
	const replicas = 99
	c := client(t, srv.Addr())
	// 98 other replicas, alive for the next hour (presence is a sorted set
	// scored by when each member goes stale, in ms on the server's clock).
	stale := float64(time.Now().Add(time.Hour).UnixMilli())
	for i := range replicas - 1 {
		require.NoError(t, c.ZAdd(context.Background(), "resil:replicas", redis.Z{Score: stale, Member: fmt.Sprintf("other-%d", i)}).Err())
	}
	s := redisstore.New(client(t, srv.Addr()), redisstore.Options{SyncEvery: 10 * time.Millisecond, Timeout: time.Second})
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	l := s.RateLimiter("quota", resil.RateLimitPolicy{Rate: 1e-6, Burst: 297})
	require.Eventually(t, func() bool { return s.Replicas() == replicas }, converge, time.Millisecond)
	srv.Stop()
	require.Eventually(t, func() bool { return !s.Connected() }, converge, time.Millisecond)
	passed := 0
	for range 10 {
		if limited(l) == nil {
			passed++
		}
	}
	assert.Equal(t, 3, passed, "a local bucket of Burst/N rounded up: ceil(297/99)")
}
