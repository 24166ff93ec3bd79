package redisstore_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/resil-go/resil"
	"github.com/resil-go/resil/redisstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts redisstore.Options
		want string
	}{
		{"zero", redisstore.Options{}, ""},
		{"SyncEvery", redisstore.Options{SyncEvery: -time.Second}, "redisstore: Options.SyncEvery must be 0 or >= 1ms, got -1s"},
		{"SyncEvery 1ns", redisstore.Options{SyncEvery: 1}, "redisstore: Options.SyncEvery must be 0 or >= 1ms, got 1ns"},
		{"SyncEvery under 1ms", redisstore.Options{SyncEvery: time.Millisecond - 1}, "redisstore: Options.SyncEvery must be 0 or >= 1ms, got 999.999µs"},
		{"SyncEvery 1ms", redisstore.Options{SyncEvery: time.Millisecond}, ""},
		{"Timeout", redisstore.Options{Timeout: -time.Millisecond}, "redisstore: Options.Timeout must be >= 0, got -1ms"},
		{"TrialLease", redisstore.Options{TrialLease: -1}, "redisstore: Options.TrialLease must be >= 0, got -1ns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.want)
			assert.PanicsWithValue(t, tt.want, func() { redisstore.New(client(t, "127.0.0.1:1"), tt.opts) })
		})
	}
	assert.PanicsWithValue(t, "redisstore: New client must be non-nil, got nil", func() { redisstore.New(nil, redisstore.Options{}) })
	var unset *redis.Client // a client left unset: it would fail in the background sync
	assert.PanicsWithValue(t, "redisstore: New client must be non-nil, got a nil *redis.Client", func() { redisstore.New(unset, redisstore.Options{}) })
}

func TestStoreNamesAndClose(t *testing.T) {
	// Nothing listens on port 1: the store works on local state only.
	s := redisstore.New(client(t, "127.0.0.1:1"), redisstore.Options{SyncEvery: 10 * time.Millisecond})
	b := s.Breaker("a", resil.BreakerPolicy{})
	assert.Same(t, b, s.Breaker("a", resil.BreakerPolicy{MinCalls: 3}), "one breaker per name")
	assert.NotSame(t, b, s.Breaker("b", resil.BreakerPolicy{}))
	l := s.RateLimiter("a", resil.RateLimitPolicy{Rate: 1})
	assert.Same(t, l, s.RateLimiter("a", resil.RateLimitPolicy{Rate: 2}), "one limiter per name")
	assert.PanicsWithValue(t, "resil: BreakerPolicy.MinCalls must be >= 0, got -1", func() {
		s.Breaker("c", resil.BreakerPolicy{MinCalls: -1})
	})
	assert.PanicsWithValue(t, "resil: RateLimitPolicy.Rate must be > 0 and finite, got 0", func() {
		s.RateLimiter("c", resil.RateLimitPolicy{})
	})
	// A taken name ignores a later policy, but not a bad one: a bad
	// configuration reloaded is a bug, wherever it comes.
	assert.PanicsWithValue(t, "resil: BreakerPolicy.MinCalls must be >= 0, got -1", func() {
		s.Breaker("a", resil.BreakerPolicy{MinCalls: -1})
	})
	assert.PanicsWithValue(t, "resil: RateLimitPolicy.Rate must be > 0 and finite, got -1", func() {
		s.RateLimiter("a", resil.RateLimitPolicy{Rate: -1})
	})
	require.Eventually(t, func() bool { return !s.Connected() }, converge, time.Millisecond)
	assert.Equal(t, 1, s.Replicas())
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")
	// After Close, breakers and limiters keep working on local state.
	_, err := resil.New[int]().Breaker(b).RateLimit(l).Run(t.Context(), ok)
	require.NoError(t, err)
}

func FuzzOptionsValidate(f *testing.F) {
	f.Add(int64(0), int64(0), int64(0))
	f.Add(int64(-1), int64(1), int64(1))
	f.Add(int64(1), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, syncEvery, timeout, lease int64) {
		opts := redisstore.Options{SyncEvery: time.Duration(syncEvery), Timeout: time.Duration(timeout), TrialLease: time.Duration(lease)}
		err := opts.Validate()
		badSync := syncEvery != 0 && syncEvery < int64(time.Millisecond)
		assert.Equal(t, badSync || timeout < 0 || lease < 0, err != nil, "Validate: %v", err)
	})
}
