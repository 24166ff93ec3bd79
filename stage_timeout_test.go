package resil_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resiltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTimeout(t *testing.T) {
	errSlow := errors.New("slow dependency")
	hang := resiltest.Script[int](resiltest.Hang()).Call // returns ctx.Err() once ctx ends
	tests := []struct {
		name       string
		parent     time.Duration // parent deadline; 0: none
		d          time.Duration
		fn         func(ctx context.Context) (int, error)
		wantV      int
		wantErr    error
		wantOurs   bool // the error is the stage's own timeout
		wantLasted time.Duration
	}{
		{
			name: "own deadline, fn returns ctx.Err()", d: time.Second,
			fn: hang, wantErr: context.DeadlineExceeded, wantOurs: true, wantLasted: time.Second,
		},
		{
			name: "own deadline, fn wraps it", d: time.Second,
			fn:      func(ctx context.Context) (int, error) { <-ctx.Done(); return 0, errSlow },
			wantErr: errSlow, wantOurs: true, wantLasted: time.Second,
		},
		{
			name: "parent's deadline first: unchanged", parent: time.Second, d: 2 * time.Second,
			fn: hang, wantErr: context.DeadlineExceeded, wantLasted: time.Second,
		},
		{
			name: "parent's deadline equal: the parent's", parent: time.Second, d: time.Second,
			fn: hang, wantErr: context.DeadlineExceeded, wantLasted: time.Second,
		},
		{
			name: "parent later: ours", parent: 3 * time.Second, d: time.Second,
			fn: hang, wantErr: context.DeadlineExceeded, wantOurs: true, wantLasted: time.Second,
		},
		{
			name: "late value without error is returned", d: time.Second,
			fn:    func(ctx context.Context) (int, error) { time.Sleep(2 * time.Second); return 7, nil },
			wantV: 7, wantLasted: 2 * time.Second,
		},
		{
			name: "error before the deadline: unchanged", d: time.Second,
			fn:      func(ctx context.Context) (int, error) { return 0, errSlow },
			wantErr: errSlow,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				if tt.parent > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.parent)
					defer cancel()
				}
				begin := time.Now()
				v, err := resil.New[int]().Timeout(tt.d).Run(ctx, tt.fn)
				assert.Equal(t, tt.wantLasted, time.Since(begin))
				assert.Equal(t, tt.wantV, v)
				if tt.wantErr == nil {
					require.NoError(t, err)
					return
				}
				assert.ErrorIs(t, err, tt.wantErr, "wraps what came back")
				assert.Equal(t, tt.wantOurs, errors.Is(err, resil.ErrTimeout))
				if tt.wantOurs {
					assert.ErrorIs(t, err, context.DeadlineExceeded)
					assert.Contains(t, err.Error(), "resil: timed out after "+tt.d.String())
				} else {
					assert.Equal(t, tt.wantErr, err)
				}
			})
		})
	}
}

func TestTimeoutReleasesItsContextBeforeReturning(t *testing.T) {
	var got context.Context
	_, err := resil.New[int]().Timeout(time.Hour).Run(context.Background(), func(ctx context.Context) (int, error) {
		got = ctx
		_, ok := ctx.Deadline()
		assert.True(t, ok)
		return 1, nil
	})
	require.NoError(t, err)
	assert.ErrorIs(t, got.Err(), context.Canceled, "cancelled, so its timer is stopped")
}

func TestTimeoutRunsOnCallersGoroutine(t *testing.T) {
	me := goid()
	_, _ = resil.New[int]().Timeout(time.Hour).Run(context.Background(), func(ctx context.Context) (int, error) {
		assert.Equal(t, me, goid())
		return 0, nil
	})
}

func TestErrTimeoutMatchesDeadlineExceeded(t *testing.T) {
	assert.ErrorIs(t, resil.ErrTimeout, context.DeadlineExceeded)
	assert.NotErrorIs(t, context.DeadlineExceeded, resil.ErrTimeout)
	assert.True(t, resil.IsTransient(resil.ErrTimeout))
}
