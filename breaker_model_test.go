package resil

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// breakerModel is the reference the breaker is checked against: the
// contract of API.md written as plainly as possible. It keeps every outcome
// with its exact time and re-counts the window on each failure. The one
// liberty the documentation gives the breaker, that an outcome may drop out
// of the window early (never late), is modelled as a band: an outcome
// younger than Window minus its tolerance surely counts, one at least
// Window old surely does not, one in between may or may not. A failure's
// tolerance is Window/20 (its bucket). A success's is its bucket plus how
// early it may be dated: never before the last failure or transition that
// preceded it (each folds the counters), which is all the model can know
// without modelling the per-P batches (TestBreakerWindowPrecision and
// TestBreakerSteadyPrecision check the tighter bounds).
type breakerModel struct {
	ratio     float64
	minCalls  int
	window    time.Duration
	openFor   time.Duration
	halfOpen  int
	state     BreakerState
	openUntil time.Duration
	outcomes  []modelOutcome // of the current state, oldest first
	trials    int            // half-open trials admitted and not given back
	passed    int            // half-open trials that succeeded
	changes   []transition
	anchor    time.Duration // the last failure or transition: no success is dated before it
}

type modelOutcome struct {
	at    time.Duration
	fail  bool
	early time.Duration // how early the breaker may date it
}

func newBreakerModel(p BreakerPolicy) *breakerModel {
	m := &breakerModel{
		ratio:    p.FailureRatio,
		minCalls: p.MinCalls,
		window:   p.Window,
		openFor:  p.OpenFor,
		halfOpen: p.HalfOpenCalls,
	}
	if m.ratio == 0 {
		m.ratio = 0.5
	}
	if m.minCalls == 0 {
		m.minCalls = 10
	}
	if m.window == 0 {
		m.window = 10 * time.Second
	}
	if m.openFor == 0 {
		m.openFor = 5 * time.Second
	}
	if m.halfOpen == 0 {
		m.halfOpen = 1
	}
	return m
}

func (m *breakerModel) set(to BreakerState, now time.Duration) {
	m.changes = append(m.changes, transition{from: m.state, to: to})
	m.state = to
	m.anchor = now
	m.outcomes = nil
	m.trials, m.passed = 0, 0
	if to == StateOpen {
		m.openUntil = now + m.openFor
	}
}

// advance is the lazy open → half-open transition.
func (m *breakerModel) advance(now time.Duration) {
	if m.state == StateOpen && now >= m.openUntil {
		m.set(StateHalfOpen, now)
	}
}

// admit says whether a call at now runs, and whether as a trial.
func (m *breakerModel) admit(now time.Duration) (ok, trial bool) {
	m.advance(now)
	switch m.state {
	case StateClosed:
		return true, false
	case StateHalfOpen:
		if m.trials < m.halfOpen {
			m.trials++
			return true, true
		}
	}
	return false, false
}

// tripChoices records a closed-state failure at now and says whether the
// window may trip the breaker and whether it must, over every way the
// outcomes in the tolerance band may be counted.
func (m *breakerModel) tripChoices(now time.Duration) (may, must bool) {
	m.outcomes = append(m.outcomes, modelOutcome{at: now, fail: true})
	m.anchor = now
	var okIn, okBand, failIn, failBand int
	kept := m.outcomes[:0]
	for _, o := range m.outcomes {
		age := now - o.at
		early := m.window/windowBuckets + o.early
		switch {
		case age >= m.window:
			continue // out for good
		case age < m.window-early:
			if o.fail {
				failIn++
			} else {
				okIn++
			}
		default:
			if o.fail {
				failBand++
			} else {
				okBand++
			}
		}
		kept = append(kept, o)
	}
	m.outcomes = kept
	must = true
	for f := failIn; f <= failIn+failBand; f++ {
		for s := okIn; s <= okIn+okBand; s++ {
			calls := s + f
			trips := calls >= m.minCalls && float64(f)/float64(calls) >= m.ratio
			may = may || trips
			must = must && trips
		}
	}
	return may, must
}

type modelKind int

const (
	kindSuccess modelKind = iota
	kindFailure
	kindTransient // marked Transient: a failure whatever FailureIf says
	kindPermanent // ignored
	kindCanceled  // context.Canceled: ignored by the default FailureIf
	kindPanic     // ignored, and re-panics
)

var errModelFail = errors.New("model: failure")

type modelPanic struct{ step int }

// modelRun drives one breaker and its model through steps random steps
// (calls of every outcome, bursts of successes, State() calls and time
// steps) and checks, after every step, that state and the transitions
// reported to OnStateChange agree, and that successes + failures + ignored
// + rejections == calls.
func modelRun(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pick := func(xs ...int) int { return xs[rng.IntN(len(xs))] }
	pol := BreakerPolicy{
		FailureRatio:  []float64{0, 0.1, 0.5, 0.8, 1}[rng.IntN(5)],
		MinCalls:      pick(0, 1, 2, 5, 20),
		Window:        time.Duration(pick(0, 1, 4)) * time.Second,
		OpenFor:       time.Duration(pick(0, 1, 3)) * time.Second,
		HalfOpenCalls: pick(0, 1, 2, 3),
	}
	var got []transition
	pol.OnStateChange = func(from, to BreakerState) { got = append(got, transition{from: from, to: to}) }
	b := NewBreaker(pol)
	m := newBreakerModel(pol)
	p := New[int]().Breaker(b)
	start := time.Now()
	w := m.window
	jumps := []time.Duration{0, time.Millisecond, w / 40, w / 20, w / 10, w / 4, w / 2, w - w/10, w, m.openFor}

	var calls, successes, failures, ignoredN, rejections int
	call := func(step int, kind modelKind) {
		now := time.Since(start)
		ok, trial := m.admit(now)
		calls++
		ran := false
		var fnErr error
		var err error
		var recovered any
		func() {
			defer func() { recovered = recover() }()
			_, err = p.Run(context.Background(), func(context.Context) (int, error) {
				ran = true
				switch kind {
				case kindFailure:
					fnErr = fmt.Errorf("step %d: %w", step, errModelFail)
				case kindTransient:
					fnErr = Transient(errModelFail)
				case kindPermanent:
					fnErr = Permanent(errModelFail)
				case kindCanceled:
					fnErr = context.Canceled
				case kindPanic:
					panic(modelPanic{step})
				}
				if fnErr != nil {
					return 0, fnErr
				}
				return step, nil
			})
		}()
		require.Equal(t, ok, ran, "step %d: admitted", step)
		if !ok {
			rejections++
			require.ErrorIs(t, err, ErrBreakerOpen, "step %d", step)
			require.Nil(t, recovered, "step %d", step)
			return
		}
		if kind == kindPanic {
			require.Equal(t, modelPanic{step}, recovered, "step %d: the panic reaches the caller", step)
		} else {
			require.Nil(t, recovered, "step %d", step)
			require.Equal(t, fnErr, err, "step %d: the error comes back unchanged", step)
		}
		failed := kind == kindFailure || kind == kindTransient
		switch {
		case kind == kindSuccess:
			successes++
		case failed:
			failures++
		default:
			ignoredN++
		}
		switch {
		case trial && kind == kindSuccess:
			m.passed++
			if m.passed >= m.halfOpen {
				m.set(StateClosed, now)
			}
		case trial && failed:
			m.set(StateOpen, now)
		case trial:
			m.trials-- // an ignored trial gives its place back
		case kind == kindSuccess:
			m.outcomes = append(m.outcomes, modelOutcome{at: now, early: now - m.anchor})
		case failed:
			may, must := m.tripChoices(now)
			opened := BreakerState(b.word.Load()&stateMask) == StateOpen
			var implOK, implFail uint64 // the breaker's window, for the message
			b.mu.Lock()
			for _, r := range b.ring {
				implOK += r.ok
				implFail += r.fail
			}
			b.mu.Unlock()
			if opened {
				require.True(t, may, "step %d at %v: opened, but the window cannot trip: %+v\n%+v impl ok=%d fail=%d %v", step, now, m.outcomes, pol, implOK, implFail, got)
				m.set(StateOpen, now)
			} else {
				require.False(t, must, "step %d at %v: stayed closed, but the window must trip: %+v\n%+v impl ok=%d fail=%d %v", step, now, m.outcomes, pol, implOK, implFail, got)
			}
		}
	}

	for step := range steps {
		switch r := rng.IntN(100); {
		case r < 8:
			time.Sleep(jumps[rng.IntN(len(jumps))] + time.Duration(rng.Int64N(int64(w/20)+1))*time.Duration(rng.IntN(2)))
		case r < 14:
			time.Sleep(time.Duration(rng.Int64N(int64(w + w/5)))) // anywhere, band edges included
		case r < 17:
			m.advance(time.Since(start))
			require.Equal(t, m.state, b.State(), "step %d: State()", step)
		case r < 20:
			for range 1 + rng.IntN(150) {
				call(step, kindSuccess)
			}
		case r < 55:
			call(step, kindSuccess)
		case r < 80:
			call(step, kindFailure)
		case r < 85:
			call(step, kindTransient)
		case r < 90:
			call(step, kindPermanent)
		case r < 95:
			call(step, kindCanceled)
		default:
			call(step, kindPanic)
		}
		require.Equal(t, m.state, BreakerState(b.word.Load()&stateMask), "step %d: state", step)
		require.Equal(t, m.changes, got, "step %d: transitions reported, in order", step)
		require.Equal(t, calls, successes+failures+ignoredN+rejections, "step %d", step)
	}
}

// TestBreakerModel runs seeded random sequences of outcomes and time steps
// against the reference model, in fake time.
func TestBreakerModel(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 30
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { modelRun(t, seed, 400) })
		})
	}
}

// TestBreakerModelBurstThenTrickle is the sequence the model found: a burst
// of successes grows the success batch, a trickle of successes 5s later
// waits in the per-CPU counters, and failures 5.5s after that must not find
// those successes dated at the burst (and so already expired).
func TestBreakerModelBurstThenTrickle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerPolicy{Window: 10 * time.Second}) // ratio 0.5, 10 calls
		p := New[int]().Breaker(b)
		ok := func(context.Context) (int, error) { return 1, nil }
		bad := func(context.Context) (int, error) { return 0, errModelFail }
		for range 2*maxBatch - 1 { // 1+2+4+...+maxBatch/2: folds at once, the batch grows to its cap
			_, _ = p.Run(context.Background(), ok)
		}
		time.Sleep(5 * time.Second)
		for range 40 {
			_, _ = p.Run(context.Background(), ok)
		}
		time.Sleep(5500 * time.Millisecond)
		for i := range 10 { // 10 failures against 40 successes 5.5s old: 20%
			_, _ = p.Run(context.Background(), bad)
			require.Equal(t, StateClosed, b.State(), "failure %d", i)
		}
	})
}

// TestBreakerWindowPrecision probes the window's edges directly, in fake
// time, with seeded random gaps: an outcome must count while it is younger
// than Window minus its documented tolerance and must not once it is Window
// old.
//
// Success probe (FailureRatio 1, MinCalls 1: one success in the window keeps
// the breaker closed): a burst of successes that grows the success batch,
// a gap of up to 4 buckets, one success, a gap, one failure. (The burst is
// older than the success, so it decides nothing the success does not.) The
// success's tolerance is its bucket (Window/20) when its P held no unfolded
// success: it is then dated at its own time. When the burst left unfolded
// successes on its P, it is dated with them, at the first of them: early by
// up to the gap before it too. Without shards (32-bit platforms) the
// success takes the shared spill counter, which dates what it holds at the
// last fold: a success it still holds (it came within half a bucket of that
// fold) is early by the gap too.
// Failure probe (FailureRatio 1, MinCalls 2): a failure, a gap, a failure;
// the tolerance is the failure's bucket.
func TestBreakerWindowPrecision(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = 10 * time.Second
		rng := rand.New(rand.NewPCG(1, 2))
		ok := func(context.Context) (int, error) { return 1, nil }
		bad := func(context.Context) (int, error) { return 0, errModelFail }
		gap := func(hi time.Duration) time.Duration { return time.Duration(rng.Int64N(int64(hi))) }
		var exact, held int
		for i := range 2000 {
			// Success probe.
			b := NewBreaker(BreakerPolicy{FailureRatio: 1, MinCalls: 1, Window: window})
			p := New[int]().Breaker(b)
			var burst int
			switch i % 4 {
			case 0: // 1+2+4+...: the last success completes a batch, up to past the cap
				burst = 1<<rng.IntN(bits.Len(2*maxBatch)) - 1
			case 1: // up to past the batch's cap
				burst = rng.IntN(2*maxBatch + 100)
			default:
				burst = rng.IntN(300)
			}
			for range burst {
				_, _ = p.Run(context.Background(), ok)
			}
			pause := gap(window / 5) // up to 4 buckets after the last fold
			time.Sleep(pause)
			tolerance := window / windowBuckets
			heldBefore := unfolded(b) > 0
			_, _ = p.Run(context.Background(), ok)
			if heldBefore || len(b.shards) == 0 && unfolded(b) > 0 {
				tolerance += pause
				held++
			} else {
				exact++
			}
			age := gap(window + window/5)
			time.Sleep(age)
			_, _ = p.Run(context.Background(), bad)
			switch st := BreakerState(b.word.Load() & stateMask); {
			case age < window-tolerance:
				require.Equal(t, StateClosed, st, "probe %d: a success %v old must count (tolerance %v)", i, age, tolerance)
			case age >= window:
				require.Equal(t, StateOpen, st, "probe %d: a success %v old must not count", i, age)
			}

			// Failure probe.
			b = NewBreaker(BreakerPolicy{FailureRatio: 1, MinCalls: 2, Window: window})
			p = New[int]().Breaker(b)
			time.Sleep(gap(window))
			_, _ = p.Run(context.Background(), bad)
			age = gap(window + window/5)
			time.Sleep(age)
			_, _ = p.Run(context.Background(), bad)
			switch st := BreakerState(b.word.Load() & stateMask); {
			case age < window-window/windowBuckets:
				require.Equal(t, StateOpen, st, "probe %d: a failure %v old must count", i, age)
			case age >= window:
				require.Equal(t, StateClosed, st, "probe %d: a failure %v old must not count", i, age)
			}
		}
		// Both kinds of success probe ran, many times.
		require.Greater(t, exact, 50)
		require.Greater(t, held, 500)
	})
}

// unfolded returns the successes b has counted and not yet folded into its
// window, in its current generation.
func unfolded(b *Breaker) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	gen := uint32(b.word.Load() >> genShift)
	var n uint64
	for i := range b.shards {
		sh := &b.shards[i]
		if w := atomic.LoadUint64(&sh.w); uint32(w>>32) == gen {
			n += uint64(uint32(w) - sh.folded.Load())
		}
	}
	if w := b.spill.Load(); uint32(w>>32) == gen {
		n += uint64(uint32(w))
	}
	return n
}

// TestBreakerSteadyPrecision: successes at a steady rate, fast enough for
// the batch to grow, then one failure at a random time after they stop. The
// window must hold every success younger than Window minus Window/10 and
// none at least Window old (MinCalls keeps the breaker closed, so the
// window can be read after the failure's fold).
func TestBreakerSteadyPrecision(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = 10 * time.Second
		rng := rand.New(rand.NewPCG(3, 4))
		ok := func(context.Context) (int, error) { return 1, nil }
		bad := func(context.Context) (int, error) { return 0, errModelFail }
		for i := range 50 {
			b := NewBreaker(BreakerPolicy{MinCalls: 1 << 30, Window: window})
			p := New[int]().Breaker(b)
			every := time.Duration(1+rng.IntN(20)) * time.Millisecond
			start := time.Now()
			var times []time.Duration
			for range 2000 + rng.IntN(2000) {
				_, _ = p.Run(context.Background(), ok)
				times = append(times, time.Since(start))
				time.Sleep(every)
			}
			require.Greater(t, b.batch.Load(), uint32(1), "run %d (every %v): the batch grew", i, every)
			time.Sleep(time.Duration(rng.Int64N(int64(window))))
			_, _ = p.Run(context.Background(), bad)
			now := time.Since(start)
			var surely, maybe uint64
			for _, at := range times {
				switch age := now - at; {
				case age < window-window/10:
					surely++
				case age < window:
					maybe++
				}
			}
			b.mu.Lock()
			var got uint64
			for _, r := range b.ring {
				got += r.ok
			}
			b.mu.Unlock()
			require.GreaterOrEqual(t, got, surely, "run %d (every %v): successes younger than Window-Window/10", i, every)
			require.LessOrEqual(t, got, surely+maybe, "run %d (every %v): no success Window old counts", i, every)
		}
	})
}

// TestBreakerModelLullAfterPartialBatch: a burst leaves a partial batch
// unfolded on its P; after a pause, a trickle joins that batch. A failure
// later folds them all; the trickle must not be dated back to the burst (and
// expire with it) beyond the successes counted since the P last looked at
// the clock (fewer than staleEvery). The model found 1300 successes, a pause
// of 9s, 200 successes and a failure, then 9 failures 1.5s later, opening a
// 50% breaker at a real ratio of 10/210. GOMAXPROCS 1 keeps every call on
// the P that holds the batch.
func TestBreakerModelLullAfterPartialBatch(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	synctest.Test(t, func(t *testing.T) {
		b := NewBreaker(BreakerPolicy{Window: 10 * time.Second}) // ratio 0.5, 10 calls
		p := New[int]().Breaker(b)
		ok := func(context.Context) (int, error) { return 1, nil }
		bad := func(context.Context) (int, error) { return 0, errModelFail }
		for range 1300 {
			_, _ = p.Run(context.Background(), ok)
		}
		require.Greater(t, unfolded(b), uint64(0), "the burst left a partial batch")
		time.Sleep(9 * time.Second)
		for range 200 {
			_, _ = p.Run(context.Background(), ok)
		}
		_, _ = p.Run(context.Background(), bad)
		time.Sleep(1500 * time.Millisecond)
		for i := range 9 { // 10 failures against 200 successes 1.5s old: 5%
			_, _ = p.Run(context.Background(), bad)
			require.Equal(t, StateClosed, b.State(), "failure %d", i+2)
		}
		// The window holds all but fewer than staleEvery of the 200.
		b.mu.Lock()
		var okN uint64
		for _, r := range b.ring {
			okN += r.ok
		}
		b.mu.Unlock()
		assert.Greater(t, okN, uint64(200-staleEvery))
	})
}
