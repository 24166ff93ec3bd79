package resil_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A transition a BreakerLink makes (the fleet's state, forced) is reported
// by the breaker's next call, to OnStateChange and to the observer of that
// call's pipeline: without it, a replica whose breaker the fleet opened
// rejects every call while its pipeline never says the breaker moved, and
// one the fleet closed again goes on saying it is open. A look at State in
// between reports to OnStateChange only: it has no pipeline, and the next
// call still reports the moves to its own.
func TestObserveBreakerLinkTransitions(t *testing.T) {
	for _, c := range []struct {
		name     string
		callback bool // the policy has an OnStateChange
		state    bool // State() looks before the call
	}{
		{"without OnStateChange", false, false},
		{"with OnStateChange", true, false},
		{"State looks first", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var seen []string
				policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour}
				if c.callback {
					policy.OnStateChange = func(from, to resil.BreakerState) { seen = append(seen, from.String()+">"+to.String()) }
				}
				b, link := resil.NewSharedBreaker(policy, &answerShare{acquire: resil.ShareUnavailable})
				var r obsRecorder
				p := resil.New[int]().Breaker(b).Named("p").Observe(&r)
				ctx := context.Background()
				force := func(to resil.BreakerState) {
					t.Helper()
					_, ok := link.Force(link.Snapshot().Gen, to, time.Hour)
					require.True(t, ok)
					if c.state {
						b.State()
					}
				}

				force(resil.StateOpen)
				_, err := p.Run(ctx, obsScript())
				require.ErrorIs(t, err, resil.ErrBreakerOpen)
				requireEvents(t, []resil.Event{
					evChange(resil.StateClosed, resil.StateOpen),
					ev(evRejected, 0, resil.ErrBreakerOpen, 0, 0),
					ev(evFailure, 0, resil.ErrBreakerOpen, 0, 0),
				}, r.take())

				force(resil.StateHalfOpen)
				force(resil.StateClosed)
				_, err = p.Run(ctx, obsScript())
				require.NoError(t, err)
				requireEvents(t, []resil.Event{
					evChange(resil.StateOpen, resil.StateHalfOpen),
					evChange(resil.StateHalfOpen, resil.StateClosed),
					ev(evAttempt, 1, nil, 0, 0),
					ev(evSuccess, 0, nil, 0, 0),
				}, r.take())

				// Reported once: the next calls take the fast path again.
				_, err = p.Run(ctx, obsScript())
				require.NoError(t, err)
				requireEvents(t, []resil.Event{ev(evAttempt, 1, nil, 0, 0), ev(evSuccess, 0, nil, 0, 0)}, r.take())
				if c.callback {
					assert.Equal(t, []string{"closed>open", "open>half-open", "half-open>closed"}, seen)
				}
			})
		})
	}
}

// Transitions a link makes while no call comes wait for one, but never more
// than 64: the call that comes reports at most 64 to its pipeline, one
// chain from the state its pipeline last heard of to the current one.
func TestObserveBreakerLinkTransitionsCondensed(t *testing.T) {
	b, link := resil.NewSharedBreaker(resil.BreakerPolicy{OpenFor: time.Hour}, &answerShare{acquire: resil.ShareUnavailable})
	var r obsRecorder
	p := resil.New[int]().Breaker(b).Named("p").Observe(&r)
	cycle := []resil.BreakerState{resil.StateOpen, resil.StateHalfOpen, resil.StateClosed, resil.StateOpen, resil.StateClosed}
	const forced = 1000
	for i := range forced {
		_, ok := link.Force(link.Snapshot().Gen, cycle[i%len(cycle)], time.Hour)
		require.True(t, ok)
	}
	final := cycle[(forced-1)%len(cycle)]
	require.Equal(t, resil.StateClosed, final)
	_, err := p.Run(context.Background(), obsScript())
	require.NoError(t, err)
	changes := r.kinds(resil.EventStateChange)
	require.NotEmpty(t, changes)
	assert.LessOrEqual(t, len(changes), 64)
	from, seq := resil.StateClosed, uint64(0)
	for i, e := range changes {
		require.Equal(t, from, e.From, "transition %d", i)
		require.NotEqual(t, e.From, e.To, "transition %d", i)
		require.Greater(t, e.Seq, seq, "transition %d: a condensed move is numbered as its last", i)
		from, seq = e.To, e.Seq
	}
	assert.Equal(t, final, from, "the chain ends in the current state")
	assert.Equal(t, resil.EventSuccess, r.take()[len(changes)+1].Kind, "the call's own events follow")
}

// Calls, State and a link moving the breaker concurrently: every call
// goes on working, and once the link stops, the first call reports what is
// left and the next reports nothing (the fast path is back).
func TestObserveBreakerLinkTransitionsConcurrent(t *testing.T) {
	for _, callback := range []bool{false, true} {
		policy := resil.BreakerPolicy{MinCalls: 2, OpenFor: 20 * time.Microsecond, HalfOpenCalls: 2}
		if callback {
			policy.OnStateChange = func(from, to resil.BreakerState) {}
		}
		b, link := resil.NewSharedBreaker(policy, &answerShare{acquire: resil.ShareUnavailable})
		var r obsRecorder
		observed := resil.New[int]().Breaker(b).Named("p").Observe(&r)
		plain := resil.New[int]().Breaker(b)
		ok := func(context.Context) (int, error) { return 1, nil }
		deadline := time.Now().Add(100 * time.Millisecond)
		var wg sync.WaitGroup
		for g := range 6 {
			wg.Go(func() {
				for i := 0; time.Now().Before(deadline); i++ {
					switch {
					case g == 0 && i%8 == 0:
						link.Force(link.Snapshot().Gen, resil.BreakerState(i/8%3), time.Microsecond)
					case g == 1:
						b.State()
					case g%2 == 0:
						_, _ = observed.Run(context.Background(), obsScript(obsStep{err: errFlaky}))
					default:
						_, _ = plain.Run(context.Background(), ok)
					}
				}
			})
		}
		wg.Wait()
		_, ok2 := link.Force(link.Snapshot().Gen, resil.StateClosed, 0)
		require.True(t, ok2)
		r.take()
		_, err := observed.Run(context.Background(), ok)
		require.NoError(t, err)
		r.take()
		_, err = observed.Run(context.Background(), ok)
		require.NoError(t, err)
		requireEvents(t, []resil.Event{ev(evAttempt, 1, nil, 0, 0), ev(evSuccess, 0, nil, 0, 0)}, zeroElapsed(r.take()))
	}
}

// zeroElapsed clears the Elapsed of events recorded in real time.
func zeroElapsed(es []resil.Event) []resil.Event {
	for i := range es {
		es[i].Elapsed = 0
	}
	return es
}
