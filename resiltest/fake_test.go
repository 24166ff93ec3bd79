package resiltest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resiltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestScriptPlaysStepsInOrderThenRepeatsTheLast(t *testing.T) {
	dep := resiltest.Script[int](resiltest.Fail(io.ErrUnexpectedEOF, 2), resiltest.Return(7), resiltest.Return(42))
	ctx := context.Background()
	want := []struct {
		v   int
		err error
	}{{0, io.ErrUnexpectedEOF}, {0, io.ErrUnexpectedEOF}, {7, nil}, {42, nil}, {42, nil}, {42, nil}}
	for i, w := range want {
		v, err := dep.Call(ctx)
		assert.Equal(t, w.v, v, "call %d", i+1)
		assert.Equal(t, w.err, err, "call %d", i+1)
	}
	calls := dep.Calls()
	require.Len(t, calls, len(want))
	for i, c := range calls {
		assert.Equal(t, i+1, c.Attempt)
		assert.Equal(t, want[i].err, c.Err)
		assert.False(t, c.Start.IsZero())
		assert.False(t, c.End.Before(c.Start))
		assert.True(t, c.Deadline.IsZero(), "no deadline on Background")
		assert.False(t, c.Panicked)
	}
	assert.Equal(t, len(want), dep.Count())
}

func TestScriptWithoutStepsReturnsZero(t *testing.T) {
	dep := resiltest.Script[string]()
	for range 3 {
		v, err := dep.Call(context.Background())
		require.NoError(t, err)
		require.Equal(t, "", v)
	}
	assert.Equal(t, 3, dep.Count())
}

func TestZeroStepReturnsZeroOnce(t *testing.T) {
	dep := resiltest.Script[int](resiltest.Step{}, resiltest.Return(5))
	v, err := dep.Call(context.Background())
	require.NoError(t, err)
	require.Equal(t, 0, v)
	v, _ = dep.Call(context.Background())
	require.Equal(t, 5, v)
}

func TestReturnOfInterfaceType(t *testing.T) {
	var r io.Reader = &io.LimitedReader{}
	dep := resiltest.Script[io.Reader](resiltest.Return(r), resiltest.Return[io.Reader](nil))
	v, err := dep.Call(context.Background())
	require.NoError(t, err)
	require.Same(t, r, v)
	v, err = dep.Call(context.Background())
	require.NoError(t, err)
	require.Nil(t, v)
}

func TestBadStepsPanicWithTheValue(t *testing.T) {
	tests := []struct {
		name string
		f    func()
		msg  string
	}{
		{"value of another type", func() { resiltest.Script[int64](resiltest.Fail(io.EOF, 1), resiltest.Return(42)) },
			"resiltest: Script[int64] step 2 returns a int, want int64"},
		{"Fail nil", func() { resiltest.Fail(nil, 1) }, "resiltest: Fail err must be non-nil, got nil"},
		{"Fail times 0", func() { resiltest.Fail(io.EOF, 0) }, "resiltest: Fail times must be >= 1, got 0"},
		{"Times negative", func() { resiltest.Return(1).Times(-2) }, "resiltest: Step.Times n must be >= 1, got -2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { assert.PanicsWithValue(t, tt.msg, tt.f) })
	}
}

func TestStepString(t *testing.T) {
	tests := []struct {
		s    resiltest.Step
		want string
	}{
		{resiltest.Return(42), "return(42)"},
		{resiltest.Fail(io.ErrUnexpectedEOF, 2).After(time.Second), "fail(unexpected EOF)×2 after 1s"},
		{resiltest.Hang(), "hang"},
		{resiltest.Panic("boom").Times(3), "panic(boom)×3"},
		{resiltest.Step{}, "return(<nil>)"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.s.String())
	}
}

func TestAfterTakesItsLatencyInFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[int](resiltest.Return(1).After(3*time.Second), resiltest.Fail(io.EOF, 1).After(time.Second))
		start := time.Now()
		v, err := dep.Call(t.Context())
		require.NoError(t, err)
		require.Equal(t, 1, v)
		require.Equal(t, 3*time.Second, time.Since(start))
		_, err = dep.Call(t.Context())
		require.Equal(t, io.EOF, err)
		require.Equal(t, 4*time.Second, time.Since(start))
		calls := dep.Calls()
		assert.Equal(t, 3*time.Second, calls[0].End.Sub(calls[0].Start))
		assert.Equal(t, time.Second, calls[1].End.Sub(calls[1].Start))
	})
}

func TestAfterEndsWithTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[int](resiltest.Return(1).After(5 * time.Second))
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()
		_, err := dep.Call(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, time.Second, time.Since(start))
		c := dep.Calls()[0]
		assert.Equal(t, start.Add(time.Second), c.Deadline)
		assert.ErrorIs(t, c.Err, context.DeadlineExceeded)
	})
}

func TestHangBlocksUntilTheContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[int](resiltest.Hang().After(time.Second))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() {
			_, err := dep.Call(ctx)
			done <- err
		}()
		time.Sleep(time.Hour)
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("a hung call returned before its context ended")
		default:
		}
		assert.True(t, dep.Calls()[0].End.IsZero(), "a running call has no end")
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		assert.Equal(t, time.Hour, dep.Calls()[0].End.Sub(dep.Calls()[0].Start))
	})
}

func TestPanicStepPanicsAfterRecording(t *testing.T) {
	dep := resiltest.Script[int](resiltest.Panic("boom"), resiltest.Return(1))
	require.PanicsWithValue(t, "boom", func() { _, _ = dep.Call(context.Background()) })
	c := dep.Calls()[0]
	assert.True(t, c.Panicked)
	assert.False(t, c.End.IsZero())
	v, err := dep.Call(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, v)
}

func TestPipelinePropagatesAScriptedPanic(t *testing.T) {
	dep := resiltest.Script[int](resiltest.Panic(errors.New("bad")))
	p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0)})
	assert.Panics(t, func() { _, _ = p.Run(context.Background(), dep.Call) })
	resiltest.AssertAttempts(t, dep, 1)
}

func TestConcurrentCallsTakeDistinctSteps(t *testing.T) {
	const n = 64
	dep := resiltest.Script[int](resiltest.Fail(io.EOF, n/2), resiltest.Return(1))
	var wg sync.WaitGroup
	var mu sync.Mutex
	fails := 0
	for range n {
		wg.Go(func() {
			if _, err := dep.Call(context.Background()); err != nil {
				mu.Lock()
				fails++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Equal(t, n/2, fails)
	seen := map[int]bool{}
	for _, c := range dep.Calls() {
		seen[c.Attempt] = true
	}
	require.Len(t, seen, n)
}

func TestMaxConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[int](resiltest.Return(1).After(time.Second).Times(5), resiltest.Return(2).After(time.Second))
		var wg sync.WaitGroup
		for range 5 {
			wg.Go(func() { _, _ = dep.Call(t.Context()) })
		}
		wg.Wait()
		_, _ = dep.Call(t.Context())
		assert.Equal(t, 5, dep.MaxConcurrent())
		assert.Equal(t, 6, dep.Count())
	})
}

// The example of the package documentation.
func TestRetryWaitsInABubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Script[int](
			resiltest.Hang(), // timed out
			resiltest.Fail(io.ErrUnexpectedEOF, 1).After(time.Second),
			resiltest.Return(42),
		)
		p := resil.New[int]().
			Timeout(2 * time.Second).
			Retry(resil.RetryPolicy{Backoff: resil.Exponential(100*time.Millisecond, time.Second)})

		start := time.Now()
		v, err := p.Run(t.Context(), dep.Call)

		require.NoError(t, err)
		require.Equal(t, 42, v)
		resiltest.AssertAttempts(t, dep, 3)
		resiltest.AssertWaits(t, dep, 100*time.Millisecond, 200*time.Millisecond)
		calls := dep.Calls()
		assert.Equal(t, start.Add(2*time.Second), calls[0].Deadline, "the Timeout stage's deadline")
		assert.ErrorIs(t, calls[0].Err, context.DeadlineExceeded)
		assert.Equal(t, calls[1].Start.Add(2*time.Second), calls[1].Deadline)
		assert.Equal(t, 2*time.Second+100*time.Millisecond+time.Second+200*time.Millisecond, time.Since(start))
	})
}

// Calls made at once are recorded in the order they started: Attempt n
// never started after Attempt n+1, so Waits and the order of Calls agree
// with the clock.
func TestConcurrentCallsAreRecordedInStartOrder(t *testing.T) {
	dep := resiltest.Script[int]()
	h := resiltest.Handler()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				_, _ = dep.Call(context.Background())
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
			}
		})
	}
	wg.Wait()
	for name, calls := range map[string][]resiltest.Call{"Fake": dep.Calls(), "FlakyHandler": h.Calls()} {
		require.Len(t, calls, 4000, name)
		for i := 1; i < len(calls); i++ {
			require.False(t, calls[i].Start.Before(calls[i-1].Start),
				"%s: attempt %d started %v before attempt %d", name, calls[i].Attempt,
				calls[i-1].Start.Sub(calls[i].Start), calls[i-1].Attempt)
		}
	}
}
