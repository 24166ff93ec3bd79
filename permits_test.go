package resil_test

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/require"
)

// exit is a way a call can leave the stages that hold something for it.
type exit int

const (
	exitReturn  exit = iota // fn returns a value
	exitError               // fn fails (transient) on every attempt
	exitIgnored             // fn fails with a Permanent error
	exitPanic               // fn panics
	exitGoexit              // fn calls runtime.Goexit
	exitCancel              // the caller's ctx ends while Retry waits
	exitTimeout             // every attempt runs into the per-attempt Timeout
)

var exits = []struct {
	name string
	exit exit
}{
	{"return", exitReturn},
	{"error", exitError},
	{"ignored error", exitIgnored},
	{"panic", exitPanic},
	{"Goexit", exitGoexit},
	{"cancellation while waiting", exitCancel},
	{"timeout", exitTimeout},
}

// holder is a stage that holds something (a permit, a timer, a slot) while
// the call it admitted runs.
type holder struct {
	name string
	// relaxed: the stage changes how many attempts run and how long they
	// take (Hedge adds attempts, Chaos adds latency), so only the outcome
	// is checked, not the attempt count or the time taken.
	relaxed bool
	// setup returns the pipeline stage to add outermost, after it has
	// brought the shared state where the test wants it (a half-open
	// breaker, ...), and check, which runs after the exit and must show
	// that nothing is held and that the next call is admitted.
	setup func(t *testing.T) (add func(resil.Pipeline[int]) resil.Pipeline[int], check func(t *testing.T, e exit))
}

// nextAdmitted runs one successful call through p and requires that it ran.
func nextAdmitted(t *testing.T, p resil.Pipeline[int]) {
	t.Helper()
	ran := false
	v, err := p.Run(context.Background(), func(context.Context) (int, error) { ran = true; return 1, nil })
	require.NoError(t, err)
	require.True(t, ran)
	require.Equal(t, 1, v)
}

func breakerHolder(halfOpen bool) holder {
	name := "breaker closed"
	if halfOpen {
		name = "breaker half-open permit"
	}
	return holder{name: name, setup: func(t *testing.T) (func(resil.Pipeline[int]) resil.Pipeline[int], func(*testing.T, exit)) {
		const openFor = 10 * time.Second
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1})
		only := resil.New[int]().Breaker(b)
		if halfOpen {
			_, _ = only.Run(context.Background(), func(context.Context) (int, error) { return 0, errFlaky })
			require.Equal(t, resil.StateOpen, b.State())
			time.Sleep(openFor)
			require.Equal(t, resil.StateHalfOpen, b.State())
		}
		add := func(p resil.Pipeline[int]) resil.Pipeline[int] { return p.Breaker(b) }
		check := func(t *testing.T, e exit) {
			want := resil.StateHalfOpen // an ignored outcome gives the trial's place back
			switch {
			case e == exitReturn && halfOpen:
				want = resil.StateClosed
			case e == exitError || e == exitTimeout:
				want = resil.StateOpen // a failure (re)opens it (MinCalls 1)
			case !halfOpen:
				want = resil.StateClosed
			}
			require.Equal(t, want, b.State())
			if want == resil.StateOpen {
				_, err := only.Run(context.Background(), func(context.Context) (int, error) { return 0, nil })
				require.ErrorIs(t, err, resil.ErrBreakerOpen)
				time.Sleep(openFor)
			}
			// With HalfOpenCalls 1, a lost permit would reject this call.
			nextAdmitted(t, only)
			require.Equal(t, resil.StateClosed, b.State())
		}
		return add, check
	}}
}

// bulkheadHolder: one slot, no queue; a slot kept after the call would
// reject the next call with ErrBulkheadFull.
var bulkheadHolder = holder{name: "bulkhead slot", setup: func(t *testing.T) (func(resil.Pipeline[int]) resil.Pipeline[int], func(*testing.T, exit)) {
	b := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1})
	add := func(p resil.Pipeline[int]) resil.Pipeline[int] { return p.Bulkhead(b) }
	check := func(t *testing.T, _ exit) {
		only := resil.New[int]().Bulkhead(b)
		nextAdmitted(t, only)
		// Both at once: the one slot is free, and the second is refused.
		finish := blocked(t, only)
		_, err := only.Run(context.Background(), func(context.Context) (int, error) { return 0, nil })
		require.ErrorIs(t, err, resil.ErrBulkheadFull)
		finish(nil)
		nextAdmitted(t, only)
	}
	return add, check
}}

// rateLimitHolder: a bucket of one token a second that a call never waits
// for. The call takes the token whatever its exit; no more is taken, so a
// second later the next call passes at once.
var rateLimitHolder = holder{name: "rate limiter token", setup: func(t *testing.T) (func(resil.Pipeline[int]) resil.Pipeline[int], func(*testing.T, exit)) {
	l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1, Burst: 1})
	add := func(p resil.Pipeline[int]) resil.Pipeline[int] { return p.RateLimit(l) }
	check := func(t *testing.T, _ exit) {
		only := resil.New[int]().RateLimit(l)
		time.Sleep(time.Second)
		nextAdmitted(t, only)
		_, err := only.Run(context.Background(), func(context.Context) (int, error) { return 0, nil })
		require.ErrorIs(t, err, resil.ErrRateLimited, "one token a second")
	}
	return add, check
}}

// hedgeHolder: the attempts run on goroutines of their own; none may be
// left behind, and a panic or Goexit in one must reach the caller.
var hedgeHolder = holder{name: "hedge goroutines", relaxed: true, setup: func(t *testing.T) (func(resil.Pipeline[int]) resil.Pipeline[int], func(*testing.T, exit)) {
	pol := resil.HedgePolicy{Delay: 10 * time.Second}
	add := func(p resil.Pipeline[int]) resil.Pipeline[int] { return p.Hedge(pol) }
	check := func(t *testing.T, _ exit) { nextAdmitted(t, resil.New[int]().Hedge(pol)) }
	return add, check
}}

// chaosHolder: every call first waits 500ms on a timer.
var chaosHolder = holder{name: "chaos latency timer", relaxed: true, setup: func(t *testing.T) (func(resil.Pipeline[int]) resil.Pipeline[int], func(*testing.T, exit)) {
	pol := resil.ChaosPolicy{LatencyRate: 1, Latency: 500 * time.Millisecond}
	add := func(p resil.Pipeline[int]) resil.Pipeline[int] { return p.Chaos(pol) }
	check := func(t *testing.T, _ exit) { nextAdmitted(t, resil.New[int]().Chaos(pol)) }
	return add, check
}}

// holders are the stages checked by TestPermitsReleasedOnEveryExit. The
// Timeout stage's timer is checked in every case, since every pipeline
// there has a per-attempt Timeout.
var holders = []holder{
	breakerHolder(true),
	breakerHolder(false),
	bulkheadHolder,
	rateLimitHolder,
	hedgeHolder,
	chaosHolder,
}

// TestPermitsReleasedOnEveryExit runs a call through
// Timeout(1m).Retry(2 attempts, 1h apart) and a holder stage, leaving by each
// exit in turn, and shows that afterwards the holder holds nothing (the next
// call is admitted), every context fn was given has been released (its
// timer stopped), no goroutine is left, and a panic reaches the caller with
// its original value.
func TestPermitsReleasedOnEveryExit(t *testing.T) {
	for _, h := range holders {
		for _, x := range exits {
			t.Run(h.name+"/"+x.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) { permitCase(t, h, x.exit) })
			})
		}
	}
}

type panicValue struct{ n int }

func permitCase(t *testing.T, h holder, e exit) {
	add, check := h.setup(t)
	p := add(resil.New[int]().
		Timeout(time.Minute).
		Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(time.Hour)}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if e == exitCancel {
		time.AfterFunc(time.Second, cancel)
	}
	goroutines := bubbleGoroutines()
	pv := &panicValue{42}
	var (
		mu        sync.Mutex // Hedge calls fn from several goroutines
		ctxs      []context.Context
		v         int
		err       error
		recovered any
		returned  bool
	)
	start := time.Now()
	done := make(chan struct{})
	go func() { // its own goroutine, so that Goexit ends only it
		defer close(done)
		defer func() { recovered = recover() }()
		v, err = p.Run(ctx, func(ctx context.Context) (int, error) {
			mu.Lock()
			ctxs = append(ctxs, ctx)
			mu.Unlock()
			switch e {
			case exitReturn:
				return 7, nil
			case exitError, exitCancel:
				return 0, errFlaky
			case exitIgnored:
				return 0, resil.Permanent(errFlaky)
			case exitPanic:
				panic(pv)
			case exitGoexit:
				runtime.Goexit()
			case exitTimeout:
				<-ctx.Done()
				return 0, ctx.Err()
			}
			panic("unreachable")
		})
		returned = true
	}()
	<-done
	elapsed := time.Since(start)

	mu.Lock()
	for i, c := range ctxs {
		require.Error(t, c.Err(), "the context of attempt %d is released before Run returns", i+1)
	}
	mu.Unlock()
	checkOutcome(t, e, h.relaxed, outcome{v: v, err: err, recovered: recovered, returned: returned, pv: pv, attempts: len(ctxs), elapsed: elapsed})
	synctest.Wait()
	// At most: a goroutine of an earlier test may still be on its way out.
	require.LessOrEqual(t, bubbleGoroutines(), goroutines, "no goroutine is left behind")
	check(t, e)
}

// outcome is how a call of permitCase ended.
type outcome struct {
	v         int
	err       error
	recovered any
	returned  bool
	pv        *panicValue
	attempts  int
	elapsed   time.Duration
}

// checkOutcome checks that the call ended the way exit e makes it end;
// relaxed skips the attempt count and the time taken.
func checkOutcome(t *testing.T, e exit, relaxed bool, o outcome) {
	t.Helper()
	v, err, recovered, returned, pv, elapsed := o.v, o.err, o.recovered, o.returned, o.pv, o.elapsed
	attempts := func(n int) {
		if !relaxed {
			require.Equal(t, n, o.attempts, "attempts")
		}
	}
	took := func(d time.Duration) {
		if !relaxed {
			require.Equal(t, d, elapsed)
		}
	}
	switch e {
	case exitReturn:
		require.True(t, returned)
		require.NoError(t, err)
		require.Equal(t, 7, v)
		attempts(1)
	case exitError:
		var re *resil.RetryError
		require.ErrorAs(t, err, &re)
		require.Equal(t, 2, re.Attempts)
		require.ErrorIs(t, err, errFlaky)
		took(time.Hour)
	case exitIgnored:
		require.ErrorIs(t, err, errFlaky)
		attempts(1)
	case exitPanic:
		require.False(t, returned)
		require.True(t, recovered == any(pv), "the panic reaches the caller with its original value, got %v", recovered)
		attempts(1)
	case exitGoexit:
		require.False(t, returned)
		require.Nil(t, recovered)
		attempts(1)
	case exitCancel:
		require.ErrorIs(t, err, context.Canceled)
		if !relaxed { // Hedge returns ctx.Err() itself
			require.ErrorIs(t, err, errFlaky)
		}
		took(time.Second)
		attempts(1)
	case exitTimeout:
		require.ErrorIs(t, err, resil.ErrTimeout)
		attempts(2)
		took(time.Minute + time.Hour + time.Minute)
	}
	if e != exitReturn {
		require.Zero(t, v)
	}
}

// TestHalfOpenAdmitsExactlyHalfOpenCalls holds 1000 goroutines at a barrier
// and releases them at once at a half-open breaker whose trials block: the
// most trials in flight is HalfOpenCalls, and every other call is rejected
// with ErrBreakerOpen at once, without waiting for the trials.
func TestHalfOpenAdmitsExactlyHalfOpenCalls(t *testing.T) {
	for _, limit := range []int{1, 3, 25} {
		t.Run("HalfOpenCalls="+strconv.Itoa(limit), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const callers = 1000
				b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: limit})
				p := resil.New[int]().Breaker(b)
				_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFlaky })
				time.Sleep(time.Second)

				var inFlight, maxInFlight, rejected, ran atomic.Int64
				barrier, release := make(chan struct{}), make(chan struct{})
				var wg sync.WaitGroup
				start := time.Now()
				for range callers {
					wg.Go(func() {
						<-barrier
						_, err := p.Run(context.Background(), func(context.Context) (int, error) {
							ran.Add(1)
							n := inFlight.Add(1)
							for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
							}
							<-release
							inFlight.Add(-1)
							return 1, nil
						})
						if err != nil {
							require.ErrorIs(t, err, resil.ErrBreakerOpen)
							rejected.Add(1)
						}
					})
				}
				synctest.Wait() // all at the barrier
				close(barrier)
				synctest.Wait() // the rejected have returned; the trials block
				require.Equal(t, int64(limit), maxInFlight.Load())
				require.Equal(t, int64(limit), inFlight.Load())
				require.Equal(t, int64(callers-limit), rejected.Load())
				require.Zero(t, time.Since(start), "the rejected calls returned at once")
				require.Equal(t, resil.StateHalfOpen, b.State())
				close(release)
				wg.Wait()
				require.Equal(t, int64(limit), ran.Load())
				require.Equal(t, resil.StateClosed, b.State())
			})
		})
	}
}

// blocked starts a call through p whose fn blocks until the returned
// function is called with the error to return (nil for success); it
// returns once fn is running.
func blocked(t *testing.T, p resil.Pipeline[int]) (finish func(error)) {
	t.Helper()
	started, result, done := make(chan struct{}), make(chan error), make(chan struct{})
	go func() {
		defer close(done)
		_, _ = p.Run(context.Background(), func(context.Context) (int, error) {
			close(started)
			return 0, <-result
		})
	}()
	<-started
	return func(err error) { result <- err; <-done }
}

// TestBreakerGenerationCheck: the outcome of a call admitted before a
// transition does not move the state the breaker is in when it returns.
func TestBreakerGenerationCheck(t *testing.T) {
	fail := func(context.Context) (int, error) { return 0, errFlaky }
	t.Run("closed-era failure does not reopen half-open", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 2, FailureRatio: 1, OpenFor: time.Second})
			p := resil.New[int]().Breaker(b)
			finish := blocked(t, p) // admitted closed
			_, _ = p.Run(context.Background(), fail)
			_, _ = p.Run(context.Background(), fail)
			require.Equal(t, resil.StateOpen, b.State())
			time.Sleep(time.Second)
			require.Equal(t, resil.StateHalfOpen, b.State())
			finish(errFlaky)
			require.Equal(t, resil.StateHalfOpen, b.State())
			nextAdmitted(t, p) // the trial is still free and closes it
			require.Equal(t, resil.StateClosed, b.State())
		})
	})
	t.Run("closed-era success is not a trial", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: 2})
			p := resil.New[int]().Breaker(b)
			finish := blocked(t, p)
			_, _ = p.Run(context.Background(), fail)
			time.Sleep(time.Second)
			require.Equal(t, resil.StateHalfOpen, b.State())
			finish(nil)
			nextAdmitted(t, p)
			require.Equal(t, resil.StateHalfOpen, b.State(), "one trial of two has passed")
			nextAdmitted(t, p)
			require.Equal(t, resil.StateClosed, b.State())
		})
	})
	t.Run("trial of an earlier half-open does not close a later one", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: 2})
			p := resil.New[int]().Breaker(b)
			_, _ = p.Run(context.Background(), fail)
			time.Sleep(time.Second)
			trial1 := blocked(t, p)
			trial2 := blocked(t, p)
			trial1(errFlaky) // reopens
			require.Equal(t, resil.StateOpen, b.State())
			time.Sleep(time.Second)
			require.Equal(t, resil.StateHalfOpen, b.State())
			trial2(nil) // a trial of the previous half-open: must not count
			nextAdmitted(t, p)
			require.Equal(t, resil.StateHalfOpen, b.State(), "only one trial of this half-open has passed")
			nextAdmitted(t, p)
			require.Equal(t, resil.StateClosed, b.State())
		})
	})
	t.Run("closed-era outcomes do not count in a later closed window", func(t *testing.T) {
		for _, tc := range []struct {
			name     string
			minCalls int
			late     error
		}{
			{"success", 2, nil},      // counted, it would make 1 failure of 2 calls trip
			{"failure", 1, errFlaky}, // counted, it would trip at once
		} {
			t.Run(tc.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: tc.minCalls, FailureRatio: 0.5, OpenFor: time.Second})
					p := resil.New[int]().Breaker(b)
					finish := blocked(t, p)
					for b.State() == resil.StateClosed {
						_, _ = p.Run(context.Background(), fail)
					}
					time.Sleep(time.Second)
					nextAdmitted(t, p) // the trial closes it
					require.Equal(t, resil.StateClosed, b.State())
					finish(tc.late)
					require.Equal(t, resil.StateClosed, b.State())
					if tc.late == nil {
						_, _ = p.Run(context.Background(), fail)
						require.Equal(t, resil.StateClosed, b.State(), "1 failure in 1 call is below MinCalls 2")
					}
				})
			})
		}
	})
}

// TestWaitersGiveBack: a call that waits in a stage (for a bulkhead slot,
// for its turn at a rate limiter) and whose context ends during the wait
// returns at once with ctx.Err(), never runs fn, and leaves nothing behind:
// the next call is admitted without waiting, as if it had never queued.
func TestWaitersGiveBack(t *testing.T) {
	ends := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(500*time.Millisecond, cancel)
			return ctx, cancel
		}},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 500*time.Millisecond)
		}},
	}
	run := func(t *testing.T, p resil.Pipeline[int], ctx context.Context) (time.Duration, error) {
		t.Helper()
		start := time.Now()
		_, err := p.Run(ctx, func(context.Context) (int, error) {
			t.Error("fn ran for a call that never got in")
			return 0, nil
		})
		return time.Since(start), err
	}
	for _, end := range ends {
		t.Run("bulkhead queue/"+end.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1, MaxWait: time.Hour})
				p := resil.New[int]().Bulkhead(b)
				finish := blocked(t, p) // holds the one slot
				ctx, cancel := end.ctx()
				defer cancel()
				waited, err := run(t, p, ctx)
				require.ErrorIs(t, err, ctx.Err())
				require.Equal(t, 500*time.Millisecond, waited)
				finish(nil)
				start := time.Now()
				nextAdmitted(t, p) // a ghost in the queue would take the slot
				require.Zero(t, time.Since(start))
			})
		})
		t.Run("rate limiter turn/"+end.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := resil.NewRateLimiter(resil.RateLimitPolicy{Rate: 1, Burst: 1, MaxWait: time.Hour})
				p := resil.New[int]().RateLimit(l)
				nextAdmitted(t, p) // takes the token; the next turn is at 1s
				ctx, cancel := end.ctx()
				defer cancel()
				waited, err := run(t, p, ctx)
				if end.name == "deadline" {
					// The turn lies beyond the deadline: refused at once,
					// taking nothing.
					require.ErrorIs(t, err, resil.ErrRateLimited)
					require.Zero(t, waited)
					time.Sleep(500 * time.Millisecond)
				} else {
					require.ErrorIs(t, err, context.Canceled)
					require.Equal(t, 500*time.Millisecond, waited)
				}
				time.Sleep(500 * time.Millisecond) // now at 1s: the turn given back is free
				start := time.Now()
				nextAdmitted(t, p)
				require.Zero(t, time.Since(start), "a turn kept by the cancelled call would delay this one to 2s")
			})
		})
	}
}
