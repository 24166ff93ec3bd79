// Package resil keeps programs working when the things they call fail. It
// wraps a call in a typed, immutable pipeline of stages:
//
//	users := resil.New[*User]().
//		Timeout(2 * time.Second).                 // per attempt
//		Retry(resil.RetryPolicy{MaxAttempts: 3}). // backoff with jitter
//		Breaker(usersBreaker).                    // stop hammering a dead service
//		Fallback(func(ctx context.Context, err error) (*User, error) {
//			return cache.Get(id) // degrade gracefully
//		})
//
//	u, err := users.Run(ctx, func(ctx context.Context) (*User, error) {
//		return api.User(ctx, id)
//	})
//
// # Order
//
// Each stage wraps everything added before it: the first stage added is
// innermost (closest to fn), the last is outermost. The pipeline above runs
// as
//
//	Fallback( Breaker( Retry( Timeout( fn ) ) ) )
//	   outermost ◀──────────────────▶ innermost
//
// so the timeout bounds each attempt, the retry sequence as a whole is
// guarded by the breaker (a rejected call is not retried) and the fallback
// sees only what is left after all of them. A stage may appear more than
// once: Timeout(perTry).Retry(r).Timeout(total). For a remote call with
// every stage, the README's recommended order, innermost first, is
//
//	Chaos → Timeout(perTry) → Breaker → Bulkhead → RateLimit →
//	Retry(Budget) → Hedge → Timeout(total) → Fallback
//
// # Classification
//
// Retry retries, and Breaker counts as failures, only what is transient.
// An error wrapped with Permanent is never retried and never a breaker
// failure; one wrapped with Transient always is; the outermost mark wins.
// Unmarked errors are decided by RetryPolicy.RetryIf and
// BreakerPolicy.FailureIf, which default to IsTransient: an error's own
// Transient() bool method answers for it, context.Canceled and
// ErrBreakerOpen are not transient, and anything else is (an unknown
// failure is more likely a passing fault). Errors are matched with
// errors.Is and errors.As, never by their text: ErrTimeout, ErrBreakerOpen,
// *RetryError.
//
// # Cost
//
// A pipeline is compiled once and run many times. Every stage but Hedge
// runs fn on the caller's goroutine and starts no goroutine; Retry,
// Breaker, Fallback, Bulkhead and RateLimit allocate nothing on a call that
// succeeds (for Bulkhead and RateLimit, one that passes without queuing or
// waiting: a wait takes a timer), and Timeout allocates one small context,
// which arms a timer only when something waits on it.
// State shared between calls (a *Breaker) is concurrency-safe and moves
// lazily, as calls arrive: there are no background goroutines or timers.
// A BreakerShare or a RateLimitShare from elsewhere may start its own
// (redisstore runs each Redis round trip on a goroutine, to bound its
// wait).
// Hedge is the one stage that starts goroutines, one per attempt, and only
// when a hedge could start before the context's deadline.
package resil
