// Package resiltest simulates failing dependencies for the tests of code
// that uses resil, and checks what the pipeline did with them.
//
//   - Script plays a typed fake through a script of outcomes, in order:
//     values (Return), errors (Fail), latencies (Step.After), calls that
//     hang until their context ends (Hang) and panics (Panic). Its Call
//     method is the function a pipeline runs.
//   - Random fails, hangs and slows calls at the rates Faults gives, from a
//     seed: soak tests that are reproducible call by call.
//   - Handler and RandomHandler do the same for HTTP: an http.Handler for
//     httptest servers that answers with scripted or random statuses (with
//     Retry-After), delays, dropped connections and truncated bodies.
//     NewServer serves it without a network, for tests in fake time.
//   - Every fake records its calls (start, end, context deadline, attempt),
//     and the Assert functions check them in the words of the domain: the
//     number of attempts, the waits between them, the states a breaker
//     went through (record them with a BreakerLog) and that no call ran
//     while the breaker was open. They take a TB, which *testing.T
//     satisfies, report with Errorf and return whether they passed.
//
// # Fake time
//
// Everything here works inside a testing/synctest bubble, and that is the
// way to test durations: latencies, hangs, timeouts, backoffs and breaker
// open periods then take no real time, and the recorded times are exact,
// so AssertWaits can compare waits with ==. Fakes and handlers start no
// goroutine and hold no lock while they wait.
//
//	func TestRetryWaits(t *testing.T) {
//		synctest.Test(t, func(t *testing.T) {
//			dep := resiltest.Script[int](
//				resiltest.Hang(), // cut short by the Timeout stage
//				resiltest.Fail(io.ErrUnexpectedEOF, 1).After(time.Second),
//				resiltest.Return(42),
//			)
//			p := resil.New[int]().
//				Timeout(2 * time.Second).
//				Retry(resil.RetryPolicy{Backoff: resil.Exponential(100*time.Millisecond, time.Second)})
//
//			v, err := p.Run(t.Context(), dep.Call)
//
//			require.NoError(t, err)
//			require.Equal(t, 42, v)
//			resiltest.AssertAttempts(t, dep, 3)
//			resiltest.AssertWaits(t, dep, 100*time.Millisecond, 200*time.Millisecond)
//		})
//	}
//
// Outside a bubble the fakes run in real time: keep latencies small there.
// An httptest server's goroutines wait on the network, which a bubble does
// not count as durably blocked, so its fake clock would stand still: inside
// a bubble, serve a FlakyHandler with NewServer, which connects its client
// through in-memory pipes, or call its ServeHTTP method directly.
package resiltest
