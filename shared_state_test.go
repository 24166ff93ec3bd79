package resil_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// memFleet is an in-memory store shared by several breakers, standing for
// the replicas of a service: the reference implementation of BreakerShare.
// Its sync method is what a store's background work does every SyncEvery;
// the tests call it explicitly, so every step is deterministic.
type memFleet struct {
	policy resil.BreakerPolicy

	mu      sync.Mutex
	down    bool // the store cannot be reached
	epoch   uint64
	open    bool      // open, or half-open once until has passed
	until   time.Time // end of the open period
	passed  int       // trials that succeeded in this half-open period
	leases  int       // trial places taken in this half-open period
	members []*memMember
}

// memMember is one replica's share of the fleet.
type memMember struct {
	f       *memFleet
	link    resil.BreakerLink
	epoch   uint64 // the fleet epoch this replica last adopted
	ok      uint64 // counts last published, for epoch
	fail    uint64
	tripped atomic.Bool
	calls   atomic.Int64 // calls the breaker made to the share
}

func newMemFleet(policy resil.BreakerPolicy, n int) (*memFleet, []*resil.Breaker) {
	f := &memFleet{policy: policy}
	var bs []*resil.Breaker
	for range n {
		m := &memMember{f: f}
		b, link := resil.NewSharedBreaker(policy, m)
		m.link = link
		f.members = append(f.members, m)
		bs = append(bs, b)
	}
	return f, bs
}

func (m *memMember) Tripped() {
	m.calls.Add(1)
	m.tripped.Store(true)
}

func (m *memMember) AcquireTrial() resil.ShareAnswer {
	m.calls.Add(1)
	f := m.f
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.down:
		return resil.ShareUnavailable
	case f.epoch != m.epoch || (f.open && time.Now().Before(f.until)):
		return resil.ShareNo
	case !f.open:
		return resil.ShareUnavailable // the fleet never heard of the trip
	case f.leases+f.passed >= f.policy.HalfOpenCalls:
		return resil.ShareNo
	}
	f.leases++
	return resil.ShareYes
}

func (m *memMember) SettleTrial(o resil.TrialOutcome) resil.ShareAnswer {
	m.calls.Add(1)
	f := m.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return resil.ShareUnavailable
	}
	if f.epoch != m.epoch {
		return resil.ShareNo
	}
	f.leases--
	switch o {
	case resil.TrialSucceeded:
		f.passed++
		if f.passed < f.policy.HalfOpenCalls {
			return resil.ShareNo
		}
		f.transition(false)
		m.epoch = f.epoch
		return resil.ShareYes
	case resil.TrialFailed:
		f.transition(true)
		m.epoch = f.epoch
	}
	return resil.ShareNo
}

// transition moves the fleet to a new epoch, open or closed. Called with
// f.mu held.
func (f *memFleet) transition(open bool) {
	f.epoch++
	f.open = open
	f.until = time.Now().Add(f.policy.OpenFor)
	f.passed, f.leases = 0, 0
}

// sync is one round of every replica's background work: publish its own
// counts and trips, then adopt the fleet's state and the rest of the
// fleet's counts.
func (f *memFleet) sync() {
	f.mu.Lock()
	if f.down {
		f.mu.Unlock()
		for _, m := range f.members {
			// Without the store, every breaker decides on its own counts.
			s := m.link.Snapshot()
			m.link.SetFleet(s.Gen, 0, 0)
		}
		return
	}
	snaps := make([]resil.BreakerSnapshot, len(f.members))
	for i, m := range f.members {
		s := m.link.Snapshot()
		snaps[i] = s
		m.ok, m.fail = s.Successes, s.Failures
		halfOpen := f.open && !time.Now().Before(f.until)
		if m.tripped.Swap(false) && s.State == resil.StateOpen && m.epoch == f.epoch && (!f.open || halfOpen) {
			f.transition(true)
			m.epoch = f.epoch
		}
	}
	state, remaining := resil.StateClosed, time.Duration(0)
	if f.open {
		state, remaining = resil.StateOpen, time.Until(f.until)
	}
	for i, m := range f.members {
		gen := snaps[i].Gen
		if m.epoch != f.epoch {
			gen, _ = m.link.Force(gen, state, remaining)
			m.epoch = f.epoch
		}
		var ok, fail uint64
		for _, o := range f.members {
			if o != m && o.epoch == f.epoch {
				ok += o.ok
				fail += o.fail
			}
		}
		m.link.SetFleet(gen, ok, fail)
	}
	f.mu.Unlock()
}

func (f *memFleet) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

var errFleetDown = errors.New("dependency down")

func fleetCall(b *resil.Breaker, fail bool) error {
	_, err := resil.New[int]().Breaker(b).Run(context.Background(), func(context.Context) (int, error) {
		if fail {
			return 0, errFleetDown
		}
		return 1, nil
	})
	return err
}

func fleetStates(bs []*resil.Breaker) []resil.BreakerState {
	var s []resil.BreakerState
	for _, b := range bs {
		s = append(s, b.State())
	}
	return s
}

func fleetRepeat(s resil.BreakerState, n int) []resil.BreakerState {
	var r []resil.BreakerState
	for range n {
		r = append(r, s)
	}
	return r
}

func TestSharedBreakerTripsOnFleetCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.BreakerPolicy{FailureRatio: 0.25, MinCalls: 50, OpenFor: time.Second, HalfOpenCalls: 1}
		f, bs := newMemFleet(policy, 10)
		alone := resil.NewBreaker(policy)
		// Ten replicas see 30% failures each: 10 calls apiece, too few for
		// any one of them (or a local breaker) to decide.
		for i := range 10 {
			for _, b := range append(bs, alone) {
				require.NoError(t, ignoreFleetDown(fleetCall(b, i%10 < 3)))
			}
		}
		assert.Equal(t, fleetRepeat(resil.StateClosed, 10), fleetStates(bs))
		assert.Equal(t, resil.StateClosed, alone.State())

		f.sync() // each replica learns the other nine's 90 calls
		require.ErrorIs(t, fleetCall(bs[4], true), errFleetDown)
		require.ErrorIs(t, fleetCall(alone, true), errFleetDown)
		assert.Equal(t, resil.StateOpen, bs[4].State(), "101 calls, 31 failed: the fleet trips")
		assert.Equal(t, resil.StateClosed, alone.State(), "11 calls: too few alone")
		assert.Equal(t, resil.StateClosed, bs[3].State(), "the others learn at the next sync")

		f.sync()
		assert.Equal(t, fleetRepeat(resil.StateOpen, 10), fleetStates(bs))
		for _, b := range bs {
			require.ErrorIs(t, fleetCall(b, false), resil.ErrBreakerOpen)
		}
	})
}

// ignoreDown keeps a breaker test's loop about breaker errors only.
func ignoreFleetDown(err error) error {
	if errors.Is(err, errFleetDown) {
		return nil
	}
	return err
}

func TestSharedBreakerClosedPathNeverCallsTheShare(t *testing.T) {
	f, bs := newMemFleet(resil.BreakerPolicy{MinCalls: 1000}, 2)
	p := resil.New[int]().Breaker(bs[0])
	fn := func(context.Context) (int, error) { return 1, nil }
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		_, _ = p.Run(ctx, fn)
	})
	assert.Zero(t, allocs, "a closed call through a shared breaker allocates nothing")
	require.ErrorIs(t, fleetCall(bs[0], true), errFleetDown) // a failure that does not trip
	assert.Zero(t, f.members[0].calls.Load(), "neither a success nor a failure that does not trip calls the share")
}

func TestSharedBreakerForceReportsTransitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var seen []string
		policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, OnStateChange: func(from, to resil.BreakerState) {
			seen = append(seen, from.String()+">"+to.String())
		}}
		f, bs := newMemFleet(policy, 2)
		require.ErrorIs(t, fleetCall(bs[0], true), errFleetDown)
		f.sync()
		assert.Equal(t, []string{"closed>open"}, seen, "the fleet's transition waits for bs[1]'s next caller")
		assert.Equal(t, []resil.BreakerState{resil.StateOpen, resil.StateOpen}, fleetStates(bs))
		assert.Equal(t, []string{"closed>open", "closed>open"}, seen)

		// Forced open for what is left of the fleet's open period.
		time.Sleep(500 * time.Millisecond)
		assert.Equal(t, resil.StateOpen, bs[1].State())
		time.Sleep(500 * time.Millisecond)
		assert.Equal(t, resil.StateHalfOpen, bs[1].State())
	})
}

func TestSharedBreakerStaleGeneration(t *testing.T) {
	f, _ := newMemFleet(resil.BreakerPolicy{MinCalls: 1}, 1)
	link := f.members[0].link
	s := link.Snapshot()
	assert.Equal(t, resil.StateClosed, s.State)
	gen, ok := link.Force(s.Gen, resil.StateOpen, time.Hour)
	require.True(t, ok)
	open := link.Snapshot()
	assert.Equal(t, resil.StateOpen, open.State)
	assert.InDelta(t, float64(time.Hour), float64(open.Remaining), float64(time.Second))
	assert.NotEqual(t, s.Gen, gen)
	assert.False(t, link.SetFleet(s.Gen, 1, 1), "counts of an older state are dropped")
	_, ok = link.Force(s.Gen, resil.StateClosed, 0)
	assert.False(t, ok, "a decision taken on an older state is dropped")
	assert.Equal(t, resil.StateOpen, link.Breaker().State())
	gen2, ok := link.Force(gen, resil.StateOpen, 0)
	assert.True(t, ok)
	assert.Equal(t, gen, gen2, "already open: no transition, only the open period moves")
	assert.Equal(t, resil.StateHalfOpen, link.Breaker().State())
}

// TestSharedBreakerClearWindow: ClearWindow empties a closed breaker's
// window (its own counts and the fleet's) in a new generation without a
// transition: nothing is reported, an outcome of a call admitted before it
// counts nowhere, and a stale generation or a breaker that is not closed
// is left alone.
func TestSharedBreakerClearWindow(t *testing.T) {
	var seen []string
	policy := resil.BreakerPolicy{FailureRatio: 0.5, MinCalls: 4, OnStateChange: func(from, to resil.BreakerState) {
		seen = append(seen, from.String()+">"+to.String())
	}}
	f, bs := newMemFleet(policy, 1)
	link := f.members[0].link
	for range 3 {
		require.ErrorIs(t, fleetCall(bs[0], true), errFleetDown)
	}
	s := link.Snapshot()
	require.Equal(t, uint64(3), s.Failures)
	require.True(t, link.SetFleet(s.Gen, 0, 5), "the fleet's counts: 5 failures")

	// A call admitted before the clear ends after it.
	release, admitted := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := resil.New[int]().Breaker(bs[0]).Run(context.Background(), func(context.Context) (int, error) {
			close(admitted)
			<-release
			return 0, errFleetDown
		})
		done <- err
	}()
	<-admitted

	gen, ok := link.ClearWindow(s.Gen)
	require.True(t, ok)
	assert.NotEqual(t, s.Gen, gen, "a new generation")
	close(release)
	require.ErrorIs(t, <-done, errFleetDown)
	after := link.Snapshot()
	assert.Equal(t, resil.BreakerSnapshot{State: resil.StateClosed, Gen: gen}, after,
		"no outcome left, not even the one admitted before")
	for range 3 { // 3 of 4 calls failing would trip it on the old counts
		require.ErrorIs(t, fleetCall(bs[0], true), errFleetDown)
	}
	assert.Equal(t, resil.StateClosed, bs[0].State(), "neither its own old failures nor the fleet's count")
	assert.Empty(t, seen, "no transition")

	_, ok = link.ClearWindow(s.Gen)
	assert.False(t, ok, "a stale generation")
	assert.Equal(t, uint64(3), link.Snapshot().Failures, "left alone")

	open, ok := link.Force(link.Snapshot().Gen, resil.StateOpen, time.Hour)
	require.True(t, ok)
	still, ok := link.ClearWindow(open)
	assert.False(t, ok, "an open breaker has no window to clear")
	assert.Equal(t, open, still)
	assert.Equal(t, resil.StateOpen, bs[0].State())
}

func TestSharedBreakerForceChecksState(t *testing.T) {
	f, _ := newMemFleet(resil.BreakerPolicy{}, 1)
	link := f.members[0].link
	s := link.Snapshot()
	for _, to := range []resil.BreakerState{-1, 3, 5} {
		assert.PanicsWithValue(t, "resil: BreakerLink.Force to must be StateClosed, StateOpen or StateHalfOpen, got "+to.String(), func() {
			link.Force(s.Gen, to, time.Second)
		})
	}
	assert.Equal(t, s, link.Snapshot(), "nothing changed")
}

func TestSharedBreakerForceOpenForever(t *testing.T) {
	f, _ := newMemFleet(resil.BreakerPolicy{}, 1)
	link := f.members[0].link
	_, ok := link.Force(link.Snapshot().Gen, resil.StateOpen, math.MaxInt64)
	require.True(t, ok)
	assert.Equal(t, resil.StateOpen, link.Breaker().State(), "an open period that overflows the clock saturates")
}

// answerShare answers AcquireTrial with acquire (panicking instead while
// panics > 0) and records the outcomes it is asked to settle.
type answerShare struct {
	acquire resil.ShareAnswer
	panics  int
	settled []resil.TrialOutcome
}

func (s *answerShare) Tripped() {}
func (s *answerShare) AcquireTrial() resil.ShareAnswer {
	if s.panics > 0 {
		s.panics--
		panic("share")
	}
	return s.acquire
}
func (s *answerShare) SettleTrial(o resil.TrialOutcome) resil.ShareAnswer {
	s.settled = append(s.settled, o)
	return resil.ShareUnavailable
}

// Only a trial the fleet granted a place (ShareYes) is settled with it: a
// trial admitted while the store was unavailable holds no fleet place to
// give back or count.
func TestSharedBreakerSettlesOnlyGrantedTrials(t *testing.T) {
	errPerm := resil.Permanent(errors.New("bad request"))
	tests := []struct {
		name    string
		acquire resil.ShareAnswer
		err     error
		want    []resil.TrialOutcome
	}{
		{"granted, ignored", resil.ShareYes, errPerm, []resil.TrialOutcome{resil.TrialIgnored}},
		{"granted, failed", resil.ShareYes, errFleetDown, []resil.TrialOutcome{resil.TrialFailed}},
		{"granted, succeeded", resil.ShareYes, nil, []resil.TrialOutcome{resil.TrialSucceeded}},
		{"unavailable, ignored", resil.ShareUnavailable, errPerm, nil},
		{"unavailable, failed", resil.ShareUnavailable, errFleetDown, nil},
		{"unavailable, succeeded", resil.ShareUnavailable, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sh := &answerShare{acquire: tt.acquire}
				b, _ := resil.NewSharedBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second}, sh)
				p := resil.New[int]().Breaker(b)
				_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFleetDown })
				time.Sleep(time.Second)
				ran := false
				_, _ = p.Run(context.Background(), func(context.Context) (int, error) { ran = true; return 0, tt.err })
				assert.True(t, ran, "the trial runs")
				assert.Equal(t, tt.want, sh.settled)
			})
		})
	}
}

// A share that panics in AcquireTrial does not cost the breaker the trial
// place it had taken for the call.
func TestSharedBreakerAcquirePanicReturnsTrialPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sh := &answerShare{acquire: resil.ShareUnavailable, panics: 1}
		b, _ := resil.NewSharedBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second}, sh)
		p := resil.New[int]().Breaker(b)
		ok := func(context.Context) (int, error) { return 1, nil }
		_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFleetDown })
		time.Sleep(time.Second)
		assert.PanicsWithValue(t, "share", func() { _, _ = p.Run(context.Background(), ok) })
		_, err := p.Run(context.Background(), ok)
		require.NoError(t, err, "the trial place is free again")
		assert.Equal(t, resil.StateClosed, b.State())
	})
}

// scriptRateShare answers Reserve from a script of (wait, answer) pairs,
// then ShareUnavailable.
type scriptRateShare struct {
	mu      sync.Mutex
	answers []resil.ShareAnswer
	waits   []time.Duration
}

func (s *scriptRateShare) Reserve(time.Duration) (time.Duration, resil.ShareAnswer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.answers) == 0 {
		return 0, resil.ShareUnavailable
	}
	a, w := s.answers[0], s.waits[0]
	s.answers, s.waits = s.answers[1:], s.waits[1:]
	return w, a
}

// A turn the fleet granted is not given to the local bucket when its wait
// is cancelled: the local bucket (1/s, burst 1) still lets one call through
// per second.
func TestSharedRateLimiterCancelledFleetTurnStaysOffLocal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		share := &scriptRateShare{
			answers: []resil.ShareAnswer{resil.ShareUnavailable, resil.ShareUnavailable, resil.ShareYes, resil.ShareUnavailable},
			waits:   []time.Duration{0, 0, time.Second, 0},
		}
		l, _ := resil.NewSharedRateLimiter(resil.RateLimitPolicy{Rate: 1, Burst: 1, MaxWait: 10 * time.Second}, share)
		p := resil.New[int]().RateLimit(l)
		start := time.Now()
		var (
			mu     sync.Mutex
			passed []time.Duration
			wg     sync.WaitGroup
		)
		fn := func(context.Context) (int, error) {
			mu.Lock()
			passed = append(passed, time.Since(start))
			mu.Unlock()
			return 0, nil
		}
		_, _ = p.Run(t.Context(), fn)                   // local: at once
		wg.Go(func() { _, _ = p.Run(t.Context(), fn) }) // local: the turn at 1s
		synctest.Wait()
		ctx, cancel := context.WithCancel(t.Context())
		var errC error
		wg.Go(func() { _, errC = p.Run(ctx, fn) }) // the fleet's turn, 1s away
		synctest.Wait()
		cancel()
		synctest.Wait()
		wg.Go(func() { _, _ = p.Run(t.Context(), fn) }) // local: the turn at 2s
		wg.Wait()
		require.ErrorIs(t, errC, context.Canceled)
		assert.Equal(t, []time.Duration{0, time.Second, 2 * time.Second}, passed)
	})
}

// Setting the fraction the local share already has keeps its bucket, the
// first time too (the local share starts as the whole policy).
func TestSharedRateLimiterSameShareKeepsBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, link := resil.NewSharedRateLimiter(resil.RateLimitPolicy{Rate: 1, Burst: 1}, &scriptRateShare{})
		p := resil.New[int]().RateLimit(l)
		_, err := p.Run(t.Context(), passFn)
		require.NoError(t, err)
		_, err = p.Run(t.Context(), passFn)
		require.ErrorIs(t, err, resil.ErrRateLimited)
		for _, f := range []float64{1, 1, math.NaN()} { // NaN is taken as 1
			link.SetLocalShare(f)
			_, err = p.Run(t.Context(), passFn)
			require.ErrorIs(t, err, resil.ErrRateLimited, "SetLocalShare(%v) refilled the bucket", f)
		}
	})
}

func TestSharedBreakerPolicyDefaults(t *testing.T) {
	_, link := resil.NewSharedBreaker(resil.BreakerPolicy{}, &memMember{f: &memFleet{}})
	assert.Equal(t, resil.BreakerPolicy{FailureRatio: 0.5, MinCalls: 10, Window: 10 * time.Second, OpenFor: 5 * time.Second, HalfOpenCalls: 1}, link.Policy())
}

func TestNewSharedBreakerPanics(t *testing.T) {
	assert.PanicsWithValue(t, "resil: NewSharedBreaker share must be non-nil, got nil", func() {
		resil.NewSharedBreaker(resil.BreakerPolicy{}, nil)
	})
	assert.PanicsWithValue(t, "resil: BreakerPolicy.MinCalls must be >= 0, got -1", func() {
		resil.NewSharedBreaker(resil.BreakerPolicy{MinCalls: -1}, &memMember{})
	})
}

// trip opens every breaker of the fleet through one replica's failure.
func fleetTrip(t *testing.T, f *memFleet, bs []*resil.Breaker) {
	t.Helper()
	require.ErrorIs(t, fleetCall(bs[0], true), errFleetDown)
	f.sync()
	require.Equal(t, fleetRepeat(resil.StateOpen, len(bs)), fleetStates(bs))
}

func TestSharedBreakerHalfOpenTrialsFleetWide(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: 2}
		f, bs := newMemFleet(policy, 3)
		fleetTrip(t, f, bs)
		time.Sleep(time.Second)

		// Every replica's callers try at once; trials block until released.
		release := make(chan struct{})
		var running, admitted, rejected atomic.Int64
		var maxRunning atomic.Int64
		var wg sync.WaitGroup
		for _, b := range bs {
			for range 3 {
				wg.Go(func() {
					_, err := resil.New[int]().Breaker(b).Run(context.Background(), func(context.Context) (int, error) {
						n := running.Add(1)
						for m := maxRunning.Load(); n > m && !maxRunning.CompareAndSwap(m, n); m = maxRunning.Load() {
						}
						admitted.Add(1)
						<-release
						running.Add(-1)
						return 1, nil
					})
					if errors.Is(err, resil.ErrBreakerOpen) {
						rejected.Add(1)
					}
				})
			}
		}
		synctest.Wait()
		assert.EqualValues(t, 2, admitted.Load(), "HalfOpenCalls trials fleet-wide, not per replica")
		assert.EqualValues(t, 7, rejected.Load())
		close(release)
		wg.Wait()
		assert.EqualValues(t, 2, maxRunning.Load())

		// The replica whose trial completed the fleet's quota closed; the
		// others close at the next sync.
		closed := 0
		for _, b := range bs {
			if b.State() == resil.StateClosed {
				closed++
			}
		}
		assert.Equal(t, 1, closed)
		f.sync()
		assert.Equal(t, fleetRepeat(resil.StateClosed, 3), fleetStates(bs))
	})
}

func TestSharedBreakerFailedTrialReopensFleet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: 1}
		f, bs := newMemFleet(policy, 3)
		fleetTrip(t, f, bs)
		time.Sleep(time.Second)
		assert.Equal(t, fleetRepeat(resil.StateHalfOpen, 3), fleetStates(bs))
		require.ErrorIs(t, fleetCall(bs[2], true), errFleetDown)
		assert.Equal(t, resil.StateOpen, bs[2].State())
		f.sync()
		assert.Equal(t, fleetRepeat(resil.StateOpen, 3), fleetStates(bs))
		time.Sleep(time.Second)
		assert.Equal(t, fleetRepeat(resil.StateHalfOpen, 3), fleetStates(bs), "a full OpenFor from the failed trial")
	})
}

func TestSharedBreakerIgnoredTrialGivesPlaceBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: 1}
		f, bs := newMemFleet(policy, 2)
		fleetTrip(t, f, bs)
		time.Sleep(time.Second)
		assert.Panics(t, func() {
			_, _ = resil.New[int]().Breaker(bs[0]).Run(context.Background(), func(context.Context) (int, error) {
				panic("boom")
			})
		})
		// The place the panicking trial held is free again, on another replica.
		require.NoError(t, fleetCall(bs[1], false))
		assert.Equal(t, resil.StateClosed, bs[1].State())
	})
}

func TestSharedBreakerStoreDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.BreakerPolicy{FailureRatio: 0.5, MinCalls: 4, OpenFor: time.Second, HalfOpenCalls: 1}
		f, bs := newMemFleet(policy, 2)
		for range 3 {
			require.NoError(t, fleetCall(bs[1], false))
		}
		f.sync()
		f.setDown(true)
		f.sync() // the fleet's counts are dropped: each breaker is on its own
		require.ErrorIs(t, fleetCall(bs[0], true), errFleetDown)
		assert.Equal(t, resil.StateClosed, bs[0].State(), "1 call alone is below MinCalls")
		for range 3 {
			require.ErrorIs(t, fleetCall(bs[0], true), errFleetDown)
		}
		assert.Equal(t, resil.StateOpen, bs[0].State(), "a local breaker still trips")
		f.sync()
		assert.Equal(t, resil.StateClosed, bs[1].State(), "no store, no fleet trip")

		// Half-open without a store: trials are local.
		time.Sleep(time.Second)
		require.NoError(t, fleetCall(bs[0], false))
		assert.Equal(t, resil.StateClosed, bs[0].State())
	})
}

// memBucket is an in-memory fleet bucket shared by several rate limiters:
// the reference implementation of RateLimitShare (GCRA, as a store's
// script computes it).
type memBucket struct {
	mu       sync.Mutex
	down     bool
	tat      time.Time
	interval time.Duration
	tau      time.Duration
	asked    int
}

func newMemBucket(policy resil.RateLimitPolicy) *memBucket {
	interval := time.Duration(float64(time.Second) / policy.Rate)
	return &memBucket{interval: interval, tau: time.Duration(max(policy.Burst, 1)-1) * interval}
}

func (m *memBucket) Reserve(maxWait time.Duration) (time.Duration, resil.ShareAnswer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asked++
	if m.down {
		return 0, resil.ShareUnavailable
	}
	now := time.Now()
	base := now
	if m.tat.After(now) {
		base = m.tat
	}
	wait := base.Add(-m.tau).Sub(now)
	if wait > maxWait {
		return wait, resil.ShareNo
	}
	m.tat = base.Add(m.interval)
	return max(wait, 0), resil.ShareYes
}

func limitedCall(l *resil.RateLimiter) error {
	_, err := resil.New[int]().RateLimit(l).Run(context.Background(), func(context.Context) (int, error) { return 1, nil })
	return err
}

func retryAfter(t *testing.T, err error) time.Duration {
	t.Helper()
	require.ErrorIs(t, err, resil.ErrRateLimited)
	var h interface{ RetryAfter() time.Duration }
	require.ErrorAs(t, err, &h)
	return h.RetryAfter()
}

func TestSharedRateLimiterFleetBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.RateLimitPolicy{Rate: 10, Burst: 2}
		bucket := newMemBucket(policy)
		a, _ := resil.NewSharedRateLimiter(policy, bucket)
		b, _ := resil.NewSharedRateLimiter(policy, bucket)
		require.NoError(t, limitedCall(a))
		require.NoError(t, limitedCall(b))
		assert.Equal(t, 100*time.Millisecond, retryAfter(t, limitedCall(a)), "Burst 2 for the fleet, not per replica")
		assert.Equal(t, 100*time.Millisecond, retryAfter(t, limitedCall(b)))
		time.Sleep(100 * time.Millisecond)
		require.NoError(t, limitedCall(b))
		retryAfter(t, limitedCall(a))
		assert.Equal(t, 6, bucket.asked, "every call asks the fleet")
	})
}

func TestSharedRateLimiterWaitsForFleetTurn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.RateLimitPolicy{Rate: 10, MaxWait: time.Second}
		bucket := newMemBucket(policy)
		a, _ := resil.NewSharedRateLimiter(policy, bucket)
		b, _ := resil.NewSharedRateLimiter(policy, bucket)
		start := time.Now()
		require.NoError(t, limitedCall(a))
		require.NoError(t, limitedCall(b))
		assert.Equal(t, 100*time.Millisecond, time.Since(start), "b waits for the turn the fleet gave it")
	})
}

func TestSharedRateLimiterLocalShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.RateLimitPolicy{Rate: 10, Burst: 4}
		bucket := newMemBucket(policy)
		bucket.down = true
		l, link := resil.NewSharedRateLimiter(policy, bucket)
		assert.Equal(t, policy, link.Policy())
		assert.Same(t, l, link.RateLimiter())
		link.SetLocalShare(0.25) // one of four replicas: 2.5/s, a bucket of 1
		require.NoError(t, limitedCall(l))
		assert.Equal(t, 400*time.Millisecond, retryAfter(t, limitedCall(l)))
		time.Sleep(400 * time.Millisecond)
		link.SetLocalShare(0.25) // unchanged: the bucket stays as it is
		require.NoError(t, limitedCall(l))
		retryAfter(t, limitedCall(l))

		link.SetLocalShare(-1) // invalid: the whole policy
		for range 4 {
			require.NoError(t, limitedCall(l))
		}
		assert.Equal(t, 100*time.Millisecond, retryAfter(t, limitedCall(l)))
	})
}

func TestNewSharedRateLimiterPanics(t *testing.T) {
	assert.PanicsWithValue(t, "resil: NewSharedRateLimiter share must be non-nil, got nil", func() {
		resil.NewSharedRateLimiter(resil.RateLimitPolicy{Rate: 1}, nil)
	})
	assert.PanicsWithValue(t, "resil: RateLimitPolicy.Rate must be > 0 and finite, got 0", func() {
		resil.NewSharedRateLimiter(resil.RateLimitPolicy{}, &memBucket{})
	})
}

func FuzzSetLocalShare(f *testing.F) {
	for _, v := range []float64{1, 0.5, 1e-9, 0, -1, 2, math.NaN(), math.Inf(1)} {
		f.Add(v, 10.0, 4)
	}
	f.Add(1e-300, 1e-300, 1) // a product that underflows to 0
	f.Fuzz(func(t *testing.T, fraction, rate float64, burst int) {
		policy := resil.RateLimitPolicy{Rate: rate, Burst: burst}
		if policy.Validate() != nil {
			return
		}
		bucket := newMemBucket(resil.RateLimitPolicy{Rate: 1})
		bucket.down = true
		l, link := resil.NewSharedRateLimiter(policy, bucket)
		link.SetLocalShare(fraction)
		// Whatever the fraction, the local share is a valid bucket that
		// starts with at least one token.
		require.NoError(t, limitedCall(l))
	})
}

// A BreakerLink never runs OnStateChange on its own goroutine (a share's
// background work, where a panic could not be recovered): the transitions
// it makes are reported, in order, by the breaker's next caller, whatever
// path that caller takes.
func TestSharedBreakerLinkLeavesReportsToCallers(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		to   []resil.BreakerState // what the link forces, in turn
		look func(b *resil.Breaker) error
		want []string
	}{
		{"State", []resil.BreakerState{resil.StateOpen}, func(b *resil.Breaker) error { b.State(); return nil },
			[]string{"closed>open"}},
		{"rejected call", []resil.BreakerState{resil.StateOpen}, func(b *resil.Breaker) error { return fleetCall(b, false) },
			[]string{"closed>open"}},
		{"closed call", []resil.BreakerState{resil.StateOpen, resil.StateHalfOpen, resil.StateClosed},
			func(b *resil.Breaker) error { return fleetCall(b, false) },
			[]string{"closed>open", "open>half-open", "half-open>closed"}},
		{"trial", []resil.BreakerState{resil.StateOpen, resil.StateHalfOpen}, func(b *resil.Breaker) error { return fleetCall(b, false) },
			[]string{"closed>open", "open>half-open", "half-open>closed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen []string
			b, link := resil.NewSharedBreaker(resil.BreakerPolicy{OpenFor: time.Hour, OnStateChange: func(from, to resil.BreakerState) {
				seen = append(seen, from.String()+">"+to.String())
			}}, &answerShare{acquire: resil.ShareUnavailable})
			for _, to := range tt.to {
				_, ok := link.Force(link.Snapshot().Gen, to, time.Hour)
				require.True(t, ok)
			}
			assert.Empty(t, seen, "reported on the link's goroutine")
			if err := tt.look(b); err != nil {
				require.ErrorIs(t, err, resil.ErrBreakerOpen)
			}
			assert.Equal(t, tt.want, seen)
			_, _ = resil.New[int]().Breaker(b).Run(ctx, func(context.Context) (int, error) { return 1, nil })
			b.State()
			assert.Equal(t, tt.want, seen, "each once")
		})
	}
}

// A panic in OnStateChange for a transition the link made reaches the
// breaker's next caller, not the link's goroutine, and the breaker goes on
// working.
func TestSharedBreakerLinkCallbackPanicReachesCaller(t *testing.T) {
	b, link := resil.NewSharedBreaker(resil.BreakerPolicy{OpenFor: time.Hour, OnStateChange: func(from, to resil.BreakerState) {
		if to == resil.StateOpen {
			panic("callback")
		}
	}}, &answerShare{})
	assert.NotPanics(t, func() {
		_, ok := link.Force(link.Snapshot().Gen, resil.StateOpen, time.Hour)
		require.True(t, ok)
	})
	assert.PanicsWithValue(t, "callback", func() { _ = fleetCall(b, false) })
	require.ErrorIs(t, fleetCall(b, false), resil.ErrBreakerOpen, "reported once; the breaker stays open")
	_, ok := link.Force(link.Snapshot().Gen, resil.StateClosed, 0)
	require.True(t, ok)
	require.NoError(t, fleetCall(b, false))
	assert.Equal(t, resil.StateClosed, b.State())
}

// Transitions a link makes while no call comes wait for one, but never
// more than 64: beyond that the newest are condensed, and what is reported
// still runs as one chain from the last state reported to the current one.
func TestSharedBreakerLinkCondensesWhileIdle(t *testing.T) {
	var seen [][2]resil.BreakerState
	b, link := resil.NewSharedBreaker(resil.BreakerPolicy{OpenFor: time.Hour, OnStateChange: func(from, to resil.BreakerState) {
		seen = append(seen, [2]resil.BreakerState{from, to})
	}}, &answerShare{})
	cycle := []resil.BreakerState{resil.StateOpen, resil.StateHalfOpen, resil.StateClosed, resil.StateOpen, resil.StateClosed}
	const forced = 1000
	for i := range forced {
		_, ok := link.Force(link.Snapshot().Gen, cycle[i%len(cycle)], time.Hour)
		require.True(t, ok)
	}
	final := cycle[(forced-1)%len(cycle)]
	assert.Equal(t, final, b.State())
	require.NotEmpty(t, seen)
	assert.LessOrEqual(t, len(seen), 64)
	from := resil.StateClosed
	for i, tr := range seen {
		require.Equal(t, from, tr[0], "transition %d", i)
		require.NotEqual(t, tr[0], tr[1], "transition %d", i)
		from = tr[1]
	}
	assert.Equal(t, final, from, "the chain ends in the current state")
	assert.Equal(t, seen[:60], condensedPrefix(cycle, 60), "the oldest are reported as they were made")
}

// condensedPrefix is the first n transitions of forcing cycle in turn from
// closed.
func condensedPrefix(cycle []resil.BreakerState, n int) [][2]resil.BreakerState {
	var r [][2]resil.BreakerState
	from := resil.StateClosed
	for i := 0; len(r) < n; i++ {
		to := cycle[i%len(cycle)]
		r = append(r, [2]resil.BreakerState{from, to})
		from = to
	}
	return r
}

// scriptTrialShare answers AcquireTrial and SettleTrial from scripts, then
// ShareUnavailable.
type scriptTrialShare struct {
	mu       sync.Mutex
	acquires []resil.ShareAnswer
	settles  []resil.ShareAnswer
}

func (s *scriptTrialShare) Tripped() {}
func (s *scriptTrialShare) AcquireTrial() resil.ShareAnswer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return pop(&s.acquires)
}
func (s *scriptTrialShare) SettleTrial(resil.TrialOutcome) resil.ShareAnswer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return pop(&s.settles)
}

func pop(answers *[]resil.ShareAnswer) resil.ShareAnswer {
	if len(*answers) == 0 {
		return resil.ShareUnavailable
	}
	a := (*answers)[0]
	*answers = (*answers)[1:]
	return a
}

// A half-open breaker whose trials all succeed closes however the fleet
// answered each, admitting trials until it does. A success the fleet
// counted without closing (ShareNo) gives its local place back: the fleet
// holds the count and its places, so a later trial, granted by the fleet
// or decided locally when the store cannot answer, goes on with the count.
func TestSharedBreakerHalfOpenNeverStuck(t *testing.T) {
	yes, no, gone := resil.ShareYes, resil.ShareNo, resil.ShareUnavailable
	tests := []struct {
		name     string
		acquires []resil.ShareAnswer // then gone
		settles  []resil.ShareAnswer // for the trials acquired with yes
		calls    int                 // the breaker closes after this many trials
	}{
		{"fleet counted, then settle failed", []resil.ShareAnswer{yes, yes}, []resil.ShareAnswer{no, gone}, 3},
		{"fleet counted, then store down", []resil.ShareAnswer{yes}, []resil.ShareAnswer{no}, 3},
		{"store down, then fleet counted", []resil.ShareAnswer{gone, yes}, []resil.ShareAnswer{no}, 3},
		{"fleet counted both", []resil.ShareAnswer{yes, yes}, []resil.ShareAnswer{no, no}, 4},
		{"fleet closed at the first", []resil.ShareAnswer{yes}, []resil.ShareAnswer{yes}, 1},
		{"store down for both", nil, nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sh := &scriptTrialShare{acquires: tt.acquires, settles: tt.settles}
				b, _ := resil.NewSharedBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: 2}, sh)
				p := resil.New[int]().Breaker(b)
				_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errFleetDown })
				require.Equal(t, resil.StateOpen, b.State())
				time.Sleep(time.Second)
				calls := 0
				for b.State() != resil.StateClosed && calls < 10 {
					calls++
					_, err := p.Run(context.Background(), func(context.Context) (int, error) { return 1, nil })
					require.NoError(t, err, "trial %d is admitted", calls)
				}
				assert.Equal(t, tt.calls, calls)
			})
		})
	}
}

// A Burst within 512 of math.MaxInt keeps its whole size in a local share
// of 1 (a fleet that shrank back to one replica): float64 of it is 2^63,
// which no int holds, and the bucket must not collapse to 1.
func TestSharedRateLimiterHugeBurstWholeShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.RateLimitPolicy{Rate: 1, Burst: math.MaxInt}
		bucket := newMemBucket(policy)
		bucket.down = true
		l, link := resil.NewSharedRateLimiter(policy, bucket)
		link.SetLocalShare(0.5)
		link.SetLocalShare(1)
		for i := range 10 {
			require.NoError(t, limitedCall(l), "call %d", i)
		}
	})
}

// sleepyShare grants every turn at once after a round trip of rtt, with
// the wait the fleet's bucket gave it as of the middle of the round trip.
type sleepyShare struct {
	rtt  time.Duration
	wait time.Duration
}

func (s sleepyShare) Reserve(time.Duration) (time.Duration, resil.ShareAnswer) {
	time.Sleep(s.rtt)
	return s.wait, resil.ShareYes
}

// A fleet turn that, counted from the store's answer, would come at or
// after the call's deadline is no use to the call: it is refused at once
// with ErrRateLimited, rather than waiting until its context ends.
func TestSharedRateLimiterFleetTurnPastDeadlineRefusedAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		policy := resil.RateLimitPolicy{Rate: 10, MaxWait: time.Second}
		l, _ := resil.NewSharedRateLimiter(policy, sleepyShare{rtt: 20 * time.Millisecond, wait: 80 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 95*time.Millisecond)
		defer cancel()
		start := time.Now()
		ran := false
		_, err := resil.New[int]().RateLimit(l).Run(ctx, func(context.Context) (int, error) { ran = true; return 1, nil })
		require.ErrorIs(t, err, resil.ErrRateLimited)
		assert.Equal(t, 20*time.Millisecond, time.Since(start), "refused once the answer came")
		assert.False(t, ran)
		var hint interface{ RetryAfter() time.Duration }
		require.ErrorAs(t, err, &hint)
		assert.Equal(t, 80*time.Millisecond, hint.RetryAfter())

		ctx2, cancel2 := context.WithTimeout(context.Background(), 101*time.Millisecond)
		defer cancel2()
		start = time.Now()
		_, err = resil.New[int]().RateLimit(l).Run(ctx2, func(context.Context) (int, error) { ran = true; return 1, nil })
		require.NoError(t, err, "a turn before the deadline is waited for")
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
	})
}
