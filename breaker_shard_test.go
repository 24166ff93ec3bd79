package resil

import (
	"math"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// White-box tests of the closed path's success counters (shard, spill):
// every success is folded exactly once, in the generation it was admitted
// in, whichever P ran it.

// foldedSuccesses folds the counters into the window and returns the
// successes the window holds.
func foldedSuccesses(b *Breaker) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fold(b.lastFold, noTrigger)
	var ok uint64
	for _, r := range b.ring {
		ok += r.ok
	}
	return ok
}

// transitionTo moves b through setState, as a trip and a recovery would.
func transitionTo(b *Breaker, to BreakerState) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setState(to, b.lastFold)
	return b.word.Load() >> genShift
}

func TestBreakerShardsCountEverySuccess(t *testing.T) {
	b := NewBreaker(BreakerPolicy{})
	succeedConcurrently(t, b)
	assert.Equal(t, uint64(8*5000), foldedSuccesses(b), "a second fold adds nothing")
}

func TestBreakerShardsDropStaleSuccesses(t *testing.T) {
	b := NewBreaker(BreakerPolicy{})
	b.succeedClosed(0)
	transitionTo(b, StateOpen)
	transitionTo(b, StateHalfOpen)
	gen := transitionTo(b, StateClosed)
	require.Equal(t, uint64(3), gen)

	b.succeedClosed(0) // admitted before the trip: ignored
	assert.Zero(t, foldedSuccesses(b))
	b.succeedClosed(gen)
	b.succeedClosed(0) // a shard already in the new generation drops it too
	b.succeedClosed(gen)
	assert.Equal(t, uint64(2), foldedSuccesses(b))
}

func TestBreakerSpillCountsSuccessesOfPsWithoutShard(t *testing.T) {
	b := NewBreaker(BreakerPolicy{})
	for range 100 {
		b.succeedSpill(0)
	}
	assert.Equal(t, uint64(100), foldedSuccesses(b))

	transitionTo(b, StateOpen)
	b.succeedSpill(0) // stale
	transitionTo(b, StateHalfOpen)
	gen := transitionTo(b, StateClosed)
	b.succeedSpill(gen)
	b.succeedSpill(gen - 1) // stale
	assert.Equal(t, uint64(1), foldedSuccesses(b))
}

func TestBreakerShardCountWraps(t *testing.T) {
	b := NewBreaker(BreakerPolicy{})
	// Every shard two short of wrapping, all of it already folded.
	for i := range b.shards {
		b.shards[i].w = math.MaxUint32 - 1
		b.shards[i].folded.Store(math.MaxUint32 - 1)
	}
	for range 5 {
		b.succeedClosed(0)
	}
	assert.Equal(t, uint64(5), foldedSuccesses(b))
	for i := range b.shards {
		assert.Zero(t, b.shards[i].w>>32, "the count must not carry into the generation")
	}
}

func TestBreakerCountsSuccessesWhenGOMAXPROCSGrows(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	b := NewBreaker(BreakerPolicy{})
	if wordAtomic { // 32-bit platforms have no shards: every success spills
		require.Len(t, b.shards, 1)
	}
	runtime.GOMAXPROCS(4) // Ps 1-3 have no shard: their successes spill
	succeedConcurrently(t, b)
}

// succeedConcurrently counts 8 x 5000 successes on b from 8 goroutines and
// checks that a fold finds every one of them.
func succeedConcurrently(t *testing.T, b *Breaker) {
	t.Helper()
	const goroutines, each = 8, 5000
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				b.succeedClosed(0)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, uint64(goroutines*each), foldedSuccesses(b))
}
