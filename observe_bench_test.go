package resil_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/resil-go/resil"
)

// The unobserved benchmarks pin the cost of a pipeline without an observer;
// the observed ones, that of a no-op observer on the same pipelines.

type nopObserver struct{}

func (nopObserver) Observe(context.Context, resil.Event) {}

func observedPipelines() []struct {
	name string
	p    resil.Pipeline[int]
	fn   func(context.Context) (int, error)
} {
	ok := func(context.Context) (int, error) { return 1, nil }
	// fails every other call, so a Retry runs two attempts per call.
	var n int
	flaky := func(context.Context) (int, error) {
		n++
		if n%2 == 1 {
			return 0, errBench
		}
		return 1, nil
	}
	noWait := resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)}
	br := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1 << 30})
	fb := func(context.Context, error) (int, error) { return 0, nil }
	return []struct {
		name string
		p    resil.Pipeline[int]
		fn   func(context.Context) (int, error)
	}{
		{"empty", resil.New[int](), ok},
		{"retry", resil.New[int]().Retry(noWait), ok},
		{"retry-flaky", resil.New[int]().Retry(noWait), flaky},
		{"breaker", resil.New[int]().Breaker(br), ok},
		{"fallback", resil.New[int]().Fallback(fb), ok},
		{"timeout", resil.New[int]().Timeout(time.Second), ok},
		{"bulkhead", resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1 << 20})), ok},
		{"ratelimit", resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1e12, Burst: 1 << 30})), ok},
		{"all", resil.New[int]().Timeout(time.Second).Retry(noWait).Breaker(br).Fallback(fb), ok},
	}
}

func BenchmarkUnobserved(b *testing.B) {
	ctx := context.Background()
	for _, c := range observedPipelines() {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = c.p.Run(ctx, c.fn)
			}
		})
	}
}

func BenchmarkSlogObserver(b *testing.B) {
	ctx := context.Background()
	ok := func(context.Context) (int, error) { return 1, nil }
	for _, c := range []struct {
		name  string
		level slog.Level
	}{{"disabled", slog.LevelInfo}, {"enabled", slog.LevelDebug}} {
		l := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: c.level}))
		p := resil.New[int]().Named("p").Observe(resil.SlogObserver(l))
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = p.Run(ctx, ok)
			}
		})
	}
}
