// Command observe runs a flaky dependency through an observed pipeline: a
// per-attempt timeout, retries, a circuit breaker and a fallback, reporting
// every event to a log/slog logger and to a counting observer, whose summary
// it prints at the end.
//
//	go run ./examples/observe        # Info and above
//	go run ./examples/observe -v     # every event, attempts and successes included
//
// The dependency is deterministic (seeded, no network): it is slow now and
// then, fails now and then, and goes down for a stretch of calls, long enough
// for the breaker to open and for the fallback to serve cached prices. Its
// test runs it in fake time (testing/synctest) and checks every line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/resil-go/resil"
)

func main() {
	verbose := flag.Bool("v", false, "log every event (Debug)")
	seed := flag.Uint64("seed", 10, "the flaky dependency's seed")
	calls := flag.Int("calls", 30, "calls to make")
	flag.Parse()
	run(os.Stdout, *verbose, *seed, *calls)
}

// run makes calls calls through the observed pipeline, writing the log
// records, one line per call and the summary to w.
func run(w io.Writer, verbose bool, seed uint64, calls int) {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case slog.TimeKey:
				return slog.Attr{} // keep the output comparable between runs
			case "elapsed", "delay":
				return slog.Duration(a.Key, a.Value.Duration().Round(time.Millisecond))
			}
			return a
		},
	}))
	counts := &counter{}

	dep := newFlaky(seed)
	breaker := resil.NewBreaker(resil.BreakerPolicy{
		FailureRatio: 0.5,
		MinCalls:     4,
		// Calls start on a 20ms grid (a ticker: late wake-ups do not add
		// up), and the breaker trips 10ms into a call: OpenFor ends 10ms
		// after the 7th grid point behind the trip's call and 10ms before
		// the 8th, so wake-ups up to 10ms late do not move the trial to
		// another call. (On a machine so overloaded that a call overruns
		// its 20ms, the ticker drops ticks and the counts change.)
		OpenFor: 140 * time.Millisecond,
	})
	prices := resil.New[float64]().
		Timeout(40 * time.Millisecond). // per attempt
		Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(5 * time.Millisecond)}).
		Breaker(breaker).
		Fallback(func(ctx context.Context, err error) (float64, error) {
			return 9.99, nil // the last price we knew
		}).
		Named("prices").
		Observe(resil.MultiObserver(resil.SlogObserver(logger), counts))

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 1; i <= calls; i++ {
		price, err := prices.Run(context.Background(), dep.price)
		fmt.Fprintf(w, "call %2d: price %.2f, err %v\n", i, price, err)
		<-tick.C
	}
	counts.print(w)
}

// flaky is the dependency: seeded draws decide whether a call is slow
// (beyond the timeout) or fails; attempts 10 to 30 all fail (an outage).
type flaky struct {
	mu    sync.Mutex
	rng   *rand.Rand
	calls int
}

var errUnavailable = errors.New("prices: 503 service unavailable")

func newFlaky(seed uint64) *flaky {
	return &flaky{rng: rand.New(rand.NewPCG(seed, seed))}
}

func (f *flaky) price(ctx context.Context) (float64, error) {
	f.mu.Lock()
	f.calls++
	n, draw := f.calls, f.rng.Float64()
	f.mu.Unlock()
	switch {
	case n >= 10 && n <= 30:
		return 0, errUnavailable
	case draw < 0.1: // slow: the per-attempt timeout ends it
		select {
		case <-time.After(time.Second):
			return 12.5, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	case draw < 0.3:
		return 0, errUnavailable
	}
	return 12.5, nil
}

// counter is an Observer that counts events by kind, and calls by outcome
// with their total time: a metrics summary without a metrics library (see
// the resilotel module for OpenTelemetry).
type counter struct {
	mu       sync.Mutex
	kinds    map[resil.EventKind]int
	changes  []string
	duration time.Duration
}

func (c *counter) Observe(_ context.Context, e resil.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kinds == nil {
		c.kinds = map[resil.EventKind]int{}
	}
	c.kinds[e.Kind]++
	switch e.Kind {
	case resil.EventSuccess, resil.EventFailure:
		c.duration += e.Elapsed
	case resil.EventStateChange:
		c.changes = append(c.changes, e.From.String()+"→"+e.To.String())
	}
}

func (c *counter) print(w io.Writer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls := c.kinds[resil.EventSuccess] + c.kinds[resil.EventFailure]
	fmt.Fprintln(w, "\nmetrics summary (pipeline prices)")
	fmt.Fprintf(w, "  calls          %3d  (success %d, failure %d)\n", calls, c.kinds[resil.EventSuccess], c.kinds[resil.EventFailure])
	fmt.Fprintf(w, "  attempts       %3d\n", c.kinds[resil.EventAttempt])
	fmt.Fprintf(w, "  retries        %3d\n", c.kinds[resil.EventRetry])
	fmt.Fprintf(w, "  timeouts       %3d\n", c.kinds[resil.EventTimeout])
	fmt.Fprintf(w, "  rejections     %3d\n", c.kinds[resil.EventRejected])
	fmt.Fprintf(w, "  fallbacks      %3d\n", c.kinds[resil.EventFallback])
	fmt.Fprintf(w, "  state changes  %3d  %v\n", c.kinds[resil.EventStateChange], c.changes)
	if calls > 0 {
		fmt.Fprintf(w, "  mean duration  %v\n", (c.duration / time.Duration(calls)).Round(time.Millisecond))
	}
}
