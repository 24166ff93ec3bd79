package resil_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tripsShare lets the breaker decide alone and records, at each Tripped,
// the trips its link's Snapshot counts.
type tripsShare struct {
	link *resil.BreakerLink
	seen []uint64
}

func (s *tripsShare) Tripped()                                         { s.seen = append(s.seen, s.link.Snapshot().Trips) }
func (s *tripsShare) AcquireTrial() resil.ShareAnswer                  { return resil.ShareUnavailable }
func (s *tripsShare) SettleTrial(resil.TrialOutcome) resil.ShareAnswer { return resil.ShareUnavailable }

// TestSharedBreakerSnapshotTrips: a snapshot counts the breaker's own
// opens, a trip and a failed trial, each before its Tripped call, and not
// an open made by Force: a share reading Trips with the state knows
// whether the state holds a trip of the breaker's own.
func TestSharedBreakerSnapshotTrips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		share := &tripsShare{}
		b, link := resil.NewSharedBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second}, share)
		share.link = &link
		p := resil.New[int]().Breaker(b)
		fail := func(context.Context) (int, error) { return 0, errors.New("down") }
		ok := func(context.Context) (int, error) { return 1, nil }
		s := link.Snapshot()
		assert.Zero(t, s.Trips)
		assert.Zero(t, s.SinceTrip)

		_, _ = p.Run(t.Context(), fail) // a trip
		time.Sleep(300 * time.Millisecond)
		s = link.Snapshot()
		assert.Equal(t, resil.StateOpen, s.State)
		assert.Equal(t, uint64(1), s.Trips)
		assert.Equal(t, 300*time.Millisecond, s.SinceTrip)
		time.Sleep(700 * time.Millisecond)
		_, _ = p.Run(t.Context(), fail) // a failed trial
		s = link.Snapshot()
		assert.Equal(t, uint64(2), s.Trips)
		assert.Zero(t, s.SinceTrip)
		time.Sleep(time.Second)
		_, err := p.Run(t.Context(), ok) // a trial that closes it
		require.NoError(t, err)
		s = link.Snapshot()
		require.Equal(t, resil.StateClosed, s.State)
		_, forced := link.Force(s.Gen, resil.StateOpen, time.Second)
		require.True(t, forced)
		s = link.Snapshot()
		assert.Equal(t, uint64(2), s.Trips, "an open by Force is not a trip of its own")
		assert.Equal(t, time.Second, s.SinceTrip, "timed from the failed trial")
		assert.Equal(t, []uint64{1, 2}, share.seen, "each Tripped call sees its trip counted")
	})
}
