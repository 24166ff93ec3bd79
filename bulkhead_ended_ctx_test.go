package resil_test

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

// TestBulkheadEndedContext: a call whose context has already ended returns
// ctx.Err() without running fn, takes no slot and does not queue, whether
// a slot is free, every slot is taken, or the bulkhead queues.
func TestBulkheadEndedContext(t *testing.T) {
	cancelled := func() context.Context {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx
	}
	expired := func() context.Context {
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		cancel() // Err stays DeadlineExceeded: the deadline came first
		return ctx
	}
	cases := []struct {
		name    string
		ctx     func() context.Context
		want    error
		maxWait time.Duration
		full    bool // every slot taken by a running call
	}{
		{"cancelled, free slot", cancelled, context.Canceled, 0, false},
		{"expired, free slot", expired, context.DeadlineExceeded, 0, false},
		{"cancelled, full", cancelled, context.Canceled, 0, true},
		{"cancelled, full, queues", cancelled, context.Canceled, time.Hour, true},
		{"expired, full, queues", expired, context.DeadlineExceeded, time.Hour, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var log obsRecorder
				bh := resil.NewBulkhead(resil.BulkheadPolicy{MaxConcurrent: 1, MaxWait: tc.maxWait})
				p := resil.New[int]().Bulkhead(bh).Observe(&log)
				release := make(chan struct{})
				var wg sync.WaitGroup
				if tc.full {
					hold(t, &wg, p, release)
				}

				ran := false
				_, err := p.Run(tc.ctx(), func(context.Context) (int, error) { ran = true; return 1, nil })
				require.ErrorIs(t, err, tc.want)
				assert.False(t, ran, "fn must not run for an ended context")
				assert.Empty(t, log.kinds(resil.EventRejected), "an ended context is not a rejection")

				close(release)
				wg.Wait()
				// No slot was kept and no place in the queue is left: the
				// one slot is free for a live call now.
				v, err := resil.New[int]().Bulkhead(bh).Run(t.Context(), func(context.Context) (int, error) { return 2, nil })
				require.NoError(t, err)
				assert.Equal(t, 2, v)
			})
		})
	}
}
