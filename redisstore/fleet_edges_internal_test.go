package redisstore

// Edge cases of the fleet's state, at the level of single syncs. They run
// against a real redis-server (as the package's other tests do), but every
// store here is a "manual" store: it has no background goroutine, and the
// test runs each sync itself (s.sync()), so the order of events is fixed by
// the test, not by tickers.

import (
	"context"
	"errors"
	"math"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var errEdge = errors.New("dependency down")

func edgeClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		DialTimeout:           time.Second,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// manualStore is New without the background goroutine: the test calls
// s.sync() itself. Timeout is generous (a loaded machine is not an outage).
func manualStore(t testing.TB, c redis.UniversalClient, opts Options) *Store {
	t.Helper()
	require.NoError(t, opts.Validate())
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	s := newStore(c, opts)
	close(s.stopped) // no loop to stop
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// twoReplicas starts a redis-server and two manual stores on it, each with
// a breaker "dep" made with policy, both synced once: two replicas of a
// fleet, in its first state.
func twoReplicas(t *testing.T, optsA, optsB Options, policy resil.BreakerPolicy) (sa, sb *Store, a, b *resil.Breaker) {
	t.Helper()
	srv := StartRedis(t)
	sa = manualStore(t, edgeClient(t, srv.Addr()), optsA)
	sb = manualStore(t, edgeClient(t, srv.Addr()), optsB)
	a, b = sa.Breaker("dep", policy), sb.Breaker("dep", policy)
	sa.sync()
	sb.sync()
	return sa, sb, a, b
}

// newReplica starts another manual store ("c" unless opts names it) on the
// redis-server sa uses, with a breaker "dep" made with policy, not synced
// yet: a replica joining the fleet.
func newReplica(t *testing.T, sa *Store, opts Options, policy resil.BreakerPolicy) (*Store, *resil.Breaker) {
	t.Helper()
	if opts.Replica == "" {
		opts.Replica = "c"
	}
	sc := manualStore(t, edgeClient(t, sa.client.(*redis.Client).Options().Addr), opts)
	return sc, sc.Breaker("dep", policy)
}

// setEpoch puts the fleet's breaker "dep" closed in epoch (a fleet that
// has lived a while) and has sa adopt it; fields adds more of the state
// hash's fields and values. It returns the state's key.
func setEpoch(t *testing.T, sa *Store, epoch int, fields ...any) string {
	t.Helper()
	state := sa.key("breaker", "dep", "state")
	require.NoError(t, sa.client.HSet(context.Background(), state, append([]any{"epoch", epoch, "open", 0}, fields...)...).Err())
	sa.sync()
	require.Equal(t, uint64(epoch), sa.breakers["dep"].epoch)
	return state
}

// trip makes b fail a call (a trip, with MinCalls 1) and then syncs the
// stores in order: the first proposes the trip, the others adopt it.
func trip(t *testing.T, b *resil.Breaker, stores ...*Store) {
	t.Helper()
	require.ErrorIs(t, edgeCall(b, true), errEdge)
	for _, s := range stores {
		s.sync()
	}
}

func edgeCall(b *resil.Breaker, fail bool) error {
	_, err := resil.New[int]().Breaker(b).Run(context.Background(), func(context.Context) (int, error) {
		if fail {
			return 0, errEdge
		}
		return 1, nil
	})
	return err
}

type edgeCount struct{ n *atomic.Int64 }

func (h edgeCount) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h edgeCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h edgeCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(int64(len(cmds))); return next(ctx, cmds) }
}

// TestFleetHugeOpenForStaysOpen: an OpenFor of centuries means open until
// the process ends, as for a local breaker. The tripping replica's sync
// gets back what is left of the fleet's open period in milliseconds, more
// than a Duration holds in nanoseconds: it must saturate, not wrap into a
// negative remaining that reads as half-open (a breaker that then asks
// Redis for a trial place on every call, refused for ever).
func TestFleetHugeOpenForStaysOpen(t *testing.T) {
	srv := StartRedis(t)
	c := edgeClient(t, srv.Addr())
	var commands atomic.Int64
	c.AddHook(edgeCount{&commands})
	s := manualStore(t, c, Options{})
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Duration(math.MaxInt64)}
	b := s.Breaker("dep", policy)
	s.sync() // joins the fleet
	require.True(t, s.Connected())

	require.ErrorIs(t, edgeCall(b, true), errEdge)
	require.Equal(t, resil.StateOpen, b.State(), "tripped")
	s.sync() // the trip reaches the fleet
	require.True(t, s.Connected())

	local := resil.NewBreaker(policy)
	require.ErrorIs(t, edgeCall(local, true), errEdge)
	assert.Equal(t, resil.StateOpen, local.State(), "a local breaker stays open")
	assert.Equal(t, resil.StateOpen, b.State(), "the fleet breaker must stay open too (the fleet is open for centuries)")

	before := commands.Load()
	require.ErrorIs(t, edgeCall(b, false), resil.ErrBreakerOpen)
	assert.Equal(t, before, commands.Load(), "an open breaker rejects without a round trip")
	s.sync()
	assert.Equal(t, resil.StateOpen, b.State(), "still open after another sync")
}

// TestFleetLocalTripProposedOnceHalfOpen: the first sync that succeeds
// after Redis was down proposes the breaker's local trip to the fleet,
// also when its (local) OpenFor has passed by then and it is half-open:
// the fleet goes half-open too, and trials decide. It must not be forced
// closed, without a single trial, by a fleet that never heard of the trip.
// (The same holds with Redis up when the sync that Tripped wakes starts
// after OpenFor: a short OpenFor behind a slow sync in flight.)
func TestFleetLocalTripProposedOnceHalfOpen(t *testing.T) {
	srv := StartRedis(t)
	s := manualStore(t, edgeClient(t, srv.Addr()), Options{})
	const openFor = 20 * time.Millisecond
	b := s.Breaker("dep", resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1})
	s.sync()
	require.True(t, s.Connected())

	srv.Stop()
	require.ErrorIs(t, edgeCall(b, true), errEdge)
	require.Equal(t, resil.StateOpen, b.State(), "tripped on its own while Redis is down")
	s.sync() // fails: Redis is down
	require.False(t, s.Connected())
	time.Sleep(3 * openFor) // real time: the breaker's clock is real; only a lower bound matters
	require.Equal(t, resil.StateHalfOpen, b.State())

	srv.Start() // Redis back (empty, as the store last saw it: epoch 0, closed)
	for i := 0; !s.Connected(); i++ {
		require.Less(t, i, 50, "the store does not reconnect")
		s.sync()
	}
	assert.NotEqual(t, resil.StateClosed, b.State(),
		"a tripped breaker closes only after HalfOpenCalls trials succeed; none ran")
	open, err := s.client.HGet(context.Background(), s.key("breaker", "dep", "state"), "open").Result()
	if !errors.Is(err, redis.Nil) {
		require.NoError(t, err)
	}
	assert.Equal(t, "1", open, "the local trip was proposed to the fleet")
}

// TestFleetHugeSyncEveryKeepsFleetCounts: a SyncEvery of a century (sync
// only when woken) is valid. The staleness bound, three SyncEvery, must
// saturate: wrapped negative, it would drop every replica's counts and
// presence at every sync, and the fleet would never share them.
func TestFleetHugeSyncEveryKeepsFleetCounts(t *testing.T) {
	opts := Options{SyncEvery: 100 * 365 * 24 * time.Hour}
	sa, sb, a, b := twoReplicas(t, opts, opts, resil.BreakerPolicy{FailureRatio: 0.5, MinCalls: 4, Window: time.Minute, OpenFor: time.Minute})
	require.NoError(t, edgeCall(a, false))
	require.ErrorIs(t, edgeCall(a, true), errEdge) // a: 2 calls, 1 failed
	require.NoError(t, edgeCall(b, false))         // b: 1 call
	sa.sync()                                      // a publishes
	sb.sync()                                      // b reads a's counts
	require.True(t, sa.Connected() && sb.Connected())
	assert.Equal(t, 2, sb.Replicas(), "two live replicas")
	require.ErrorIs(t, edgeCall(b, true), errEdge)
	assert.Equal(t, resil.StateOpen, b.State(), "fleet: 4 calls, 2 failed, ratio 0.5: trip")
}

// TestFleetMissedTransitionsClearOldCounts: outcomes of calls admitted
// before a fleet transition never count after it. Replica a misses two
// fleet transitions between two of its syncs (open, then closed by b's
// trial; with OpenFor below SyncEvery this needs no outage): it finds the
// fleet closed as it is, in a later epoch, and must empty its window (full
// of failures from before the fleet tripped) rather than report it in the
// new epoch, where b would trip on them with one failure of its own.
func TestFleetMissedTransitionsClearOldCounts(t *testing.T) {
	const openFor = 20 * time.Millisecond
	sa, sb, a, b := twoReplicas(t, Options{}, Options{}, resil.BreakerPolicy{FailureRatio: 0.5, MinCalls: 4, Window: time.Minute, OpenFor: openFor, HalfOpenCalls: 1})

	for range 3 { // a: 3 failures, fewer than MinCalls: closed
		require.ErrorIs(t, edgeCall(a, true), errEdge)
	}
	require.Equal(t, resil.StateClosed, a.State())
	for range 4 { // b trips on its own
		require.ErrorIs(t, edgeCall(b, true), errEdge)
	}
	require.Equal(t, resil.StateOpen, b.State())
	sb.sync()               // the fleet opens (epoch 1)
	time.Sleep(5 * openFor) // real time (both clocks): the fleet's OpenFor passes
	require.NoError(t, edgeCall(b, false), "b's trial succeeds: the fleet closes (epoch 2)")
	require.Equal(t, resil.StateClosed, b.State())

	sa.sync() // a adopts epoch 2 (closed, as it is)
	sa.sync() // and publishes its window under epoch 2
	sb.sync() // b reads a's counts
	require.True(t, sa.Connected() && sb.Connected())
	require.ErrorIs(t, edgeCall(b, true), errEdge)
	assert.Equal(t, resil.StateClosed, b.State(),
		"1 failure since the fleet closed; a's 3 failures were admitted before the fleet's transitions")
}

// blockPipe blocks every pipeline until release is closed, once armed.
type blockPipe struct {
	armed   *atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (h blockPipe) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h blockPipe) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h blockPipe) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.armed.CompareAndSwap(true, false) {
			close(h.entered)
			<-h.release
		}
		return next(ctx, cmds)
	}
}

// TestFleetConnectedAfterClose: a closed store is never connected, even
// when a sync that was already in its round trip as Close began succeeds
// after it.
func TestFleetConnectedAfterClose(t *testing.T) {
	srv := StartRedis(t)
	c := edgeClient(t, srv.Addr())
	h := blockPipe{armed: new(atomic.Bool), entered: make(chan struct{}), release: make(chan struct{})}
	c.AddHook(h)
	for _, sc := range syncScripts { // the sync's first try must not meet NOSCRIPT
		require.NoError(t, sc.Load(context.Background(), c).Err())
	}
	s := New(c, Options{SyncEvery: time.Hour, Timeout: 10 * time.Second})
	h.armed.Store(true)
	s.Breaker("dep", resil.BreakerPolicy{}) // wakes a sync, which blocks in its round trip
	<-h.entered
	closed := make(chan struct{})
	go func() { _ = s.Close(); close(closed) }()
	for s.Connected() { // Close has begun (it clears up before it waits)
		time.Sleep(time.Millisecond)
	}
	close(h.release)
	<-closed
	assert.False(t, s.Connected(), "a closed store is not connected")
	assert.False(t, s.available(), "nor available to call paths")
}

// TestFleetExpiredLeaseSuccessDoesNotCloseFleet: a trial that outlives its
// TrialLease may see another admitted in its place, and its success then
// counts on its own replica only: the close it makes there is not applied
// to the fleet while another replica's trial holds a place. That trial
// decides: it fails, and the fleet reopens.
func TestFleetExpiredLeaseSuccessDoesNotCloseFleet(t *testing.T) {
	const (
		openFor = 20 * time.Millisecond
		lease   = 100 * time.Millisecond
	)
	opts := Options{TrialLease: lease}
	sa, sb, a, b := twoReplicas(t, opts, opts, resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1})
	trip(t, a, sa, sb) // the fleet opens on a's trip; b adopts it
	require.Equal(t, resil.StateOpen, b.State())
	time.Sleep(5 * openFor) // real time (both clocks): the fleet is half-open

	run := func(br *resil.Breaker, held, release chan struct{}, fail bool) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := resil.New[int]().Breaker(br).Run(context.Background(), func(context.Context) (int, error) {
				close(held)
				<-release
				if fail {
					return 0, errEdge
				}
				return 1, nil
			})
			done <- err
		}()
		return done
	}
	heldA, releaseA := make(chan struct{}), make(chan struct{})
	doneA := run(a, heldA, releaseA, false)
	<-heldA               // a's trial holds the fleet's one place
	time.Sleep(3 * lease) // real time: a's lease expires on the server
	heldB, releaseB := make(chan struct{}), make(chan struct{})
	doneB := run(b, heldB, releaseB, true)
	<-heldB // b's trial takes the place a's expired lease freed
	close(releaseA)
	require.NoError(t, <-doneA, "a's late trial succeeds (not counted by the fleet)")
	require.Equal(t, resil.StateClosed, a.State(), "a counts it on its own replica, where it closes")
	sa.sync() // a publishes
	close(releaseB)
	require.ErrorIs(t, <-doneB, errEdge, "the trial holding the place fails")
	sb.sync()
	sa.sync()
	require.True(t, sa.Connected() && sb.Connected())
	open, err := sa.client.HGet(context.Background(), sa.key("breaker", "dep", "state"), "open").Result()
	require.NoError(t, err)
	assert.Equal(t, "1", open, "the only counted trial failed: the fleet reopens")
	assert.NotEqual(t, resil.StateClosed, b.State())
}

// TestFleetShortLeaseKeepsOthersLeases: replicas need not agree on
// TrialLease. A trial place taken with a short lease must not cut a place
// another replica holds with a longer one: the fleet would admit more than
// HalfOpenCalls trials, and the long trial's success would not count.
func TestFleetShortLeaseKeepsOthersLeases(t *testing.T) {
	const openFor = 20 * time.Millisecond
	sa, sb, a, b := twoReplicas(t, Options{TrialLease: time.Hour}, Options{TrialLease: 50 * time.Millisecond}, resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 2})
	trip(t, a, sa, sb) // the fleet opens on a's trip; b adopts it
	require.Equal(t, resil.StateOpen, b.State())
	time.Sleep(5 * openFor) // real time (both clocks): the fleet is half-open
	require.Equal(t, resil.StateHalfOpen, a.State())
	require.Equal(t, resil.StateHalfOpen, b.State())

	fa, fb := sa.breakers["dep"], sb.breakers["dep"]
	require.Equal(t, resil.ShareYes, fa.AcquireTrial(), "a's place, for an hour")
	require.Equal(t, resil.ShareYes, fb.AcquireTrial(), "b's place, for 50ms")
	time.Sleep(200 * time.Millisecond) // real time: b's lease expires on the server's clock
	assert.Equal(t, resil.ShareYes, fb.AcquireTrial(), "b's expired place is free again")
	assert.Equal(t, resil.ShareNo, fb.AcquireTrial(), "but a's is not: HalfOpenCalls 2")
}

// TestFleetSlowSyncEveryStaysInTheFleet: replicas need not agree on
// SyncEvery. A replica that syncs every hour counts in the fleet (its
// counts, its presence) for three of its own SyncEvery, however often the
// others sync and however long since its last report by their bound.
func TestFleetSlowSyncEveryStaysInTheFleet(t *testing.T) {
	const fast = 50 * time.Millisecond
	sa, sb, a, b := twoReplicas(t, Options{SyncEvery: fast}, Options{SyncEvery: time.Hour}, resil.BreakerPolicy{FailureRatio: 0.5, MinCalls: 4, Window: time.Minute, OpenFor: time.Minute})
	for range 3 { // b: 3 failures, fewer than MinCalls
		require.ErrorIs(t, edgeCall(b, true), errEdge)
	}
	sb.sync()            // b reports, then stays silent
	time.Sleep(5 * fast) // real time (the server's clock): past three of a's SyncEvery
	sa.sync()            // a reads the fleet
	require.True(t, sa.Connected() && sb.Connected())
	assert.Equal(t, 2, sa.Replicas(), "b is live by its own SyncEvery")
	require.ErrorIs(t, edgeCall(a, true), errEdge)
	assert.Equal(t, resil.StateOpen, a.State(), "fleet: 4 failures of 4 calls, b's 3 included")
}

// TestFleetLostStateLaggingSeedKeepsFleetOpen: an open fleet stays open
// when Redis loses its state, even when the first replica to report after
// the loss knew less than the others. Here the fleet is open in epoch 3 (a
// tripped it), b still knows epoch 2 (closed; it has not synced since the
// trip), and Redis is flushed: b seeds the fleet again, closed, in epoch 3.
// a knew another state of epoch 3 (the seed has a new name): its open
// period is news to the reseeded fleet, which opens, and b adopts it.
func TestFleetLostStateLaggingSeedKeepsFleetOpen(t *testing.T) {
	const openFor = 20 * time.Millisecond
	sa, sb, a, b := twoReplicas(t, Options{}, Options{}, resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1})

	trip(t, a, sa, sb) // the fleet opens on a's trip; b adopts it
	require.Equal(t, resil.StateOpen, b.State())
	time.Sleep(5 * openFor) // real time (both clocks): the fleet's OpenFor passes
	require.NoError(t, edgeCall(b, false), "b's trial closes the fleet: epoch 2")
	require.Equal(t, resil.StateClosed, b.State())
	sa.sync() // a adopts epoch 2, closed
	require.Equal(t, resil.StateClosed, a.State())

	require.ErrorIs(t, edgeCall(a, true), errEdge)
	sa.sync() // epoch 3: open (b has not synced since: it knows epoch 2)
	require.Equal(t, resil.StateOpen, a.State())
	require.Equal(t, uint64(3), sa.breakers["dep"].epoch)

	require.NoError(t, sa.client.FlushAll(context.Background()).Err()) // Redis loses its data
	sb.sync()                                                          // b reports first
	sa.sync()
	require.True(t, sa.Connected() && sb.Connected())
	assert.Equal(t, resil.StateOpen, a.State(), "an open fleet stays open")
	sb.sync()
	assert.Equal(t, resil.StateOpen, b.State(), "and b adopts it")
}

// TestFleetNewReplicaTripOpensFleet: a replica that trips on its own calls
// before its first sync (it started while its dependency was down) opens a
// closed fleet with that sync, though the fleet has been through epochs
// the replica never knew. Its trip must not be dropped and the breaker
// forced closed without a trial, only to trip again on the next failures.
func TestFleetNewReplicaTripOpensFleet(t *testing.T) {
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour}
	sa, _, a, _ := twoReplicas(t, Options{}, Options{}, policy)
	setEpoch(t, sa, 5) // the fleet has lived a while: closed again after earlier periods
	require.Equal(t, resil.StateClosed, a.State())

	sc, c := newReplica(t, sa, Options{}, policy)
	require.ErrorIs(t, edgeCall(c, true), errEdge)
	require.Equal(t, resil.StateOpen, c.State(), "tripped before its first sync")
	sc.sync()
	require.True(t, sc.Connected())
	assert.Equal(t, resil.StateOpen, c.State(), "the new replica's trip stands")
	open, err := sc.client.HGet(context.Background(), sc.key("breaker", "dep", "state"), "open").Result()
	require.NoError(t, err)
	assert.Equal(t, "1", open, "the trip was proposed to the fleet and opened it")

	sa.sync()
	assert.Equal(t, resil.StateOpen, a.State(), "the other replica follows the fleet")
}

// loseAcquireReply runs single commands (AcquireTrial's script; syncs go
// through a pipeline) and, while lose is set, reports a timeout instead of
// their reply: the script ran in Redis, the replica never heard.
type loseAcquireReply struct{ lose *atomic.Bool }

func (h loseAcquireReply) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h loseAcquireReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err == nil && h.lose.Load() { // a NOSCRIPT goes through: Run loads the script
			return context.DeadlineExceeded
		}
		return err
	}
}
func (h loseAcquireReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// halfOpenFleet starts a redis-server and two manual stores on it ("a",
// whose client loses single commands' replies while lose is set, and "b",
// both with opts but for the name), each with a breaker "dep" (MinCalls 1,
// OpenFor 20ms, HalfOpenCalls 1); a trips, the fleet opens, and its open
// period passes: the fleet is half-open when it returns.
func halfOpenFleet(t *testing.T, opts Options) (sa, sb *Store, a, b *resil.Breaker, lose *atomic.Bool) {
	t.Helper()
	srv := StartRedis(t)
	const openFor = 20 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	ca := edgeClient(t, srv.Addr())
	lose = new(atomic.Bool)
	ca.AddHook(loseAcquireReply{lose})
	optsA, optsB := opts, opts
	optsA.Replica, optsB.Replica = "a", "b"
	sa = manualStore(t, ca, optsA)
	sb = manualStore(t, edgeClient(t, srv.Addr()), optsB)
	a, b = sa.Breaker("dep", policy), sb.Breaker("dep", policy)
	sa.sync()
	sb.sync()

	trip(t, a, sa, sb) // the fleet opens on a's trip; b adopts it
	require.Equal(t, resil.StateOpen, b.State())
	time.Sleep(3 * openFor) // real time: the breakers' and Redis's clocks are real; only a lower bound matters
	return sa, sb, a, b, lose
}

// TestFleetTimedOutAcquireGivesPlaceBack: an AcquireTrial whose reply is
// lost (a timeout after the script ran) leaves a lease in Redis that the
// replica will never settle: its breaker decided alone. The replica's
// next sync removes it, so the fleet's trial place is free for another
// replica at once, not only when the lease expires (TrialLease, 10s here).
func TestFleetTimedOutAcquireGivesPlaceBack(t *testing.T) {
	sa, _, a, b, lose := halfOpenFleet(t, Options{})

	ctx := context.Background()
	lose.Store(true)
	_, err := resil.New[int]().Breaker(a).Run(ctx, func(context.Context) (int, error) {
		return 0, resil.Permanent(errEdge) // an ignored trial: a stays half-open, proposes nothing
	})
	lose.Store(false)
	require.ErrorIs(t, err, errEdge, "the breaker decided alone and ran its trial")
	require.Equal(t, resil.StateHalfOpen, a.State())
	trials := sa.key("breaker", "dep", "trials")
	n, err := sa.client.ZCard(ctx, trials).Result()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "the acquire ran in Redis")

	for i := 0; !sa.Connected(); i++ {
		require.Less(t, i, 50, "the store does not reconnect")
		sa.sync()
	}
	n, err = sa.client.ZCard(ctx, trials).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the sync gave the orphaned place back")
	assert.NoError(t, edgeCall(b, false), "another replica's trial gets the place")
	assert.Equal(t, resil.StateClosed, b.State())
}

// TestFleetNewReplicaTripOpensFleetOnce: a new replica's trip, made before
// its first sync, opened the fleet with that sync, but the reply was lost
// (do() timed out after the pipeline ran). The fleet then recovered: its
// trial closed it. The replica's next sync sends the same trip again, still
// knowing no state: it must not reopen the recovered fleet, which served
// that trip already (as the same lost reply for a replica that knew the
// epoch is dropped: known < epoch).
func TestFleetNewReplicaTripOpensFleetOnce(t *testing.T) {
	const openFor = 100 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor}
	sa, _, a, _ := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := setEpoch(t, sa, 5) // the fleet has lived a while: closed again after earlier periods

	sc, c := newReplica(t, sa, Options{}, policy)
	fc := sc.breakers["dep"]
	require.ErrorIs(t, edgeCall(c, true), errEdge)
	require.Equal(t, resil.StateOpen, c.State())

	// c's first sync runs in Redis, and its reply is lost: what sync does
	// when do() times out after Exec reached the server.
	r := fc.request()
	pipe := sc.client.Pipeline()
	fc.syncCmd(ctx, pipe, r)
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	fc.lost(r)
	sc.up.Store(false)
	require.Equal(t, "6", sa.client.HGet(ctx, state, "epoch").Val())
	require.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "c's trip opened the fleet")

	// The fleet serves its open period, and a's trial closes it.
	sa.sync()
	require.Equal(t, resil.StateOpen, a.State())
	time.Sleep(3 * openFor)
	require.NoError(t, edgeCall(a, false), "a's trial")
	require.Equal(t, resil.StateClosed, a.State())
	require.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "the fleet recovered")
	epoch := sa.client.HGet(ctx, state, "epoch").Val()

	// c reconnects: its trip has already been served.
	sc.sync()
	require.True(t, sc.Connected())
	assert.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "the same trip must not open the fleet a second time")
	assert.Equal(t, epoch, sa.client.HGet(ctx, state, "epoch").Val())
	sa.sync()
	assert.Equal(t, resil.StateClosed, a.State(), "a recovered fleet must not be sent back to open by an old trip")
}

// delayAcquire holds AcquireTrial's script (a single command; syncs go
// through a pipeline) for delay before it reaches Redis, once: a command
// already on its way when the store stopped waiting for it (a slow link, a
// retransmission, a server busy with other clients). It reaches Redis all
// the same, after the replica's next sync.
type delayAcquire struct {
	armed *atomic.Bool
	delay time.Duration
	done  chan struct{}
}

func (h delayAcquire) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h delayAcquire) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !h.armed.CompareAndSwap(true, false) {
			return next(ctx, cmd)
		}
		defer close(h.done)
		time.Sleep(h.delay)
		return next(context.WithoutCancel(ctx), cmd)
	}
}
func (h delayAcquire) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestFleetOrphanRemovedAfterLateAcquire: the acquire timed out on the
// replica because it had not reached Redis yet. The orphan's removal goes
// out with the next sync (woken at once) and removes nothing; the acquire
// then runs and takes the fleet's only trial place, which nobody will
// settle. The syncs after it remove it too (an orphan is kept until its
// lease could have expired), so another replica's trial gets the place at
// once, not after TrialLease (10s).
func TestFleetOrphanRemovedAfterLateAcquire(t *testing.T) {
	srv := StartRedis(t)
	const openFor = 20 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	ca := edgeClient(t, srv.Addr())
	var armed atomic.Bool
	done := make(chan struct{})
	ca.AddHook(delayAcquire{&armed, 400 * time.Millisecond, done})
	sa := manualStore(t, ca, Options{Replica: "a", Timeout: 100 * time.Millisecond})
	sb := manualStore(t, edgeClient(t, srv.Addr()), Options{Replica: "b"})
	a, b := sa.Breaker("dep", policy), sb.Breaker("dep", policy)
	sa.sync()
	sb.sync()

	trip(t, a, sa, sb) // the fleet opens on a's trip; b adopts it
	require.Equal(t, resil.StateOpen, b.State())
	time.Sleep(3 * openFor)

	ctx := context.Background()
	// The fleet has had trials before: Redis knows the acquire script.
	require.NoError(t, acquireScript.Load(ctx, sa.client).Err())
	armed.Store(true)
	_, err := resil.New[int]().Breaker(a).Run(ctx, func(context.Context) (int, error) {
		return 0, resil.Permanent(errEdge) // an ignored trial: a proposes nothing
	})
	require.ErrorIs(t, err, errEdge, "the acquire timed out: the breaker decided alone")
	require.False(t, sa.Connected())
	require.Len(t, sa.breakers["dep"].orphans, 1)

	for i := 0; !sa.Connected(); i++ { // the woken sync: ZREM of the orphan
		require.Less(t, i, 50)
		sa.sync()
	}
	require.Len(t, sa.breakers["dep"].orphans, 1, "the orphan is kept after its removal was sent")
	<-done // the late acquire reaches Redis
	sa.sync()
	sb.sync()

	trials := sa.key("breaker", "dep", "trials")
	n, err := sa.client.ZCard(ctx, trials).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the orphaned lease must not hold the fleet's trial place: %v", sa.client.ZRangeWithScores(ctx, trials, 0, -1).Val())
	assert.NoError(t, edgeCall(b, false), "another replica's trial gets the place")
}

// TestFleetLostStateSeededOpenStaysOpen: after Redis lost the fleet's
// state, a replica that trips seeds it again, open, in epoch 1. A replica
// that knew a later epoch of the lost state (closed then) reseeds it in an
// epoch after its own, as the fleet's epochs only grow; it must keep the
// fleet open, not close it over a trip it knows nothing of.
func TestFleetLostStateSeededOpenStaysOpen(t *testing.T) {
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour}
	sa, _, a, _ := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := setEpoch(t, sa, 3) // a knows epoch 3, closed

	require.NoError(t, sa.client.FlushAll(ctx).Err()) // Redis loses its data
	sc, c := newReplica(t, sa, Options{}, policy)
	require.ErrorIs(t, edgeCall(c, true), errEdge)
	sc.sync() // c's trip seeds the state again: epoch 1, open
	require.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val())

	sa.sync() // a knew epoch 3: it reseeds, after its own epoch
	assert.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "the fleet stays open")
	assert.Equal(t, resil.StateOpen, a.State(), "and a adopts it")
	sc.sync()
	assert.Equal(t, resil.StateOpen, c.State())
}

// TestFleetNewReplicaHalfOpenTripProposed: a new replica trips before its
// first sync, and its OpenFor passes before that sync (a slow sync, Redis
// unreachable at start, or a short OpenFor): it proposes its trip as
// half-open already. A fleet that has been through epochs the replica
// never knew goes half-open: the breaker must not be forced closed without
// a single trial (as TestFleetLocalTripProposedOnceHalfOpen requires of a
// replica that knew the epoch).
func TestFleetNewReplicaHalfOpenTripProposed(t *testing.T) {
	const openFor = 20 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	sa, _, _, _ := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := setEpoch(t, sa, 5)

	sc, c := newReplica(t, sa, Options{}, policy)
	require.ErrorIs(t, edgeCall(c, true), errEdge)
	time.Sleep(3 * openFor) // c's open period passes before its first sync
	require.Equal(t, resil.StateHalfOpen, c.State())
	sc.sync()
	require.True(t, sc.Connected())
	assert.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "the trip is proposed to the fleet (half-open): trials decide")
	assert.NotEqual(t, resil.StateClosed, c.State(), "c must not be forced closed without a trial")
}

// TestFleetReseedClosedKeepsFreshTrip: Redis loses its data; a new
// replica c trips before its first sync; then a replica that knew epoch 3
// (closed) reseeds the state closed, in epoch 4. c's trip came before that
// reseed, but the fleet never served it (it was lost, then reseeded
// closed): c's first sync must open the fleet.
func TestFleetReseedClosedKeepsFreshTrip(t *testing.T) {
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour}
	sa, _, _, _ := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := setEpoch(t, sa, 3) // a knows epoch 3, closed

	require.NoError(t, sa.client.FlushAll(ctx).Err()) // Redis loses its data
	sc, c := newReplica(t, sa, Options{}, policy)
	require.ErrorIs(t, edgeCall(c, true), errEdge) // c trips, before its first sync
	time.Sleep(50 * time.Millisecond)
	sa.sync() // a reseeds: epoch 4, closed, since = now
	require.Equal(t, "4", sa.client.HGet(ctx, state, "epoch").Val())
	sc.sync() // c's first sync: its trip is news to the fleet
	require.True(t, sc.Connected())
	assert.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "c's trip must open the reseeded fleet")
	assert.Equal(t, resil.StateOpen, c.State(), "c's trip stands")
}

// TestFleetHugeOpenForFirstSyncTrip: with an OpenFor of centuries the
// breaker's open period saturates on the process clock, so what is left of
// it says nothing of when the breaker tripped. A fresh trip, made after the
// fleet's last transition by a replica that has run a while, must open the
// fleet with the replica's first sync, not be taken for an old one.
func TestFleetHugeOpenForFirstSyncTrip(t *testing.T) {
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Duration(math.MaxInt64)}
	sa, _, a, _ := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	time.Sleep(500 * time.Millisecond) // the process has run a while (in production: hours)
	tm, err := sa.client.Time(ctx).Result()
	require.NoError(t, err)
	state := setEpoch(t, sa, 5, "since", strconv.FormatInt(tm.UnixMilli(), 10)) // its last transition (a close) was just now
	require.Equal(t, resil.StateClosed, a.State())
	time.Sleep(20 * time.Millisecond)

	sc, c := newReplica(t, sa, Options{}, policy)
	require.ErrorIs(t, edgeCall(c, true), errEdge) // after the fleet's last transition
	assert.Less(t, sc.breakers["dep"].request().age, int64(1000), "how long ago it tripped, in ms")
	sc.sync()
	require.True(t, sc.Connected())
	assert.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "the fresh trip must open the fleet")
	assert.Equal(t, resil.StateOpen, c.State())
}

// TestFleetHugeTrialLeaseOrphanKept: TrialLease is valid at any
// non-negative value. An orphaned lease is kept for twice TrialLease, which
// must saturate: wrapped into the past, the orphan would be forgotten
// before any sync removed it, and the lost acquire would hold the fleet's
// trial place for the whole lease.
func TestFleetHugeTrialLeaseOrphanKept(t *testing.T) {
	sa, _, a, b, lose := halfOpenFleet(t, Options{TrialLease: time.Duration(math.MaxInt64)}) // "a trial's place is never cut"

	ctx := context.Background()
	lose.Store(true)
	_, err := resil.New[int]().Breaker(a).Run(ctx, func(context.Context) (int, error) {
		return 0, resil.Permanent(errEdge)
	})
	lose.Store(false)
	require.ErrorIs(t, err, errEdge)
	trials := sa.key("breaker", "dep", "trials")
	require.Equal(t, int64(1), sa.client.ZCard(ctx, trials).Val(), "the acquire ran in Redis")
	assert.Len(t, sa.breakers["dep"].orphans, 1, "the orphan is kept for the syncs")

	for i := 0; !sa.Connected(); i++ {
		require.Less(t, i, 50)
		sa.sync()
	}
	assert.Zero(t, sa.client.ZCard(ctx, trials).Val(), "the sync gave the orphaned place back")
	assert.NoError(t, edgeCall(b, false), "another replica's trial gets the place")
}

// TestFleetSettledFailureNotReproposed: a's half-open trial fails and its
// settle reopens the fleet (epoch 2) in Redis: the fleet heard of it. The
// breaker reopens locally and calls Tripped, as for every failed trial.
// When a's next sync comes after the open period, a is half-open: it must
// propose nothing, not move the fleet (already half-open in epoch 2) to a
// new epoch, which would wipe the trial place b holds.
func TestFleetSettledFailureNotReproposed(t *testing.T) {
	const openFor = 50 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	sa, sb, a, b := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := sa.key("breaker", "dep", "state")
	trials := sa.key("breaker", "dep", "trials")

	trip(t, a, sa, sb) // the fleet opens on a's trip; b adopts it
	require.Equal(t, resil.StateOpen, b.State())
	time.Sleep(3 * openFor)

	require.ErrorIs(t, edgeCall(a, true), errEdge, "a's trial fails: settle reopens the fleet")
	require.Equal(t, "2", sa.client.HGet(ctx, state, "epoch").Val())
	require.Equal(t, resil.StateOpen, a.State())
	time.Sleep(3 * openFor) // epoch 2's open period passes (a's sync is late)

	sb.sync() // b adopts epoch 2, half-open
	require.Equal(t, resil.StateHalfOpen, b.State())
	require.Equal(t, resil.ShareYes, sb.breakers["dep"].AcquireTrial(), "b takes the fleet's one trial place")

	sa.sync() // a's first sync since its settled failure
	require.True(t, sa.Connected())
	assert.Equal(t, "2", sa.client.HGet(ctx, state, "epoch").Val(), "the fleet already served a's failed trial; nothing to propose")
	assert.Equal(t, int64(1), sa.client.ZCard(ctx, trials).Val(), "b's trial place must survive")
	assert.Equal(t, resil.ShareNo, sa.breakers["dep"].AcquireTrial(), "HalfOpenCalls 1: b holds the place")
}

// TestFleetLaggingReplicaDoesNotReopenRecoveredFleet: Redis loses the
// fleet's state (open in epoch 1). a reseeds it open (epoch 2, new name),
// its period passes and a's trial closes it (epoch 3). b, open in the lost
// period and half-open by now with no trip of its own, syncs for the first
// time since the loss, knowing the lost state's name: the recovered fleet
// must not be sent back to trials by a period it already served.
func TestFleetLaggingReplicaDoesNotReopenRecoveredFleet(t *testing.T) {
	const openFor = 50 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	sa, sb, a, b := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := sa.key("breaker", "dep", "state")

	trip(t, a, sa, sb) // the fleet opens on a's trip; b adopts it
	require.Equal(t, resil.StateOpen, b.State())

	require.NoError(t, sa.client.FlushAll(ctx).Err()) // Redis loses its data
	sa.sync()                                         // a reseeds: epoch 2, open for what is left of its period
	require.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val())
	time.Sleep(3 * openFor)
	require.NoError(t, edgeCall(a, false), "a's trial closes the reseeded fleet")
	require.Equal(t, resil.StateClosed, a.State())
	require.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "the fleet recovered")
	epoch := sa.client.HGet(ctx, state, "epoch").Val()

	require.Equal(t, resil.StateHalfOpen, b.State(), "b: half-open by the lost period's end, no trip of its own")
	sb.sync()
	require.True(t, sb.Connected())
	assert.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "a recovered fleet must not be reopened by a period it served")
	assert.Equal(t, epoch, sa.client.HGet(ctx, state, "epoch").Val())
	sa.sync()
	assert.Equal(t, resil.StateClosed, a.State())
}

// TestFleetUnsettledLeaseGivenBack: a's trial holds the fleet's one trial
// place; while it runs, a round trip of a's store fails (here a limiter
// call whose reply is lost), so the store is unavailable when the trial
// ends (ignored outcome) and SettleTrial cannot ask Redis. The lease is
// orphaned like a timed-out acquire's: the next sync gives the place back,
// so another replica's trial need not wait for TrialLease (10s).
func TestFleetUnsettledLeaseGivenBack(t *testing.T) {
	sa, sb, a, b, lose := halfOpenFleet(t, Options{})
	quota := sa.RateLimiter("quota", resil.RateLimitPolicy{Rate: 1000})

	ctx := context.Background()
	_, err := resil.New[int]().Breaker(a).Run(ctx, func(context.Context) (int, error) {
		lose.Store(true)
		_, _ = resil.New[int]().RateLimit(quota).Run(ctx, func(context.Context) (int, error) { return 0, nil })
		lose.Store(false)
		require.False(t, sa.Connected(), "a round trip failed during the trial")
		return 0, resil.Permanent(errEdge) // an ignored trial: its place goes back
	})
	require.ErrorIs(t, err, errEdge)
	for i := 0; !sa.Connected(); i++ {
		require.Less(t, i, 50)
		sa.sync()
	}
	trials := sa.key("breaker", "dep", "trials")
	assert.Zero(t, sa.client.ZCard(ctx, trials).Val(), "a's ignored trial gave its place back")
	sb.sync()
	assert.NoError(t, edgeCall(b, false), "another replica's trial gets the place")
}

// TestFleetTripDuringRequestProposed: a trip that lands while a sync's
// request is being made (here: while request waits for fb.mu, after its
// snapshot) is either in that request or in the next one: when the next
// sync finds the breaker half-open (its OpenFor passed: Redis down
// meanwhile, or a short OpenFor), it proposes the trip, and the closed
// fleet does not force the breaker closed without a trial.
func TestFleetTripDuringRequestProposed(t *testing.T) {
	const openFor = 20 * time.Millisecond
	srv := StartRedis(t)
	s := manualStore(t, edgeClient(t, srv.Addr()), Options{Replica: "a"})
	b := s.Breaker("dep", resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1})
	s.sync()
	fb := s.breakers["dep"]
	ctx := context.Background()

	fb.mu.Lock() // request() blocks after its Snapshot
	got := make(chan syncRequest)
	go func() { got <- fb.request() }()
	time.Sleep(50 * time.Millisecond)              // real time: request() has taken its snapshot
	require.ErrorIs(t, edgeCall(b, true), errEdge) // the trip lands after the snapshot
	require.Equal(t, resil.StateOpen, b.State())
	fb.mu.Unlock()
	r := <-got
	require.Equal(t, resil.StateClosed, r.snap.State)

	pipe := s.client.Pipeline() // that sync's round trip
	cmd := fb.syncCmd(ctx, pipe, r)
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	fb.adopt(r, cmd)

	time.Sleep(3 * openFor) // the breaker's own open period passes before the next sync
	require.Equal(t, resil.StateHalfOpen, b.State())
	s.sync()
	require.True(t, s.Connected())
	assert.NotEqual(t, resil.StateClosed, b.State(), "closed without a single trial")
	assert.Equal(t, "1", s.client.HGet(ctx, s.key("breaker", "dep", "state"), "open").Val(), "the trip was proposed to the fleet")
}

// TestFleetTripAfterLossRecoveryIsFresh: after Redis lost its data and the
// fleet, reseeded, tripped and recovered, a replica that last synced before
// the recovery trips: its trip, timed by the breaker's snapshot (not by the
// Tripped call that follows it), is news and opens the fleet.
func TestFleetTripAfterLossRecoveryIsFresh(t *testing.T) {
	const openFor = 50 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	sa, sb, a, b := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := sa.key("breaker", "dep", "state")
	fa := sa.breakers["dep"]

	// a's first trip, served by the fleet: epoch 1 open, b's trial closes it (epoch 2).
	trip(t, a, sa, sb) // the fleet opens on a's trip; b adopts it
	time.Sleep(3 * openFor)
	require.NoError(t, edgeCall(b, false))
	sa.sync()
	require.Equal(t, resil.StateClosed, a.State())

	// Redis loses its data; b reseeds it closed (epoch 3), trips (4, open)
	// and its trial closes it again (5): since = that close.
	require.NoError(t, sa.client.FlushAll(ctx).Err())
	sb.sync()
	require.ErrorIs(t, edgeCall(b, true), errEdge)
	sb.sync()
	require.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val())
	time.Sleep(3 * openFor)
	require.NoError(t, edgeCall(b, false))
	require.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "the fleet recovered")
	time.Sleep(50 * time.Millisecond)

	// a's dependency goes down now: a genuine trip, after the fleet's last transition.
	require.ErrorIs(t, edgeCall(a, true), errEdge)
	require.Equal(t, resil.StateOpen, a.State())

	r := fa.request()
	require.Equal(t, 1, r.proposal, "the trip is news")
	assert.Less(t, r.age, int64(40), "timed from the trip just made (ms)")
	pipe := sa.client.Pipeline()
	cmd := fa.syncCmd(ctx, pipe, r)
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	fa.adopt(r, cmd)

	sa.sync() // the sync Tripped woke
	assert.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "a's fresh trip must open the fleet")
	assert.NotEqual(t, resil.StateClosed, a.State(), "a forced closed without a trial while its dependency is down")
}

// holdSettle lets SettleTrial's script run in Redis and then holds its
// reply until release is closed (once, while armed).
type holdSettle struct {
	armed   *atomic.Bool
	ran     chan struct{}
	release chan struct{}
}

func (h holdSettle) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h holdSettle) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if len(args) < 2 || args[0] != "evalsha" || args[1] != settleScript.Hash() || !h.armed.CompareAndSwap(true, false) {
			return next(ctx, cmd)
		}
		err := next(ctx, cmd)
		close(h.ran)
		<-h.release
		return err
	}
}
func (h holdSettle) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestFleetSettleDuringAdoptCountsNoTrip: a failed trial's settle reopens
// the fleet, and a sync's reply carrying the moved epoch is adopted while
// the settle's reply comes back: released together, many times, in
// varying order. The settle and the adoption must never leave the trips
// the fleet knows of ahead of the breaker's own (a trip it never made):
// the next genuine trip would not be proposed, and the breaker would be
// forced closed without a trial while its dependency is down.
func TestFleetSettleDuringAdoptCountsNoTrip(t *testing.T) {
	srv := StartRedis(t)
	const openFor = 20 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	ctx := context.Background()
	bad := 0
	const runs = 100
	for i := range runs {
		ca := edgeClient(t, srv.Addr())
		h := holdSettle{armed: new(atomic.Bool), ran: make(chan struct{}), release: make(chan struct{})}
		ca.AddHook(h)
		sa := manualStore(t, ca, Options{Replica: "a", Prefix: "p" + strconv.Itoa(i)})
		a := sa.Breaker("dep", policy)
		sa.sync()
		fa := sa.breakers["dep"]
		require.NoError(t, settleScript.Load(ctx, sa.client).Err())
		require.NoError(t, acquireScript.Load(ctx, sa.client).Err())
		require.ErrorIs(t, edgeCall(a, true), errEdge)
		sa.sync()
		time.Sleep(2 * openFor)

		h.armed.Store(true)
		trial := make(chan error)
		go func() { trial <- edgeCall(a, true) }()
		<-h.ran
		r := fa.request()
		pipe := sa.client.Pipeline()
		cmd := fa.syncCmd(ctx, pipe, r)
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
		start := make(chan struct{})
		adopted := make(chan struct{})
		go func() { <-start; fa.adopt(r, cmd); close(adopted) }()
		close(start)
		for range i % 50 { // vary the offset a little
			runtime.Gosched()
		}
		close(h.release)
		<-adopted
		<-trial
		snap := fa.link.Snapshot()
		fa.mu.Lock()
		over := fa.tripped > snap.Trips
		fa.mu.Unlock()
		if over {
			bad++
			if bad == 1 {
				// The consequence: the fleet serves its period, a's trial
				// closes it; then a's dependency goes down again.
				state := sa.key("breaker", "dep", "state")
				time.Sleep(3 * openFor)
				sa.sync()
				require.NoError(t, edgeCall(a, false))
				sa.sync()
				require.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val())
				require.Equal(t, resil.StateClosed, a.State())
				require.ErrorIs(t, edgeCall(a, true), errEdge) // a genuine trip
				require.Equal(t, resil.StateOpen, a.State())
				sa.sync()
				assert.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "a's trip must be proposed and open the fleet")
				assert.NotEqual(t, resil.StateClosed, a.State(), "a forced closed without a trial while its dependency is down")
			}
		}
		_ = sa.Close()
	}
	assert.Zero(t, bad, "runs (of %d) where fb.tripped counts a trip the breaker did not make", runs)
}

// TestFleetSettleCountedTripNeverMade: a's half-open trial fails and its
// SettleTrial reopens the fleet (epoch 2), counting the trip the breaker
// is about to make on return as heard. Before the breaker makes it (the
// window is made by driving the share directly), the fleet moves on (b's
// trial closes it) and a sync forces a closed: the breaker then makes no
// trip. The count must not stay ahead of the breaker's own, or a's next
// genuine trip would not be news: never proposed, a forced closed without
// a trial while its dependency is down.
func TestFleetSettleCountedTripNeverMade(t *testing.T) {
	const openFor = 20 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	sa, sb, a, b := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := sa.key("breaker", "dep", "state")
	fa := sa.breakers["dep"]

	trip(t, a, sa, sb) // the fleet opens on a's trip; b adopts it
	time.Sleep(3 * openFor)
	require.Equal(t, resil.StateHalfOpen, a.State())

	// a's trial: granted, fails; its settle reopens the fleet.
	require.Equal(t, resil.ShareYes, fa.AcquireTrial())
	require.Equal(t, resil.ShareNo, fa.SettleTrial(resil.TrialFailed))
	require.Equal(t, "2", sa.client.HGet(ctx, state, "epoch").Val())
	// ... the breaker's settleTrial has not taken b.mu yet.

	time.Sleep(3 * openFor)
	sb.sync()
	require.NoError(t, edgeCall(b, false), "b's trial closes the fleet (epoch 3)")
	sa.sync() // a is forced closed: the breaker's pending reopen finds its generation gone
	require.Equal(t, resil.StateClosed, a.State())

	snap := fa.link.Snapshot()
	fa.mu.Lock()
	tripped := fa.tripped
	fa.mu.Unlock()
	assert.LessOrEqual(t, tripped, snap.Trips, "fb.tripped counts a trip the breaker never made")

	require.ErrorIs(t, edgeCall(a, true), errEdge) // a's dependency is down: a genuine trip
	require.Equal(t, resil.StateOpen, a.State())
	sa.sync()
	assert.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "a's trip must be proposed and open the fleet")
	assert.NotEqual(t, resil.StateClosed, a.State(), "a forced closed without a trial while its dependency is down")
}

// TestFleetRecreatedReplicaLeaseIDs: a store named "a" holds a trial lease
// and goes away without settling it (closed, or its process restarted with
// the same Options.Replica). Its successor, also "a", must take a place of
// its own with its first acquire, not re-score its predecessor's lease:
// the fleet admits no more than HalfOpenCalls trials.
func TestFleetRecreatedReplicaLeaseIDs(t *testing.T) {
	const openFor = 20 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 2}
	sa, sb, a, _ := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	trials := sa.key("breaker", "dep", "trials")

	trip(t, a, sa, sb) // the fleet opens on a's trip; b adopts it
	time.Sleep(3 * openFor)
	sa.sync()
	sb.sync()
	require.Equal(t, resil.ShareYes, sa.breakers["dep"].AcquireTrial(), "a's trial takes place 1 of 2 ")
	_ = sa.Close() // a goes away with its trial unsettled

	sa2, _ := newReplica(t, sa, Options{Replica: "a"}, policy) // a again
	sa2.sync()
	require.Equal(t, resil.ShareYes, sa2.breakers["dep"].AcquireTrial(), "place 2 of 2")
	assert.Equal(t, int64(2), sa2.client.ZCard(ctx, trials).Val(), "two places held: %v", sa2.client.ZRange(ctx, trials, 0, -1).Val())
	assert.Equal(t, resil.ShareNo, sb.breakers["dep"].AcquireTrial(), "HalfOpenCalls 2: both places are held, b must be refused")
}

// TestFleetLaggingReplicaFreshTrip: a last synced in epoch 0. The fleet
// trips on b (epoch 1) and b's trial closes it (epoch 2) before a's next
// sync (OpenFor shorter than SyncEvery). a's dependency then fails: a trips
// after the fleet's last transition. Though its sync knows only epoch 0,
// the trip is news to the closed fleet: it opens it, and a is not forced
// closed without a trial.
func TestFleetLaggingReplicaFreshTrip(t *testing.T) {
	const openFor = 20 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	sa, sb, a, b := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := sa.key("breaker", "dep", "state")

	require.ErrorIs(t, edgeCall(b, true), errEdge)
	sb.sync() // epoch 1
	time.Sleep(3 * openFor)
	require.NoError(t, edgeCall(b, false)) // epoch 2, closed
	require.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val())
	time.Sleep(20 * time.Millisecond)

	require.ErrorIs(t, edgeCall(a, true), errEdge) // after the fleet's close
	require.Equal(t, resil.StateOpen, a.State())
	sa.sync()
	assert.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "a's fresh trip must open the fleet")
	assert.NotEqual(t, resil.StateClosed, a.State(), "a forced closed without a trial while its dependency is down")
}

// TestFleetStaleTrialDoesNotReopenRecoveredFleet: a's trial (fleet epoch
// 1) outlives its lease; b's trial takes the place and closes the fleet
// (epoch 2). a's trial then fails: its settle finds the fleet gone from
// epoch 1, and the breaker reopens locally after the fleet's close. That
// reopen, of a period the fleet has left, is no news: a's next sync must
// not reopen the recovered fleet.
func TestFleetStaleTrialDoesNotReopenRecoveredFleet(t *testing.T) {
	const openFor = 20 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	sa, sb, a, b := twoReplicas(t, Options{Replica: "a", TrialLease: 30 * time.Millisecond}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := sa.key("breaker", "dep", "state")

	trip(t, a, sa, sb) // the fleet opens on a's trip; b adopts it
	time.Sleep(3 * openFor)
	require.Equal(t, resil.StateHalfOpen, a.State())
	require.Equal(t, resil.StateHalfOpen, b.State())

	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := resil.New[int]().Breaker(a).Run(ctx, func(context.Context) (int, error) {
			close(started)
			<-release
			return 0, errEdge
		})
		done <- err
	}()
	<-started
	require.Len(t, sa.breakers["dep"].leases, 1, "a's trial holds the fleet's place")
	time.Sleep(60 * time.Millisecond) // a's lease (30ms) expires; its trial runs on

	require.NoError(t, edgeCall(b, false), "b's trial takes the freed place and closes the fleet")
	require.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val())
	require.Equal(t, "2", sa.client.HGet(ctx, state, "epoch").Val())
	time.Sleep(5 * time.Millisecond)

	close(release) // a's stale trial fails now: settle answers -1, a reopens locally
	require.ErrorIs(t, <-done, errEdge)
	require.Equal(t, resil.StateOpen, a.State())

	sa.sync()
	require.True(t, sa.Connected())
	assert.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "a stale trial of epoch 1 reopened the recovered fleet")
	assert.Equal(t, "2", sa.client.HGet(ctx, state, "epoch").Val())
}

// noscriptOnce runs f, then flushes the server's scripts, before the
// first pipeline it sees while armed reaches Redis: the pipeline fails
// with NOSCRIPT and Store.sync retries the same requests.
type noscriptOnce struct {
	armed *atomic.Bool
	f     func()
}

func (h noscriptOnce) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h noscriptOnce) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h noscriptOnce) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.armed.CompareAndSwap(true, false) {
			h.f()
		}
		return next(ctx, cmds)
	}
}

// TestFleetNoscriptRetryAgesTrip: b trips (epoch 1); a, which knew epoch
// 0, trips too while the fleet is open. a's sync takes its request. Before
// it reaches Redis, b's trial closes the fleet (epoch 2) and the scripts
// are flushed: the NOSCRIPT retry sends the same request, whose trip must
// be dated as of that send, before the fleet's close, and dropped.
func TestFleetNoscriptRetryAgesTrip(t *testing.T) {
	const openFor = 20 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	srv := StartRedis(t)
	ca := edgeClient(t, srv.Addr())
	armed := new(atomic.Bool)
	var hookErr atomic.Value
	sa := manualStore(t, ca, Options{Replica: "a"})
	sb := manualStore(t, edgeClient(t, srv.Addr()), Options{Replica: "b"})
	a, b := sa.Breaker("dep", policy), sb.Breaker("dep", policy)
	sa.sync()
	sb.sync()
	ctx := context.Background()
	state := sa.key("breaker", "dep", "state")

	require.ErrorIs(t, edgeCall(b, true), errEdge)
	sb.sync()                                      // epoch 1, open
	require.ErrorIs(t, edgeCall(a, true), errEdge) // a trips on its own calls, fleet open
	require.Equal(t, resil.StateOpen, a.State())

	ca.AddHook(noscriptOnce{armed: armed, f: func() {
		time.Sleep(3 * openFor)
		if err := edgeCall(b, false); err != nil { // b's trial closes the fleet: epoch 2
			hookErr.Store(err)
		}
		time.Sleep(20 * time.Millisecond)
		sb.client.ScriptFlush(ctx)
	}})
	armed.Store(true)
	sa.sync()
	require.Nil(t, hookErr.Load())
	require.True(t, sa.Connected())
	assert.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "a's trip, made before the fleet closed, reopened it")
	assert.Equal(t, "2", sa.client.HGet(ctx, state, "epoch").Val())
}

// TestFleetMissingSinceLaggingStaleTrip: a state written by a version
// that kept no since (older replicas, during a rolling upgrade) cannot
// tell a fresh trip from an old one. a knew epoch 5 and tripped; then the
// fleet opened and closed again under older replicas (epoch 7, no since).
// a's sync (known 5 < 7) must be dropped, not reopen the fleet.
func TestFleetMissingSinceLaggingStaleTrip(t *testing.T) {
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour}
	sa, _, a, _ := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := setEpoch(t, sa, 5) // no since: as an older version writes it

	require.ErrorIs(t, edgeCall(a, true), errEdge) // a trips, cannot reach Redis
	time.Sleep(20 * time.Millisecond)
	// older replicas opened and closed the fleet since (served the outage)
	require.NoError(t, sa.client.HSet(ctx, state, "epoch", 7, "open", 0).Err())
	time.Sleep(20 * time.Millisecond)

	sa.sync()
	require.True(t, sa.Connected())
	assert.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "a stale trip reopened a fleet closed after it")
	assert.Equal(t, "7", sa.client.HGet(ctx, state, "epoch").Val())
}

// TestFleetTwoStaleTrialsKeepNextTrip: HalfOpenCalls 2; a holds both of
// the fleet's trial places (epoch 1). Its leases expire and b's two trials
// close the fleet (epoch 2). Both of a's trials then fail in a period the
// fleet has left: the breaker reopens once, and that reopen is no news.
// a's next trial (its acquire timed out: it decides alone) fails after the
// fleet's close: a genuine trip, which must open the fleet, not leave a
// forced closed while its dependency is down.
func TestFleetTwoStaleTrialsKeepNextTrip(t *testing.T) {
	const openFor = 20 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 2}
	srv := StartRedis(t)
	ca := edgeClient(t, srv.Addr())
	lose := new(atomic.Bool)
	ca.AddHook(loseAcquireReply{lose})
	h := holdSettle{armed: new(atomic.Bool), ran: make(chan struct{}), release: make(chan struct{})}
	ca.AddHook(h)
	sa := manualStore(t, ca, Options{Replica: "a", TrialLease: 30 * time.Millisecond})
	sb := manualStore(t, edgeClient(t, srv.Addr()), Options{Replica: "b"})
	a, b := sa.Breaker("dep", policy), sb.Breaker("dep", policy)
	sa.sync()
	sb.sync()
	ctx := context.Background()
	require.NoError(t, settleScript.Load(ctx, sa.client).Err())
	require.NoError(t, acquireScript.Load(ctx, sa.client).Err())
	state := sa.key("breaker", "dep", "state")
	fa := sa.breakers["dep"]

	trip(t, a, sa, sb) // the fleet opens on a's trip; b adopts it
	time.Sleep(3 * openFor)

	type trial struct {
		started, release chan struct{}
		done             chan error
	}
	run := func() trial {
		tr := trial{make(chan struct{}), make(chan struct{}), make(chan error, 1)}
		go func() {
			_, err := resil.New[int]().Breaker(a).Run(ctx, func(context.Context) (int, error) {
				close(tr.started)
				<-tr.release
				return 0, errEdge
			})
			tr.done <- err
		}()
		<-tr.started
		return tr
	}
	t1, t2 := run(), run()
	require.Len(t, fa.leases, 2, "a's two trials hold the fleet's places")
	time.Sleep(60 * time.Millisecond) // a's leases expire

	require.NoError(t, edgeCall(b, false))
	require.NoError(t, edgeCall(b, false), "b's second trial closes the fleet")
	require.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val())
	require.Equal(t, "2", sa.client.HGet(ctx, state, "epoch").Val())
	time.Sleep(5 * time.Millisecond)

	h.armed.Store(true)
	close(t1.release) // its settle runs (-1) and its reply is held
	<-h.ran
	close(t2.release) // settle -1, the breaker reopens
	require.ErrorIs(t, <-t2.done, errEdge)
	close(h.release) // t1's settle -1 too; its generation is gone: no reopen
	require.ErrorIs(t, <-t1.done, errEdge)
	require.Equal(t, resil.StateOpen, a.State())

	snap := fa.link.Snapshot()
	fa.mu.Lock()
	tripped := fa.tripped
	fa.mu.Unlock()
	assert.LessOrEqual(t, tripped, snap.Trips, "fb.tripped counts a reopen the breaker never made")

	// a's dependency is still down: after its open period, its trial (an
	// acquire that timed out: decided alone) fails, after the fleet closed.
	time.Sleep(3 * openFor)
	lose.Store(true)
	require.ErrorIs(t, edgeCall(a, true), errEdge)
	lose.Store(false)
	require.Equal(t, resil.StateOpen, a.State())

	for i := 0; !sa.Connected() || i == 0; i++ {
		require.Less(t, i, 50)
		sa.sync()
	}
	assert.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "a's trip, after the fleet closed, must open it")
	assert.NotEqual(t, resil.StateClosed, a.State(), "a forced closed without a trial while its dependency is down")
}

// TestFleetReseededClosedFreshTrip: Redis loses its data; a (knew epoch
// 3) reseeds the state closed, then b (knew epoch 5) reseeds it again,
// closed. a then trips and syncs, knowing epoch 4 of this state: the state
// has made no transition since it was seeded, so the trip is news and
// opens the fleet.
func TestFleetReseededClosedFreshTrip(t *testing.T) {
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour}
	sa, sb, a, _ := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := setEpoch(t, sa, 3)
	require.NoError(t, sa.client.HSet(ctx, state, "epoch", 5).Err())
	sb.sync()
	require.Equal(t, uint64(5), sb.breakers["dep"].epoch)

	require.NoError(t, sa.client.FlushAll(ctx).Err()) // Redis lost its data
	sa.sync()                                         // epoch 4
	sb.sync()                                         // epoch 6
	require.Equal(t, "6", sa.client.HGet(ctx, state, "epoch").Val())
	require.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val())
	require.Equal(t, uint64(4), sa.breakers["dep"].epoch)

	time.Sleep(5 * time.Millisecond)
	require.ErrorIs(t, edgeCall(a, true), errEdge) // a genuine trip
	require.Equal(t, resil.StateOpen, a.State())
	sa.sync()
	require.True(t, sa.Connected())
	assert.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "a's fresh trip must open the fleet")
	assert.NotEqual(t, resil.StateClosed, a.State(), "a forced closed without a trial while its dependency is down")
}

// serverMs returns the redis-server's clock, in milliseconds.
func serverMs(t *testing.T, s *Store) int64 {
	tm, err := s.client.Time(context.Background()).Result()
	require.NoError(t, err)
	return tm.UnixMilli()
}

// staleTrialFails runs one trial on a that holds its lease, lets f move
// the fleet, then fails the trial (settle answers -1).
func staleTrialFails(t *testing.T, s *Store, a *resil.Breaker, f func()) {
	started, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := resil.New[int]().Breaker(a).Run(context.Background(), func(context.Context) (int, error) {
			close(started)
			<-release
			return 0, errEdge
		})
		done <- err
	}()
	<-started
	require.Len(t, s.breakers["dep"].leases, 1)
	f()
	time.Sleep(5 * time.Millisecond)
	close(release)
	require.ErrorIs(t, <-done, errEdge)
	require.Equal(t, resil.StateOpen, a.State())
}

// TestFleetStaleReopenRepeatedEpochAfterLoss: after a loss the new state
// (another name) can reuse an epoch number, in which a stale trial's
// reopen must be counted again: not proposed as news, reopening a fleet
// that closed after it.
func TestFleetStaleReopenRepeatedEpochAfterLoss(t *testing.T) {
	const openFor = 20 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	sa, _, a, _ := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := sa.key("breaker", "dep", "state")

	require.ErrorIs(t, edgeCall(a, true), errEdge)
	sa.sync() // epoch 1, open
	time.Sleep(3 * openFor)
	staleTrialFails(t, sa, a, func() { // the fleet closes (epoch 2) while a's trial runs
		require.NoError(t, sa.client.HSet(ctx, state, "epoch", 2, "open", 0, "passed", 0, "since", serverMs(t, sa)).Err())
	})
	fa := sa.breakers["dep"]
	require.Equal(t, uint64(2), fa.staleReopen)

	// Redis loses its data before a syncs; another replica (knew epoch 0)
	// seeds it again, open, and it is half-open in epoch 1 of a new state.
	require.NoError(t, sa.client.FlushAll(ctx).Err())
	require.NoError(t, sa.client.HSet(ctx, state, "epoch", 1, "open", 1, "until", serverMs(t, sa), "passed", 0, "since", serverMs(t, sa), "inc", "b@1").Err())
	sa.sync() // a adopts epoch 1 of "b@1"
	require.Equal(t, uint64(1), fa.epoch)
	require.Equal(t, "b@1", fa.inc)
	time.Sleep(5 * time.Millisecond)

	staleTrialFails(t, sa, a, func() { // the new state's fleet closes too (epoch 2)
		require.NoError(t, sa.client.HSet(ctx, state, "epoch", 2, "open", 0, "passed", 0, "since", serverMs(t, sa)).Err())
	})
	snap := fa.link.Snapshot()
	fa.mu.Lock()
	tripped := fa.tripped
	fa.mu.Unlock()
	assert.Equal(t, snap.Trips, tripped, "the stale reopen is not counted")

	sa.sync()
	require.True(t, sa.Connected())
	assert.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "a stale trial of epoch 1 reopened the recovered fleet")
}

// TestFleetOldStateReseedKeepsSinceUnknown: a state written by an earlier
// version (no since) that goes through the known > epoch closed path keeps
// its last transition's time unknown (not since = 0, "seeded closed, no
// transition since"), so a lagging replica that knew it cannot reopen it
// with a trip made before that transition.
func TestFleetOldStateReseedKeepsSinceUnknown(t *testing.T) {
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour}
	sa, sb, a, _ := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := sa.key("breaker", "dep", "state")
	require.NoError(t, sa.client.HSet(ctx, state, "epoch", 9).Err())
	sb.sync() // b knows epoch 9
	require.Equal(t, uint64(9), sb.breakers["dep"].epoch)

	// lost; an older version seeds it again (no since), epoch 5
	require.NoError(t, sa.client.Del(ctx, state).Err())
	require.NoError(t, sa.client.HSet(ctx, state, "epoch", 5, "open", 0, "inc", "old@1").Err())
	sa.sync()
	require.Equal(t, uint64(5), sa.breakers["dep"].epoch)

	require.ErrorIs(t, edgeCall(a, true), errEdge) // a trips, cannot reach Redis
	time.Sleep(20 * time.Millisecond)
	// older replicas opened and closed the fleet since (served the outage)
	require.NoError(t, sa.client.HSet(ctx, state, "epoch", 7, "open", 0).Err())
	time.Sleep(20 * time.Millisecond)

	sb.sync() // known 9 > 7: reseeds closed at 10
	require.Equal(t, "10", sa.client.HGet(ctx, state, "epoch").Val())
	t.Logf("since after reseed: %q", sa.client.HGet(ctx, state, "since").Val())

	sa.sync()
	require.True(t, sa.Connected())
	assert.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "a stale trip reopened a fleet closed after it")
}
