package redisstore

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// holdPipe holds the first pipeline it sees while armed (a sync's round
// trip) until release is closed, and then lets it reach Redis all the
// same, whatever became of its context: a request already on its way when
// the store stopped waiting for it (a slow link, a retransmission). done
// is closed once it has run.
type holdPipe struct {
	armed   *atomic.Bool
	held    chan struct{}
	release chan struct{}
	done    chan struct{}
}

func newHoldPipe() holdPipe {
	return holdPipe{armed: new(atomic.Bool), held: make(chan struct{}), release: make(chan struct{}), done: make(chan struct{})}
}

// unhold lets the held pipeline go on; it may be called more than once.
func (h holdPipe) unhold() {
	select {
	case <-h.release:
	default:
		close(h.release)
	}
}

func (h holdPipe) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h holdPipe) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h holdPipe) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !h.armed.CompareAndSwap(true, false) {
			return next(ctx, cmds)
		}
		defer close(h.done)
		close(h.held)
		<-h.release
		return next(context.WithoutCancel(ctx), cmds)
	}
}

// TestFleetLateSyncDoesNotReopenRecoveredFleet: a trips, and its sync (the
// trip proposed, against epoch 0) is delayed on its way to Redis past
// Options.Timeout: the store gives up on it, and its next sync proposes the
// trip again, which opens the fleet (epoch 1). The fleet serves the trip
// and b's trial closes it (epoch 2). Then the first sync reaches Redis: an
// old request, superseded by one the fleet applied since. It must change
// nothing: not reopen the recovered fleet (its trip's age is as of its
// send, so the trip looks made after the fleet's close), nor put a's older
// counts in place of its newer ones.
func TestFleetLateSyncDoesNotReopenRecoveredFleet(t *testing.T) {
	const openFor = 50 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	srv := StartRedis(t)
	ca := edgeClient(t, srv.Addr())
	h := newHoldPipe()
	ca.AddHook(h)
	sa := manualStore(t, ca, Options{Replica: "a", Timeout: 200 * time.Millisecond})
	sb := manualStore(t, edgeClient(t, srv.Addr()), Options{Replica: "b"})
	a, b := sa.Breaker("dep", policy), sb.Breaker("dep", policy)
	// Run before the stores' Close (cleanups run last in, first out), which
	// waits for the held round trip: a failed require must not hang there.
	t.Cleanup(h.unhold)
	sa.sync()
	sb.sync()
	require.True(t, sa.Connected() && sb.Connected())
	ctx := context.Background()
	state := sa.key("breaker", "dep", "state")
	counts := sa.key("breaker", "dep", "counts")

	require.ErrorIs(t, edgeCall(a, true), errEdge) // a trips
	require.Equal(t, resil.StateOpen, a.State())
	h.armed.Store(true)
	sa.sync() // its round trip is held past Timeout: the store gives up on it
	<-h.held
	require.False(t, sa.Connected(), "the store gave up on the held sync")
	for i := 0; !sa.Connected(); i++ { // the trip proposed again: the fleet opens
		require.Less(t, i, 50, "the store does not reconnect")
		sa.sync()
	}
	require.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val())
	require.Equal(t, "1", sa.client.HGet(ctx, state, "epoch").Val())
	sb.sync()
	require.NotEqual(t, resil.StateClosed, b.State(), "b adopts the open fleet")

	time.Sleep(3 * openFor) // real time: the breakers' and Redis's clocks are real; only a lower bound matters
	require.NoError(t, edgeCall(b, false), "b's trial closes the fleet")
	require.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "the fleet recovered")
	require.Equal(t, "2", sa.client.HGet(ctx, state, "epoch").Val())
	sa.sync() // a adopts the close
	require.Equal(t, resil.StateClosed, a.State())
	sa.sync() // and reports its window in epoch 2
	published := sa.client.HGet(ctx, counts, "a").Val()
	require.NotEmpty(t, published)
	// Real time: the held sync's trip must look made after the fleet's
	// close, as it does when the network holds it this long.
	time.Sleep(20 * time.Millisecond)

	h.unhold() // the old sync reaches Redis now
	<-h.done
	assert.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "a late sync's trip reopened the recovered fleet")
	assert.Equal(t, "2", sa.client.HGet(ctx, state, "epoch").Val())
	assert.Equal(t, published, sa.client.HGet(ctx, counts, "a").Val(), "a late sync put older counts in place of newer ones")
	sa.sync()
	sb.sync()
	assert.Equal(t, resil.StateClosed, a.State())
	assert.Equal(t, resil.StateClosed, b.State())
}

// TestFleetRestartedReplicaNotLockedOut: replica a's process ends after
// many syncs, one of them still on its way to Redis (sent, superseded by
// the syncs after it); a's process restarts under the same name, with a new
// nonce, its syncs numbered from 1 again. Its syncs are applied, though
// numbered below its predecessor's: its trip opens the fleet. The
// predecessor's late sync, which reaches Redis after the restart, stays
// superseded: it does not reopen the fleet that recovered meanwhile.
func TestFleetRestartedReplicaNotLockedOut(t *testing.T) {
	const openFor = 50 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor, HalfOpenCalls: 1}
	sa, sb, a, b := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := sa.key("breaker", "dep", "state")
	counts := sa.key("breaker", "dep", "counts")
	fa := sa.breakers["dep"]

	require.ErrorIs(t, edgeCall(a, true), errEdge) // a trips
	late := sa.client.Pipeline()                   // a sync that leaves a, and is held on its way
	fa.syncCmd(ctx, late, fa.request())
	for range 5 { // the trip proposed again, the fleet opens; a's numbers run ahead
		sa.sync()
	}
	require.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val())
	require.Equal(t, "1", sa.client.HGet(ctx, state, "epoch").Val())
	require.Greater(t, fa.sent.Load(), uint64(3))
	_ = sa.Close() // a's process ends

	sb.sync()
	time.Sleep(3 * openFor) // real time: the breakers' and Redis's clocks are real; only a lower bound matters
	require.NoError(t, edgeCall(b, false), "b's trial closes the fleet")
	require.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "the fleet recovered")
	require.Equal(t, "2", sa.client.HGet(ctx, state, "epoch").Val())

	sa2, a2 := newReplica(t, sa, Options{Replica: "a"}, policy) // a restarted: a new nonce
	require.NotEqual(t, sa.nonce, sa2.nonce)
	sa2.sync() // adopts epoch 2
	sa2.sync() // and reports its counts in it
	require.True(t, sa2.Connected())
	require.Less(t, sa2.breakers["dep"].sent.Load(), fa.sent.Load(), "numbered below its predecessor's syncs")
	assert.True(t, strings.HasPrefix(sa2.client.HGet(ctx, counts, "a").Val(), "2 "),
		"the restarted replica's counts, in epoch 2, are applied: %q", sa2.client.HGet(ctx, counts, "a").Val())

	// Real time: the held sync's trip must look made after the fleet's
	// close, as it does when the network holds it this long.
	time.Sleep(20 * time.Millisecond)
	_, err := late.Exec(ctx) // the predecessor's late sync reaches Redis
	require.NoError(t, err)
	assert.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val(), "the predecessor's late sync reopened the recovered fleet")
	assert.Equal(t, "2", sa.client.HGet(ctx, state, "epoch").Val())

	require.ErrorIs(t, edgeCall(a2, true), errEdge) // the restarted replica trips
	sa2.sync()                                      // a sync numbered below its predecessor's too
	assert.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "the restarted replica's trip must open the fleet")
	assert.Equal(t, "3", sa.client.HGet(ctx, state, "epoch").Val())
	assert.NotEqual(t, resil.StateClosed, a2.State(), "a2 forced closed without a trial while its dependency is down")
}

// TestFleetSyncRecordsSwept: the fleet keeps, per store instance, the
// number of the last sync it applied, for as long as its keys outlive
// their last user (keyTTL) after it: a store instance's first sync (a
// process started, with a new nonce) removes the records of instances
// silent that long, so that restarts, each with a new nonce (and a new
// name by default), do not pile records up. A sync of an instance already
// recorded sweeps nothing (it costs no scan). The records' key expires as
// the breaker's other keys do.
func TestFleetSyncRecordsSwept(t *testing.T) {
	policy := resil.BreakerPolicy{}
	srv := StartRedis(t)
	sa := manualStore(t, edgeClient(t, srv.Addr()), Options{Replica: "a"})
	sa.Breaker("dep", policy)
	sa.sync()
	ctx := context.Background()
	syncs := sa.key("breaker", "dep", "syncs")
	self := "a:" + sa.nonce
	// recorded: the number of a's last sync sent (its first met NOSCRIPT
	// and was sent again, numbered anew)
	recorded := func() string { return strconv.FormatUint(sa.breakers["dep"].sent.Load(), 10) + " " }
	require.True(t, strings.HasPrefix(sa.client.HGet(ctx, syncs, self).Val(), recorded()), "a's sync is recorded")

	now := serverMs(t, sa)
	gone := "9 " + strconv.FormatInt(now-ms(keyTTL)-1000, 10)
	recent := "9 " + strconv.FormatInt(now-1000, 10)
	require.NoError(t, sa.client.HSet(ctx, syncs, "gone:00000000", gone, "recent:00000000", recent).Err())
	sa.sync()
	require.True(t, sa.client.HExists(ctx, syncs, "gone:00000000").Val(), "only a new instance's first sync sweeps")
	require.True(t, strings.HasPrefix(sa.client.HGet(ctx, syncs, self).Val(), recorded()))

	sc, _ := newReplica(t, sa, Options{}, policy)
	sc.sync()
	require.True(t, sc.Connected())
	assert.False(t, sa.client.HExists(ctx, syncs, "gone:00000000").Val(), "a record older than keyTTL is swept")
	assert.Equal(t, recent, sa.client.HGet(ctx, syncs, "recent:00000000").Val(), "a recent one is kept")
	assert.True(t, sa.client.HExists(ctx, syncs, self).Val())
	assert.True(t, sa.client.HExists(ctx, syncs, "c:"+sc.nonce).Val())
	ttl := sa.client.PTTL(ctx, syncs).Val()
	assert.InDelta(t, keyTTL.Seconds(), ttl.Seconds(), 60, "the records' key expires as the breaker's other keys do")
}
