package main

import (
	"bytes"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestOutput runs the program in a synctest bubble (fake time: its waits
// take no real time and cannot be stretched by a busy machine) and checks
// every line it prints.
func TestOutput(t *testing.T) {
	var out bytes.Buffer
	synctest.Test(t, func(t *testing.T) { run(&out, false, 10, 30) })
	assert.Equal(t, golden, out.String())
}

// golden is what the program prints with its default flags.
const golden = `call  1: price 12.50, err <nil>
call  2: price 12.50, err <nil>
level=WARN msg="resil retry" pipeline=prices event=retry attempt=1 delay=5ms elapsed=0s error="prices: 503 service unavailable"
call  3: price 12.50, err <nil>
call  4: price 12.50, err <nil>
level=WARN msg="resil timeout" pipeline=prices event=timeout attempt=1 elapsed=40ms error="resil: timed out after 40ms: context deadline exceeded"
level=WARN msg="resil retry" pipeline=prices event=retry attempt=1 delay=5ms elapsed=40ms error="resil: timed out after 40ms: context deadline exceeded"
call  5: price 12.50, err <nil>
level=WARN msg="resil retry" pipeline=prices event=retry attempt=1 delay=5ms elapsed=0s error="prices: 503 service unavailable"
call  6: price 12.50, err <nil>
level=WARN msg="resil retry" pipeline=prices event=retry attempt=1 delay=5ms elapsed=0s error="prices: 503 service unavailable"
level=WARN msg="resil retry" pipeline=prices event=retry attempt=2 delay=5ms elapsed=5ms error="prices: 503 service unavailable"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=10ms error="resil: gave up after 3 attempts: prices: 503 service unavailable"
call  7: price 9.99, err <nil>
level=WARN msg="resil retry" pipeline=prices event=retry attempt=1 delay=5ms elapsed=0s error="prices: 503 service unavailable"
level=WARN msg="resil retry" pipeline=prices event=retry attempt=2 delay=5ms elapsed=5ms error="prices: 503 service unavailable"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=10ms error="resil: gave up after 3 attempts: prices: 503 service unavailable"
call  8: price 9.99, err <nil>
level=WARN msg="resil retry" pipeline=prices event=retry attempt=1 delay=5ms elapsed=0s error="prices: 503 service unavailable"
level=WARN msg="resil retry" pipeline=prices event=retry attempt=2 delay=5ms elapsed=5ms error="prices: 503 service unavailable"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=10ms error="resil: gave up after 3 attempts: prices: 503 service unavailable"
call  9: price 9.99, err <nil>
level=WARN msg="resil retry" pipeline=prices event=retry attempt=1 delay=5ms elapsed=0s error="prices: 503 service unavailable"
level=WARN msg="resil retry" pipeline=prices event=retry attempt=2 delay=5ms elapsed=5ms error="prices: 503 service unavailable"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=10ms error="resil: gave up after 3 attempts: prices: 503 service unavailable"
call 10: price 9.99, err <nil>
level=WARN msg="resil retry" pipeline=prices event=retry attempt=1 delay=5ms elapsed=0s error="prices: 503 service unavailable"
level=WARN msg="resil retry" pipeline=prices event=retry attempt=2 delay=5ms elapsed=5ms error="prices: 503 service unavailable"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=10ms error="resil: gave up after 3 attempts: prices: 503 service unavailable"
call 11: price 9.99, err <nil>
level=WARN msg="resil retry" pipeline=prices event=retry attempt=1 delay=5ms elapsed=0s error="prices: 503 service unavailable"
level=WARN msg="resil retry" pipeline=prices event=retry attempt=2 delay=5ms elapsed=5ms error="prices: 503 service unavailable"
level=WARN msg="resil state-change" pipeline=prices event=state-change elapsed=10ms from=closed to=open
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=10ms error="resil: gave up after 3 attempts: prices: 503 service unavailable"
call 12: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 13: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 14: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 15: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 16: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 17: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 18: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 19: price 9.99, err <nil>
level=INFO msg="resil state-change" pipeline=prices event=state-change elapsed=0s from=open to=half-open
level=WARN msg="resil retry" pipeline=prices event=retry attempt=1 delay=5ms elapsed=0s error="prices: 503 service unavailable"
level=WARN msg="resil retry" pipeline=prices event=retry attempt=2 delay=5ms elapsed=5ms error="prices: 503 service unavailable"
level=WARN msg="resil state-change" pipeline=prices event=state-change elapsed=10ms from=half-open to=open
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=10ms error="resil: gave up after 3 attempts: prices: 503 service unavailable"
call 20: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 21: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 22: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 23: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 24: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 25: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 26: price 9.99, err <nil>
level=WARN msg="resil rejected" pipeline=prices event=rejected elapsed=0s error="resil: circuit breaker is open"
level=WARN msg="resil fallback" pipeline=prices event=fallback elapsed=0s error="resil: circuit breaker is open"
call 27: price 9.99, err <nil>
level=INFO msg="resil state-change" pipeline=prices event=state-change elapsed=0s from=open to=half-open
level=INFO msg="resil state-change" pipeline=prices event=state-change elapsed=0s from=half-open to=closed
call 28: price 12.50, err <nil>
call 29: price 12.50, err <nil>
level=WARN msg="resil timeout" pipeline=prices event=timeout attempt=1 elapsed=40ms error="resil: timed out after 40ms: context deadline exceeded"
level=WARN msg="resil retry" pipeline=prices event=retry attempt=1 delay=5ms elapsed=40ms error="resil: timed out after 40ms: context deadline exceeded"
call 30: price 12.50, err <nil>

metrics summary (pipeline prices)
  calls           30  (success 30, failure 0)
  attempts        34
  retries         18
  timeouts         2
  rejections      14
  fallbacks       21
  state changes    5  [closed→open open→half-open half-open→open open→half-open half-open→closed]
  mean duration  6ms
`
