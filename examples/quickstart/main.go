// Command quickstart calls a simulated flaky service twice, once bare and
// once through a resil pipeline, and prints side by side what happened.
//
//	go run ./examples/quickstart
//
// It needs no network and no set-up. The service is built with resiltest
// from a fixed seed, so every run on a machine that is not overloaded
// prints the same table: transient errors, a permanent error, an outage
// that trips the breaker, and slow calls that the timeout cuts short. It
// takes about five seconds.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resiltest"
)

// The simulation. Calls are paced a tick apart, each sleep counted from the
// end of the previous call, so a busy machine can only stretch the gaps,
// never shrink them. The breaker's open period is just under four ticks:
// the fourth call after a trip always finds it half-open, and the third
// finds it still open unless the three sleeps before it overran by more
// than nine tenths of a tick in all. That keeps the output the same from
// run to run on a busy machine; one so overloaded that its sleeps overrun
// by that much may see the breaker make one more round, and the counts
// change with it. (Its test runs in fake time: the same table, always.)
const (
	seed     = 7
	calls    = 40
	tick     = 100 * time.Millisecond
	slow     = 150 * time.Millisecond // how long a slow attempt takes
	perTry   = 20 * time.Millisecond  // the pipeline's Timeout
	slowMark = 75 * time.Millisecond  // a call slower than this counts as slow
	openFor  = 4*tick - 10*time.Millisecond
)

var (
	errReset       = errors.New("connection reset")
	errUnavailable = errors.New("503 service unavailable")
	errNotFound    = errors.New("404 item not found")
)

// service returns the simulated service as call i (from 1) finds it: a
// fake whose attempts play out that call's fate.
func service(i int) *resiltest.Fake[string] {
	switch {
	case i == 5: // a bad request: retrying cannot help
		return resiltest.Script[string](resiltest.Fail(resil.Permanent(errNotFound), 1))
	case i >= 13 && i <= 24: // an outage: every attempt fails
		return resiltest.Script[string](resiltest.Fail(errUnavailable, 1))
	case i >= 35 && i <= 38: // the first attempt is slow, a second one is fast
		return resiltest.Script[string](resiltest.Return("fresh").After(slow), resiltest.Return("fresh"))
	}
	// Normal service: 30% of attempts fail with a passing error.
	return resiltest.Random(resiltest.Faults{Seed: seed<<32 | uint64(i), FailRate: 0.3, Err: errReset}, "fresh")
}

// tally counts what one way of calling the service did.
type tally struct {
	answered, fallbacks, errors int
	attempts, slow              int
	events                      map[resil.EventKind]int
	transitions                 []resiltest.Transition
}

// Observe counts the pipeline's events: what each stage did.
func (t *tally) Observe(_ context.Context, e resil.Event) { t.events[e.Kind]++ }

// call makes one call of the simulation through run and counts its outcome.
func (t *tally) call(ctx context.Context, i int, run func(context.Context, *resiltest.Fake[string]) (string, error)) {
	dep := service(i)
	start := time.Now()
	v, err := run(ctx, dep)
	if time.Since(start) > slowMark {
		t.slow++
	}
	t.attempts += dep.Count()
	switch {
	case err != nil:
		t.errors++
	case v == "cached":
		t.fallbacks++
	default:
		t.answered++
	}
}

// bare calls the service once per call, with no protection.
func bare(ctx context.Context) *tally {
	t := &tally{events: map[resil.EventKind]int{}}
	for i := 1; i <= calls; i++ {
		t.call(ctx, i, func(ctx context.Context, dep *resiltest.Fake[string]) (string, error) {
			return dep.Call(ctx)
		})
	}
	return t
}

// protected calls the service through a pipeline, one call per tick.
func protected(ctx context.Context) *tally {
	t := &tally{events: map[resil.EventKind]int{}}
	var log resiltest.BreakerLog
	breaker := resil.NewBreaker(resil.BreakerPolicy{
		FailureRatio:  0.2,               // trip when 20% of calls fail...
		MinCalls:      5,                 // ...out of at least 5
		Window:        time.Minute,       // over the whole run
		OpenFor:       openFor,           // then try again 4 calls later
		OnStateChange: log.OnStateChange, // record the transitions
	})
	p := resil.New[string]().
		Timeout(perTry).
		Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Exponential(time.Millisecond, 4*time.Millisecond)}).
		Breaker(breaker).
		Fallback(func(ctx context.Context, err error) (string, error) {
			if errors.Is(err, errNotFound) {
				return "", err // nothing to serve for an item that does not exist
			}
			return "cached", nil // a stale answer beats an error
		}).
		Observe(t)
	for i := 1; i <= calls; i++ {
		if i > 1 {
			time.Sleep(tick)
		}
		t.call(ctx, i, func(ctx context.Context, dep *resiltest.Fake[string]) (string, error) {
			return p.Run(ctx, dep.Call)
		})
	}
	t.transitions = log.Transitions()
	return t
}

// report prints the two tallies side by side.
func report(w io.Writer, b, p *tally) error {
	fmt.Fprintf(w, "resil quickstart: %d calls to a simulated flaky service (seed %d)\n", calls, seed)
	fmt.Fprintf(w, "  30%% of attempts fail (connection reset); call 5 fails for good (404);\n")
	fmt.Fprintf(w, "  calls 13-24: the service is down (503); calls 35-38: the first attempt takes %v\n\n", slow)
	// Drawn as README.md draws a pipeline: from the outermost stage (the
	// last added) to the innermost, then the service.
	fmt.Fprintf(w, "pipeline: Fallback(cached) → Breaker(20%% of 5+ calls, open %v) → Retry(3 attempts) → Timeout(%v per attempt) → service\n\n",
		openFor, perTry)

	dash := func(n int) string {
		if n == 0 {
			return "-"
		}
		return fmt.Sprint(n)
	}
	rows := []struct {
		name       string
		bare, pipe string
	}{
		{"calls", fmt.Sprint(calls), fmt.Sprint(calls)},
		{"answered by the service", fmt.Sprint(b.answered), fmt.Sprint(p.answered)},
		{"fallbacks served (cached)", dash(b.fallbacks), dash(p.fallbacks)},
		{"errors returned to the caller", dash(b.errors), dash(p.errors)},
		{fmt.Sprintf("calls slower than %v", slowMark), dash(b.slow), dash(p.slow)},
		{"attempts that reached the service", fmt.Sprint(b.attempts), fmt.Sprint(p.attempts)},
		{"  retries", dash(b.events[resil.EventRetry]), dash(p.events[resil.EventRetry])},
		{"  attempts cut by the timeout", dash(b.events[resil.EventTimeout]), dash(p.events[resil.EventTimeout])},
		{"calls rejected by the open breaker", dash(b.events[resil.EventRejected]), dash(p.events[resil.EventRejected])},
		{"breaker transitions", dash(len(b.transitions)), dash(len(p.transitions))},
	}
	fmt.Fprintf(w, "%-36s %9s %9s\n", "", "bare call", "pipeline")
	for _, r := range rows {
		fmt.Fprintf(w, "%-36s %9s %9s\n", r.name, r.bare, r.pipe)
	}
	states := []string{resil.StateClosed.String()}
	for _, tr := range p.transitions {
		states = append(states, tr.To.String())
	}
	fmt.Fprintf(w, "\nbreaker: %s\n\n", strings.Join(states, " → "))
	fmt.Fprintf(w, "Timeout  cut %d slow attempts short after %v (a bare call waited %v)\n", p.events[resil.EventTimeout], perTry, slow)
	fmt.Fprintf(w, "Retry    retried %d failed attempts, so passing errors became answers; not the 404\n", p.events[resil.EventRetry])
	fmt.Fprintf(w, "Breaker  rejected %d calls during the outage without sending them to the service\n", p.events[resil.EventRejected])
	_, err := fmt.Fprintf(w, "Fallback served %d cached answers instead of errors; the 404 stayed an error\n", p.fallbacks)
	return err
}

func main() {
	ctx := context.Background()
	if err := report(os.Stdout, bare(ctx), protected(ctx)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
