package benchmarks

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/afex/hystrix-go/hystrix"
	retrygo "github.com/avast/retry-go/v4"
	"github.com/cenkalti/backoff/v5"
	eabreaker "github.com/eapache/go-resiliency/breaker"
	"github.com/eapache/go-resiliency/deadline"
	"github.com/eapache/go-resiliency/retrier"
	"github.com/failsafe-go/failsafe-go"
	fscb "github.com/failsafe-go/failsafe-go/circuitbreaker"
	fsfallback "github.com/failsafe-go/failsafe-go/fallback"
	fsretry "github.com/failsafe-go/failsafe-go/retrypolicy"
	fstimeout "github.com/failsafe-go/failsafe-go/timeout"
	"github.com/resil-go/resil"
	"github.com/sony/gobreaker/v2"
)

// The work every system guards: a call through a function value that
// returns at once. It is a variable so that no benchmark can inline it: each
// system calls it as it would call a user's function.
var workFn = func(context.Context) (int, error) { return 42, nil }

// waitFn is the work of TimeoutWaitOK: it looks at its context's Done
// channel, as a call that waits on I/O does, and returns at once.
var waitFn = func(ctx context.Context) (int, error) {
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	default:
		return 42, nil
	}
}

var errFlaky = errors.New("flaky")

// flakyFn returns a call that fails twice with errFlaky and then succeeds,
// in a cycle of three: each RetryFail2 operation runs one whole cycle. It
// is not safe for concurrent use.
func flakyFn() func(context.Context) (int, error) {
	n := 0
	return func(context.Context) (int, error) {
		n++
		if n%3 != 0 {
			return 0, errFlaky
		}
		return 42, nil
	}
}

// check fails the benchmark when a system did not return the work's value:
// every system must do the whole work, not skip it.
func check(b *testing.B, v int, err error) {
	if err != nil || v != 42 {
		b.Fatalf("got (%d, %v), want (42, nil)", v, err)
	}
}

// run runs op in the measured loop, with allocations reported.
func run(b *testing.B, op func() (int, error)) {
	b.ReportAllocs()
	for b.Loop() {
		v, err := op()
		check(b, v, err)
	}
}

// runRejected runs op in the measured loop and fails unless every call is
// rejected (returns an error).
func runRejected(b *testing.B, op func() error) {
	b.ReportAllocs()
	for b.Loop() {
		if op() == nil {
			b.Fatal("call admitted, want rejected")
		}
	}
}

const (
	attempts = 3           // RetryOK, RetryFail2, FullOK: attempts in all
	timeout  = time.Second // TimeoutOK, FullOK
)

// Direct: the floors every other scenario is measured against.
func BenchmarkDirect(b *testing.B) {
	ctx := context.Background()
	b.Run("bare", func(b *testing.B) {
		run(b, func() (int, error) { return workFn(ctx) })
	})
	b.Run("withtimeout", func(b *testing.B) {
		run(b, func() (int, error) {
			tctx, cancel := context.WithTimeout(ctx, timeout)
			v, err := workFn(tctx)
			cancel()
			return v, err
		})
	})
	b.Run("withtimeoutwait", func(b *testing.B) {
		run(b, func() (int, error) {
			tctx, cancel := context.WithTimeout(ctx, timeout)
			v, err := waitFn(tctx)
			cancel()
			return v, err
		})
	})
}

// retryPeers returns, for each system, a call that makes up to 3 attempts
// of fn with no delay between them.
func retryPeers(fn func(context.Context) (int, error)) map[string]func() (int, error) {
	ctx := context.Background()

	p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: attempts, Backoff: resil.Constant(0)})

	fs := failsafe.With[int](fsretry.NewBuilder[int]().WithMaxAttempts(attempts).WithDelay(0).Build())
	fsGet := func() (int, error) { return fn(ctx) }

	cbOp := func() (int, error) { return fn(ctx) }
	cbOpts := []backoff.RetryOption{backoff.WithBackOff(&backoff.ZeroBackOff{}), backoff.WithMaxTries(attempts)}

	// FixedDelay with Delay(0): no wait, and none of the default 100ms
	// random jitter (the default DelayType adds it).
	avOpts := []retrygo.Option{
		retrygo.Attempts(attempts), retrygo.Delay(0), retrygo.DelayType(retrygo.FixedDelay),
		retrygo.LastErrorOnly(true), retrygo.Context(ctx),
	}
	avOp := func() (int, error) { return fn(ctx) }

	ea := retrier.New(retrier.ConstantBackoff(attempts-1, 0), nil) // jitter is 0 unless set
	var eaV int
	// RunFn, the retrier's entry point that RunCtx wraps in one more
	// closure: the fastest documented way to run it.
	eaWork := func(ctx context.Context, _ int) error {
		v, err := fn(ctx)
		eaV = v
		return err
	}

	return map[string]func() (int, error){
		"resil":    func() (int, error) { return p.Run(ctx, fn) },
		"failsafe": func() (int, error) { return fs.Get(fsGet) },
		"cenkalti": func() (int, error) { return backoff.Retry(ctx, cbOp, cbOpts...) },
		"avast":    func() (int, error) { return retrygo.DoWithData(avOp, avOpts...) },
		"eapache": func() (int, error) {
			err := ea.RunFn(ctx, eaWork)
			return eaV, err
		},
	}
}

var retrySystems = []string{"resil", "failsafe", "cenkalti", "avast", "eapache"}

// RetryOK: 3 attempts allowed, the call succeeds at once.
func BenchmarkRetryOK(b *testing.B) {
	for _, name := range retrySystems {
		b.Run(name, func(b *testing.B) {
			run(b, retryPeers(workFn)[name])
		})
	}
}

// RetryFail2: 3 attempts, no delay, the call fails twice then succeeds.
func BenchmarkRetryFail2(b *testing.B) {
	for _, name := range retrySystems {
		b.Run(name, func(b *testing.B) {
			run(b, retryPeers(flakyFn())[name])
		})
	}
}

var breakerSystems = []string{"resil", "failsafe", "gobreaker", "eapache", "hystrix"}

// hystrixCommand configures a hystrix command that admits any number of
// concurrent calls and times out after timeout.
func hystrixCommand(name string, cfg hystrix.CommandConfig) string {
	cfg.Timeout = int(timeout / time.Millisecond)
	cfg.MaxConcurrentRequests = 1 << 20
	hystrix.ConfigureCommand(name, cfg)
	return name
}

// closedBreakers returns, for each system, a call of workFn through a
// closed breaker with the system's default settings.
func closedBreakers(b *testing.B) map[string]func() (int, error) {
	ctx := context.Background()

	p := resil.New[int]().Breaker(resil.NewBreaker(resil.BreakerPolicy{}))

	fs := failsafe.With[int](fscb.NewWithDefaults[int]())
	fsGet := func() (int, error) { return workFn(ctx) }

	gb := gobreaker.NewCircuitBreaker[int](gobreaker.Settings{})
	gbReq := func() (int, error) { return workFn(ctx) }

	ea := eabreaker.New(5, 1, 5*time.Second)
	hx := hystrixCommand(b.Name(), hystrix.CommandConfig{})

	return map[string]func() (int, error){
		"resil":     func() (int, error) { return p.Run(ctx, workFn) },
		"failsafe":  func() (int, error) { return fs.Get(fsGet) },
		"gobreaker": func() (int, error) { return gb.Execute(gbReq) },
		"eapache": func() (int, error) {
			// The result travels through a local: Run returns only an
			// error. The closure is built per call because the value must
			// not be shared between parallel callers.
			var v int
			err := ea.Run(func() error {
				var err error
				v, err = workFn(ctx)
				return err
			})
			return v, err
		},
		"hystrix": func() (int, error) {
			var v int
			err := hystrix.DoC(ctx, hx, func(ctx context.Context) error {
				var err error
				v, err = workFn(ctx)
				return err
			}, nil)
			return v, err
		},
	}
}

// BreakerOK: a closed breaker, the call succeeds.
func BenchmarkBreakerOK(b *testing.B) {
	for _, name := range breakerSystems {
		b.Run(name, func(b *testing.B) {
			run(b, closedBreakers(b)[name])
		})
	}
}

// BreakerPar: BreakerOK from every P at once, one breaker shared.
func BenchmarkBreakerPar(b *testing.B) {
	for _, name := range breakerSystems {
		b.Run(name, func(b *testing.B) {
			op := closedBreakers(b)[name]
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					v, err := op()
					if err != nil || v != 42 {
						b.Errorf("got (%d, %v), want (42, nil)", v, err)
						return
					}
				}
			})
		})
	}
}

// BreakerOpen: an open breaker rejects the call. Each breaker is tripped
// by real failures, and stays open for an hour.
func BenchmarkBreakerOpen(b *testing.B) {
	ctx := context.Background()
	fail := func(context.Context) (int, error) { return 0, errFlaky }
	systems := map[string]func(b *testing.B) func() error{
		"resil": func(b *testing.B) func() error {
			br := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Hour})
			p := resil.New[int]().Breaker(br)
			_, _ = p.Run(ctx, fail)
			if br.State() != resil.StateOpen {
				b.Fatal("resil breaker did not open")
			}
			return func() error { _, err := p.Run(ctx, workFn); return err }
		},
		"failsafe": func(b *testing.B) func() error {
			cb := fscb.NewBuilder[int]().WithFailureThreshold(1).WithDelay(time.Hour).Build()
			fs := failsafe.With[int](cb)
			_, _ = fs.Get(func() (int, error) { return fail(ctx) })
			if !cb.IsOpen() {
				b.Fatal("failsafe breaker did not open")
			}
			get := func() (int, error) { return workFn(ctx) }
			return func() error { _, err := fs.Get(get); return err }
		},
		"gobreaker": func(b *testing.B) func() error {
			gb := gobreaker.NewCircuitBreaker[int](gobreaker.Settings{
				Timeout:     time.Hour,
				ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 1 },
			})
			_, _ = gb.Execute(func() (int, error) { return fail(ctx) })
			if gb.State() != gobreaker.StateOpen {
				b.Fatal("gobreaker did not open")
			}
			req := func() (int, error) { return workFn(ctx) }
			return func() error { _, err := gb.Execute(req); return err }
		},
		"eapache": func(b *testing.B) func() error {
			// Opening starts a goroutine that sleeps for the open time
			// (eapache's design); main_test.go lets it outlive the tests.
			ea := eabreaker.New(1, 1, time.Hour)
			_ = ea.Run(func() error { _, err := fail(ctx); return err })
			if ea.GetState() != eabreaker.Open {
				b.Fatal("eapache breaker did not open")
			}
			w := func() error { _, err := workFn(ctx); return err }
			return func() error { return ea.Run(w) }
		},
		"hystrix": func(b *testing.B) func() error {
			hx := hystrixCommand(b.Name(), hystrix.CommandConfig{
				RequestVolumeThreshold: 1, ErrorPercentThreshold: 1,
				SleepWindow: int(time.Hour / time.Millisecond),
			})
			failC := func(ctx context.Context) error { _, err := fail(ctx); return err }
			cb, _, _ := hystrix.GetCircuit(hx)
			// hystrix counts outcomes on its own goroutine and opens on a
			// later call's health check: fail until it does.
			for i := 0; !cb.IsOpen(); i++ {
				if i == 10000 {
					b.Fatal("hystrix breaker did not open")
				}
				_ = hystrix.DoC(ctx, hx, failC, nil)
				time.Sleep(time.Millisecond) // lets its metrics goroutine count
			}
			w := func(ctx context.Context) error { _, err := workFn(ctx); return err }
			return func() error { return hystrix.DoC(ctx, hx, w, nil) }
		},
	}
	for _, name := range breakerSystems {
		b.Run(name, func(b *testing.B) {
			runRejected(b, systems[name](b))
		})
	}
}

// TimeoutOK: a 1s timeout, the call returns at once.
func BenchmarkTimeoutOK(b *testing.B) { benchTimeout(b, false) }

// TimeoutWaitOK: a 1s timeout, the call looks at its context's Done channel
// (or the system's own signal) and returns at once. Not one of the targets:
// it shows what a Timeout costs a call that waits on its context (I/O),
// where TimeoutOK's returns without looking. Its floor is
// Direct/withtimeoutwait.
func BenchmarkTimeoutWaitOK(b *testing.B) { benchTimeout(b, true) }

// benchTimeout runs a 1s timeout around the work on each system; with
// watch, the work looks at the timeout's signal first (waitFn).
func benchTimeout(b *testing.B, watch bool) {
	ctx := context.Background()
	work := workFn
	if watch {
		work = waitFn
	}
	systems := map[string]func(b *testing.B) func() (int, error){
		"resil": func(*testing.B) func() (int, error) {
			p := resil.New[int]().Timeout(timeout)
			return func() (int, error) { return p.Run(ctx, work) }
		},
		"failsafe": func(*testing.B) func() (int, error) {
			if !watch {
				fs := failsafe.With[int](fstimeout.New[int](timeout))
				get := func() (int, error) { return work(ctx) }
				return func() (int, error) { return fs.Get(get) }
			}
			// The attempt's context is the execution's.
			fs := failsafe.With[int](fstimeout.New[int](timeout)).WithContext(ctx)
			get := func(exec failsafe.Execution[int]) (int, error) { return work(exec.Context()) }
			return func() (int, error) { return fs.GetWithExecution(get) }
		},
		"eapache": func(*testing.B) func() (int, error) {
			// eapache's timeout signal is a channel, not a context.
			d := deadline.New(timeout)
			if watch {
				return func() (int, error) {
					v := 0
					err := d.Run(func(stopper <-chan struct{}) error {
						select {
						case <-stopper:
							return deadline.ErrTimedOut
						default:
							v = 42
							return nil
						}
					})
					return v, err
				}
			}
			return func() (int, error) {
				var v int
				err := d.Run(func(<-chan struct{}) error {
					var err error
					v, err = workFn(ctx)
					return err
				})
				return v, err
			}
		},
		"hystrix": func(b *testing.B) func() (int, error) {
			// hystrix has no timeout without its breaker: this is its
			// smallest configuration that times out.
			hx := hystrixCommand(b.Name(), hystrix.CommandConfig{})
			return func() (int, error) {
				var v int
				err := hystrix.DoC(ctx, hx, func(ctx context.Context) error {
					var err error
					v, err = work(ctx)
					return err
				}, nil)
				return v, err
			}
		},
	}
	for _, name := range []string{"resil", "failsafe", "eapache", "hystrix"} {
		b.Run(name, func(b *testing.B) {
			run(b, systems[name](b))
		})
	}
}

// fallbackValue is what every FullOK fallback would serve; the call
// succeeds, so none does.
const fallbackValue = -1

// FullOK: a per-attempt 1s timeout, 3 attempts, a breaker around them and a
// fallback around all; the call succeeds without looking at its context.
// For peers without one composed API, the combination a Go user would
// assemble.
func BenchmarkFullOK(b *testing.B) { benchFull(b, false) }

// FullWaitOK: FullOK with a call that looks at its context's Done channel
// first, as any call doing I/O does (waitFn): resil's Timeout then arms a
// timer too, as the peers' timeouts always do.
func BenchmarkFullWaitOK(b *testing.B) { benchFull(b, true) }

// benchFull runs FullOK's combination on each system; with watch, the work
// looks at its context first (waitFn).
func benchFull(b *testing.B, watch bool) {
	ctx := context.Background()
	work := workFn
	if watch {
		work = waitFn
	}
	attempt := func(ctx context.Context) (int, error) {
		tctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return work(tctx)
	}
	systems := map[string]func(b *testing.B) func() (int, error){
		"resil": func(*testing.B) func() (int, error) {
			p := resil.New[int]().
				Timeout(timeout).
				Retry(resil.RetryPolicy{MaxAttempts: attempts, Backoff: resil.Constant(0)}).
				Breaker(resil.NewBreaker(resil.BreakerPolicy{})).
				Fallback(func(context.Context, error) (int, error) { return fallbackValue, nil })
			return func() (int, error) { return p.Run(ctx, work) }
		},
		"failsafe": func(*testing.B) func() (int, error) {
			// failsafe.With(outer, ..., inner).
			fs := failsafe.With[int](
				fsfallback.NewWithResult[int](fallbackValue),
				fscb.NewWithDefaults[int](),
				fsretry.NewBuilder[int]().WithMaxAttempts(attempts).WithDelay(0).Build(),
				fstimeout.New[int](timeout),
			)
			if !watch {
				get := func() (int, error) { return work(ctx) }
				return func() (int, error) { return fs.Get(get) }
			}
			// The attempt's context is the execution's (with failsafe's
			// timeout), as in TimeoutWaitOK.
			fs = fs.WithContext(ctx)
			get := func(e failsafe.Execution[int]) (int, error) { return work(e.Context()) }
			return func() (int, error) { return fs.GetWithExecution(get) }
		},
		"gobreaker+cenkalti": func(*testing.B) func() (int, error) {
			gb := gobreaker.NewCircuitBreaker[int](gobreaker.Settings{})
			opts := []backoff.RetryOption{backoff.WithBackOff(&backoff.ZeroBackOff{}), backoff.WithMaxTries(attempts)}
			op := func() (int, error) { return attempt(ctx) }
			req := func() (int, error) { return backoff.Retry(ctx, op, opts...) }
			return func() (int, error) {
				v, err := gb.Execute(req)
				if err != nil {
					return fallbackValue, nil
				}
				return v, nil
			}
		},
		"eapache": func(*testing.B) func() (int, error) {
			br := eabreaker.New(5, 1, 5*time.Second)
			re := retrier.New(retrier.ConstantBackoff(attempts-1, 0), nil)
			return func() (int, error) {
				var v int
				err := br.Run(func() error {
					return re.RunFn(ctx, func(ctx context.Context, _ int) error {
						var err error
						v, err = attempt(ctx)
						return err
					})
				})
				if err != nil {
					return fallbackValue, nil
				}
				return v, nil
			}
		},
		"hystrix+cenkalti": func(b *testing.B) func() (int, error) {
			// hystrix brings the timeout, breaker and fallback; it has no
			// retry, so cenkalti/backoff retries inside it.
			hx := hystrixCommand(b.Name(), hystrix.CommandConfig{})
			opts := []backoff.RetryOption{backoff.WithBackOff(&backoff.ZeroBackOff{}), backoff.WithMaxTries(attempts)}
			fallback := func(context.Context, error) error { return nil }
			return func() (int, error) {
				var v int
				err := hystrix.DoC(ctx, hx, func(ctx context.Context) error {
					var err error
					v, err = backoff.Retry(ctx, func() (int, error) { return work(ctx) }, opts...)
					return err
				}, fallback)
				return v, err
			}
		},
	}
	for _, name := range []string{"resil", "failsafe", "gobreaker+cenkalti", "eapache", "hystrix+cenkalti"} {
		b.Run(name, func(b *testing.B) {
			run(b, systems[name](b))
		})
	}
}

// NoTimeoutOK: Retry+Breaker+Fallback, the call succeeds. resil only: the
// budget is 0 allocs and at most 12 times the bare call (Direct/bare).
func BenchmarkNoTimeoutOK(b *testing.B) {
	ctx := context.Background()
	p := resil.New[int]().
		Retry(resil.RetryPolicy{MaxAttempts: attempts, Backoff: resil.Constant(0)}).
		Breaker(resil.NewBreaker(resil.BreakerPolicy{})).
		Fallback(func(context.Context, error) (int, error) { return fallbackValue, nil })
	b.Run("resil", func(b *testing.B) {
		run(b, func() (int, error) { return p.Run(ctx, workFn) })
	})
}
