package redisstore_test

import (
	"testing"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/redisstore"
	"github.com/stretchr/testify/assert"
)

// TestZeroStore: a Store not made by New says so, instead of failing on
// its nil maps, in every method that needs one made by New; Close and
// Connected answer.
func TestZeroStore(t *testing.T) {
	const want = "redisstore: Store must be made by New, got a zero Store"
	tests := []struct {
		name string
		call func(s *redisstore.Store)
	}{
		{"Breaker", func(s *redisstore.Store) { s.Breaker("x", resil.BreakerPolicy{}) }},
		{"RateLimiter", func(s *redisstore.Store) { s.RateLimiter("x", resil.RateLimitPolicy{Rate: 1}) }},
		{"Replicas", func(s *redisstore.Store) { s.Replicas() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.PanicsWithValue(t, want, func() { tt.call(&redisstore.Store{}) })
		})
	}
	t.Run("Close and Connected", func(t *testing.T) {
		var s redisstore.Store
		assert.False(t, s.Connected())
		assert.NoError(t, s.Close())
		assert.NoError(t, s.Close(), "Close is idempotent")
		assert.False(t, s.Connected())
	})
}
