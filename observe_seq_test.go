package resil_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// holdFirstOpen is an Observer that holds the first report of a move to
// open until release is closed (a slow observer), and keeps every
// EventStateChange in the order it received them.
type holdFirstOpen struct {
	once          sync.Once
	held, release chan struct{}
	mu            sync.Mutex
	changes       []resil.Event
}

func (o *holdFirstOpen) Observe(_ context.Context, e resil.Event) {
	if e.Kind != resil.EventStateChange {
		return
	}
	if e.To == resil.StateOpen {
		first := false
		o.once.Do(func() { first = true })
		if first {
			close(o.held)
			<-o.release
		}
	}
	o.mu.Lock()
	o.changes = append(o.changes, e)
	o.mu.Unlock()
}

// TestEventSeqOrdersLateReports: call A trips the breaker and its report
// is held up; meanwhile call B moves it open → half-open → closed. A's
// report arrives last, and its Seq says it is the oldest move, so an
// observer keeping the breaker's state by the largest Seq ends closed.
func TestEventSeqOrdersLateReports(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := &holdFirstOpen{held: make(chan struct{}), release: make(chan struct{})}
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Second, HalfOpenCalls: 1})
		p := resil.New[int]().Breaker(b).Observe(o)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = p.Run(context.Background(), func(context.Context) (int, error) { return 0, errors.New("down") })
		}()
		<-o.held
		time.Sleep(time.Second) // OpenFor passes
		_, err := p.Run(context.Background(), func(context.Context) (int, error) { return 1, nil })
		require.NoError(t, err)
		close(o.release)
		<-done

		require.Len(t, o.changes, 3)
		type move struct{ from, to resil.BreakerState }
		var got []move
		for _, e := range o.changes {
			got = append(got, move{e.From, e.To})
		}
		assert.Equal(t, []move{
			{resil.StateOpen, resil.StateHalfOpen}, {resil.StateHalfOpen, resil.StateClosed}, // B's
			{resil.StateClosed, resil.StateOpen}, // A's, late
		}, got, "reports in the order they arrived")
		open, half, closed := o.changes[2].Seq, o.changes[0].Seq, o.changes[1].Seq
		assert.NotZero(t, open)
		assert.Less(t, open, half, "the trip came first")
		assert.Less(t, half, closed)

		latest := o.changes[0]
		for _, e := range o.changes[1:] {
			if e.Seq > latest.Seq {
				latest = e
			}
		}
		assert.Equal(t, b.State(), latest.To, "the report with the largest Seq has the breaker's state")
	})
}

// TestEventSeqAcrossBreakers: Seq numbers the moves of every breaker in
// the process, so a breaker made later (a pipeline rebuilt with a new
// breaker) reports larger numbers than an older breaker's earlier moves.
func TestEventSeqAcrossBreakers(t *testing.T) {
	r := &obsRecorder{}
	fail := func(context.Context) (int, error) { return 0, errors.New("down") }
	for range 2 {
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour})
		_, _ = resil.New[int]().Breaker(b).Observe(r).Run(context.Background(), fail)
		require.Equal(t, resil.StateOpen, b.State())
	}
	changes := r.kinds(resil.EventStateChange)
	require.Len(t, changes, 2)
	assert.Less(t, changes[0].Seq, changes[1].Seq)
}
