package resil_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/resil-go/resil"
)

// Benchmarks of the stages beyond the core: Hedge, RetryBudget, Chaos.
// Compare the sub-benchmarks of one run (benchstat), not numbers across
// machines.

func BenchmarkRetryBudget(b *testing.B) {
	ctx := context.Background()
	ok := func(context.Context) (int, error) { return 1, nil }
	budget := resil.NewRetryBudget(resil.RetryBudgetPolicy{MinPerSecond: 1e12})
	cases := []struct {
		name string
		p    resil.Pipeline[int]
	}{
		{"none", resil.New[int]().Retry(resil.RetryPolicy{})},
		{"budget", resil.New[int]().Retry(resil.RetryPolicy{Budget: budget})},
	}
	for _, c := range cases {
		b.Run(c.name+"/success", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = c.p.Run(ctx, ok)
			}
		})
		b.Run(c.name+"/success-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, _ = c.p.Run(ctx, ok)
				}
			})
		})
	}
	flaky := errors.New("flaky")
	b.Run("budget/one-retry", func(b *testing.B) {
		p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0), Budget: budget})
		b.ReportAllocs()
		n := 0
		fn := func(context.Context) (int, error) {
			if n++; n%2 == 1 {
				return 0, flaky
			}
			return 1, nil
		}
		for b.Loop() {
			_, _ = p.Run(ctx, fn)
		}
	})
}

func BenchmarkChaos(b *testing.B) {
	ctx := context.Background()
	ok := func(context.Context) (int, error) { return 1, nil }
	cases := []struct {
		name string
		p    resil.Pipeline[int]
	}{
		{"bare", resil.New[int]()},
		// A stage that does nothing on success, for the cost of any stage.
		{"fallback", resil.New[int]().Fallback(func(context.Context, error) (int, error) { return 0, nil })},
		{"zero-rates", resil.New[int]().Chaos(resil.ChaosPolicy{})},
		{"fault-0.5", resil.New[int]().Chaos(resil.ChaosPolicy{FaultRate: 0.5})},
		{"fault-0.5-seeded", resil.New[int]().Chaos(resil.ChaosPolicy{FaultRate: 0.5, Seed: 1})},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = c.p.Run(ctx, ok)
			}
		})
		b.Run(c.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, _ = c.p.Run(ctx, ok)
				}
			})
		})
	}
}

func BenchmarkHedge(b *testing.B) {
	ok := func(context.Context) (int, error) { return 1, nil }
	b.Run("bare", func(b *testing.B) {
		p := resil.New[int]()
		b.ReportAllocs()
		for b.Loop() {
			_, _ = p.Run(context.Background(), ok)
		}
	})
	b.Run("inline", func(b *testing.B) {
		// The deadline comes before the first hedge could: no goroutine.
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: 2 * time.Hour})
		b.ReportAllocs()
		for b.Loop() {
			_, _ = p.Run(ctx, ok)
		}
	})
	b.Run("first-wins", func(b *testing.B) {
		// The first attempt answers at once: one goroutine, no hedge.
		p := resil.New[int]().Hedge(resil.HedgePolicy{Delay: time.Hour})
		b.ReportAllocs()
		for b.Loop() {
			_, _ = p.Run(context.Background(), ok)
		}
	})
}
