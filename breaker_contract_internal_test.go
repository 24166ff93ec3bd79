package resil

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every success and failure of calls through the stage is counted exactly
// once, whatever the interleaving of the lock-free success path with folds
// (failures, batch changes, Snapshot) and GOMAXPROCS changes.
func TestBreakerCountsExactThroughStage(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	b := NewBreaker(BreakerPolicy{MinCalls: 1 << 30, Window: time.Hour, FailureRatio: 1})
	p := New[int]().Breaker(b)
	errF := errors.New("f")
	const goroutines, each = 16, 4000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				fail := (i+g)%97 == 0
				_, _ = p.Run(context.Background(), func(context.Context) (int, error) {
					if fail {
						return 0, errF
					}
					return 1, nil
				})
				if g == 0 && i%500 == 0 {
					runtime.GOMAXPROCS(1 + i/500%6)
				}
			}
		})
	}
	wg.Wait()
	var wantFail uint64
	for g := range goroutines {
		for i := range each {
			if (i+g)%97 == 0 {
				wantFail++
			}
		}
	}
	s := BreakerLink{b: b}.Snapshot()
	assert.Equal(t, StateClosed, s.State)
	assert.Equal(t, wantFail, s.Failures)
	assert.Equal(t, uint64(goroutines*each)-wantFail, s.Successes)
}

// An outcome counts in the window until it is Window old, and drops out at
// most Window/10 early (API.md), whatever the Window and wherever in its
// bucket the outcome falls.
func TestBreakerWindowBounds(t *testing.T) {
	for _, window := range []time.Duration{1, 7, 20, 21, 23, 30, 39, 59, 100, 399, 400, 401, 1000, 10*time.Second + 1} {
		t.Run(window.String(), func(t *testing.T) {
			b := NewBreaker(BreakerPolicy{Window: window})
			w := int64(window)
			early := w / 10 // the most an outcome may drop out early
			step := max(w/200, 1)
			for t0 := int64(0); t0 < 2*b.width; t0 += max(b.width/50, 1) {
				for age := int64(0); age <= w+b.width; age += step {
					b.ring = [windowBuckets]bucket{}
					b.cur = floorDiv(t0, b.width)
					b.add(t0, failure, 1)
					b.roll(t0 + age)
					var fail uint64
					for _, r := range b.ring {
						fail += r.fail
					}
					switch {
					case age >= w:
						require.Zero(t, fail, "t0 %d, age %d: counts once Window old", t0, age)
					case age < w-early:
						require.Equal(t, uint64(1), fail, "t0 %d, age %d: dropped out more than Window/10 early", t0, age)
					}
				}
			}
		})
	}
}

// OnStateChange sees every transition once, in order, from many goroutines
// calling a breaker that keeps tripping, half-opening, closing and being
// forced, with State and Snapshot looking on: the transitions it sees form
// one chain from closed, as many as the breaker made (but those the link
// condensed).
func TestStressOnStateChangeChain(t *testing.T) {
	var (
		mu  sync.Mutex
		got []transition
	)
	b, link := NewSharedBreaker(BreakerPolicy{MinCalls: 2, OpenFor: 20 * time.Microsecond, HalfOpenCalls: 2,
		OnStateChange: func(from, to BreakerState) {
			mu.Lock()
			got = append(got, transition{from: from, to: to})
			mu.Unlock()
		}}, nopShare{})
	p := New[int]().Breaker(b)
	errF := errors.New("f")
	// Real time: the point is real concurrency, and the test passes however
	// the goroutines are scheduled.
	deadline := time.Now().Add(150 * time.Millisecond)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				switch {
				case g == 0 && i%16 == 0:
					s := link.Snapshot()
					link.Force(s.Gen, BreakerState(i/16%3), time.Duration(i%3)*time.Microsecond)
				case g == 1:
					b.State()
				default:
					_, _ = p.Run(context.Background(), func(context.Context) (int, error) {
						if (g+i)%3 == 0 {
							return 0, errF
						}
						return 1, nil
					})
				}
			}
		})
	}
	wg.Wait()
	b.State()
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, int(b.word.Load()>>genShift-b.condensed), "one report per transition, but those the link condensed")
	from := StateClosed
	for i, tr := range got {
		require.Equal(t, from, tr.from, "transition %d: reported out of order", i)
		require.NotEqual(t, tr.from, tr.to)
		from = tr.to
	}
}

type nopShare struct{}

func (nopShare) Tripped()                               {}
func (nopShare) AcquireTrial() ShareAnswer              { return ShareUnavailable }
func (nopShare) SettleTrial(o TrialOutcome) ShareAnswer { return ShareUnavailable }
