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

// TestZeroLinksPanicClearly: every method of a zero BreakerLink or
// RateLimiterLink (a share's field never assigned) panics naming the
// method and the constructor, not with a nil pointer dereference on the
// share's goroutine.
func TestZeroLinksPanicClearly(t *testing.T) {
	var (
		bl resil.BreakerLink
		rl resil.RateLimiterLink
	)
	const (
		bwant = "called on a zero BreakerLink: make it with NewSharedBreaker"
		rwant = "called on a zero RateLimiterLink: make it with NewSharedRateLimiter"
	)
	tests := []struct {
		name string
		call func()
		want string
	}{
		{"Breaker", func() { bl.Breaker() }, "resil: BreakerLink.Breaker " + bwant},
		{"Policy", func() { bl.Policy() }, "resil: BreakerLink.Policy " + bwant},
		{"Snapshot", func() { bl.Snapshot() }, "resil: BreakerLink.Snapshot " + bwant},
		{"SetFleet", func() { bl.SetFleet(0, 0, 0) }, "resil: BreakerLink.SetFleet " + bwant},
		{"ClearWindow", func() { bl.ClearWindow(0) }, "resil: BreakerLink.ClearWindow " + bwant},
		{"Force", func() { bl.Force(0, resil.StateOpen, 0) }, "resil: BreakerLink.Force " + bwant},
		{"RateLimiter", func() { rl.RateLimiter() }, "resil: RateLimiterLink.RateLimiter " + rwant},
		{"RateLimiterLink.Policy", func() { rl.Policy() }, "resil: RateLimiterLink.Policy " + rwant},
		{"SetLocalShare", func() { rl.SetLocalShare(0.5) }, "resil: RateLimiterLink.SetLocalShare " + rwant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.PanicsWithValue(t, tt.want, tt.call)
		})
	}
}

// trippedPanics is a BreakerShare whose Tripped panics (a share's bug) and
// whose store cannot answer.
type trippedPanics struct{}

func (trippedPanics) Tripped()                                         { panic("tripped") }
func (trippedPanics) AcquireTrial() resil.ShareAnswer                  { return resil.ShareUnavailable }
func (trippedPanics) SettleTrial(resil.TrialOutcome) resil.ShareAnswer { return resil.ShareUnavailable }

// TestTrippedPanicStillReportsTheMove: when the share's Tripped panics,
// the panic reaches the caller, and OnStateChange has heard of the move
// (a trip, or a failed trial's reopening) before the call returned, not
// only with the breaker's next transition an OpenFor later.
func TestTrippedPanicStillReportsTheMove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var seen []string
		b, _ := resil.NewSharedBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: 1,
			OnStateChange: func(from, to resil.BreakerState) { seen = append(seen, from.String()+" > "+to.String()) }},
			trippedPanics{})
		p := resil.New[int]().Breaker(b)
		fail := func(context.Context) (int, error) { return 0, errors.New("down") }

		assert.PanicsWithValue(t, "tripped", func() { _, _ = p.Run(context.Background(), fail) })
		assert.Equal(t, []string{"closed > open"}, seen, "the trip")

		time.Sleep(time.Second) // OpenFor passes: a trial, which fails
		assert.PanicsWithValue(t, "tripped", func() { _, _ = p.Run(context.Background(), fail) })
		require.Equal(t, resil.StateOpen, b.State())
		assert.Equal(t, []string{"closed > open", "open > half-open", "half-open > open"}, seen, "the failed trial's reopening")
	})
}
