package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFleetLossUnnamedFirstThenReseedKeepsFreshTrip: after a loss, a brand-new
// replica (c, never synced) is the first to report: the state is made again
// by this version with only its name (no transition, so no epoch and no
// since). Then a replica that knew more epochs (a) reseeds it closed past
// them. c then trips on its own calls, after every transition the fleet has
// made: the trip must open the closed fleet, as it does when a is first
// (TestFleetReseededClosedFreshTrip).
func TestFleetLossUnnamedFirstThenReseedKeepsFreshTrip(t *testing.T) {
	policy := resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour}
	sa, _, _, _ := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"}, policy)
	ctx := context.Background()
	state := setEpoch(t, sa, 5) // a knows epoch 5

	require.NoError(t, sa.client.FlushAll(ctx).Err()) // Redis lost its data
	sc, c := newReplica(t, sa, Options{}, policy)
	sc.sync() // c's first sync: the state gets a name, nothing else
	sa.sync() // a knew epoch 5: reseeds closed at 6
	require.Equal(t, "6", sa.client.HGet(ctx, state, "epoch").Val())
	require.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val())

	time.Sleep(5 * time.Millisecond) // real time (the server's clock): the trip comes after the reseed
	require.ErrorIs(t, edgeCall(c, true), errEdge)
	require.Equal(t, resil.StateOpen, c.State())
	sc.sync()
	require.True(t, sc.Connected())
	assert.Equal(t, "1", sa.client.HGet(ctx, state, "open").Val(), "c's fresh trip must open the fleet")
	assert.NotEqual(t, resil.StateClosed, c.State(), "c forced closed without a trial while its dependency is down")
}

// TestFleetLossOldCountsDoNotCount: as
// TestFleetMissedTransitionsClearOldCounts, across a loss. a's 3 failures
// are admitted in epoch 3 of the state it knows; Redis then loses it, and
// a new state (another name) is made and reaches epoch 3 of its own before
// a syncs. a's report is tagged with the epoch number it knew, 3, and the
// other replicas sum it into the new state's epoch 3: outcomes admitted
// before the new state's transitions count after them.
func TestFleetLossOldCountsDoNotCount(t *testing.T) {
	sa, sb, a, b := twoReplicas(t, Options{Replica: "a"}, Options{Replica: "b"},
		resil.BreakerPolicy{FailureRatio: 0.5, MinCalls: 4, Window: time.Minute, OpenFor: time.Hour, HalfOpenCalls: 1})
	ctx := context.Background()
	state := setEpoch(t, sa, 3) // a knows epoch 3
	sb.sync()
	require.Equal(t, uint64(3), sb.breakers["dep"].epoch)

	for range 3 { // a: 3 failures, fewer than MinCalls: closed
		require.ErrorIs(t, edgeCall(a, true), errEdge)
	}
	require.Equal(t, resil.StateClosed, a.State())

	// Redis loses its data; a new state is made and goes through three
	// transitions (opened, closed, ...), closed in its epoch 3.
	require.NoError(t, sa.client.FlushAll(ctx).Err())
	require.NoError(t, sa.client.HSet(ctx, state, "epoch", 3, "open", 0, "passed", 0, "since", serverMs(t, sa), "inc", "y@1").Err())
	sb.sync() // b adopts epoch 3 of "y@1"
	require.Equal(t, "y@1", sb.breakers["dep"].inc)

	sa.sync() // a reports its window, tagged 3; it adopts the new state
	sb.sync() // b reads the rest of the fleet's counts
	require.True(t, sa.Connected() && sb.Connected())
	require.ErrorIs(t, edgeCall(b, true), errEdge)
	assert.Equal(t, resil.StateClosed, b.State(),
		"1 failure in the new state; a's 3 failures were admitted before its transitions")
}
