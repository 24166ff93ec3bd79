package resil

import (
	"context"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestBulkheadStress races fast and slow acquires, hand-overs and waiters
// leaving the queue on cancellation, then checks that the cap held and that
// every slot and queue entry came back. It asserts no durations: the
// MaxWait of an hour is never reached, and real goroutines give the race
// detector interleavings that a synctest bubble would not.
func TestBulkheadStress(t *testing.T) {
	const limit = 3
	b := NewBulkhead(BulkheadPolicy{MaxConcurrent: limit, MaxWait: time.Hour})
	p := New[int]().Bulkhead(b)
	var running, peak, ran, cancelled atomic.Int64
	fn := func(context.Context) (int, error) {
		n := running.Add(1)
		for {
			m := peak.Load()
			if n <= m || peak.CompareAndSwap(m, n) {
				break
			}
		}
		runtime.Gosched()
		running.Add(-1)
		ran.Add(1)
		return 0, nil
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 300 {
				ctx, cancel := context.WithCancel(context.Background())
				if (g+i)%4 == 0 {
					go cancel() // may land before, during or after the wait
				}
				_, err := p.Run(ctx, fn)
				cancel()
				if err != nil {
					assert.ErrorIs(t, err, context.Canceled)
					cancelled.Add(1)
				}
			}
		})
	}
	wg.Wait()
	assert.LessOrEqual(t, peak.Load(), int64(limit))
	assert.Equal(t, int64(16*300), ran.Load()+cancelled.Load())
	assert.Zero(t, b.state.Load(), "every slot and queue entry came back")
	assert.Nil(t, b.head)
	assert.Nil(t, b.tail)
}

// FuzzBulkheadPolicy: a policy is valid exactly when NewBulkhead accepts
// it, and the slot count fits the state word's 32 bits.
func FuzzBulkheadPolicy(f *testing.F) {
	f.Add(0, int64(0))
	f.Add(-1, int64(time.Second))
	f.Add(math.MaxInt, int64(-1))
	f.Fuzz(func(t *testing.T, maxConcurrent int, maxWait int64) {
		p := BulkheadPolicy{MaxConcurrent: maxConcurrent, MaxWait: time.Duration(maxWait)}
		err := p.Validate()
		if err != nil {
			assert.PanicsWithValue(t, err.Error(), func() { NewBulkhead(p) })
			return
		}
		b := NewBulkhead(p)
		assert.True(t, b.max >= 1 && b.max <= math.MaxInt32)
		assert.True(t, b.tryAcquire())
		b.release()
		assert.Zero(t, b.state.Load())
	})
}
