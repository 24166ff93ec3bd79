package resilotel_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// blockOnOpen blocks the first report of a move to open until release is
// closed: a slow observer (a logger writing to a slow sink, say) placed
// before the metrics observer in a MultiObserver.
type blockOnOpen struct {
	once    sync.Once
	blocked chan struct{}
	release chan struct{}
}

func (b *blockOnOpen) Observe(_ context.Context, e resil.Event) {
	if e.Kind == resil.EventStateChange && e.To == resil.StateOpen {
		first := false
		b.once.Do(func() { first = true })
		if first {
			close(b.blocked)
			<-b.release
		}
	}
}

// TestStateGaugeKeepsLatestMove: one pipeline, one breaker, not shared:
// the gauge ends up with the breaker's state. Two concurrent calls of that
// pipeline report their transitions out of order, and the older report,
// arriving last, is dropped.
func TestStateGaugeKeepsLatestMove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader, otelObs := newReader(t)
		slow := &blockOnOpen{blocked: make(chan struct{}), release: make(chan struct{})}
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, FailureRatio: 0.5, OpenFor: time.Second, HalfOpenCalls: 1})
		p := resil.New[int]().Breaker(b).Named("users").Observe(resil.MultiObserver(slow, otelObs))
		ctx := context.Background()

		done := make(chan struct{})
		go func() { // call A trips the breaker; its report of "open" is slow
			defer close(done)
			_, _ = p.Run(ctx, script(errFlaky))
		}()
		<-slow.blocked
		time.Sleep(time.Second)        // OpenFor passes
		_, err := p.Run(ctx, script()) // call B: open -> half-open -> closed
		require.NoError(t, err)
		require.Equal(t, resil.StateClosed, b.State())

		close(slow.release) // A's report of "open" now reaches the metrics observer
		<-done
		require.Equal(t, resil.StateClosed, b.State())

		c := collect(t, reader)
		assert.Equal(t, map[string]int64{"resil.pipeline=users": 0}, c.gauge(t, "resil.breaker.state"),
			"breaker is closed, gauge must say 0 (closed)")
	})
}
