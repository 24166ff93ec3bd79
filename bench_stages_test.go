package resil_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/resil-go/resil"
)

// BenchmarkBulkhead: a call that finds a free slot (the fast path).
func BenchmarkBulkhead(b *testing.B) {
	b.ReportAllocs()
	p := resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1}))
	ctx := context.Background()
	for b.Loop() {
		_, _ = p.Run(ctx, passFn)
	}
}

// BenchmarkBulkheadParallel: every P takes and gives back slots of one
// bulkhead that is never full.
func BenchmarkBulkheadParallel(b *testing.B) {
	b.ReportAllocs()
	p := resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1 << 20}))
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = p.Run(ctx, passFn)
		}
	})
}

// BenchmarkBulkheadParallelQueued: more goroutines than slots, so calls
// queue and slots are handed over (the slow path).
func BenchmarkBulkheadParallelQueued(b *testing.B) {
	b.ReportAllocs()
	p := resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1, MaxWait: time.Hour}))
	ctx := context.Background()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = p.Run(ctx, passFn)
		}
	})
}

// BenchmarkBulkheadRejected: a full bulkhead without a queue rejects.
func BenchmarkBulkheadRejected(b *testing.B) {
	b.ReportAllocs()
	p := resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1}))
	inner := func(ctx context.Context) (int, error) {
		for b.Loop() {
			_, _ = p.Run(ctx, passFn)
		}
		return 0, nil
	}
	_, _ = p.Run(context.Background(), inner) // holds the only slot
}

// BenchmarkRateLimit: a call that finds a token (the fast path).
func BenchmarkRateLimit(b *testing.B) {
	b.ReportAllocs()
	p := resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1e9, Burst: min(1<<40, math.MaxInt)}))
	ctx := context.Background()
	for b.Loop() {
		_, _ = p.Run(ctx, passFn)
	}
}

// BenchmarkRateLimitParallel: every P takes tokens from one limiter.
func BenchmarkRateLimitParallel(b *testing.B) {
	b.ReportAllocs()
	p := resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1e9, Burst: min(1<<40, math.MaxInt)}))
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = p.Run(ctx, passFn)
		}
	})
}

// BenchmarkRateLimitRejected: an empty bucket rejects; the error that
// carries RetryAfter is the one allocation.
func BenchmarkRateLimitRejected(b *testing.B) {
	b.ReportAllocs()
	p := resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1e-6}))
	ctx := context.Background()
	_, _ = p.Run(ctx, passFn) // spends the bucket
	for b.Loop() {
		_, _ = p.Run(ctx, passFn)
	}
}
