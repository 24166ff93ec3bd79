package redisstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/redisstore"
	"github.com/stretchr/testify/require"
)

// The benchmarks compare a store's breaker and limiter with local ones on
// the same machine: a fleet breaker's call should cost what a local one
// does; a fleet limiter's call costs a round trip to Redis.

func ok(context.Context) (int, error) { return 1, nil }

func BenchmarkBreakerClosed(b *testing.B) {
	srv := startRedis(b)
	s := redisstore.New(client(b, srv.Addr()), redisstore.Options{})
	b.Cleanup(func() { require.NoError(b, s.Close()) })
	for _, bc := range []struct {
		name string
		b    *resil.Breaker
	}{
		{"local", resil.NewBreaker(resil.BreakerPolicy{})},
		{"fleet", s.Breaker("bench", resil.BreakerPolicy{})},
	} {
		p := resil.New[int]().Breaker(bc.b)
		ctx := context.Background()
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = p.Run(ctx, ok)
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, _ = p.Run(ctx, ok)
				}
			})
		})
	}
}

func BenchmarkRateLimit(b *testing.B) {
	srv := startRedis(b)
	s := redisstore.New(client(b, srv.Addr()), redisstore.Options{Timeout: time.Second})
	b.Cleanup(func() { require.NoError(b, s.Close()) })
	policy := resil.RateLimitPolicy{Rate: 1e9, Burst: 1 << 30} // never limits: measures the check
	for _, bc := range []struct {
		name string
		l    *resil.RateLimiter
	}{
		{"local", resil.NewRateLimiter(policy)},
		{"fleet", s.RateLimiter("bench", policy)},
	} {
		p := resil.New[int]().RateLimit(bc.l)
		ctx := context.Background()
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Run(ctx, ok); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := p.Run(ctx, ok); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
