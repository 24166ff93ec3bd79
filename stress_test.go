package resil_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/require"
)

// validTransition is every move a breaker may make.
var validTransition = map[[2]resil.BreakerState]bool{
	{resil.StateClosed, resil.StateOpen}:     true,
	{resil.StateOpen, resil.StateHalfOpen}:   true,
	{resil.StateHalfOpen, resil.StateOpen}:   true,
	{resil.StateHalfOpen, resil.StateClosed}: true,
}

type stressPanic struct{ g, i int }

// TestStressBreakerAndPipeline hammers one breaker, shared by a bare
// pipeline and a Timeout/Retry/Breaker/Bulkhead/Fallback pipeline, from many
// goroutines in real time, with failure bursts that make it open, half-open
// and close again while calls of every outcome (success, failure,
// Permanent, context.Canceled, panic) and State() run concurrently. Run it
// with -race (.ci/run does, -count=3). It checks that the transitions
// reported form one valid chain in order, that every call is a success, a
// failure, ignored or a rejection, that every panic reaches its caller with
// its value, that the breaker ends in the state last reported, and that
// the bulkhead ends with every slot free.
func TestStressBreakerAndPipeline(t *testing.T) {
	goroutines, calls := 16, 3000
	if testing.Short() {
		calls = 500
	}
	var (
		mu          sync.Mutex
		transitions [][2]resil.BreakerState
		kinds       = map[[2]resil.BreakerState]bool{}
		allKinds    atomic.Bool // every kind of transition was reported
	)
	b := resil.NewBreaker(resil.BreakerPolicy{
		MinCalls:      5,
		Window:        20 * time.Millisecond,
		OpenFor:       time.Millisecond,
		HalfOpenCalls: 3,
		OnStateChange: func(from, to resil.BreakerState) {
			mu.Lock()
			transitions = append(transitions, [2]resil.BreakerState{from, to})
			kinds[[2]resil.BreakerState{from, to}] = true
			allKinds.Store(len(kinds) == len(validTransition))
			mu.Unlock()
		},
	})
	// Whether a failure burst trips the breaker again, and whether a
	// half-open period ends open or closed, depends on how the goroutines
	// are scheduled (with -cpu 1, the trials of a run may all succeed).
	// After their calls, the callers go on phase by phase until every kind
	// of transition has been reported, for 10s at most.
	hard := time.Now().Add(10 * time.Second)
	more := func(i int) bool {
		if i < calls || i%100 != 0 {
			return true // the calls, then the phase under way
		}
		return !allKinds.Load() && time.Now().Before(hard)
	}
	bare := resil.New[int]().Breaker(b)
	bh := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 3, MaxWait: time.Millisecond})
	var fallbacks atomic.Int64
	full := resil.New[int]().
		Timeout(time.Second).
		Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}).
		Breaker(b).
		Bulkhead(bh).
		Fallback(func(_ context.Context, err error) (int, error) {
			fallbacks.Add(1)
			return -1, err
		})

	var successes, failures, ignored, rejections, panics, recovered, total atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; more(i); i++ {
				p := bare
				if g%2 == 1 {
					p = full
				}
				failP := 10
				if (i/100)%3 == 0 {
					failP = 80 // a burst of failures: the breaker opens
				}
				r := rng.IntN(100)
				if r < 2 {
					b.State()
				}
				ran := 0
				var fnErr error
				total.Add(1)
				func() {
					defer func() {
						if v := recover(); v != nil {
							require.Equal(t, stressPanic{g, i}, v)
							recovered.Add(1)
						}
					}()
					_, err := p.Run(context.Background(), func(context.Context) (int, error) {
						ran++
						switch {
						case r < failP:
							fnErr = errFlaky
						case r < failP+3:
							fnErr = resil.Permanent(errFlaky)
						case r < failP+6:
							fnErr = context.Canceled
						case r < failP+8:
							panics.Add(1)
							panic(stressPanic{g, i})
						default:
							return i, nil
						}
						return 0, fnErr
					})
					switch {
					case ran == 0:
						if !errors.Is(err, resil.ErrBulkheadFull) {
							require.ErrorIs(t, err, resil.ErrBreakerOpen)
						}
						rejections.Add(1)
					case err == nil:
						successes.Add(1)
					case fnErr == errFlaky:
						failures.Add(1)
					default:
						ignored.Add(1)
					}
				}()
				if i%100 == 99 {
					// A real sleep between phases: it outlasts OpenFor, so
					// the next phase finds the breaker ready for trials
					// however fast or slow the machine runs the calls.
					time.Sleep(2 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()

	require.Equal(t, total.Load(), successes.Load()+failures.Load()+ignored.Load()+rejections.Load()+recovered.Load())
	require.Equal(t, panics.Load(), recovered.Load(), "every panic reached its caller")
	final := b.State()
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, transitions)
	prev := resil.StateClosed
	for i, tr := range transitions {
		require.Equal(t, prev, tr[0], "transition %d starts where the last ended", i)
		require.True(t, validTransition[tr], "transition %d: %v -> %v", i, tr[0], tr[1])
		prev = tr[1]
	}
	require.Equal(t, prev, final)
	// Every bulkhead slot came back: 3 calls hold one each at once.
	var holding, refused atomic.Int64
	release := make(chan struct{})
	var holders sync.WaitGroup
	for range 3 {
		holders.Go(func() {
			_, err := resil.New[int]().Bulkhead(bh).Run(context.Background(), func(context.Context) (int, error) {
				holding.Add(1)
				<-release
				return 0, nil
			})
			if err != nil {
				refused.Add(1)
			}
		})
	}
	for holding.Load()+refused.Load() < 3 {
		runtime.Gosched()
	}
	close(release)
	holders.Wait()
	require.Equal(t, int64(3), holding.Load(), "every slot is free")
	t.Logf("%d calls: %d successes, %d failures, %d ignored, %d panics, %d rejected, %d transitions, %d fallbacks",
		total.Load(), successes.Load(), failures.Load(), ignored.Load(), recovered.Load(), rejections.Load(), len(transitions), fallbacks.Load())
	seen := map[[2]resil.BreakerState]bool{}
	for _, tr := range transitions {
		seen[tr] = true
	}
	require.Len(t, seen, len(validTransition), "every kind of transition happened while hammered: %v", seen)
}

// TestNoLeaks runs 100,000 calls through each stage, and through all of
// them, under one long-lived parent context, and shows that the goroutine
// count comes back to its baseline and that heap objects (after GC) do not
// grow with the number of calls: the count after 100,000 calls is within a
// small tolerance of the count after 10,000. A stage that registered a
// child context with the parent without removing it, or left a timer or a
// goroutine per call, would add ~90,000 objects.
func TestNoLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 calls per stage")
	}
	const (
		warm      = 10_000
		calls     = 100_000
		tolerance = 2_000 // objects; a per-call leak adds >= 90,000
	)
	// fn fails every third call (once per call, so Retry's second attempt
	// succeeds after a real timer wait) and panics never. Every other call
	// looks at its context's Done channel, as I/O would (which arms a
	// Timeout stage's timer); the rest only ask Err.
	fn := func(i int) func(context.Context) (int, error) {
		attempt := 0
		return func(ctx context.Context) (int, error) {
			attempt++
			if i%2 == 0 {
				select {
				case <-ctx.Done():
					return 0, ctx.Err()
				default:
				}
			}
			if i%3 == 0 && attempt == 1 {
				return 0, errFlaky
			}
			return i, ctx.Err()
		}
	}
	fallback := func(context.Context, error) (int, error) { return -1, nil }
	stages := []struct {
		name string
		p    func() resil.Pipeline[int]
	}{
		{"Timeout", func() resil.Pipeline[int] { return resil.New[int]().Timeout(time.Hour) }},
		{"Retry", func() resil.Pipeline[int] {
			return resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(time.Millisecond)})
		}},
		{"Breaker", func() resil.Pipeline[int] {
			return resil.New[int]().Breaker(resil.NewBreaker(resil.BreakerPolicy{MinCalls: 3, FailureRatio: 0.3, OpenFor: time.Millisecond}))
		}},
		{"Fallback", func() resil.Pipeline[int] { return resil.New[int]().Fallback(fallback) }},
		{"Bulkhead", func() resil.Pipeline[int] {
			return resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1, MaxWait: time.Second}))
		}},
		{"RateLimit", func() resil.Pipeline[int] {
			// 1000/s against calls that come faster: many wait, on a timer.
			return resil.New[int]().RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1000, Burst: 10, MaxWait: 10 * time.Millisecond}))
		}},
		{"Hedge", func() resil.Pipeline[int] {
			// Every third call fails at once and another attempt starts
			// 1ms later, on a goroutine of its own, as the first did.
			return resil.New[int]().Hedge(resil.HedgePolicy{Delay: time.Millisecond})
		}},
		{"Chaos", func() resil.Pipeline[int] {
			return resil.New[int]().Chaos(resil.ChaosPolicy{FaultRate: 0.1, LatencyRate: 0.5, Latency: time.Millisecond, Seed: 1})
		}},
		{"Retry with a budget", func() resil.Pipeline[int] {
			return resil.New[int]().Retry(resil.RetryPolicy{
				MaxAttempts: 2,
				Backoff:     resil.Constant(time.Millisecond),
				Budget:      resil.NewRetryBudget(resil.RetryBudgetPolicy{}),
			})
		}},
		{"all", func() resil.Pipeline[int] {
			return resil.New[int]().
				Timeout(time.Hour).
				Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(time.Millisecond)}).
				Breaker(resil.NewBreaker(resil.BreakerPolicy{MinCalls: 3, FailureRatio: 0.3, OpenFor: time.Millisecond})).
				Timeout(time.Hour).
				Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1})).
				RateLimit(resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1000, Burst: 10, MaxWait: 10 * time.Millisecond})).
				Chaos(resil.ChaosPolicy{FaultRate: 0.1, LatencyRate: 0.5, Latency: time.Millisecond, Seed: 1}).
				Hedge(resil.HedgePolicy{Delay: time.Millisecond}).
				Fallback(fallback)
		}},
	}
	heapObjects := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapObjects
	}
	for _, st := range stages {
		t.Run(st.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { // fake time: the waits cost nothing
				baseline := bubbleGoroutines()
				parent, cancel := context.WithCancel(context.Background())
				defer cancel()
				p := st.p()
				run := func(from, to int) {
					for i := from; i < to; i++ {
						_, _ = p.Run(parent, fn(i))
						if i%100 == 0 {
							time.Sleep(time.Millisecond) // lets an open breaker half-open
						}
					}
				}
				run(0, warm)
				synctest.Wait() // hedged attempts that lost may still be finishing
				atWarm := heapObjects()
				run(warm, calls)
				synctest.Wait()
				atEnd := heapObjects()
				t.Logf("heap objects after %d calls: %d; after %d: %d", warm, atWarm, calls, atEnd)
				require.Less(t, int64(atEnd)-int64(atWarm), int64(tolerance), "heap objects grow with calls")
				require.LessOrEqual(t, bubbleGoroutines(), baseline, "goroutines back to the baseline")
			})
		})
	}
}
