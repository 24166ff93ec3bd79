package resil_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/resil-go/resil"
)

func ExamplePipeline_Hedge() {
	// The first request hangs; 10ms later a second one starts and answers
	// at once. The first is cancelled when the second wins.
	p := resil.New[string]().Hedge(resil.HedgePolicy{Delay: 10 * time.Millisecond})
	var attempt atomic.Int32
	cancelled := make(chan error, 1)
	v, err := p.Run(context.Background(), func(ctx context.Context) (string, error) {
		if attempt.Add(1) == 1 {
			<-ctx.Done()
			cancelled <- ctx.Err()
			return "", ctx.Err()
		}
		return "from the hedge", nil
	})
	fmt.Println(v, err)
	fmt.Println("first attempt:", <-cancelled)
	// Output:
	// from the hedge <nil>
	// first attempt: context canceled
}

func ExampleNewRetryBudget() {
	// Retries may add 20% to the calls, plus a reserve of 1 per 10s.
	budget := resil.NewRetryBudget(resil.RetryBudgetPolicy{Ratio: 0.2, MinPerSecond: 0.1})
	p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 5, Backoff: resil.Constant(0), Budget: budget})
	down := errors.New("connection refused")
	var perCall []int
	var last error
	for range 10 {
		attempts := 0
		_, last = p.Run(context.Background(), func(context.Context) (int, error) {
			attempts++
			return 0, down
		})
		perCall = append(perCall, attempts)
	}
	// Without the budget: 5 attempts per call, 50 in all.
	fmt.Println("attempts per call:", perCall)
	fmt.Println(last)
	fmt.Println(errors.Is(last, resil.ErrRetryBudgetExhausted), errors.Is(last, down))
	// Output:
	// attempts per call: [2 1 1 1 2 1 1 1 1 2]
	// resil: retry budget exhausted; gave up after 2 attempts: connection refused
	// true true
}

func ExamplePipeline_Chaos() {
	// Every call fails before reaching fn; a Retry outside sees the
	// injected fault as it would a real one.
	p := resil.New[int]().
		Chaos(resil.ChaosPolicy{FaultRate: 1}).
		Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)})
	called := false
	_, err := p.Run(context.Background(), func(context.Context) (int, error) {
		called = true
		return 1, nil
	})
	fmt.Println(err)
	fmt.Println("fn called:", called)
	// Output:
	// resil: gave up after 2 attempts: resil: injected fault
	// fn called: false
}
