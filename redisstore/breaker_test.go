package redisstore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/resil-go/resil"
	"github.com/resil-go/resil/redisstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run against a real redis-server, so their time is real: the
// waits below are for real syncs over real sockets, and each says how long
// it may take.

var errDown = errors.New("dependency down")

// converge bounds the waits for the fleet to agree where the test does not
// measure how fast it does: generous, for loaded machines.
const converge = 5 * time.Second

// slack is what a measured propagation time may exceed SyncEvery by: a
// round trip to Redis and the scheduling of a loaded test machine.
const slack = 150 * time.Millisecond

// replica is one process of a fleet: its own client, store and breaker.
type replica struct {
	store  *redisstore.Store
	b      *resil.Breaker
	mu     sync.Mutex
	opened time.Time // when the breaker last went closed → open
}

type fleet []*replica

// newFleet starts n replicas, each with its own client to addr, sharing a
// breaker called name.
func newFleet(t *testing.T, addr string, n int, opts redisstore.Options, policy resil.BreakerPolicy) fleet {
	t.Helper()
	if opts.Timeout == 0 {
		// Generous: a test machine under load must not pass for a Redis
		// outage (which would make the breakers decide locally).
		opts.Timeout = time.Second
	}
	var f fleet
	for range n {
		r := &replica{}
		p := policy
		p.OnStateChange = func(from, to resil.BreakerState) {
			if to == resil.StateOpen && from == resil.StateClosed {
				r.mu.Lock()
				r.opened = time.Now()
				r.mu.Unlock()
			}
		}
		r.store = redisstore.New(client(t, addr), opts)
		t.Cleanup(func() { require.NoError(t, r.store.Close()) })
		r.b = r.store.Breaker("dep", p)
		f = append(f, r)
	}
	return f
}

func (r *replica) call(fail bool) error {
	_, err := resil.New[int]().Breaker(r.b).Run(context.Background(), func(context.Context) (int, error) {
		if fail {
			return 0, errDown
		}
		return 1, nil
	})
	return err
}

func (r *replica) openedAt() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opened
}

func (f fleet) all(s resil.BreakerState) bool {
	for _, r := range f {
		if r.b.State() != s {
			return false
		}
	}
	return true
}

// waitAll waits until every breaker of f is in state s, for at most d.
func (f fleet) waitAll(t *testing.T, s resil.BreakerState, d time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return f.all(s) }, d, time.Millisecond, "not every replica is %v after %v", s, d)
}

func TestFleetTripsTogetherOnFleetCounts(t *testing.T) {
	srv := startRedis(t)
	const syncEvery = 100 * time.Millisecond
	policy := resil.BreakerPolicy{FailureRatio: 0.25, MinCalls: 100, Window: time.Minute, OpenFor: time.Minute}
	f := newFleet(t, srv.Addr(), 10, redisstore.Options{SyncEvery: syncEvery}, policy)
	alone := resil.NewBreaker(policy)

	// Ten replicas see 30% failures each, one call every 5ms: each alone
	// would need 100 calls (500ms) to decide; the fleet has 100 calls
	// after 50ms.
	var (
		wg    sync.WaitGroup
		calls [10]int
	)
	for i, r := range f {
		wg.Go(func() {
			for n := 0; n < 60 && r.b.State() == resil.StateClosed; n++ {
				fail := n%10 == 2 || n%10 == 5 || n%10 == 8
				_ = r.call(fail)
				calls[i]++
				if i == 0 {
					_, _ = resil.New[int]().Breaker(alone).Run(context.Background(), func(context.Context) (int, error) {
						if fail {
							return 0, errDown
						}
						return 1, nil
					})
				}
				time.Sleep(5 * time.Millisecond) // the traffic's pace
			}
		})
	}
	wg.Wait()
	f.waitAll(t, resil.StateOpen, converge)
	assert.Equal(t, resil.StateClosed, alone.State(), "one replica's calls are too few")
	first, last := f[0].openedAt(), f[0].openedAt()
	for i, r := range f {
		assert.Less(t, calls[i], policy.MinCalls, "replica %d tripped on the fleet's counts, not its own", i)
		at := r.openedAt()
		first, last = minTime(first, at), maxTime(last, at)
	}
	assert.LessOrEqual(t, last.Sub(first), syncEvery+slack, "the fleet trips together, within SyncEvery")
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func TestFleetTripOnOneOpensAllWithinSyncEvery(t *testing.T) {
	srv := startRedis(t)
	const syncEvery = 200 * time.Millisecond
	f := newFleet(t, srv.Addr(), 5, redisstore.Options{SyncEvery: syncEvery},
		resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Minute})
	waitSynced(t, f, syncEvery)
	start := time.Now()
	require.ErrorIs(t, f[3].call(true), errDown)
	require.Equal(t, resil.StateOpen, f[3].b.State())
	f.waitAll(t, resil.StateOpen, converge)
	for _, r := range f {
		assert.LessOrEqual(t, r.openedAt().Sub(start), syncEvery+slack)
		require.ErrorIs(t, r.call(false), resil.ErrBreakerOpen)
	}
}

// waitSynced waits until every replica has synced at least once (a fleet
// transition before that would be adopted at the first sync, not sooner).
func waitSynced(t *testing.T, f fleet, syncEvery time.Duration) {
	t.Helper()
	time.Sleep(syncEvery + 50*time.Millisecond) // one sync of every replica
}

func TestFleetHalfOpenAdmitsHalfOpenCallsFleetWide(t *testing.T) {
	srv := startRedis(t)
	const (
		syncEvery = 100 * time.Millisecond
		openFor   = 300 * time.Millisecond
		halfOpen  = 2
	)
	f := newFleet(t, srv.Addr(), 4, redisstore.Options{SyncEvery: syncEvery},
		resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: halfOpen})
	waitSynced(t, f, syncEvery)
	require.ErrorIs(t, f[0].call(true), errDown)
	f.waitAll(t, resil.StateOpen, converge)
	f.waitAll(t, resil.StateHalfOpen, converge)

	// Five callers per replica try at once; a trial holds its place until
	// released.
	release := make(chan struct{})
	var (
		wg                              sync.WaitGroup
		inFlight, maxInFlight, rejected atomic.Int64
	)
	for _, r := range f {
		for range 5 {
			wg.Go(func() {
				_, err := resil.New[int]().Breaker(r.b).Run(context.Background(), func(context.Context) (int, error) {
					n := inFlight.Add(1)
					for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
					}
					<-release
					inFlight.Add(-1)
					return 1, nil
				})
				if errors.Is(err, resil.ErrBreakerOpen) {
					rejected.Add(1)
				}
			})
		}
	}
	require.Eventually(t, func() bool { return rejected.Load()+inFlight.Load() == 20 }, time.Second, 5*time.Millisecond)
	assert.EqualValues(t, halfOpen, maxInFlight.Load(), "HalfOpenCalls trials fleet-wide, not per replica")
	assert.EqualValues(t, 20-halfOpen, rejected.Load())
	close(release)
	wg.Wait()
	f.waitAll(t, resil.StateClosed, converge)
}

func TestFleetFailedTrialReopensAll(t *testing.T) {
	srv := startRedis(t)
	const (
		syncEvery = 100 * time.Millisecond
		openFor   = 300 * time.Millisecond
	)
	f := newFleet(t, srv.Addr(), 3, redisstore.Options{SyncEvery: syncEvery},
		resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor})
	waitSynced(t, f, syncEvery)
	require.ErrorIs(t, f[0].call(true), errDown)
	f.waitAll(t, resil.StateHalfOpen, converge)
	require.ErrorIs(t, f[2].call(true), errDown, "the fleet's one trial fails")
	f.waitAll(t, resil.StateOpen, converge)
	require.ErrorIs(t, f[1].call(false), resil.ErrBreakerOpen)
}

func TestFleetTrialLeaseExpires(t *testing.T) {
	srv := startRedis(t)
	const (
		syncEvery = 100 * time.Millisecond
		openFor   = 200 * time.Millisecond
		lease     = 500 * time.Millisecond
	)
	f := newFleet(t, srv.Addr(), 2, redisstore.Options{SyncEvery: syncEvery, TrialLease: lease},
		resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor})
	waitSynced(t, f, syncEvery)
	require.ErrorIs(t, f[0].call(true), errDown)
	f.waitAll(t, resil.StateHalfOpen, converge)

	// Replica 0 takes the fleet's one trial place and does not report
	// back for longer than the lease, as a crashed process would not.
	stuck := make(chan struct{})
	held := make(chan struct{})
	done := make(chan struct{})
	// took comes before the lease is granted, so that a stall between the
	// grant and the clock read cannot shorten what it measures.
	took := time.Now()
	go func() {
		defer close(done)
		_, _ = resil.New[int]().Breaker(f[0].b).Run(context.Background(), func(context.Context) (int, error) {
			close(held)
			<-stuck
			return 1, nil
		})
	}()
	<-held
	require.ErrorIs(t, f[1].call(false), resil.ErrBreakerOpen, "the place is taken")
	require.Eventually(t, func() bool { return f[1].call(false) == nil }, lease+time.Second, 10*time.Millisecond,
		"the lease expires and another replica gets the place")
	assert.GreaterOrEqual(t, time.Since(took), lease-50*time.Millisecond, "not before the lease expired")
	close(stuck)
	<-done
	f.waitAll(t, resil.StateClosed, converge)
}

func TestFleetClosedCallsDoNoIO(t *testing.T) {
	srv := startRedis(t)
	c := client(t, srv.Addr())
	var commands atomic.Int64
	c.AddHook(countHook{&commands})
	s := redisstore.New(c, redisstore.Options{SyncEvery: time.Hour})
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	b := s.Breaker("dep", resil.BreakerPolicy{MinCalls: 1000})
	// Breaker wakes the sync goroutine, so that the new breaker joins the
	// fleet at once: that one sync (SyncEvery is an hour) runs in the
	// background and must be over before the calls are counted. Real
	// time: the sync is a round trip to a real redis-server.
	require.Eventually(t, func() bool { return commands.Load() > 0 }, 10*time.Second, time.Millisecond, "the new breaker's first sync")
	last := int64(-1)
	require.Eventually(t, func() bool {
		n := commands.Load()
		settled := n == last
		last = n
		return settled
	}, 10*time.Second, 300*time.Millisecond, "no round trip after the first sync") // 300ms: a loaded machine may start the loop's own first sync late
	before := commands.Load()

	p := resil.New[int]().Breaker(b)
	fn := func(context.Context) (int, error) { return 1, nil }
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() { _, _ = p.Run(ctx, fn) })
	assert.Zero(t, allocs)
	_, _ = p.Run(ctx, func(context.Context) (int, error) { return 0, errDown })
	assert.Equal(t, before, commands.Load(), "neither a success nor a failure that does not trip talks to Redis")
}

// countHook counts the commands a client sends.
type countHook struct{ n *atomic.Int64 }

func (h countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// After Close a store's breakers decide on local state only: the fleet's
// last counts leave their windows (they would never age out, since no sync
// replaces them), so one local failure below MinCalls leaves them closed.
func TestClosedStoreDropsFleetCounts(t *testing.T) {
	srv := startRedis(t)
	policy := resil.BreakerPolicy{FailureRatio: 0.5, MinCalls: 10, Window: time.Minute}
	run := func(b *resil.Breaker, fail bool) {
		_, _ = resil.New[int]().Breaker(b).Run(context.Background(), func(context.Context) (int, error) {
			if fail {
				return 0, errDown
			}
			return 1, nil
		})
	}
	// a syncs only when woken (a new breaker name wakes it), so that Close
	// cannot race with a tick whose failure would clear the counts anyway.
	sa := redisstore.New(client(t, srv.Addr()), redisstore.Options{SyncEvery: time.Hour, Timeout: time.Second})
	sb := redisstore.New(client(t, srv.Addr()), redisstore.Options{SyncEvery: 20 * time.Millisecond, Timeout: time.Second})
	defer sb.Close()
	a, b := sa.Breaker("dep", policy), sb.Breaker("dep", policy)
	for range 5 { // b: 5 successes and 4 failures, 9 calls < MinCalls: closed
		run(b, false)
	}
	for range 4 {
		run(b, true)
	}
	time.Sleep(200 * time.Millisecond) // real time: b publishes its counts (SyncEvery 20ms)
	sa.Breaker("wake", policy)         // a syncs: it now holds b's counts
	time.Sleep(200 * time.Millisecond) // real time: a's sync round trip
	require.Equal(t, resil.StateClosed, a.State())
	require.Equal(t, resil.StateClosed, b.State())
	require.NoError(t, sa.Close())
	run(a, true) // with b's counts, 10 calls, half failed: it would trip
	assert.Equal(t, resil.StateClosed, a.State(), "one local failure, 1 call < MinCalls")
}

// resendSettle makes a client run the settle script twice, as go-redis
// does when a reply is lost on the way back and MaxRetries (3 by default)
// allows another try: the server has run the script once already.
type resendSettle struct{}

func (resendSettle) DialHook(next redis.DialHook) redis.DialHook { return next }

func (resendSettle) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		// The settle script: EVALSHA sha (or EVAL script) 2 state trials
		// epoch id outcome halfOpen openFor (the acquire script has one
		// argument fewer).
		if a := cmd.Args(); len(a) == 10 && (a[0] == "evalsha" || a[0] == "eval") {
			if k, ok := a[4].(string); ok && strings.HasSuffix(k, ":trials") {
				_ = next(ctx, cmd) // the run whose reply was lost
			}
		}
		return next(ctx, cmd)
	}
}

func (resendSettle) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A settle that the client sends again (its reply was lost) counts its
// trial once: the fleet closes only when HalfOpenCalls trials succeeded.
func TestFleetSettleRetriedCountsOnce(t *testing.T) {
	srv := startRedis(t)
	const (
		syncEvery = 50 * time.Millisecond
		openFor   = 300 * time.Millisecond
	)
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 2}
	f := newFleet(t, srv.Addr(), 2, redisstore.Options{SyncEvery: syncEvery}, policy)
	c := client(t, srv.Addr())
	c.AddHook(resendSettle{})
	s := redisstore.New(c, redisstore.Options{SyncEvery: syncEvery, Timeout: time.Second})
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	f = append(f, &replica{store: s, b: s.Breaker("dep", policy)})
	waitSynced(t, f, syncEvery)
	require.ErrorIs(t, f[0].call(true), errDown)
	f.waitAll(t, resil.StateHalfOpen, converge)

	require.NoError(t, f[2].call(false), "one trial succeeds; its settle runs twice")
	assert.Equal(t, resil.StateHalfOpen, f[2].b.State(), "one success of the two HalfOpenCalls needs")
	time.Sleep(3 * syncEvery) // real time: syncs that would bring a fleet close
	assert.True(t, f.all(resil.StateHalfOpen), "the fleet is still half-open")

	require.NoError(t, f[1].call(false), "the second trial")
	f.waitAll(t, resil.StateClosed, converge)
}

// sleepyPair returns two replicas of breaker "dep" with policy, once both
// have joined the fleet: a syncs only when woken (its own trip, a new
// breaker name), b every 50ms.
func sleepyPair(t *testing.T, addr string, policy resil.BreakerPolicy) (a, b *replica) {
	t.Helper()
	a = &replica{store: redisstore.New(client(t, addr), redisstore.Options{SyncEvery: time.Hour, Timeout: time.Second})}
	t.Cleanup(func() { require.NoError(t, a.store.Close()) })
	a.b = a.store.Breaker("dep", policy)
	b = &replica{store: redisstore.New(client(t, addr), redisstore.Options{SyncEvery: 50 * time.Millisecond, Timeout: time.Second})}
	t.Cleanup(func() { require.NoError(t, b.store.Close()) })
	b.b = b.store.Breaker("dep", policy)
	time.Sleep(200 * time.Millisecond) // real time: both join the fleet
	return a, b
}

// A trial that succeeds after another replica's trial reopened the fleet
// does not leave its replica half-open: the replica adopts the fleet's
// open state at its next sync.
func TestFleetLateTrialAdoptsReopen(t *testing.T) {
	srv := startRedis(t)
	const openFor = 2 * time.Second
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 2}
	// a syncs only when woken, so that no sync of its own runs between b's
	// failed trial and its trial's end.
	a, b := sleepyPair(t, srv.Addr(), policy)
	f := fleet{a, b}
	require.ErrorIs(t, a.call(true), errDown, "a trips the fleet")
	f.waitAll(t, resil.StateOpen, converge)
	f.waitAll(t, resil.StateHalfOpen, converge)

	held, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_, _ = resil.New[int]().Breaker(a.b).Run(context.Background(), func(context.Context) (int, error) {
			close(held)
			<-release
			return 1, nil
		})
	}()
	<-held
	require.ErrorIs(t, b.call(true), errDown, "b's trial fails: the fleet reopens for OpenFor")
	close(release)
	<-done
	a.store.Breaker("wake", policy) // a syncs
	require.Eventually(t, func() bool { return a.b.State() == resil.StateOpen }, openFor/2, time.Millisecond,
		"a adopts the reopened fleet")
}

// A trial that outlives its lease, with no other trial admitted in its
// place, still ends the half-open period when it succeeds: its replica
// does not keep the place for ever.
func TestFleetTrialOutlivesLeaseStillCloses(t *testing.T) {
	srv := startRedis(t)
	const (
		syncEvery = 100 * time.Millisecond
		lease     = 300 * time.Millisecond
	)
	f := newFleet(t, srv.Addr(), 1, redisstore.Options{SyncEvery: syncEvery, TrialLease: lease},
		resil.BreakerPolicy{MinCalls: 1, OpenFor: 200 * time.Millisecond})
	waitSynced(t, f, syncEvery)
	require.ErrorIs(t, f[0].call(true), errDown)
	f.waitAll(t, resil.StateHalfOpen, converge)
	_, err := resil.New[int]().Breaker(f[0].b).Run(context.Background(), func(context.Context) (int, error) {
		time.Sleep(2 * lease) // real time: the lease expires in Redis
		return 1, nil
	})
	require.NoError(t, err)
	f.waitAll(t, resil.StateClosed, converge)
	require.NoError(t, f[0].call(false))
}

// A replica still half-open from a period the fleet has left (it did not
// sync while the fleet reopened and half-opened again) starts the new
// half-open period afresh: the places its trials took in the old one do
// not count against the new one.
func TestFleetNewHalfOpenPeriodResetsTrials(t *testing.T) {
	srv := startRedis(t)
	const openFor = 300 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 2}
	// a syncs only when woken, so that it misses the fleet's reopening.
	a, b := sleepyPair(t, srv.Addr(), policy)
	f := fleet{a, b}
	require.ErrorIs(t, a.call(true), errDown, "a trips the fleet")
	f.waitAll(t, resil.StateHalfOpen, converge)

	require.NoError(t, a.call(false), "a's trial succeeds: one of two")
	require.ErrorIs(t, b.call(true), errDown, "b's trial fails: the fleet reopens")
	require.Eventually(t, func() bool { return b.b.State() == resil.StateOpen }, converge, time.Millisecond)
	require.Eventually(t, func() bool { return b.b.State() == resil.StateHalfOpen }, converge, time.Millisecond,
		"the fleet's new half-open period")
	a.store.Breaker("wake", policy) // a syncs
	// Until a's sync is in, the fleet refuses a's trials (a asks with the
	// epoch it left), and they take no place.
	require.Eventually(t, func() bool { return a.call(false) == nil }, converge, 10*time.Millisecond,
		"a's first trial of the new period")
	require.NoError(t, a.call(false), "a's second trial: the fleet has a place for it")
	f.waitAll(t, resil.StateClosed, converge)
}
