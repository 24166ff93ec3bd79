package resil_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/resil-go/resil"
)

// resil's own benchmarks: each core stage alone and in the combinations the
// README shows. The comparison with other libraries lives in the nested
// module benchmarks/ (see benchmarks/run.sh); these need no third-party code.

// okFn is the guarded call: it returns at once. It is a variable so that it
// is called through a function value, as a user's function is.
var okFn = func(context.Context) (int, error) { return 42, nil }

var errBench = errors.New("bench: flaky")

// failTwiceFn returns a call that fails twice with a preallocated error and
// then succeeds, in a cycle of three calls. Not safe for concurrent use.
func failTwiceFn() func(context.Context) (int, error) {
	n := 0
	return func(context.Context) (int, error) {
		n++
		if n%3 != 0 {
			return 0, errBench
		}
		return 42, nil
	}
}

func noWaitRetry() resil.RetryPolicy {
	return resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)}
}

func fallbackFn(context.Context, error) (int, error) { return -1, nil }

// watchFn succeeds at once after looking at its context's Done channel, as
// a call that waits on I/O does: it arms the Timeout stage's timer.
func watchFn(ctx context.Context) (int, error) {
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	default:
		return 42, nil
	}
}

// openBreaker returns a breaker that one failure opened for an hour.
func openBreaker(tb testing.TB) *resil.Breaker {
	b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour})
	_, _ = resil.New[int]().Breaker(b).Run(context.Background(), func(context.Context) (int, error) {
		return 0, errBench
	})
	if b.State() != resil.StateOpen {
		tb.Fatalf("breaker is %v, want open", b.State())
	}
	return b
}

// benchPipelines are the pipelines measured by BenchmarkRun and pinned by
// TestAllocs, with the call they run and whether the call must succeed.
func benchPipelines(tb testing.TB) []struct {
	name string
	p    resil.Pipeline[int]
	fn   func(context.Context) (int, error)
	ok   bool
} {
	return []struct {
		name string
		p    resil.Pipeline[int]
		fn   func(context.Context) (int, error)
		ok   bool
	}{
		{"Empty", resil.New[int](), okFn, true},
		{"Retry", resil.New[int]().Retry(noWaitRetry()), okFn, true},
		{"RetryFail2", resil.New[int]().Retry(noWaitRetry()), failTwiceFn(), true},
		{"Breaker", resil.New[int]().Breaker(resil.NewBreaker(resil.BreakerPolicy{})), okFn, true},
		{"BreakerOpen", resil.New[int]().Breaker(openBreaker(tb)), okFn, false},
		{"Fallback", resil.New[int]().Fallback(fallbackFn), okFn, true},
		{"Timeout", resil.New[int]().Timeout(time.Second), okFn, true},
		{"TimeoutWatched", resil.New[int]().Timeout(time.Second), watchFn, true},
		{"RetryBreaker", resil.New[int]().Retry(noWaitRetry()).Breaker(resil.NewBreaker(resil.BreakerPolicy{})), okFn, true},
		{"RetryBreakerFallback", resil.New[int]().Retry(noWaitRetry()).Breaker(resil.NewBreaker(resil.BreakerPolicy{})).Fallback(fallbackFn), okFn, true},
		{"TimeoutRetryTimeout", resil.New[int]().Timeout(time.Second).Retry(noWaitRetry()).Timeout(2 * time.Second), okFn, true},
		{"Full", resil.New[int]().Timeout(time.Second).Retry(noWaitRetry()).Breaker(resil.NewBreaker(resil.BreakerPolicy{})).Fallback(fallbackFn), okFn, true},
	}
}

func BenchmarkRun(b *testing.B) {
	ctx := context.Background()
	for _, c := range benchPipelines(b) {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v, err := c.p.Run(ctx, c.fn)
				if (err == nil) != c.ok || (c.ok && v != 42) {
					b.Fatalf("Run = (%d, %v), want ok=%v", v, err, c.ok)
				}
			}
		})
	}
}

// BenchmarkBreakerParallel: one closed breaker, successes from every P.
func BenchmarkBreakerParallel(b *testing.B) {
	ctx := context.Background()
	p := resil.New[int]().Breaker(resil.NewBreaker(resil.BreakerPolicy{}))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Run(ctx, okFn); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkBreakerState: State of an open breaker, the check a dashboard or
// health endpoint makes.
func BenchmarkBreakerState(b *testing.B) {
	br := openBreaker(b)
	b.ReportAllocs()
	for b.Loop() {
		if br.State() != resil.StateOpen {
			b.Fatal("not open")
		}
	}
}
