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

// A FailureIf that panics on a half-open trial's error does not cost the
// breaker the trial's place: the trial brought no outcome, so its place goes
// back, as for a panic in fn.
func TestBreakerFailureIfPanicReturnsTrialPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, FailureIf: func(err error) bool {
			if err == errFlaky {
				return true
			}
			panic("failureIf")
		}})
		p := resil.New[int]().Breaker(b)
		_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFlaky })
		time.Sleep(time.Second)
		assert.PanicsWithValue(t, "failureIf", func() {
			_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, assert.AnError })
		})
		assert.Equal(t, resil.StateHalfOpen, b.State())
		v, err := p.Run(context.Background(), func(context.Context) (int, error) { return 1, nil })
		require.NoError(t, err, "the trial place is free again")
		assert.Equal(t, 1, v)
		assert.Equal(t, resil.StateClosed, b.State())
	})
}

// settlePanicShare grants every trial and panics in SettleTrial while
// panics is above 0.
type settlePanicShare struct{ panics int }

func (s *settlePanicShare) Tripped()                        {}
func (s *settlePanicShare) AcquireTrial() resil.ShareAnswer { return resil.ShareYes }
func (s *settlePanicShare) SettleTrial(resil.TrialOutcome) resil.ShareAnswer {
	if s.panics > 0 {
		s.panics--
		panic("share")
	}
	return resil.ShareUnavailable
}

// A share that panics in SettleTrial does not cost the breaker the trial's
// place: the breaker does not stay half-open with every place taken.
func TestSharedBreakerSettlePanicReturnsTrialPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := resil.NewSharedBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second}, &settlePanicShare{panics: 1})
		p := resil.New[int]().Breaker(b)
		ok := func(context.Context) (int, error) { return 1, nil }
		_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFleetDown })
		time.Sleep(time.Second)
		assert.PanicsWithValue(t, "share", func() { _, _ = p.Run(context.Background(), ok) })
		assert.Equal(t, resil.StateHalfOpen, b.State())
		_, err := p.Run(context.Background(), ok)
		require.NoError(t, err, "the trial place is free again")
		assert.Equal(t, resil.StateClosed, b.State())
	})
}

// A half-open trial that fails while the store cannot grant or settle it
// reopens the breaker on its own, and the share hears of that reopen
// (Tripped), so that the rest of the fleet reopens once the store is back
// rather than going on with trials.
func TestSharedBreakerUnleasedFailedTrialReopensFleet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: 1}
		f, bs := newMemFleet(policy, 2)
		fleetTrip(t, f, bs)
		time.Sleep(time.Second)
		f.setDown(true)
		require.ErrorIs(t, fleetCall(bs[0], true), errFleetDown)
		assert.Equal(t, resil.StateOpen, bs[0].State(), "the failed trial reopens")
		f.setDown(false)
		f.sync()
		assert.Equal(t, fleetRepeat(resil.StateOpen, 2), fleetStates(bs))
	})
}

// A granted trial that outlives its half-open period (its breaker reopened
// meanwhile, and the fleet with it) ends ignored: it is not settled into
// the fleet's newer half-open period, where it would count towards closing
// the fleet in place of a trial of that period.
func TestSharedBreakerStaleTrialNotSettledIntoNewerPeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: 2}
		f, bs := newMemFleet(policy, 2)
		fleetTrip(t, f, bs)
		time.Sleep(time.Second)

		release := make(chan struct{})
		done := make(chan error)
		go func() { // a granted trial of the first half-open period, slow to end
			_, err := resil.New[int]().Breaker(bs[0]).Run(context.Background(), func(context.Context) (int, error) {
				<-release
				return 1, nil
			})
			done <- err
		}()
		synctest.Wait()
		f.setDown(true)
		require.ErrorIs(t, fleetCall(bs[0], true), errFleetDown, "a trial the store could not grant fails")
		require.Equal(t, resil.StateOpen, bs[0].State())
		f.setDown(false)
		f.sync() // the fleet reopens
		require.Equal(t, fleetRepeat(resil.StateOpen, 2), fleetStates(bs))
		time.Sleep(time.Second) // a new half-open period
		require.Equal(t, fleetRepeat(resil.StateHalfOpen, 2), fleetStates(bs))

		close(release)
		require.NoError(t, <-done)
		require.NoError(t, fleetCall(bs[1], false))
		assert.Equal(t, resil.StateHalfOpen, bs[1].State(), "1 of the new period's 2 trials succeeded")
	})
}

// gateShare grants a trial once gate is closed, and records settles.
type gateShare struct {
	gate    chan struct{}
	mu      sync.Mutex
	settled []resil.TrialOutcome
}

func (s *gateShare) Tripped() {}
func (s *gateShare) AcquireTrial() resil.ShareAnswer {
	<-s.gate
	return resil.ShareYes
}
func (s *gateShare) SettleTrial(o resil.TrialOutcome) resil.ShareAnswer {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settled = append(s.settled, o)
	return resil.ShareUnavailable
}

// A place the fleet grants to a trial whose half-open period ended while
// it asked (the fleet forced the breaker open, and a new period began) is
// given back to the fleet: the trial is of a period that is over, and its
// outcome is ignored, but the place it was granted is not lost.
func TestSharedBreakerTrialGrantedAfterItsPeriodGivesPlaceBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sh := &gateShare{gate: make(chan struct{})}
		b, link := resil.NewSharedBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second}, sh)
		p := resil.New[int]().Breaker(b)
		_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFleetDown })
		time.Sleep(time.Second)
		done := make(chan error)
		go func() {
			_, err := p.Run(context.Background(), func(context.Context) (int, error) { return 1, nil })
			done <- err
		}()
		synctest.Wait() // the trial waits for the fleet's answer
		s := link.Snapshot()
		require.Equal(t, resil.StateHalfOpen, s.State)
		_, ok := link.Force(s.Gen, resil.StateOpen, 0)
		require.True(t, ok)
		require.Equal(t, resil.StateHalfOpen, b.State(), "a new half-open period")
		close(sh.gate)
		require.NoError(t, <-done)
		sh.mu.Lock()
		defer sh.mu.Unlock()
		assert.Equal(t, []resil.TrialOutcome{resil.TrialIgnored}, sh.settled)
		assert.Equal(t, resil.StateHalfOpen, b.State(), "a trial of an earlier period does not close the breaker")
	})
}
