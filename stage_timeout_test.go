package resil_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
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

// TestTimeoutContextContract checks the context a Timeout stage gives fn
// against context.Context's contract on every path it can take: asked
// nothing until the end, asked Err only (no timer), waited on (armed),
// derived from, and looked at after Run returned.
func TestTimeoutContextContract(t *testing.T) {
	const d = time.Second
	type key struct{}
	tests := []struct {
		name string
		// use runs inside fn, at fake time 0, and may wait; it returns
		// what it wants checked once Run has returned, or nil.
		use func(t *testing.T, ctx context.Context) func(t *testing.T)
	}{
		{"Err only, before and after the deadline", func(t *testing.T, ctx context.Context) func(*testing.T) {
			require.NoError(t, ctx.Err())
			time.Sleep(d - time.Nanosecond)
			require.NoError(t, ctx.Err(), "1ns before the deadline")
			time.Sleep(time.Nanosecond)
			require.Equal(t, context.DeadlineExceeded, ctx.Err(), "at the deadline")
			requireDone(t, ctx)
			require.Equal(t, context.DeadlineExceeded, context.Cause(ctx))
			return nil
		}},
		{"Cause first, after the deadline", func(t *testing.T, ctx context.Context) func(*testing.T) {
			time.Sleep(d)
			require.Equal(t, context.DeadlineExceeded, context.Cause(ctx))
			requireDone(t, ctx)
			return nil
		}},
		{"Done first, after the deadline", func(t *testing.T, ctx context.Context) func(*testing.T) {
			time.Sleep(2 * d)
			requireDone(t, ctx)
			require.Equal(t, context.DeadlineExceeded, ctx.Err())
			return nil
		}},
		{"Done waits exactly d", func(t *testing.T, ctx context.Context) func(*testing.T) {
			begin := time.Now()
			<-ctx.Done()
			require.Equal(t, d, time.Since(begin))
			require.Equal(t, context.DeadlineExceeded, ctx.Err())
			return nil
		}},
		{"Deadline is start+d", func(t *testing.T, ctx context.Context) func(*testing.T) {
			want := time.Now().Add(d)
			dl, ok := ctx.Deadline()
			require.True(t, ok)
			require.True(t, want.Equal(dl), "deadline %v, want %v", dl, want)
			require.Equal(t, want.Unix(), dl.Unix(), "the wall clock too")
			dl2, _ := ctx.Deadline()
			require.Equal(t, dl, dl2, "the same on every call")
			return nil
		}},
		{"Value reads through, before and after arming", func(t *testing.T, ctx context.Context) func(*testing.T) {
			require.Equal(t, "v", ctx.Value(key{}))
			_ = ctx.Done()
			require.Equal(t, "v", ctx.Value(key{}))
			return nil
		}},
		{"derived contexts start no goroutine and end with it", func(t *testing.T, ctx context.Context) func(*testing.T) {
			before := bubbleGoroutines()
			child, cancel := context.WithCancel(ctx)
			defer cancel()
			var at time.Duration
			begin := time.Now()
			stop := context.AfterFunc(ctx, func() { at = time.Since(begin) })
			defer stop()
			require.Equal(t, before, bubbleGoroutines(), "children attach to the armed context")
			<-child.Done()
			synctest.Wait() // the AfterFunc's goroutine
			require.Equal(t, d, at)
			require.Equal(t, context.DeadlineExceeded, child.Err())
			return nil
		}},
		{"a later WithTimeout keeps this deadline", func(t *testing.T, ctx context.Context) func(*testing.T) {
			inner, cancel := context.WithTimeout(ctx, time.Hour)
			defer cancel()
			begin := time.Now()
			<-inner.Done()
			require.Equal(t, d, time.Since(begin))
			return nil
		}},
		{"kept after Run, never armed", func(t *testing.T, ctx context.Context) func(*testing.T) {
			return func(t *testing.T) {
				require.Equal(t, context.Canceled, ctx.Err())
				requireDone(t, ctx)
				time.Sleep(2 * d)
				require.Equal(t, context.Canceled, ctx.Err(), "stays the same")
			}
		}},
		{"kept after Run, armed", func(t *testing.T, ctx context.Context) func(*testing.T) {
			done := ctx.Done()
			return func(t *testing.T) {
				select {
				case <-done:
				default:
					t.Fatal("Done is not closed after Run returned")
				}
				require.Equal(t, context.Canceled, ctx.Err())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				parent := context.WithValue(context.Background(), key{}, "v")
				var after func(*testing.T)
				_, err := resil.New[int]().Timeout(d).Run(parent, func(ctx context.Context) (int, error) {
					after = tt.use(t, ctx)
					return 1, nil
				})
				require.NoError(t, err)
				if after != nil {
					after(t)
				}
			})
		})
	}
}

// TestTimeoutContextParentEnds checks that the caller's cancellation
// reaches the stage's context whether or not it is armed.
func TestTimeoutContextParentEnds(t *testing.T) {
	for _, armed := range []bool{false, true} {
		t.Run(fmt.Sprintf("armed=%v", armed), func(t *testing.T) {
			cause := errors.New("shutting down")
			parent, cancel := context.WithCancelCause(context.Background())
			_, err := resil.New[int]().Timeout(time.Hour).Run(parent, func(ctx context.Context) (int, error) {
				if armed {
					_ = ctx.Done()
				}
				cancel(cause)
				require.Equal(t, context.Canceled, ctx.Err())
				requireDone(t, ctx)
				require.Equal(t, cause, context.Cause(ctx))
				return 0, ctx.Err()
			})
			require.Equal(t, context.Canceled, err, "the caller's, unchanged")
		})
	}
}

// When something looked at the stage's context before both ends, it
// reports the first, as context.WithTimeout's would. When nothing did, the
// unarmed context, which does not watch the caller's, cannot tell a
// caller's cancel from its deadline: it takes the cancel, whichever came
// first (documented), and claims no timeout. A caller's deadline, later
// than d, came after d.
func TestTimeoutContextOrderOfEnds(t *testing.T) {
	errBackend := errors.New("backend failed")
	tests := []struct {
		name        string
		cancelAt    time.Duration // when the caller cancels; < 0: before Run
		deadlineAt  time.Duration // the caller's own deadline, later than d (0: none)
		lookAt      time.Duration // when fn first looks at ctx (0: never before it returns)
		returnAt    time.Duration // when fn returns errBackend
		wantErr     error         // ctx.Err() inside fn at returnAt
		wantTimeout bool
	}{
		{"deadline seen, then cancel", 1500 * time.Millisecond, 0, 1200 * time.Millisecond, 2 * time.Second, context.DeadlineExceeded, true},
		{"cancel seen, then deadline", 500 * time.Millisecond, 0, 700 * time.Millisecond, 2 * time.Second, context.Canceled, false},
		{"cancel before d", 500 * time.Millisecond, 0, 0, 700 * time.Millisecond, context.Canceled, false},
		{"no cancel, deadline unseen", time.Hour, 0, 0, 2 * time.Second, context.DeadlineExceeded, true},
		// Unseen, the order of a cancel and the deadline is unknown: the
		// caller's cancel is taken, and no timeout is claimed that may not
		// have happened.
		{"cancel, then deadline, unseen", 500 * time.Millisecond, 0, 0, 2 * time.Second, context.Canceled, false},
		{"deadline, then cancel, unseen", 1500 * time.Millisecond, 0, 0, 2 * time.Second, context.Canceled, false},
		{"cancelled before Run, unseen", -1, 0, 0, 2 * time.Second, context.Canceled, false},
		// The caller's deadline is later than d: d came first.
		{"deadline, then the caller's deadline, unseen", time.Hour, 1500 * time.Millisecond, 0, 2 * time.Second, context.DeadlineExceeded, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				parent, cancel := context.WithCancel(context.Background())
				defer cancel()
				if tt.deadlineAt > 0 {
					var cancelDeadline context.CancelFunc
					parent, cancelDeadline = context.WithTimeout(parent, tt.deadlineAt)
					defer cancelDeadline()
				}
				if tt.cancelAt < 0 {
					cancel()
				} else {
					time.AfterFunc(tt.cancelAt, cancel)
				}
				start := time.Now()
				var seen error
				_, err := resil.New[int]().Timeout(time.Second).Run(parent, func(ctx context.Context) (int, error) {
					if tt.lookAt > 0 {
						time.Sleep(tt.lookAt)
						_ = ctx.Err()
					}
					time.Sleep(tt.returnAt - time.Since(start))
					seen = ctx.Err()
					return 0, errBackend
				})
				assert.Equal(t, tt.wantErr, seen)
				require.ErrorIs(t, err, errBackend)
				assert.Equal(t, tt.wantTimeout, errors.Is(err, resil.ErrTimeout), "err = %v", err)
				if !tt.wantTimeout {
					assert.Same(t, errBackend, err, "returned unchanged")
				}
			})
		})
	}
}

// TestTimeoutContextConcurrentUse races goroutines that arm, poll and keep
// the context against the stage's return. Run with -race.
func TestTimeoutContextConcurrentUse(t *testing.T) {
	for range 200 {
		var wg sync.WaitGroup
		_, err := resil.New[int]().Timeout(time.Hour).Run(context.Background(), func(ctx context.Context) (int, error) {
			for i := range 4 {
				wg.Go(func() {
					switch i % 3 {
					case 0:
						<-ctx.Done() // only Run's return ends it
					case 1:
						for ctx.Err() == nil {
							runtime.Gosched()
						}
					case 2:
						_, _ = ctx.Deadline()
						<-ctx.Done()
					}
					assert.Equal(t, context.Canceled, ctx.Err())
				})
			}
			return 1, nil
		})
		require.NoError(t, err)
		wg.Wait()
	}
}

// requireDone fails t unless ctx's Done channel is closed.
func requireDone(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	default:
		t.Fatal("Done is not closed")
	}
}
