package redisstore

import (
	"context"
	"time"

	"github.com/resil-go/resil"
)

// fleetLimiter is one rate limiter's share of the fleet: the
// resil.RateLimitShare its limiter asks for every call's turn.
type fleetLimiter struct {
	s        *Store
	keys     []string
	link     resil.RateLimiterLink
	interval float64 // microseconds per call
	tau      float64 // (Burst-1)·interval: how far the fleet's tat may run ahead
}

// Reserve runs the fleet's GCRA script: one round trip, bounded by
// Options.Timeout. When Redis cannot be asked, the limiter uses its local
// share.
func (fl *fleetLimiter) Reserve(maxWait time.Duration) (time.Duration, resil.ShareAnswer) {
	if !fl.s.available() {
		return 0, resil.ShareUnavailable
	}
	res, err := do(fl.s, func(ctx context.Context) ([]int64, error) {
		return gcraScript.Run(ctx, fl.s.client, fl.keys, fl.interval, fl.tau, maxWait.Microseconds()).Int64Slice()
	})
	if err != nil || len(res) != 2 {
		return 0, resil.ShareUnavailable
	}
	wait := time.Duration(res[1]) * time.Microsecond
	if res[0] == 1 {
		return wait, resil.ShareYes
	}
	return wait, resil.ShareNo
}

// share sets the limiter's local share from the number of live replicas.
func (fl *fleetLimiter) share(replicas int64) {
	fl.link.SetLocalShare(1 / float64(max(replicas, 1)))
}

// RateLimiter returns the store's rate limiter called name, made with
// policy the first time (later calls return the same limiter and ignore
// policy). Limiters of the same name (and Options.Prefix) on every replica
// share one bucket of Rate and Burst, kept in Redis: each call runs one
// atomic script (GCRA on the server's clock), a round trip on the call's
// path, bounded by Options.Timeout. A rejected call's error matches
// resil.ErrRateLimited and has RetryAfter (microsecond resolution, rounded
// up). A call that waits (MaxWait) holds its turn in the fleet's bucket; if
// its context ends during the wait, the turn is not given back.
//
// When Redis cannot be asked, the limiter allows its local share: Rate/N
// calls per second with a bucket of Burst/N rounded up, N being the number
// of live replicas (those that synced within three SyncEvery) at the last
// successful sync. The replicas should agree on policy. It panics when
// policy is invalid (also on a later call, whose policy is otherwise
// ignored), as resil.NewRateLimiter does.
func (s *Store) RateLimiter(name string, policy resil.RateLimitPolicy) *resil.RateLimiter {
	s.mustBeMade()
	if err := policy.Validate(); err != nil {
		panic(err.Error()) // also when the name is taken: a bad policy is a bug wherever it comes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if fl, ok := s.limiters[name]; ok {
		return fl.link.RateLimiter()
	}
	fl := &fleetLimiter{s: s, keys: []string{s.key("limiter", name, "tat")}}
	_, fl.link = resil.NewSharedRateLimiter(policy, fl)
	p := fl.link.Policy()
	// Capped before tau is computed: a tiny Rate makes 1e6/Rate +Inf, and
	// 0·Inf (Burst 1) would be NaN, which the script's comparisons let
	// every call through.
	fl.interval = min(1e6/p.Rate, maxMicros)
	fl.tau = min(float64(p.Burst-1)*fl.interval, maxMicros)
	fl.share(s.fleet.Load())
	s.limiters[name] = fl
	return fl.link.RateLimiter()
}

// maxMicros caps the limiter's spans (interval and tau) where the local
// limiter caps them, at 2^60ns (about 36 years), so that the fleet's
// bucket and a replica's own hold the same calls. The script's sums (the
// server's clock, about 1.8e15µs, plus two such spans) stay below 2^53,
// where a Lua number still counts whole microseconds.
const maxMicros = (1 << 60) / 1000
