package resiltest_test

import (
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil/resiltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHTTPFaultsRatesThatAddUpToOneAreValid: rates that add up to 1 are
// valid, also when their float64 sum is a hair more (0.33+0.56+0.11 is
// 1.0000000000000002).
func TestHTTPFaultsRatesThatAddUpToOneAreValid(t *testing.T) {
	f := resiltest.HTTPFaults{ErrorRate: 0.33, DropRate: 0.56, TruncateRate: 0.11}
	require.NoError(t, f.Validate())
	require.NotPanics(t, func() { resiltest.RandomHandler(f) })
}

// TestValidateNamesTheFirstInvalidField: Validate names the first invalid
// field in the order the fields are declared, as the core's Validate
// methods do (Faults: Latency before SlowRate; HTTPFaults: Status and
// RetryAfter before DropRate and TruncateRate).
func TestValidateNamesTheFirstInvalidField(t *testing.T) {
	assert.EqualError(t, resiltest.Faults{Latency: -time.Second, SlowRate: 2}.Validate(),
		"resiltest: Faults.Latency must be >= 0, got -1s")
	assert.EqualError(t, resiltest.HTTPFaults{Status: 100, DropRate: 2}.Validate(),
		"resiltest: HTTPFaults.Status must be a final status code (200-999), got 100")
	assert.EqualError(t, resiltest.HTTPFaults{RetryAfter: -time.Second, TruncateRate: 2}.Validate(),
		"resiltest: HTTPFaults.RetryAfter must be >= 0, got -1s")
}

// TestTruncateOfAStatusWithoutText: with Truncate the client reads the
// headers, then io.ErrUnexpectedEOF from the body, also for a status with
// no text of its own (599), whose default body is then "status 599".
func TestTruncateOfAStatusWithoutText(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := resiltest.NewServer(resiltest.Handler(resiltest.Reply{Status: 599, Truncate: true}))
		defer srv.Close()
		resp, err := srv.Client().Get(srv.URL)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, 599, resp.StatusCode)
		_, err = io.ReadAll(resp.Body)
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	})
}

// TestJitterReachesItsBound: Jitter adds a uniformly random latency in
// [0, Jitter], Jitter itself included: with a Jitter of 1ns, calls take 0
// or 1ns.
func TestJitterReachesItsBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dep := resiltest.Random(resiltest.Faults{Seed: 1, Jitter: time.Nanosecond}, 0)
		seen := map[time.Duration]int{}
		for range 1000 {
			start := time.Now()
			_, err := dep.Call(t.Context())
			require.NoError(t, err)
			seen[time.Since(start)]++
		}
		assert.Len(t, seen, 2, "latencies drawn from [0, 1ns]: %v", seen)
	})
}
