package resil_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/resil-go/resil"
)

// eventPrinter is an Observer that prints each event's kind and attempt.
type eventPrinter struct{}

func (eventPrinter) Observe(_ context.Context, e resil.Event) {
	fmt.Printf("%s %s attempt=%d err=%v\n", e.Pipeline, e.Kind, e.Attempt, e.Err)
}

// Every stage of an observed pipeline reports to its Observer, on the
// caller's goroutine, in the order things happen.
func ExamplePipeline_Observe() {
	p := resil.New[string]().
		Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)}).
		Fallback(func(context.Context, error) (string, error) { return "cached", nil }).
		Named("users").
		Observe(eventPrinter{})

	v, err := p.Run(context.Background(), func(context.Context) (string, error) {
		return "", errors.New("503")
	})
	fmt.Println(v, err)
	// Output:
	// users attempt attempt=1 err=<nil>
	// users retry attempt=1 err=503
	// users attempt attempt=2 err=<nil>
	// users retry attempt=2 err=503
	// users attempt attempt=3 err=<nil>
	// users fallback attempt=0 err=resil: gave up after 3 attempts: 503
	// users success attempt=0 err=<nil>
	// cached <nil>
}

// SlogObserver writes one structured record per event; the level decides
// which: here Info, so attempts and successes (Debug) are left out.
func ExampleSlogObserver() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelInfo,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "elapsed" {
				return slog.Attr{} // not the same from one run to the next
			}
			return a
		},
	}))
	p := resil.New[int]().
		Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}).
		Named("prices").
		Observe(resil.SlogObserver(logger))

	_, _ = p.Run(context.Background(), func(context.Context) (int, error) {
		return 0, errors.New("503")
	})
	// Output:
	// level=WARN msg="resil retry" pipeline=prices event=retry attempt=1 delay=0s error=503
	// level=ERROR msg="resil failure" pipeline=prices event=failure error="resil: gave up after 2 attempts: 503"
}

// countingObserver counts the events of each kind, as a metrics observer
// would.
type countingObserver map[resil.EventKind]int

func (c countingObserver) Observe(_ context.Context, e resil.Event) { c[e.Kind]++ }

// A pipeline has one observer; MultiObserver lets it report to several:
// here a printer and a counter.
func ExampleMultiObserver() {
	counts := countingObserver{}
	p := resil.New[int]().
		Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}).
		Named("stock").
		Observe(resil.MultiObserver(eventPrinter{}, counts))

	calls := 0
	v, err := p.Run(context.Background(), func(context.Context) (int, error) {
		calls++
		if calls == 1 {
			return 0, resil.Transient(errors.New("timeout"))
		}
		return 12, nil
	})
	fmt.Println(v, err)
	fmt.Println("attempts:", counts[resil.EventAttempt], "retries:", counts[resil.EventRetry])
	// Output:
	// stock attempt attempt=1 err=<nil>
	// stock retry attempt=1 err=timeout
	// stock attempt attempt=2 err=<nil>
	// stock success attempt=0 err=<nil>
	// 12 <nil>
	// attempts: 2 retries: 1
}
