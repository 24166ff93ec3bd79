package redisstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// reply is a sync script's reply: {epoch, open, remaining ms, successes,
// failures, the state's name}.
func reply(epoch, open, remaining int64) *redis.Cmd {
	cmd := redis.NewCmd(context.Background())
	cmd.SetVal([]any{epoch, open, remaining, int64(0), int64(0), "fleet"})
	return cmd
}

// TestAdoptKeepsEpochWhenForceLoses: a sync's reply finds the fleet in a
// new epoch, but the breaker made a transition of its own between the
// sync's snapshot and the reply, so it cannot be forced to the fleet's
// state. That transition was made in the epoch the breaker knew: the next
// sync must propose it against that epoch (which the fleet, having left
// it, drops), never against the new one (where the fleet would apply it:
// a stale trial's failure reopening a fleet that its other replicas'
// trials had just closed).
func TestAdoptKeepsEpochWhenForceLoses(t *testing.T) {
	errDown := errors.New("down")
	fb := &fleetBreaker{s: &Store{}} // never connected: the breaker decides alone
	_, fb.link = resil.NewSharedBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour, HalfOpenCalls: 1}, fb)
	b := fb.link.Breaker()

	// Adopted in epoch 5, open with no time left: half-open at the next look.
	gen, ok := fb.link.Force(fb.link.Snapshot().Gen, resil.StateOpen, 0)
	require.True(t, ok)
	fb.epoch, fb.inc, fb.synced = 5, "fleet", gen

	r := fb.request() // the sync's snapshot: half-open, nothing to propose
	require.Equal(t, resil.StateHalfOpen, r.snap.State)
	require.Equal(t, 0, r.proposal)
	require.Equal(t, uint64(5), r.epoch)

	// Before the reply, a trial fails while the fleet cannot be asked:
	// the breaker reopens on its own.
	_, err := resil.New[int]().Breaker(b).Run(context.Background(), func(context.Context) (int, error) { return 0, errDown })
	require.ErrorIs(t, err, errDown)
	require.Equal(t, resil.StateOpen, b.State())

	// The reply: the fleet closed in epoch 6 (another replica's trials
	// succeeded). Force loses: the breaker's generation has moved.
	fb.adopt(r, reply(6, 0, 0))
	assert.Equal(t, resil.StateOpen, b.State(), "the breaker's own transition stands until the next sync")

	next := fb.request()
	assert.Equal(t, 1, next.proposal, "the reopen is still the breaker's own proposal")
	assert.Equal(t, uint64(5), next.epoch, "proposed against the epoch it was made in, which the fleet has left")

	// The next reply adopts the fleet's state.
	fb.adopt(next, reply(6, 0, 0))
	assert.Equal(t, resil.StateClosed, b.State())
	assert.Equal(t, uint64(6), fb.epoch)
	assert.Equal(t, 0, fb.request().proposal)
}

// TestAdoptTakesEpochWhenForced: the common case, for contrast: with no
// transition of its own since the snapshot, the breaker takes the fleet's
// state and epoch at once.
func TestAdoptTakesEpochWhenForced(t *testing.T) {
	fb := &fleetBreaker{s: &Store{}}
	_, fb.link = resil.NewSharedBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour, HalfOpenCalls: 1}, fb)
	fb.epoch, fb.inc, fb.synced = 5, "fleet", fb.link.Snapshot().Gen

	r := fb.request()
	fb.adopt(r, reply(6, 1, time.Hour.Milliseconds()))
	assert.Equal(t, resil.StateOpen, fb.link.Breaker().State())
	assert.Equal(t, uint64(6), fb.epoch)
	assert.Equal(t, 0, fb.request().proposal, "a forced transition is the fleet's, not a proposal")
}
