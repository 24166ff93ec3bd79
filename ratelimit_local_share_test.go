package resil_test

import (
	"context"
	"math"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// slowDownShare is a fleet that cannot answer: the first delay is 0, every
// later Reserve takes `slow` (the store's Timeout against a Redis that does
// not reply) before it says ShareUnavailable.
type slowDownShare struct {
	slow  time.Duration
	asked atomic.Int64
}

func (s *slowDownShare) Reserve(time.Duration) (time.Duration, resil.ShareAnswer) {
	if s.asked.Add(1) > 1 {
		time.Sleep(s.slow)
	}
	return 0, resil.ShareUnavailable
}

// TestLocalShareDecidesAfterTheRoundTrip: when the store cannot answer,
// the local share decides on the clock read after the round trip, so a
// token that came due during a slow round trip is granted.
func TestLocalShareDecidesAfterTheRoundTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		share := &slowDownShare{slow: 100 * time.Millisecond}
		l, _ := resil.NewSharedRateLimiter(resil.RateLimitPolicy{Rate: 10}, share) // local: 100ms, Burst 1
		p := resil.New[int]().RateLimit(l)
		_, err := p.Run(t.Context(), passFn) // t=0: the local token
		require.NoError(t, err)
		start := time.Now()
		_, err = p.Run(t.Context(), passFn) // decided at t=100ms, when the next token is due
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
		assert.NoError(t, err, "the local share's token was due when the local share decided")
	})
}

// TestLocalShareWaitCountsFromTheRoundTrip: with MaxWait and a deadline,
// a call whose local turn lies before its deadline passes at that turn:
// the round trip's time counts against its wait, rather than the whole
// wait being slept after it, past the deadline.
func TestLocalShareWaitCountsFromTheRoundTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		share := &slowDownShare{slow: 100 * time.Millisecond}
		l, _ := resil.NewSharedRateLimiter(resil.RateLimitPolicy{Rate: 10, MaxWait: time.Second}, share)
		p := resil.New[int]().RateLimit(l)
		_, err := p.Run(t.Context(), passFn)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = p.Run(ctx, passFn) // its local turn: t=100ms, before its deadline at t=150ms
		assert.NoError(t, err, "the turn lay before the deadline")
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
	})
}

// TestLocalShareBurstIsBurstOverN: a local share of 1/N holds Burst/N
// rounded up, also where the float product Burst·(1/N) lands a hair above
// the whole number (99 replicas, Burst 297: 3 tokens each, not 4).
func TestLocalShareBurstIsBurstOverN(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		share := &slowDownShare{} // asked is incremented, slow is 0: always unavailable at once
		l, link := resil.NewSharedRateLimiter(resil.RateLimitPolicy{Rate: 1e-6, Burst: 297}, share)
		link.SetLocalShare(1 / float64(99)) // what redisstore's fleetLimiter.share(99) sets
		p := resil.New[int]().RateLimit(l)
		passed := 0
		for range 10 {
			if _, err := p.Run(t.Context(), passFn); err == nil {
				passed++
			}
		}
		assert.Equal(t, int(math.Ceil(297.0/99)), passed, "Burst/N rounded up")
	})
}

// TestLocalShareTurnGoesBackToItsBucket: a turn the local share gave a
// waiting call goes back, when its ctx ends, to the bucket that gave it,
// not to one SetLocalShare made since, where it could free a turn another
// waiting call holds (and two calls pass at once on a bucket of Burst 1).
func TestLocalShareTurnGoesBackToItsBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		share := &slowDownShare{} // always unavailable, at once
		l, link := resil.NewSharedRateLimiter(resil.RateLimitPolicy{Rate: 10, MaxWait: 5 * time.Second}, share)
		p := resil.New[int]().RateLimit(l)
		start := time.Now()
		var passedAt []time.Duration
		passes := make(chan time.Duration, 16)
		run := func(ctx context.Context) {
			if _, err := p.Run(ctx, passFn); err == nil {
				passes <- time.Since(start)
			}
		}
		run(t.Context())    // A: t=0, old local (100ms per call) tat=100ms
		go run(t.Context()) // B: turn at 100ms
		synctest.Wait()
		go run(t.Context()) // C: turn at 200ms
		synctest.Wait()
		dctx, cancelD := context.WithCancel(t.Context())
		go run(dctx) // D: turn at 300ms
		synctest.Wait()

		link.SetLocalShare(0.4) // a new local bucket: 4/s (250ms per call), Burst 1
		time.Sleep(50 * time.Millisecond)
		run(t.Context())    // E: t=50ms, the new bucket's token; its tat = 300ms
		go run(t.Context()) // F: waits for the new bucket's turn at 300ms; tat = 550ms
		synctest.Wait()
		time.Sleep(10 * time.Millisecond)
		cancelD() // D's turn goes back to the old bucket; in the new one, CAS(550 → 300) would free F's turn
		synctest.Wait()
		go run(t.Context()) // G: t=60ms, must not get F's turn at 300ms
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()
		close(passes)
		for d := range passes {
			passedAt = append(passedAt, d)
		}
		atNewTurn := 0
		for _, d := range passedAt {
			if d == 300*time.Millisecond {
				atNewTurn++
			}
		}
		t.Logf("passed at %v", passedAt)
		assert.Equal(t, 1, atNewTurn, "the new local bucket (Burst 1, 250ms per call) gives its 300ms turn to one call")
	})
}

// slowYesShare is a fleet that grants every turn at once, after a round
// trip of slow.
type slowYesShare struct{ slow time.Duration }

func (s slowYesShare) Reserve(time.Duration) (time.Duration, resil.ShareAnswer) {
	time.Sleep(s.slow)
	return 0, resil.ShareYes
}

// TestSharedRoundTripOutlastsContext: a call whose context ends during the
// store's round trip returns ctx.Err() and does not run, even though the
// fleet granted its turn.
func TestSharedRoundTripOutlastsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, _ := resil.NewSharedRateLimiter(resil.RateLimitPolicy{Rate: 10, MaxWait: time.Second}, slowYesShare{slow: 100 * time.Millisecond})
		ran := 0
		fn := func(context.Context) (int, error) { ran++; return 1, nil }
		for _, p := range []resil.Pipeline[int]{
			resil.New[int]().RateLimit(l),
			resil.New[int]().RateLimit(l).Timeout(50 * time.Millisecond),
		} {
			ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
			_, err := p.Run(ctx, fn)
			cancel()
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		}
		assert.Zero(t, ran, "no call ran with its context ended")

		v, err := resil.New[int]().RateLimit(l).Run(t.Context(), fn)
		require.NoError(t, err, "a context that outlasts the round trip")
		assert.Equal(t, 1, v)
	})
}
