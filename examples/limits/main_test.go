package main

import (
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestOutput runs the program in a synctest bubble (fake time: its waits
// take no real time and cannot be stretched by a busy machine) and checks
// every line it prints.
func TestOutput(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdout")
	f, err := os.Create(path)
	require.NoError(t, err)
	stdout := os.Stdout
	os.Stdout = f // a file, not a pipe: writing never blocks the bubble
	synctest.Test(t, func(t *testing.T) { main() })
	os.Stdout = stdout
	require.NoError(t, f.Close())
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, golden, string(got))
}

const golden = `bulkhead, 2 slots, no queue:
  call 1: running
  call 2: running
  call 3: resil: bulkhead is full (transient: true)
  call 4: resil: bulkhead is full (transient: true)
  after calls 1 and 2 returned, call 5: err=<nil>
bulkhead, 2 slots, queue up to 1s:
  6 calls: 6 served, at most 2 at once
rate limit, 10/s, burst 3:
  call 1: passed
  call 2: passed
  call 3: passed
  call 4: rate limited, retry after 100ms
  call 5: rate limited, retry after 100ms
rate limit, 10/s, burst 1, behind a Retry:
  call 1: err=<nil> at 0s
    attempt 1 rate limited, Retry waits 100ms
  call 2: err=<nil> at 100ms
    attempt 1 rate limited, Retry waits 100ms
  call 3: err=<nil> at 200ms
`
