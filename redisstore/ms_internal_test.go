package redisstore

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestMsRoundsUp: durations go to the scripts in whole milliseconds,
// rounded up, so that a positive OpenFor, TrialLease or SyncEvery under
// 1ms is not sent as 0 (an open period of nothing, a lease Redis refuses).
func TestMsRoundsUp(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want int64
	}{
		{0, 0},
		{1, 1},
		{500 * time.Microsecond, 1},
		{time.Millisecond, 1},
		{time.Millisecond + 1, 2},
		{24 * time.Hour, 86400000},
		{time.Duration(1<<63 - 1), (1<<63-1)/int64(time.Millisecond) + 1},
	} {
		assert.Equal(t, tt.want, ms(tt.d), "ms(%v)", tt.d)
	}
}
