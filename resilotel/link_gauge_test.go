package resilotel_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resilotel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// localShare is a BreakerShare whose store never answers: the breaker
// decides alone, and its fleet speaks only through the link.
type localShare struct{}

func (localShare) Tripped()                                         {}
func (localShare) AcquireTrial() resil.ShareAnswer                  { return resil.ShareUnavailable }
func (localShare) SettleTrial(resil.TrialOutcome) resil.ShareAnswer { return resil.ShareUnavailable }

func newReader(t *testing.T) (*sdkmetric.ManualReader, resil.Observer) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { require.NoError(t, mp.Shutdown(context.Background())) })
	obs, err := resilotel.NewObserver(mp)
	require.NoError(t, err)
	return reader, obs
}

// A breaker shared by a fleet moves when the fleet does (BreakerLink.Force).
// The pipeline's gauge must follow: a replica the fleet opened rejects
// every call, and one the fleet closed again serves them.
func TestStateGaugeFollowsFleetTransitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader, obs := newReader(t)
		b, link := resil.NewSharedBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour}, localShare{})
		p := resil.New[int]().Breaker(b).Named("users").Observe(obs)
		ctx := context.Background()
		force := func(to resil.BreakerState) {
			t.Helper()
			_, ok := link.Force(link.Snapshot().Gen, to, time.Hour)
			require.True(t, ok)
		}

		// The pipeline's own failure trips the breaker: the gauge says open.
		_, err := p.Run(ctx, script(errFlaky))
		require.ErrorIs(t, err, errFlaky)
		c := collect(t, reader)
		assert.Equal(t, map[string]int64{"resil.pipeline=users": 1}, c.gauge(t, "resil.breaker.state"), "open")

		force(resil.StateHalfOpen) // the fleet's open period is over...
		force(resil.StateClosed)   // ...and its trials, elsewhere, closed it
		_, err = p.Run(ctx, script())
		require.NoError(t, err)
		c = collect(t, reader)
		assert.Equal(t, map[string]int64{"resil.pipeline=users": 0}, c.gauge(t, "resil.breaker.state"), "closed")

		force(resil.StateOpen) // another replica tripped
		_, err = p.Run(ctx, script())
		require.ErrorIs(t, err, resil.ErrBreakerOpen)
		c = collect(t, reader)
		assert.Equal(t, map[string]int64{"resil.pipeline=users": 1}, c.gauge(t, "resil.breaker.state"), "open")
		assert.Equal(t, map[string]int64{
			"resil.breaker.state=open,resil.pipeline=users":      2,
			"resil.breaker.state=half-open,resil.pipeline=users": 1,
			"resil.breaker.state=closed,resil.pipeline=users":    1,
		}, c.counts(t, "resil.breaker.transitions"))
	})
}
