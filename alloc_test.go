package resil_test

import (
	"context"
	"testing"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAllocs pins the allocation budget of the hot paths: a call that needs
// no context of its own allocates nothing, a Timeout stage whose context
// nobody waits on allocates that context and nothing else, and one whose
// context is waited on allocates what context.WithTimeout does plus that
// context. A regression here fails go test, not just a benchmark nobody
// reads.
func TestAllocs(t *testing.T) {
	ctx := context.Background()
	floor := testing.AllocsPerRun(200, func() {
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		_, _ = okFn(tctx)
		cancel()
	})
	require.NotZero(t, floor, "context.WithTimeout allocates: the floor below must mean something")
	watchedFloor := testing.AllocsPerRun(200, func() {
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		_, _ = watchFn(tctx)
		cancel()
	})

	budget := map[string]float64{
		"Empty":                0,
		"Retry":                0,
		"RetryFail2":           0, // zero delay: no timer; the error is preallocated
		"Breaker":              0, // closed, success: a per-P counter, no lock, no clock
		"BreakerOpen":          0, // rejected: ErrBreakerOpen as it is
		"Fallback":             0,
		"RetryBreaker":         0,
		"RetryBreakerFallback": 0,
		"Timeout":              1,                // the context, never armed
		"TimeoutWatched":       watchedFloor + 1, // armed: context.WithDeadline, plus the context
		"TimeoutRetryTimeout":  2,                // two contexts, neither armed
		"Full":                 1,
	}
	for _, c := range benchPipelines(t) {
		t.Run(c.name, func(t *testing.T) {
			want, ok := budget[c.name]
			require.True(t, ok, "no budget for %s", c.name)
			var (
				v   int
				err error
			)
			got := testing.AllocsPerRun(200, func() { v, err = c.p.Run(ctx, c.fn) })
			if c.ok {
				require.NoError(t, err)
				require.Equal(t, 42, v)
			} else {
				require.Error(t, err)
			}
			assert.LessOrEqual(t, got, want, "allocs per Run of %s", c.name)
		})
	}
}

// TestAllocsHedgeInlineInsideTimeout: a Hedge whose deadline leaves no
// room for a hedge runs its one attempt inline and allocates nothing, also
// inside a Timeout, whose context it reads without arming it: the call
// costs what the Timeout alone does. (Real time: the deadline is an hour
// away and Delay two hours, so nothing here depends on timing.)
func TestAllocsHedgeInlineInsideTimeout(t *testing.T) {
	ctx := context.Background()
	timeoutOnly := resil.New[int]().Timeout(time.Hour)
	hedged := resil.New[int]().Hedge(resil.HedgePolicy{Delay: 2 * time.Hour}).Timeout(time.Hour)
	base := testing.AllocsPerRun(200, func() { _, _ = timeoutOnly.Run(ctx, okFn) })
	got := testing.AllocsPerRun(200, func() { _, _ = hedged.Run(ctx, okFn) })
	assert.Equal(t, float64(1), base, "the Timeout's context, never armed")
	assert.Equal(t, base, got, "the inline Hedge adds nothing")
}
