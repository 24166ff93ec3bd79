package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFleetOwnCloseKeepsOutcomesSince: a's half-open trial succeeds while
// the store cannot be reached, so a closes on its own and counts calls
// from then on; its next sync proposes the close, which the fleet makes (a
// new epoch). That transition is a's own, made before the calls in its
// window: they stay counted, and the failure after the sync trips a as the
// window says it must, not one sync late.
func TestFleetOwnCloseKeepsOutcomesSince(t *testing.T) {
	const openFor = 50 * time.Millisecond
	policy := resil.BreakerPolicy{MinCalls: 3, FailureRatio: 0.5, OpenFor: openFor, HalfOpenCalls: 1}
	srv := StartRedis(t)
	sa := manualStore(t, edgeClient(t, srv.Addr()), Options{Replica: "a"})
	a := sa.Breaker("dep", policy)
	sa.sync()
	ctx := context.Background()
	state := sa.key("breaker", "dep", "state")

	for range 3 {
		require.ErrorIs(t, edgeCall(a, true), errEdge)
	}
	require.Equal(t, resil.StateOpen, a.State())
	sa.sync() // the fleet opens: epoch 1
	require.Equal(t, "1", sa.client.HGet(ctx, state, "epoch").Val())
	time.Sleep(2 * openFor) // real time: the breaker's and Redis's clocks are real; only a lower bound matters

	sa.up.Store(false) // the store cannot be reached: a decides its trial alone
	require.NoError(t, edgeCall(a, false), "a's trial")
	require.Equal(t, resil.StateClosed, a.State())
	require.ErrorIs(t, edgeCall(a, true), errEdge)
	require.NoError(t, edgeCall(a, false))
	require.Equal(t, resil.StateClosed, a.State(), "1 failure in 2 calls: under MinCalls")

	sa.up.Store(true)
	sa.sync() // a proposes its close: the fleet closes, epoch 2
	require.Equal(t, "0", sa.client.HGet(ctx, state, "open").Val())
	require.Equal(t, "2", sa.client.HGet(ctx, state, "epoch").Val())
	require.Equal(t, resil.StateClosed, a.State())

	require.ErrorIs(t, edgeCall(a, true), errEdge)
	assert.Equal(t, resil.StateOpen, a.State(), "2 failures in 3 calls since a closed: it trips")
}
