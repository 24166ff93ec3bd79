// Command limits shows a bulkhead and a rate limiter at work: calls turned
// away when every slot is taken, calls queued for a slot, a token bucket's
// burst and refill, and a Retry that waits exactly as long as the limiter
// says. It runs in well under a second and prints the same output every
// time.
package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/resil-go/resil"
)

func main() {
	ctx := context.Background()
	bulkheadReject(ctx)
	bulkheadQueue(ctx)
	rateLimitBurst(ctx)
	rateLimitRetry(ctx)
}

// bulkheadReject: two slots, no queue. While two calls run, the others are
// turned away at once, without reaching the dependency.
func bulkheadReject(ctx context.Context) {
	fmt.Println("bulkhead, 2 slots, no queue:")
	p := resil.New[string]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 2}))

	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := 1; i <= 2; i++ {
		entered := make(chan struct{})
		wg.Go(func() {
			_, _ = p.Run(ctx, func(context.Context) (string, error) {
				close(entered)
				<-release // a slow dependency
				return "done", nil
			})
		})
		<-entered
		fmt.Printf("  call %d: running\n", i)
	}
	for i := 3; i <= 4; i++ {
		_, err := p.Run(ctx, func(context.Context) (string, error) { return "never", nil })
		fmt.Printf("  call %d: %v (transient: %t)\n", i, err, resil.IsTransient(err))
	}
	close(release)
	wg.Wait()
	_, err := p.Run(ctx, func(context.Context) (string, error) { return "done", nil })
	fmt.Printf("  after calls 1 and 2 returned, call 5: err=%v\n", err)
}

// bulkheadQueue: two slots and a queue. Six calls of 50ms each arrive
// together; they take turns, never more than two at once, and all are
// served.
func bulkheadQueue(ctx context.Context) {
	fmt.Println("bulkhead, 2 slots, queue up to 1s:")
	p := resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 2, MaxWait: time.Second}))

	var running, peak, served atomic.Int32
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			_, err := p.Run(ctx, func(context.Context) (int, error) {
				n := running.Add(1)
				for m := peak.Load(); n > m && !peak.CompareAndSwap(m, n); m = peak.Load() {
				}
				time.Sleep(50 * time.Millisecond)
				running.Add(-1)
				return 0, nil
			})
			if err == nil {
				served.Add(1)
			}
		})
	}
	wg.Wait()
	fmt.Printf("  6 calls: %d served, at most %d at once\n", served.Load(), peak.Load())
}

// rateLimitBurst: 10 calls/s with a burst of 3. Five calls at once: the
// full bucket lets three through; the others are rejected, told when a
// token will be there, and take none.
func rateLimitBurst(ctx context.Context) {
	fmt.Println("rate limit, 10/s, burst 3:")
	p := resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 10, Burst: 3}))
	for i := 1; i <= 5; i++ {
		_, err := p.Run(ctx, func(context.Context) (int, error) { return i, nil })
		var hint interface{ RetryAfter() time.Duration }
		switch {
		case err == nil:
			fmt.Printf("  call %d: passed\n", i)
		case errors.Is(err, resil.ErrRateLimited) && errors.As(err, &hint):
			// Rounded for printing: the hint is exact to the nanosecond,
			// measured from this call.
			fmt.Printf("  call %d: rate limited, retry after %v\n", i, hint.RetryAfter().Round(10*time.Millisecond))
		}
	}
}

// rateLimitRetry: a Retry added after RateLimit waits exactly the
// limiter's RetryAfter instead of its backoff, so calls in a row pass one
// per 100ms, each at its first chance.
func rateLimitRetry(ctx context.Context) {
	fmt.Println("rate limit, 10/s, burst 1, behind a Retry:")
	start := time.Now()
	// Rounded for printing: the hint is exact, but timers fire a little
	// late on a busy machine.
	round := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	p := resil.New[int]().
		RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 10})).
		Retry(resil.RetryPolicy{
			MaxAttempts: 3,
			Backoff:     resil.Constant(time.Minute), // not used: the limiter's hint wins
			OnRetry: func(e resil.RetryEvent) {
				fmt.Printf("    attempt %d rate limited, Retry waits %v\n", e.Attempt, round(e.Delay))
			},
		})
	for i := 1; i <= 3; i++ {
		_, err := p.Run(ctx, func(context.Context) (int, error) { return i, nil })
		fmt.Printf("  call %d: err=%v at %v\n", i, err, time.Since(start).Round(50*time.Millisecond))
	}
}
