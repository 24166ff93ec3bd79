package resil

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStressHalfOpenTrialsBounded hammers a breaker that keeps reopening
// (every trial fails) from many goroutines while another goroutine checks,
// under the breaker's lock, that the trials admitted in the current
// half-open period never exceed HalfOpenCalls nor fall below the trials
// that passed. (Trials of an earlier period still running are not counted:
// HalfOpenCalls is per period, and a trial that outlives OpenFor may
// overlap the next period's.)
func TestStressHalfOpenTrialsBounded(t *testing.T) {
	const limit = 2
	b := NewBreaker(BreakerPolicy{MinCalls: 1, OpenFor: 50 * time.Microsecond, HalfOpenCalls: limit})
	p := New[int]().Breaker(b)
	errTrial := errors.New("trial fails")
	var admitted atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var (
		maxTrials int
		seen      atomic.Bool // the checker has seen a trial in flight
	)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			b.mu.Lock()
			trials, passed := b.trials, b.passed
			b.mu.Unlock()
			maxTrials = max(maxTrials, trials)
			if trials > 0 {
				seen.Store(true)
			}
			if trials < 0 || trials > limit || passed > trials {
				t.Errorf("trials=%d passed=%d, limit %d", trials, passed, limit)
				return
			}
			runtime.Gosched()
		}
	})
	// Real time: the point is real concurrency. The callers go on past
	// 200ms until the checker has seen a trial in flight (on a loaded
	// machine it may be scheduled rarely), for 10s at most.
	deadline, hard := time.Now().Add(200*time.Millisecond), time.Now().Add(10*time.Second)
	more := func() bool {
		now := time.Now()
		return now.Before(deadline) || (!seen.Load() && now.Before(hard))
	}
	var callers sync.WaitGroup
	for g := range 8 {
		callers.Go(func() {
			for i := 0; more(); i++ {
				func() {
					defer func() { _ = recover() }()
					_, _ = p.Run(context.Background(), func(context.Context) (int, error) {
						admitted.Add(1)
						runtime.Gosched()
						if (g+i)%4 == 0 {
							panic(i) // ignored: gives the trial's place back
						}
						return 0, errTrial
					})
				}()
			}
		})
	}
	callers.Wait()
	close(stop)
	wg.Wait()
	require.Greater(t, admitted.Load(), int64(limit), "trials ran")
	require.Positive(t, maxTrials, "the checker saw trials in flight")
}
