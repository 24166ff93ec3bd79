package resiltest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resiltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// spyTB records what an assertion reports.
type spyTB struct {
	helpers int
	errs    []string
}

func (s *spyTB) Helper() { s.helpers++ }

func (s *spyTB) Errorf(format string, args ...any) {
	s.errs = append(s.errs, fmt.Sprintf(format, args...))
}

var _ resiltest.TB = (*testing.T)(nil)

func TestAssertAttempts(t *testing.T) {
	dep := resiltest.Script[int](resiltest.Fail(io.EOF, 1), resiltest.Return(1))
	p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0)})
	_, err := p.Run(context.Background(), dep.Call)
	require.NoError(t, err)

	var ok spyTB
	assert.True(t, resiltest.AssertAttempts(&ok, dep, 2))
	assert.Empty(t, ok.errs)
	assert.Positive(t, ok.helpers)

	var bad spyTB
	assert.False(t, resiltest.AssertAttempts(&bad, dep, 3))
	assert.Equal(t, []string{"resiltest: want 3 attempts, got 2"}, bad.errs)
}

func TestAssertWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[int](resiltest.Fail(io.EOF, 3).After(time.Second), resiltest.Return(1))
		p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 4, Backoff: resil.Exponential(time.Second, time.Minute)})
		_, err := p.Run(t.Context(), dep.Call)
		require.NoError(t, err)
		assert.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}, resiltest.Waits(dep))

		var ok spyTB
		assert.True(t, resiltest.AssertWaits(&ok, dep, time.Second, 2*time.Second, 4*time.Second))
		assert.Empty(t, ok.errs)

		var bad spyTB
		assert.False(t, resiltest.AssertWaits(&bad, dep, time.Second, time.Second))
		assert.Equal(t, []string{"resiltest: want waits [1s 1s] between attempts, got [1s 2s 4s]"}, bad.errs)
	})
}

func TestWaitsStopAtARunningCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[int](resiltest.Return(1), resiltest.Hang())
		_, _ = dep.Call(t.Context())
		time.Sleep(time.Second)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = dep.Call(ctx)
		}()
		synctest.Wait()
		go func() { time.Sleep(time.Second); _, _ = dep.Call(t.Context()) }()
		time.Sleep(2 * time.Second)
		assert.Equal(t, []time.Duration{time.Second}, resiltest.Waits(dep))
		cancel()
		<-done
		assert.Len(t, resiltest.Waits(dep), 2)
	})
}

func TestWaitsOfFewCalls(t *testing.T) {
	assert.Empty(t, resiltest.Waits(resiltest.Script[int]()))
	dep := resiltest.Script[int]()
	_, _ = dep.Call(context.Background())
	assert.Empty(t, resiltest.Waits(dep))
}

// tripping returns a breaker that opens on the first failure, stays open
// for a second and closes after one good trial, and the log of its states.
func tripping() (*resil.Breaker, *resiltest.BreakerLog) {
	log := new(resiltest.BreakerLog)
	return resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, OnStateChange: log.OnStateChange}), log
}

func TestBreakerLogAndStates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, log := tripping()
		dep := resiltest.Script[int](resiltest.Fail(io.EOF, 2), resiltest.Return(1))
		p := resil.New[int]().Breaker(b)
		start := time.Now()
		for range 3 {
			_, _ = p.Run(t.Context(), dep.Call) // fails, then is rejected twice
		}
		time.Sleep(time.Second)
		_, err := p.Run(t.Context(), dep.Call) // a failed trial reopens
		require.ErrorIs(t, err, io.EOF)
		time.Sleep(time.Second)
		_, err = p.Run(t.Context(), dep.Call) // a good trial closes
		require.NoError(t, err)

		ts := log.Transitions()
		require.Len(t, ts, 5)
		assert.Equal(t, "closed→open", ts[0].String())
		assert.Equal(t, start, ts[0].At)
		assert.Equal(t, start.Add(time.Second), ts[1].At)
		assert.Equal(t, "open→half-open", ts[3].String())
		assert.Equal(t, []resil.BreakerState{resil.StateOpen, resil.StateHalfOpen, resil.StateOpen, resil.StateHalfOpen, resil.StateClosed}, log.States())

		var ok spyTB
		assert.True(t, resiltest.AssertBreakerStates(&ok, log, resil.StateOpen, resil.StateHalfOpen, resil.StateOpen, resil.StateHalfOpen, resil.StateClosed))
		assert.Empty(t, ok.errs)
		var bad spyTB
		assert.False(t, resiltest.AssertBreakerStates(&bad, log, resil.StateOpen, resil.StateClosed))
		assert.Equal(t, []string{"resiltest: want breaker states [open closed], got [open half-open open half-open closed]"}, bad.errs)

		resiltest.AssertAttempts(t, dep, 3)
		assert.True(t, resiltest.AssertNoCallWhileOpen(t, dep, log))
	})
}

func TestAssertNoCallWhileOpenCatchesACallPastTheBreaker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, log := tripping()
		dep := resiltest.Script[int](resiltest.Fail(io.EOF, 1), resiltest.Return(1))
		guarded := resil.New[int]().Breaker(b)
		_, err := guarded.Run(t.Context(), dep.Call)
		require.ErrorIs(t, err, io.EOF)
		time.Sleep(100 * time.Millisecond)
		_, err = guarded.Run(t.Context(), dep.Call)
		require.ErrorIs(t, err, resil.ErrBreakerOpen)
		_, err = resil.New[int]().Run(t.Context(), dep.Call) // a path that skips the breaker
		require.NoError(t, err)

		var spy spyTB
		assert.False(t, resiltest.AssertNoCallWhileOpen(&spy, dep, log))
		assert.Equal(t, []string{"resiltest: attempt 2 started 100ms after the breaker opened, while it was open"}, spy.errs)

		// Once half-open, calls are allowed again.
		time.Sleep(time.Second)
		_, err = guarded.Run(t.Context(), dep.Call)
		require.NoError(t, err)
		spy = spyTB{}
		resiltest.AssertNoCallWhileOpen(&spy, dep, log)
		assert.Len(t, spy.errs, 1)
	})
}

// calls is a Recorder of calls made elsewhere, without the order this
// package keeps: transitions and calls are then ordered by time.
type calls []resiltest.Call

func (c calls) Calls() []resiltest.Call { return c }

func TestAssertNoCallWhileOpenOrdersForeignCallsByTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var log resiltest.BreakerLog
		log.OnStateChange(resil.StateClosed, resil.StateOpen)
		time.Sleep(time.Second)
		log.OnStateChange(resil.StateOpen, resil.StateHalfOpen)
		rec := calls{
			{Attempt: 1, Start: start.Add(-time.Millisecond)},
			{Attempt: 2, Start: start},
			{Attempt: 3, Start: start.Add(999 * time.Millisecond)},
			{Attempt: 4, Start: start.Add(time.Second)},
		}
		var spy spyTB
		assert.False(t, resiltest.AssertNoCallWhileOpen(&spy, rec, &log))
		assert.Equal(t, []string{
			"resiltest: attempt 2 started 0s after the breaker opened, while it was open",
			"resiltest: attempt 3 started 999ms after the breaker opened, while it was open",
		}, spy.errs)
	})
}

// A breaker guarding a retrying dependency: the assertions read as the
// scenario does.
func TestAssertionsTellTheStory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errDown := errors.New("down")
		var log resiltest.BreakerLog
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 2, OpenFor: 10 * time.Second, OnStateChange: log.OnStateChange})
		dep := resiltest.Script[int](resiltest.Fail(errDown, 4), resiltest.Return(7))
		p := resil.New[int]().
			Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(time.Second)}).
			Breaker(b)
		for range 5 {
			_, _ = p.Run(t.Context(), dep.Call)
			time.Sleep(3 * time.Second)
		}
		v, err := p.Run(t.Context(), dep.Call)
		require.NoError(t, err)
		assert.Equal(t, 7, v)
		resiltest.AssertAttempts(t, dep, 5)
		resiltest.AssertWaits(t, dep, time.Second, 3*time.Second, time.Second, 12*time.Second)
		resiltest.AssertBreakerStates(t, &log, resil.StateOpen, resil.StateHalfOpen, resil.StateClosed)
		resiltest.AssertNoCallWhileOpen(t, dep, &log)
	})
}

// The example of the README's "Testing your pipelines".
func TestProfileSurvivesAnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[string](
			resiltest.Fail(io.ErrUnexpectedEOF, 2), // two passing faults
			resiltest.Hang(),                       // then a call that never answers
			resiltest.Return("profile"),
		)
		var log resiltest.BreakerLog
		b := resil.NewBreaker(resil.BreakerPolicy{OnStateChange: log.OnStateChange})
		p := resil.New[string]().
			Timeout(time.Second).
			Retry(resil.RetryPolicy{MaxAttempts: 4, Backoff: resil.Exponential(100*time.Millisecond, time.Second)}).
			Breaker(b)

		v, err := p.Run(t.Context(), dep.Call)

		require.NoError(t, err)
		require.Equal(t, "profile", v)
		assert.True(t, resiltest.AssertAttempts(t, dep, 4))
		assert.True(t, resiltest.AssertWaits(t, dep, 100*time.Millisecond, 200*time.Millisecond, 400*time.Millisecond))
		assert.True(t, resiltest.AssertBreakerStates(t, &log)) // never tripped
		assert.True(t, resiltest.AssertNoCallWhileOpen(t, dep, &log))
	})
}

// A BreakerLog shared by breakers that change state at once records the
// transitions in the order it dated them.
func TestBreakerLogRecordsConcurrentTransitionsInOrder(t *testing.T) {
	var log resiltest.BreakerLog
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				log.OnStateChange(resil.StateClosed, resil.StateOpen)
			}
		})
	}
	wg.Wait()
	ts := log.Transitions()
	require.Len(t, ts, 4000)
	for i := 1; i < len(ts); i++ {
		require.False(t, ts[i].At.Before(ts[i-1].At), "transition %d recorded %v before transition %d", i+1, ts[i-1].At.Sub(ts[i].At), i)
	}
}
