package resil_test

import (
	"context"
	"errors"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBulkheadPolicyValidate(t *testing.T) {
	cases := []struct {
		name   string
		policy resil.BulkheadPolicy
		want   string // "" means valid
	}{
		{"zero", resil.BulkheadPolicy{}, ""},
		{"all set", resil.BulkheadPolicy{MaxConcurrent: 3, MaxWait: time.Second}, ""},
		{"beyond int32 where int has 64 bits", resil.BulkheadPolicy{MaxConcurrent: min(1<<40, math.MaxInt)}, ""},
		{"negative max concurrent", resil.BulkheadPolicy{MaxConcurrent: -1}, "resil: BulkheadPolicy.MaxConcurrent must be >= 0, got -1"},
		{"negative max wait", resil.BulkheadPolicy{MaxWait: -time.Second}, "resil: BulkheadPolicy.MaxWait must be >= 0, got -1s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				assert.NotPanics(t, func() { resil.NewBulkhead(tc.policy) })
				return
			}
			require.EqualError(t, err, tc.want)
			assert.PanicsWithValue(t, tc.want, func() { resil.NewBulkhead(tc.policy) })
		})
	}
	t.Run("nil bulkhead", func(t *testing.T) {
		assert.PanicsWithValue(t, "resil: Bulkhead b must be non-nil, got nil", func() {
			resil.New[int]().Bulkhead(nil)
		})
	})
}

// hold runs a call through p on a new goroutine and returns once it is
// inside fn; the call returns when release is closed.
func hold(t *testing.T, wg *sync.WaitGroup, p resil.Pipeline[int], release <-chan struct{}) {
	t.Helper()
	entered := make(chan struct{})
	wg.Go(func() {
		_, err := p.Run(t.Context(), func(context.Context) (int, error) {
			close(entered)
			<-release
			return 0, nil
		})
		assert.NoError(t, err)
	})
	<-entered
}

func TestBulkheadDefaultLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{}))
		release := make(chan struct{})
		var wg sync.WaitGroup
		for range 10 {
			hold(t, &wg, p, release)
		}
		_, err := p.Run(t.Context(), passFn)
		require.ErrorIs(t, err, resil.ErrBulkheadFull)
		assert.Same(t, resil.ErrBulkheadFull, err, "returned as it is")
		assert.True(t, resil.IsTransient(err))
		close(release)
		wg.Wait()
		_, err = p.Run(t.Context(), passFn)
		require.NoError(t, err)
	})
}

// TestBulkheadFIFO: queued calls get freed slots in the order they queued,
// and a call that arrives when a slot is freed queues behind them.
func TestBulkheadFIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1, MaxWait: time.Hour}))
		var (
			mu    sync.Mutex
			order []int
		)
		record := func(i int) func(context.Context) (int, error) {
			return func(context.Context) (int, error) {
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				return i, nil
			}
		}
		release := make(chan struct{})
		entered := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			_, err := p.Run(t.Context(), func(context.Context) (int, error) {
				close(entered)
				<-release
				return 0, nil
			})
			assert.NoError(t, err)
			// Arrives as its slot is handed over: it must queue behind 1..5.
			_, err = p.Run(t.Context(), record(6))
			assert.NoError(t, err)
		})
		<-entered
		for i := 1; i <= 5; i++ {
			wg.Go(func() {
				_, err := p.Run(t.Context(), record(i))
				assert.NoError(t, err)
			})
			synctest.Wait() // i is queued before i+1 arrives
		}
		start := time.Now()
		close(release)
		wg.Wait()
		assert.Equal(t, []int{1, 2, 3, 4, 5, 6}, order)
		assert.Zero(t, time.Since(start), "slots are handed over without delay")
	})
}

func TestBulkheadMaxWait(t *testing.T) {
	for _, maxWait := range []time.Duration{0, time.Nanosecond, 100 * time.Millisecond} {
		t.Run(maxWait.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var log obsRecorder
				b := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 2, MaxWait: maxWait})
				p := resil.New[int]().Bulkhead(b).Observe(&log)
				release := make(chan struct{})
				var wg sync.WaitGroup
				hold(t, &wg, p, release)
				hold(t, &wg, p, release)
				start := time.Now()
				_, err := p.Run(t.Context(), func(context.Context) (int, error) {
					t.Error("fn ran without a slot")
					return 0, nil
				})
				require.ErrorIs(t, err, resil.ErrBulkheadFull)
				assert.Equal(t, maxWait, time.Since(start))
				rejected := log.kinds(resil.EventRejected)
				require.Len(t, rejected, 1)
				assert.ErrorIs(t, rejected[0].Err, resil.ErrBulkheadFull)

				// The timed-out call left the queue: a freed slot is free.
				close(release)
				wg.Wait()
				_, err = p.Run(t.Context(), passFn)
				require.NoError(t, err)
				assert.Equal(t, maxWait, time.Since(start))
			})
		})
	}
}

// TestBulkheadWaiterGetsSlotBeforeMaxWait: a slot freed during the wait is
// taken at once.
func TestBulkheadWaiterGetsSlotBeforeMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1, MaxWait: time.Second}))
		release := make(chan struct{})
		var wg sync.WaitGroup
		hold(t, &wg, p, release)
		start := time.Now()
		go func() {
			time.Sleep(300 * time.Millisecond)
			close(release)
		}()
		_, err := p.Run(t.Context(), passFn)
		require.NoError(t, err)
		assert.Equal(t, 300*time.Millisecond, time.Since(start))
		wg.Wait()
	})
}

// TestBulkheadCancelWhileWaiting: a waiter whose ctx ends returns ctx.Err()
// and gives up its place; the others keep their order.
func TestBulkheadCancelWhileWaiting(t *testing.T) {
	cases := []struct {
		name string
		ctx  func(parent context.Context) (context.Context, context.CancelFunc)
		want error
	}{
		{"cancel", func(p context.Context) (context.Context, context.CancelFunc) { return context.WithCancel(p) }, context.Canceled},
		{"deadline", func(p context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(p, 50*time.Millisecond)
		}, context.DeadlineExceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var log obsRecorder
				p := resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1, MaxWait: time.Second})).Observe(&log)
				release := make(chan struct{})
				var wg sync.WaitGroup
				hold(t, &wg, p, release)

				var (
					mu    sync.Mutex
					order []int
				)
				ctx, cancel := tc.ctx(t.Context())
				defer cancel()
				done := make(chan error, 1)
				for i := 1; i <= 3; i++ {
					c := t.Context()
					if i == 2 {
						c = ctx
					}
					wg.Go(func() {
						_, err := p.Run(c, func(context.Context) (int, error) {
							mu.Lock()
							order = append(order, i)
							mu.Unlock()
							return 0, nil
						})
						if i == 2 {
							done <- err
						} else {
							assert.NoError(t, err)
						}
					})
					synctest.Wait()
				}
				start := time.Now()
				if tc.want == context.Canceled {
					cancel()
				}
				err := <-done
				require.ErrorIs(t, err, tc.want)
				assert.Equal(t, err, ctx.Err(), "ctx.Err() as it is")
				if tc.want == context.DeadlineExceeded {
					assert.Equal(t, 50*time.Millisecond, time.Since(start))
				}
				close(release)
				wg.Wait()
				assert.Equal(t, []int{1, 3}, order)
				assert.Empty(t, log.kinds(resil.EventRejected), "leaving the queue is no rejection")
			})
		})
	}
}

// TestBulkheadReleasesSlot: however the call holding the only slot ends,
// the slot goes to the waiting call at once, and then is free again.
func TestBulkheadReleasesSlot(t *testing.T) {
	errBoom := errors.New("boom")
	cases := []struct {
		name    string
		timeout time.Duration // a Timeout stage inside the bulkhead; 0: none
		cancel  bool          // cancel the holder's ctx instead of releasing it
		fn      func(ctx context.Context) (int, error)
	}{
		{name: "return", fn: func(context.Context) (int, error) { return 1, nil }},
		{name: "error", fn: func(context.Context) (int, error) { return 0, errBoom }},
		{name: "panic", fn: func(context.Context) (int, error) { panic(errBoom) }},
		{name: "goexit", fn: func(context.Context) (int, error) { runtime.Goexit(); return 0, nil }},
		{name: "cancel", cancel: true, fn: func(ctx context.Context) (int, error) { <-ctx.Done(); return 0, ctx.Err() }},
		{name: "timeout", timeout: 10 * time.Millisecond, fn: func(ctx context.Context) (int, error) { <-ctx.Done(); return 0, ctx.Err() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1, MaxWait: time.Hour})
				p := resil.New[int]()
				if tc.timeout > 0 {
					p = p.Timeout(tc.timeout)
				}
				p = p.Bulkhead(b)

				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				release := make(chan struct{})
				entered := make(chan struct{})
				holderDone := make(chan struct{})
				go func() {
					defer close(holderDone)
					defer func() { _ = recover() }()
					_, _ = p.Run(ctx, func(ctx context.Context) (int, error) {
						close(entered)
						if !tc.cancel && tc.timeout == 0 {
							<-release
						}
						return tc.fn(ctx)
					})
				}()
				<-entered
				waiterIn := make(chan time.Time, 1)
				go func() {
					_, err := p.Run(t.Context(), func(context.Context) (int, error) {
						waiterIn <- time.Now()
						return 0, nil
					})
					assert.NoError(t, err)
				}()
				synctest.Wait() // the waiter is queued
				start := time.Now()
				if tc.cancel {
					cancel()
				} else {
					close(release)
				}
				<-holderDone
				ended := time.Now()
				assert.Equal(t, start.Add(tc.timeout), ended)
				assert.Equal(t, ended, <-waiterIn, "the slot went to the waiter at once")
				synctest.Wait()

				// Free again: a call passes without waiting.
				_, err := p.Run(t.Context(), passFn)
				require.NoError(t, err)
				assert.Equal(t, ended, time.Now())
			})
		})
	}
}

// TestBulkheadCap: many calls through two pipelines sharing a bulkhead
// never run more than MaxConcurrent at once, and all get through.
func TestBulkheadCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 7
		b := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: limit, MaxWait: time.Hour})
		p1 := resil.New[int]().Bulkhead(b)
		p2 := resil.New[string]().Bulkhead(b)
		var running, peak, done atomic.Int64
		enter := func(i int) {
			n := running.Add(1)
			for {
				m := peak.Load()
				if n <= m || peak.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Duration(i%5+1) * time.Millisecond)
			running.Add(-1)
			done.Add(1)
		}
		var wg sync.WaitGroup
		for i := range 200 {
			wg.Go(func() {
				var err error
				if i%2 == 0 {
					_, err = p1.Run(t.Context(), func(context.Context) (int, error) { enter(i); return 0, nil })
				} else {
					_, err = p2.Run(t.Context(), func(context.Context) (string, error) { enter(i); return "", nil })
				}
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		assert.Equal(t, int64(limit), peak.Load())
		assert.Equal(t, int64(200), done.Load())
	})
}

func TestBulkheadAllocs(t *testing.T) {
	ctx := context.Background()
	t.Run("free slot", func(t *testing.T) {
		p := resil.New[int]().Bulkhead(resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1}))
		allocs := testing.AllocsPerRun(1000, func() {
			if _, err := p.Run(ctx, passFn); err != nil {
				panic(err)
			}
		})
		assert.Zero(t, allocs)
	})
	t.Run("rejected without queue", func(t *testing.T) {
		b := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1})
		p := resil.New[int]().Bulkhead(b)
		inner := func(ctx context.Context) (int, error) { // built once
			_, err := p.Run(ctx, passFn) // the slot is taken: rejected
			if err != resil.ErrBulkheadFull {
				panic(err)
			}
			return 0, nil
		}
		allocs := testing.AllocsPerRun(1000, func() { _, _ = p.Run(ctx, inner) })
		assert.Zero(t, allocs)
	})
}

// TestBulkheadMaxWaitAtTheDeadline: when MaxWait ends at the instant the
// context's deadline comes, the call returns the context's error, every
// time (both timers fire at that instant, in no set order): the deadline
// counts as the end once it has come, as it does when a slot is handed
// over at it.
func TestBulkheadMaxWaitAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1, MaxWait: time.Second})
		p := resil.New[int]().Bulkhead(b)
		release := make(chan struct{})
		var wg sync.WaitGroup
		hold(t, &wg, p, release)
		defer wg.Wait()
		defer close(release)
		for i := range 50 {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			start := time.Now()
			_, err := p.Run(ctx, passFn)
			cancel()
			require.ErrorIs(t, err, context.DeadlineExceeded, "run %d", i)
			require.NotErrorIs(t, err, resil.ErrBulkheadFull, "run %d", i)
			require.Equal(t, time.Second, time.Since(start), "run %d", i)
		}
	})
}
