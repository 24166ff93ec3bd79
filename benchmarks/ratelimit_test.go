package benchmarks_test

// Rate limiting: resil's RateLimit stage against golang.org/x/time/rate.
//
// resil keeps the bucket as one atomic word (GCRA's theoretical arrival
// time) claimed with a compare-and-swap and reads the monotonic clock only;
// x/time/rate takes a mutex, reads time.Now (wall and monotonic) and does
// float arithmetic on tokens. The resil side runs through a whole pipeline
// (Run, the stage, fn); the x/time/rate side calls the limiter, then fn
// through the same function value (passFn), so neither gets fn inlined.
// The figures are in benchmarks/results.txt and the README's tables.
//
// Passing costs neither an allocation; resil's rejection allocates the
// 8-byte error that carries RetryAfter, which Allow does not report at all.

import (
	"context"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

func pass(context.Context) (int, error) { return 1, nil }

// passFn is pass as a function value, the way a pipeline calls it.
var passFn = pass

// Never empty: every call passes at once.
const (
	benchRate  = 1e9
	benchBurst = 1 << 40
)

func BenchmarkRateLimitPass(b *testing.B) {
	ctx := context.Background()
	b.Run("resil", func(b *testing.B) {
		b.ReportAllocs()
		p := resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: benchRate, Burst: benchBurst}))
		for b.Loop() {
			_, _ = p.Run(ctx, pass)
		}
	})
	b.Run("xrate-Allow", func(b *testing.B) {
		b.ReportAllocs()
		l := rate.NewLimiter(benchRate, benchBurst)
		for b.Loop() {
			if l.Allow() {
				_, _ = passFn(ctx)
			}
		}
	})
	b.Run("xrate-Wait", func(b *testing.B) {
		b.ReportAllocs()
		l := rate.NewLimiter(benchRate, benchBurst)
		for b.Loop() {
			if l.Wait(ctx) == nil {
				_, _ = passFn(ctx)
			}
		}
	})
}

func BenchmarkRateLimitPassParallel(b *testing.B) {
	ctx := context.Background()
	b.Run("resil", func(b *testing.B) {
		b.ReportAllocs()
		p := resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: benchRate, Burst: benchBurst}))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, _ = p.Run(ctx, pass)
			}
		})
	})
	b.Run("xrate-Allow", func(b *testing.B) {
		b.ReportAllocs()
		l := rate.NewLimiter(benchRate, benchBurst)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if l.Allow() {
					_, _ = passFn(ctx)
				}
			}
		})
	})
	b.Run("xrate-Wait", func(b *testing.B) {
		b.ReportAllocs()
		l := rate.NewLimiter(benchRate, benchBurst)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if l.Wait(ctx) == nil {
					_, _ = passFn(ctx)
				}
			}
		})
	})
}

// BenchmarkRateLimitReject: an empty bucket. resil's rejection carries the
// time until a call would pass; "xrate-Reserve" gets the same fact from
// x/time/rate (Reserve, Delay, Cancel), "xrate-Allow" only a no.
func BenchmarkRateLimitReject(b *testing.B) {
	ctx := context.Background()
	b.Run("resil", func(b *testing.B) {
		b.ReportAllocs()
		p := resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1e-6}))
		_, _ = p.Run(ctx, pass)
		for b.Loop() {
			_, _ = p.Run(ctx, pass)
		}
	})
	b.Run("xrate-Allow", func(b *testing.B) {
		b.ReportAllocs()
		l := rate.NewLimiter(1e-6, 1)
		l.Allow()
		for b.Loop() {
			if l.Allow() {
				b.Fatal("passed")
			}
		}
	})
	b.Run("xrate-Reserve", func(b *testing.B) {
		b.ReportAllocs()
		l := rate.NewLimiter(1e-6, 1)
		l.Allow()
		for b.Loop() {
			r := l.Reserve()
			if r.Delay() > 0 {
				r.Cancel()
			}
		}
	})
}

// TestRateLimitMatchesXRate asks both limiters at the same fake instants
// and checks that they admit the same calls and agree on the wait.
func TestRateLimitMatchesXRate(t *testing.T) {
	cases := []struct {
		rate  float64
		burst int
	}{{10, 1}, {10, 5}, {4, 3}, {0.5, 2}, {1000, 20}}
	for _, tc := range cases {
		t.Run("", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ours := resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: tc.rate, Burst: tc.burst}))
				theirs := rate.NewLimiter(rate.Limit(tc.rate), tc.burst)
				rng := rand.New(rand.NewPCG(1, uint64(tc.burst)))
				passed := 0
				for i := range 2000 {
					now := time.Now()
					_, err := ours.Run(t.Context(), pass)
					r := theirs.ReserveN(now, 1)
					wait := r.DelayFrom(now)
					if wait > 0 {
						r.CancelAt(now)
						require.ErrorIs(t, err, resil.ErrRateLimited, "call %d", i)
						var h interface{ RetryAfter() time.Duration }
						require.ErrorAs(t, err, &h)
						require.Equal(t, wait, h.RetryAfter(), "call %d", i)
					} else {
						require.NoError(t, err, "call %d", i)
						passed++
					}
					time.Sleep(time.Duration(rng.IntN(4)) * time.Second / time.Duration(4*tc.rate))
				}
				require.Positive(t, passed)
			})
		})
	}
}
