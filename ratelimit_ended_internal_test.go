package resil

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// pastDeadlineCtx is a context whose deadline has come, whatever its Err.
type pastDeadlineCtx struct{ context.Context }

func (pastDeadlineCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Hour), true }

// endedAt looks through Timeouts' contexts without arming them: a deadline
// that has come (its own or an outer one's), the caller's cancellation
// underneath (taken over a deadline past, as the context's first look
// would), a caller's context cancelled before its deadline came, an armed
// or released context.
func TestEndedAt(t *testing.T) {
	now := clock()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	past, cancelPast := context.WithDeadline(context.Background(), time.Now().Add(-time.Hour))
	defer cancelPast()
	cancelledPast, cancelCP := context.WithDeadline(context.Background(), time.Now().Add(time.Hour))
	cancelCP()
	cancelledPast = &pastDeadlineCtx{cancelledPast} // its deadline came after the cancellation
	live := func(parent context.Context) *timeoutCtx {
		return &timeoutCtx{parent: parent, at: now + int64(time.Hour)}
	}
	armed := live(context.Background())
	armed.arm()
	defer armed.release()
	released := live(context.Background())
	released.release()
	tests := []struct {
		name     string
		ctx      context.Context
		wantPast bool
		wantErr  error
	}{
		{"background", context.Background(), false, nil},
		{"cancelled", cancelled, false, context.Canceled},
		{"deadline past", past, true, nil},
		{"timeout live", live(context.Background()), false, nil},
		{"timeout due now", &timeoutCtx{parent: context.Background(), at: now}, true, nil},
		{"timeout over a cancelled caller", live(cancelled), false, context.Canceled},
		{"timeout over a timeout over a cancelled caller", live(live(cancelled)), false, context.Canceled},
		{"cancelled, deadline past", cancelledPast, false, context.Canceled},
		// First looked at past its deadline, a Timeout's context takes a
		// cancel of its parent's, which may have come first (see
		// timeoutCtx); a parent's later deadline came after it.
		{"timeout due now over a cancelled caller", &timeoutCtx{parent: cancelled, at: now}, false, context.Canceled},
		{"timeout due now over a timeout over a cancelled caller", &timeoutCtx{parent: live(cancelled), at: now}, false, context.Canceled},
		{"timeout due now over a caller past its deadline", &timeoutCtx{parent: past, at: now}, true, nil},
		{"timeout due now over a timeout due now", &timeoutCtx{parent: &timeoutCtx{parent: context.Background(), at: now}, at: now}, true, nil},
		{"timeout armed", armed, false, nil},
		{"timeout released", released, false, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotPast, gotErr := endedAt(tt.ctx, now)
			assert.Equal(t, tt.wantPast, gotPast)
			assert.Equal(t, tt.wantErr, gotErr)
			if tc, ok := tt.ctx.(*timeoutCtx); ok && tc != armed && tc != released {
				assert.Zero(t, tc.state.Load()&ctxArmed, "not armed")
			}
		})
	}
}
