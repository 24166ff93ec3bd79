package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const sampleOutput = `goos: linux
BenchmarkDirect/bare-2         	100	  2.0 ns/op	  0 B/op	  0 allocs/op
BenchmarkDirect/bare-2         	100	  4.0 ns/op	  0 B/op	  0 allocs/op
BenchmarkRetryOK/resil-2       	100	 10.0 ns/op	  0 B/op	  0 allocs/op
BenchmarkRetryOK/resil-2       	100	 30.0 ns/op	  0 B/op	  0 allocs/op
BenchmarkRetryOK/resil-2       	100	 12.0 ns/op	  0 B/op	  0 allocs/op
BenchmarkRetryOK/peer-2        	100	 20.0 ns/op	 16 B/op	  1 allocs/op
BenchmarkRetryOK/peer-2        	100	 24.0 ns/op	 16 B/op	  1 allocs/op
BenchmarkRetryOK/other+combo-2 	100	 90.0 ns/op	 32 B/op	  2 allocs/op
BenchmarkNoTimeoutOK/resil-2   	100	 30.0 ns/op	  0 B/op	  0 allocs/op
PASS
`

func TestParseTakesMediansPerScenarioAndSystem(t *testing.T) {
	all, order, err := parse(strings.NewReader(sampleOutput))
	require.NoError(t, err)
	assert.Equal(t, []string{"Direct", "RetryOK", "NoTimeoutOK"}, order)

	bare, ok := find(all["Direct"], "bare")
	require.True(t, ok)
	assert.Equal(t, 3.0, bare.ns, "the median of an even count is the mean of the middle two")

	resil, ok := find(all["RetryOK"], "resil")
	require.True(t, ok)
	assert.Equal(t, 12.0, resil.ns)
	assert.Equal(t, 3, resil.n)

	best, ok := fastestPeer(all["RetryOK"])
	require.True(t, ok)
	assert.Equal(t, "peer", best.system)
	assert.Equal(t, 22.0, best.ns)
	assert.Equal(t, 1.0, best.allocs)

	_, ok = find(all["RetryOK"], "other+combo")
	assert.True(t, ok, "system names may hold '+'")
}

func TestTablesShowRatiosAndTargets(t *testing.T) {
	all, order, err := parse(strings.NewReader(sampleOutput))
	require.NoError(t, err)
	var out bytes.Buffer
	for _, sc := range order {
		printScenario(&out, sc, all[sc])
	}
	printTargets(&out, all)
	s := out.String()
	assert.Contains(t, s, "resil ÷ fastest peer (peer): **0.545**")                  // 12 / 22
	assert.Contains(t, s, "| RetryOK | fastest peer | 0.545 | ≤ 1 | 0 | yes |")      // holds
	assert.Contains(t, s, "| NoTimeoutOK | Direct/bare | 10.000 | ≤ 12 | 0 | yes |") // 30 / 3
	assert.NotContains(t, s, "| BreakerOK |", "a scenario that was not run has no target row")

	out.Reset()
	printSummary(&out, order, all)
	s = out.String()
	assert.Contains(t, s, "| scenario | resil | peer | other+combo | resil ÷ fastest |")
	assert.Contains(t, s, "| RetryOK | 12.0 (0) | 22.0 (1) | 90.0 (2) | **0.55** (peer) |")
	assert.Contains(t, s, "| NoTimeoutOK | 30.0 (0) |  |  |  |")
	assert.Contains(t, s, "Floors (Direct): bare 3.00 (0).")
}
