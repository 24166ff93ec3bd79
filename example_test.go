package resil_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resiltest"
)

type User struct{ Name string }

// A typed pipeline around a flaky call: a per-attempt timeout, retries, a
// breaker guarding the whole sequence and a cached fallback.
func ExampleNew() {
	usersBreaker := resil.NewBreaker(resil.BreakerPolicy{})
	cache := map[int]*User{42: {Name: "cached Ada"}}

	users := resil.New[*User]().
		Timeout(2 * time.Second).
		Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)}).
		Breaker(usersBreaker).
		Fallback(func(ctx context.Context, err error) (*User, error) {
			if u, ok := cache[42]; ok {
				return u, nil
			}
			return nil, err
		})

	calls := 0
	u, err := users.Run(context.Background(), func(ctx context.Context) (*User, error) {
		calls++
		if calls < 3 {
			return nil, io.ErrUnexpectedEOF // transient: retried
		}
		return &User{Name: "Ada"}, nil
	})
	fmt.Println(u.Name, err, calls)

	u, err = users.Run(context.Background(), func(ctx context.Context) (*User, error) {
		return nil, resil.Permanent(errors.New("404 not found")) // not retried
	})
	fmt.Println(u.Name, err)
	// Output:
	// Ada <nil> 3
	// cached Ada <nil>
}

func ExamplePipeline_Timeout() {
	p := resil.New[string]().Timeout(10 * time.Millisecond)
	_, err := p.Run(context.Background(), func(ctx context.Context) (string, error) {
		<-ctx.Done() // a call that honours its context
		return "", ctx.Err()
	})
	fmt.Println(errors.Is(err, resil.ErrTimeout), errors.Is(err, context.DeadlineExceeded))
	// Output: true true
}

func ExamplePipeline_Retry() {
	p := resil.New[int]().Retry(resil.RetryPolicy{
		MaxAttempts: 4,
		Backoff:     resil.Exponential(time.Millisecond, 10*time.Millisecond),
		OnRetry: func(e resil.RetryEvent) {
			fmt.Printf("attempt %d failed (%v), waiting %v\n", e.Attempt, e.Err, e.Delay)
		},
	})
	_, err := p.Run(context.Background(), func(context.Context) (int, error) {
		return 0, io.ErrUnexpectedEOF
	})
	var re *resil.RetryError
	fmt.Println(errors.As(err, &re), re.Attempts, errors.Is(err, io.ErrUnexpectedEOF))
	// Output:
	// attempt 1 failed (unexpected EOF), waiting 1ms
	// attempt 2 failed (unexpected EOF), waiting 2ms
	// attempt 3 failed (unexpected EOF), waiting 4ms
	// true 4 true
}

func ExamplePipeline_Breaker() {
	b := resil.NewBreaker(resil.BreakerPolicy{
		MinCalls:      3,
		FailureRatio:  0.5,
		OpenFor:       time.Minute,
		OnStateChange: func(from, to resil.BreakerState) { fmt.Println(from, "→", to) },
	})
	p := resil.New[int]().Breaker(b)
	down := func(context.Context) (int, error) { return 0, errors.New("connection refused") }
	for range 3 {
		_, _ = p.Run(context.Background(), down)
	}
	_, err := p.Run(context.Background(), down)
	fmt.Println(err, b.State())
	// Output:
	// closed → open
	// resil: circuit breaker is open open
}

func ExamplePipeline_Fallback() {
	p := resil.New[string]().Fallback(func(ctx context.Context, err error) (string, error) {
		return "default greeting", nil
	})
	v, err := p.Run(context.Background(), func(context.Context) (string, error) {
		return "", errors.New("service unavailable")
	})
	fmt.Println(v, err)
	// Output: default greeting <nil>
}

func ExamplePermanent() {
	errBadRequest := errors.New("400 bad request")
	p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0)})
	dep := resiltest.Script[int](resiltest.Fail(resil.Permanent(errBadRequest), 1))
	_, err := p.Run(context.Background(), dep.Call)
	fmt.Println(dep.Count(), errors.Is(err, errBadRequest))
	// Output: 1 true
}

func ExampleTransient() {
	errBusy := errors.New("busy")
	p := resil.New[int]().Retry(resil.RetryPolicy{
		Backoff: resil.Constant(0),
		RetryIf: func(error) bool { return false }, // retry nothing unmarked
	})
	dep := resiltest.Script[int](resiltest.Fail(resil.Transient(errBusy), 1)) // marked: retried anyway
	_, err := p.Run(context.Background(), dep.Call)
	fmt.Println(dep.Count(), errors.Is(err, errBusy))
	// Output: 3 true
}

func ExampleIsTransient() {
	fmt.Println(resil.IsTransient(io.ErrUnexpectedEOF))
	fmt.Println(resil.IsTransient(context.Canceled))
	fmt.Println(resil.IsTransient(resil.ErrBreakerOpen))
	fmt.Println(resil.IsTransient(fmt.Errorf("get: %w", resil.Permanent(io.EOF))))
	// Output:
	// true
	// false
	// false
	// false
}

func ExampleExponential() {
	b := resil.Exponential(100*time.Millisecond, time.Second)
	for retry := 1; retry <= 5; retry++ {
		fmt.Print(b(retry), " ")
	}
	fmt.Println()
	// Output: 100ms 200ms 400ms 800ms 1s
}

func ExampleConstant() {
	b := resil.Constant(250 * time.Millisecond)
	fmt.Println(b(1), b(10))
	// Output: 250ms 250ms
}

func ExampleExponentialJitter() {
	b := resil.ExponentialJitter(100*time.Millisecond, time.Second)
	// Retry n waits a delay drawn uniformly from [0, 100ms·2^(n-1)], with
	// 1s as the cap: [0, 400ms] for the third, [0, 1s] from the fifth on.
	for _, c := range []struct {
		retry int
		top   time.Duration
	}{{3, 400 * time.Millisecond}, {5, time.Second}, {50, time.Second}} {
		lo, hi := time.Duration(1<<63-1), time.Duration(0)
		for range 1000 {
			d := b(c.retry)
			lo, hi = min(lo, d), max(hi, d)
		}
		// 1000 draws come near both ends of the range, and never past them.
		fmt.Printf("retry %d: lowest under %v: %v; highest over %v: %v; past %v: %v\n",
			c.retry, c.top/20, lo < c.top/20, c.top*19/20, hi > c.top*19/20, c.top, hi > c.top)
	}
	// Output:
	// retry 3: lowest under 20ms: true; highest over 380ms: true; past 400ms: false
	// retry 5: lowest under 50ms: true; highest over 950ms: true; past 1s: false
	// retry 50: lowest under 50ms: true; highest over 950ms: true; past 1s: false
}

func ExampleRetryPolicy_Validate() {
	err := resil.RetryPolicy{MaxAttempts: -1}.Validate()
	fmt.Println(err)
	// Output: resil: RetryPolicy.MaxAttempts must be >= 0, got -1
}

func ExampleBreakerPolicy_Validate() {
	err := resil.BreakerPolicy{FailureRatio: 2}.Validate()
	fmt.Println(err)
	// Output: resil: BreakerPolicy.FailureRatio must be in [0, 1], got 2
}
