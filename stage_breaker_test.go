package resil_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// breakerHarness runs calls through a breaker and records transitions.
type breakerHarness struct {
	t           *testing.T
	b           *resil.Breaker
	p           resil.Pipeline[int]
	mu          sync.Mutex
	transitions []string
}

func newHarness(t *testing.T, policy resil.BreakerPolicy) *breakerHarness {
	h := &breakerHarness{t: t}
	policy.OnStateChange = func(from, to resil.BreakerState) {
		// Calling State here would deadlock if the lock were held.
		_ = h.b.State()
		h.mu.Lock()
		h.transitions = append(h.transitions, from.String()+"→"+to.String())
		h.mu.Unlock()
	}
	h.b = resil.NewBreaker(policy)
	h.p = resil.New[int]().Breaker(h.b)
	return h
}

// call runs one call with the given result and reports whether fn ran.
func (h *breakerHarness) call(err error) (ran bool, got error) {
	_, got = h.p.Run(context.Background(), func(context.Context) (int, error) {
		ran = true
		return 1, err
	})
	return ran, got
}

func (h *breakerHarness) times(n int, err error) {
	for range n {
		ran, _ := h.call(err)
		require.True(h.t, ran)
	}
}

func (h *breakerHarness) log() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.transitions...)
}

func TestBreakerTripsOnRatioAfterMinCalls(t *testing.T) {
	tests := []struct {
		name      string
		policy    resil.BreakerPolicy
		successes int
		failures  int
		wantOpen  bool
	}{
		{"defaults: 5 of 10 trips", resil.BreakerPolicy{}, 5, 5, true},
		{"defaults: 4 of 10 does not", resil.BreakerPolicy{}, 6, 4, false},
		{"defaults: 9 calls are too few", resil.BreakerPolicy{}, 0, 9, false},
		{"ratio 0.3, MinCalls 10: 3 of 10", resil.BreakerPolicy{FailureRatio: 0.3}, 7, 3, true},
		{"ratio 1: all must fail", resil.BreakerPolicy{FailureRatio: 1, MinCalls: 3}, 1, 3, false},
		{"ratio 1, MinCalls 3", resil.BreakerPolicy{FailureRatio: 1, MinCalls: 3}, 0, 3, true},
		{"MinCalls 1", resil.BreakerPolicy{MinCalls: 1}, 0, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, tt.policy)
				h.times(tt.successes, nil)
				h.times(tt.failures, errFlaky)
				if tt.wantOpen {
					assert.Equal(t, resil.StateOpen, h.b.State())
					assert.Equal(t, []string{"closed→open"}, h.log())
				} else {
					assert.Equal(t, resil.StateClosed, h.b.State())
					assert.Empty(t, h.log())
				}
			})
		})
	}
}

func TestBreakerOpenRejectsThenHalfOpens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, resil.BreakerPolicy{MinCalls: 2, OpenFor: 5 * time.Second, HalfOpenCalls: 2})
		h.times(2, errFlaky)
		require.Equal(t, resil.StateOpen, h.b.State())

		ran, err := h.call(nil)
		assert.False(t, ran, "open: the wrapped stages do not run")
		assert.Same(t, resil.ErrBreakerOpen, err)

		time.Sleep(5*time.Second - time.Nanosecond)
		ran, _ = h.call(nil)
		assert.False(t, ran, "still open just before OpenFor")

		time.Sleep(time.Nanosecond)
		assert.Equal(t, resil.StateHalfOpen, h.b.State(), "State reports half-open once OpenFor passed")
		ran, err = h.call(nil)
		assert.True(t, ran)
		assert.NoError(t, err)
		assert.Equal(t, resil.StateHalfOpen, h.b.State(), "1 of 2 trials succeeded")
		ran, _ = h.call(nil)
		assert.True(t, ran)
		assert.Equal(t, resil.StateClosed, h.b.State())
		assert.Equal(t, []string{"closed→open", "open→half-open", "half-open→closed"}, h.log())
	})
}

func TestBreakerFailedTrialReopensForFullOpenFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, resil.BreakerPolicy{MinCalls: 1, OpenFor: 5 * time.Second})
		h.times(1, errFlaky)
		time.Sleep(5 * time.Second)
		time.Sleep(time.Second) // the trial comes a little late
		ran, _ := h.call(errFlaky)
		require.True(t, ran)
		assert.Equal(t, resil.StateOpen, h.b.State())
		time.Sleep(5*time.Second - time.Nanosecond)
		ran, _ = h.call(nil)
		assert.False(t, ran, "reopened for a full OpenFor from the failed trial")
		time.Sleep(time.Nanosecond)
		ran, _ = h.call(nil)
		assert.True(t, ran)
		assert.Equal(t, []string{"closed→open", "open→half-open", "half-open→open", "open→half-open", "half-open→closed"}, h.log())
	})
}

func TestBreakerHalfOpenAdmitsTrialsInAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: 2})
		h.times(1, errFlaky)
		time.Sleep(time.Second)

		release := make(chan struct{})
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				_, _ = h.p.Run(context.Background(), func(context.Context) (int, error) {
					<-release
					return 1, nil
				})
			})
		}
		synctest.Wait() // both trials are blocked inside
		ran, err := h.call(nil)
		assert.False(t, ran, "a third call while two trials run is rejected")
		assert.Same(t, resil.ErrBreakerOpen, err)
		close(release)
		wg.Wait()
		assert.Equal(t, resil.StateClosed, h.b.State())
	})
}

func TestBreakerIgnoredTrialGivesItsPlaceBack(t *testing.T) {
	outcomes := map[string]func() (int, error){
		"permanent error": func() (int, error) { return 0, resil.Permanent(errFlaky) },
		"canceled":        func() (int, error) { return 0, context.Canceled },
		"panic":           func() (int, error) { panic("boom") },
	}
	for name, outcome := range outcomes {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second})
				h.times(1, errFlaky)
				time.Sleep(time.Second)
				func() {
					defer func() { _ = recover() }()
					_, _ = h.p.Run(context.Background(), func(context.Context) (int, error) { return outcome() })
				}()
				assert.Equal(t, resil.StateHalfOpen, h.b.State())
				ran, err := h.call(nil)
				assert.True(t, ran, "the place was given back")
				assert.NoError(t, err)
				assert.Equal(t, resil.StateClosed, h.b.State())
			})
		})
	}
}

func TestBreakerOutcomeClassification(t *testing.T) {
	onlyBoom := func(err error) bool { return err.Error() == "boom" }
	tests := []struct {
		name      string
		failureIf func(error) bool
		err       error
		wantOpen  bool
	}{
		{"unmarked transient counts", nil, errFlaky, true},
		{"Permanent is ignored", nil, resil.Permanent(errFlaky), false},
		{"Transient counts even when FailureIf says no", onlyBoom, resil.Transient(errFlaky), true},
		{"context.Canceled is ignored by default", nil, context.Canceled, false},
		{"FailureIf decides unmarked: no", onlyBoom, errFlaky, false},
		{"FailureIf decides unmarked: yes", onlyBoom, errors.New("boom"), true},
		{"Permanent beats FailureIf", func(error) bool { return true }, resil.Permanent(errFlaky), false},
		{"deadline exceeded counts", nil, context.DeadlineExceeded, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, resil.BreakerPolicy{MinCalls: 3, FailureIf: tt.failureIf})
				h.times(3, tt.err)
				want := resil.StateClosed
				if tt.wantOpen {
					want = resil.StateOpen
				}
				assert.Equal(t, want, h.b.State())
			})
		})
	}
}

func TestBreakerWindowExpiresOutcomes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, resil.BreakerPolicy{MinCalls: 4, Window: 10 * time.Second})
		h.times(3, errFlaky)
		time.Sleep(10 * time.Second) // those three are now out of the window
		h.times(3, errFlaky)
		assert.Equal(t, resil.StateClosed, h.b.State(), "only 3 calls in the window")
		h.times(1, errFlaky)
		assert.Equal(t, resil.StateOpen, h.b.State())
	})
}

func TestBreakerWindowKeepsRecentOutcomes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, resil.BreakerPolicy{MinCalls: 3, FailureRatio: 0.5, Window: 10 * time.Second})
		h.times(3, nil)
		time.Sleep(8 * time.Second) // still in the window: they dilute the ratio
		h.times(2, errFlaky)
		assert.Equal(t, resil.StateClosed, h.b.State(), "2 failures of 5 calls")
		time.Sleep(2 * time.Second) // the successes leave the window
		h.times(1, errFlaky)
		assert.Equal(t, resil.StateOpen, h.b.State(), "3 failures of 3 calls")
	})
}

// TestBreakerManySuccessesThenQuiet: successes counted in batches are
// still dated no later than they happened.
func TestBreakerManySuccessesThenQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, resil.BreakerPolicy{MinCalls: 5, Window: 10 * time.Second})
		h.times(1000, nil)
		time.Sleep(11 * time.Second)
		h.times(5, errFlaky)
		assert.Equal(t, resil.StateOpen, h.b.State(), "the old successes no longer dilute")
	})
}

func TestBreakerIgnoresOutcomesFromAnEarlierState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second})
		release := make(chan struct{})
		go func() {
			// Admitted while closed; fails after the breaker has moved on.
			_, _ = h.p.Run(context.Background(), func(context.Context) (int, error) {
				<-release
				return 0, errFlaky
			})
		}()
		synctest.Wait()
		h.times(1, errFlaky) // opens
		time.Sleep(time.Second)
		h.times(1, nil) // trial succeeds: closed again
		require.Equal(t, resil.StateClosed, h.b.State())
		close(release)
		synctest.Wait()
		assert.Equal(t, resil.StateClosed, h.b.State(), "the stale failure does not count")
	})
}

// A panic in OnStateChange while it reports the open → half-open
// transition a call made does not cost the breaker that call's trial place:
// the trial never runs, so its place goes back.
func TestBreakerOnStateChangePanicReturnsTrialPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		panicked := false
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, OnStateChange: func(_, to resil.BreakerState) {
			if to == resil.StateHalfOpen && !panicked {
				panicked = true
				panic("callback")
			}
		}})
		p := resil.New[int]().Breaker(b)
		ok := func(context.Context) (int, error) { return 1, nil }
		_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFlaky })
		time.Sleep(time.Second)
		assert.PanicsWithValue(t, "callback", func() { _, _ = p.Run(context.Background(), ok) })
		assert.Equal(t, resil.StateHalfOpen, b.State())
		v, err := p.Run(context.Background(), ok)
		require.NoError(t, err, "the trial place is free again")
		assert.Equal(t, 1, v)
		assert.Equal(t, resil.StateClosed, b.State())
	})
}

// Transitions that other calls queued while OnStateChange was reporting an
// earlier one are delivered even when that report panics, before the panic
// reaches its caller.
func TestBreakerOnStateChangePanicDeliversQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var (
			mu  sync.Mutex
			got []string
		)
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, OnStateChange: func(from, to resil.BreakerState) {
			mu.Lock()
			got = append(got, from.String()+">"+to.String())
			mu.Unlock()
			if to == resil.StateOpen {
				<-release
				panic("callback")
			}
		}})
		p := resil.New[int]().Breaker(b)
		panicked := make(chan any)
		go func() {
			defer func() { panicked <- recover() }()
			_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFlaky })
		}()
		synctest.Wait() // the failing call is in its report, blocked
		time.Sleep(time.Second)
		assert.Equal(t, resil.StateHalfOpen, b.State(), "State makes the transition and leaves its report to the reporter")
		close(release)
		assert.Equal(t, "callback", <-panicked)
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []string{"closed>open", "open>half-open"}, got)
	})
}

func TestBreakerGuardsPipelinesOfAnyType(t *testing.T) {
	b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 2})
	ints := resil.New[int]().Breaker(b)
	strs := resil.New[string]().Breaker(b)
	_, _ = ints.Run(context.Background(), func(context.Context) (int, error) { return 0, errFlaky })
	_, _ = strs.Run(context.Background(), func(context.Context) (string, error) { return "", errFlaky })
	assert.Equal(t, resil.StateOpen, b.State())
	_, err := strs.Run(context.Background(), func(context.Context) (string, error) { return "x", nil })
	assert.ErrorIs(t, err, resil.ErrBreakerOpen)
}

func TestBreakerOnStateChangePanicKeepsState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, OnStateChange: func(from, to resil.BreakerState) {
			calls++
			if calls == 1 {
				panic("callback")
			}
		}})
		p := resil.New[int]().Breaker(b)
		assert.PanicsWithValue(t, "callback", func() {
			_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFlaky })
		})
		assert.Equal(t, resil.StateOpen, b.State())
		time.Sleep(time.Second)
		assert.Equal(t, resil.StateHalfOpen, b.State())
		assert.Equal(t, 2, calls, "later transitions are still reported")
	})
}

// Durations at the ends of their range keep their meaning: an OpenFor
// that overflows the clock keeps the breaker open, and a Window shorter
// than the breaker's bucket count still drops an outcome once it is
// Window old.
func TestBreakerExtremeDurations(t *testing.T) {
	t.Run("OpenFor MaxInt64", func(t *testing.T) {
		// Real time (no bubble): the process clock must be past its epoch
		// for now+OpenFor to overflow.
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: math.MaxInt64})
		p := resil.New[int]().Breaker(b)
		_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFlaky })
		ran := false
		_, err := p.Run(context.Background(), func(context.Context) (int, error) { ran = true; return 0, nil })
		require.ErrorIs(t, err, resil.ErrBreakerOpen)
		assert.False(t, ran)
		assert.Equal(t, resil.StateOpen, b.State())
	})
	// Windows within windowBuckets of MaxInt64: the bucket width, rounded
	// up, must not overflow into a negative that drops every outcome.
	for _, window := range []time.Duration{math.MaxInt64, math.MaxInt64 - 18, math.MaxInt64 - 19} {
		t.Run(fmt.Sprintf("Window %d", window), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := resil.NewBreaker(resil.BreakerPolicy{Window: window, MinCalls: 2, FailureRatio: 0.5})
				p := resil.New[int]().Breaker(b)
				_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 1, nil })
				time.Sleep(time.Hour)
				_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFlaky })
				assert.Equal(t, resil.StateOpen, b.State(), "1 failure of 2 calls reaches ratio 0.5")
			})
		})
	}
	for _, window := range []time.Duration{1, 5, 19} {
		t.Run(fmt.Sprintf("Window %v", window), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := resil.NewBreaker(resil.BreakerPolicy{Window: window, MinCalls: 2, FailureRatio: 0.5})
				p := resil.New[int]().Breaker(b)
				fail := func(context.Context) (int, error) { return 0, errFlaky }
				_, _ = p.Run(context.Background(), fail)
				time.Sleep(window)
				_, _ = p.Run(context.Background(), fail)
				assert.Equal(t, resil.StateClosed, b.State(), "a failure Window old still counted")
				_, _ = p.Run(context.Background(), fail)
				assert.Equal(t, resil.StateOpen, b.State(), "two failures at once trip it")
			})
		})
	}
}

func TestBreakerPolicyValidate(t *testing.T) {
	tests := []struct {
		p    resil.BreakerPolicy
		want string
	}{
		{resil.BreakerPolicy{}, ""},
		{resil.BreakerPolicy{FailureRatio: 1, MinCalls: 1, Window: 1, OpenFor: 1, HalfOpenCalls: 1}, ""},
		{resil.BreakerPolicy{FailureRatio: -0.1}, "resil: BreakerPolicy.FailureRatio must be in [0, 1], got -0.1"},
		{resil.BreakerPolicy{FailureRatio: 1.5}, "resil: BreakerPolicy.FailureRatio must be in [0, 1], got 1.5"},
		{resil.BreakerPolicy{FailureRatio: math.NaN()}, "resil: BreakerPolicy.FailureRatio must be in [0, 1], got NaN"},
		{resil.BreakerPolicy{MinCalls: -1}, "resil: BreakerPolicy.MinCalls must be >= 0, got -1"},
		{resil.BreakerPolicy{Window: -time.Second}, "resil: BreakerPolicy.Window must be >= 0, got -1s"},
		{resil.BreakerPolicy{OpenFor: -time.Second}, "resil: BreakerPolicy.OpenFor must be >= 0, got -1s"},
		{resil.BreakerPolicy{HalfOpenCalls: -2}, "resil: BreakerPolicy.HalfOpenCalls must be >= 0, got -2"},
	}
	for _, tt := range tests {
		err := tt.p.Validate()
		if tt.want == "" {
			assert.NoError(t, err)
			assert.NotPanics(t, func() { resil.NewBreaker(tt.p) })
			continue
		}
		assert.EqualError(t, err, tt.want)
		assert.PanicsWithValue(t, tt.want, func() { resil.NewBreaker(tt.p) })
	}
}

func TestBreakerStateString(t *testing.T) {
	assert.Equal(t, "closed", resil.StateClosed.String())
	assert.Equal(t, "open", resil.StateOpen.String())
	assert.Equal(t, "half-open", resil.StateHalfOpen.String())
	assert.Equal(t, "BreakerState(7)", resil.BreakerState(7).String())
}

// TestBreakerIgnoresCallsTheCallerCancelled: with the default FailureIf, the
// error of a call whose caller cancelled it with a cause (errgroup's
// context.WithCancelCause), when it is that cause (net/http returns it in
// place of context.Canceled), says nothing of the dependency and is
// ignored, as context.Canceled is. fn's own error still counts, a mark or
// a FailureIf of the user's still decides, and a caller's deadline is not a
// cancellation.
func TestBreakerIgnoresCallsTheCallerCancelled(t *testing.T) {
	sibling := errors.New("a sibling call failed")
	tests := []struct {
		name      string
		failureIf func(error) bool
		ctx       func() context.Context
		err       error
		wantOpen  bool
	}{
		{"cause returned", nil, cancelledBy(sibling), sibling, false},
		{"cause wrapped", nil, cancelledBy(sibling), fmt.Errorf("Get: %w", sibling), false},
		{"fn's own error after cancel counts", nil, cancelledBy(sibling), errFlaky, true},
		{"fn's own error after plain cancel counts", nil, cancelledBy(nil), errFlaky, true},
		{"Transient mark still counts", nil, cancelledBy(sibling), resil.Transient(sibling), true},
		{"FailureIf of the user decides", func(error) bool { return true }, cancelledBy(sibling), sibling, true},
		{"caller's deadline counts", nil, func() context.Context {
			ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
			cancel()
			return ctx
		}, errFlaky, true},
		{"live context counts", nil, context.Background, sibling, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, FailureIf: tt.failureIf})
			p := resil.New[int]().Breaker(b)
			_, err := p.Run(tt.ctx(), func(context.Context) (int, error) { return 0, tt.err })
			require.ErrorIs(t, err, tt.err)
			want := resil.StateClosed
			if tt.wantOpen {
				want = resil.StateOpen
			}
			assert.Equal(t, want, b.State())
		})
	}
	t.Run("trial gives its place back", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second})
			h.times(1, errFlaky)
			time.Sleep(time.Second)
			_, err := h.p.Run(cancelledBy(sibling)(), func(ctx context.Context) (int, error) { return 0, context.Cause(ctx) })
			require.ErrorIs(t, err, sibling)
			assert.Equal(t, resil.StateHalfOpen, h.b.State())
			ran, err := h.call(nil)
			assert.True(t, ran, "the place was given back")
			assert.NoError(t, err)
			assert.Equal(t, resil.StateClosed, h.b.State())
		})
	})
}

// cancelledBy returns a function that makes a context cancelled with cause
// (context.Canceled when cause is nil).
func cancelledBy(cause error) func() context.Context {
	return func() context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		return ctx
	}
}
