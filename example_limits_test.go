package resil_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/resil-go/resil"
)

func ExamplePipeline_Bulkhead() {
	// One slot, no queue: while a call holds the slot, others are turned
	// away at once.
	b := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1})
	p := resil.New[string]().Bulkhead(b)
	ctx := context.Background()

	v, err := p.Run(ctx, func(ctx context.Context) (string, error) {
		_, err := p.Run(ctx, func(context.Context) (string, error) { return "inner", nil })
		fmt.Println("while the slot is held:", err)
		return "outer", nil
	})
	fmt.Println(v, err)
	v, err = p.Run(ctx, func(context.Context) (string, error) { return "again", nil })
	fmt.Println(v, err)
	// Output:
	// while the slot is held: resil: bulkhead is full
	// outer <nil>
	// again <nil>
}

func ExamplePipeline_RateLimit() {
	// Two calls per second, in bursts of two: the third call at once is
	// rejected and told when a call would pass.
	l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 2, Burst: 2})
	p := resil.New[int]().RateLimit(l)
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		_, err := p.Run(ctx, func(context.Context) (int, error) { return i, nil })
		var hint interface{ RetryAfter() time.Duration }
		if errors.Is(err, resil.ErrRateLimited) && errors.As(err, &hint) {
			// Rounded: the hint is exact, measured from this call.
			fmt.Printf("call %d: rate limited, retry after %v\n", i, hint.RetryAfter().Round(100*time.Millisecond))
			continue
		}
		fmt.Printf("call %d: %v\n", i, err)
	}
	// Output:
	// call 1: <nil>
	// call 2: <nil>
	// call 3: rate limited, retry after 500ms
}

func ExampleBulkheadPolicy_Validate() {
	fmt.Println(resil.BulkheadPolicy{MaxConcurrent: -1}.Validate())
	// Output: resil: BulkheadPolicy.MaxConcurrent must be >= 0, got -1
}

func ExampleRateLimitPolicy_Validate() {
	fmt.Println(resil.RateLimitPolicy{}.Validate())
	// Output: resil: RateLimitPolicy.Rate must be > 0 and finite, got 0
}
