package resilotel_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/internal/cyclicerr"
	"github.com/resil-go/resil/resilotel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const ms = time.Millisecond

var errFlaky = errors.New("flaky")

// script returns an fn whose attempts play steps in turn: an error to
// return, or errBlock to wait for the context's end. Once the steps run
// out it succeeds.
var errBlock = errors.New("block")

func script(steps ...error) func(context.Context) (int, error) {
	i := 0
	return func(ctx context.Context) (int, error) {
		if i >= len(steps) {
			return 1, nil
		}
		err := steps[i]
		i++
		if err == errBlock {
			<-ctx.Done()
			return 0, ctx.Err()
		}
		return 0, err
	}
}

// collected is one collection, by instrument name.
type collected map[string]metricdata.Metrics

func collect(t *testing.T, r *sdkmetric.ManualReader) collected {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out := collected{}
	for _, sm := range rm.ScopeMetrics {
		require.Equal(t, resilotel.ScopeName, sm.Scope.Name)
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

var attributeEncoder = attribute.DefaultEncoder()

func key(s attribute.Set) string { return s.Encoded(attributeEncoder) }

// counts returns a monotonic int64 sum's points by attributes.
func (c collected) counts(t *testing.T, name string) map[string]int64 {
	t.Helper()
	m, ok := c[name]
	require.True(t, ok, "no %s", name)
	sum, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is %T", name, m.Data)
	require.True(t, sum.IsMonotonic)
	out := map[string]int64{}
	for _, p := range sum.DataPoints {
		out[key(p.Attributes)] = p.Value
	}
	return out
}

type hist struct {
	count uint64
	sum   float64
}

func (c collected) histograms(t *testing.T, name string) map[string]hist {
	t.Helper()
	h, ok := c[name].Data.(metricdata.Histogram[float64])
	require.True(t, ok, "%s is %T", name, c[name].Data)
	out := map[string]hist{}
	for _, p := range h.DataPoints {
		out[key(p.Attributes)] = hist{p.Count, p.Sum}
	}
	return out
}

func (c collected) gauge(t *testing.T, name string) map[string]int64 {
	t.Helper()
	g, ok := c[name].Data.(metricdata.Gauge[int64])
	require.True(t, ok, "%s is %T", name, c[name].Data)
	out := map[string]int64{}
	for _, p := range g.DataPoints {
		out[key(p.Attributes)] = p.Value
	}
	return out
}

func TestObserverRecords(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()
		obs, err := resilotel.NewObserver(mp)
		require.NoError(t, err)

		ctx := context.Background()
		b := resil.NewBreaker(resil.BreakerPolicy{MinCalls: 2, FailureRatio: 0.5, OpenFor: time.Second})
		users := resil.New[int]().Timeout(50 * ms).
			Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(10 * ms)}).
			Breaker(b).Named("users").Observe(obs)
		fb := func(context.Context, error) (int, error) { return 2, nil }
		usersFB := users.Fallback(fb)
		orders := resil.New[int]().Timeout(20 * ms).Named("orders").Observe(obs)

		run := func(p resil.Pipeline[int], ctx context.Context, steps ...error) error {
			_, err := p.Run(ctx, script(steps...))
			return err
		}
		require.NoError(t, run(users, ctx))                              // 1 attempt
		require.NoError(t, run(users, ctx, errBlock))                    // timeout, retry: 60ms
		require.Error(t, run(users, ctx, errFlaky, errFlaky, errFlaky))  // 3 attempts: 20ms
		require.Error(t, run(users, ctx, errFlaky, errFlaky, errFlaky))  // trips the breaker
		require.ErrorIs(t, run(users, ctx), resil.ErrBreakerOpen)        // rejected
		require.NoError(t, run(usersFB, ctx))                            // rejected, fallback
		require.ErrorIs(t, run(orders, ctx, errBlock), resil.ErrTimeout) // 20ms
		canceled, cancel := context.WithCancel(ctx)
		cancel()
		require.ErrorIs(t, run(orders, canceled, errBlock), context.Canceled) // canceled

		c := collect(t, reader)
		assert.Equal(t, map[string]int64{"resil.pipeline=users": 1}, c.gauge(t, "resil.breaker.state"), "open")

		time.Sleep(time.Second)
		require.NoError(t, run(users, ctx)) // the trial closes the breaker

		c = collect(t, reader)
		assert.Equal(t, map[string]int64{
			"resil.outcome=success,resil.pipeline=users":   4,
			"resil.outcome=failure,resil.pipeline=users":   2,
			"resil.outcome=rejected,resil.pipeline=users":  1,
			"resil.outcome=timeout,resil.pipeline=orders":  1,
			"resil.outcome=canceled,resil.pipeline=orders": 1,
		}, c.counts(t, "resil.calls"))
		assert.Equal(t, map[string]int64{"resil.pipeline=users": 10, "resil.pipeline=orders": 2}, c.counts(t, "resil.attempts"))
		assert.Equal(t, map[string]int64{"resil.pipeline=users": 5}, c.counts(t, "resil.retries"))
		assert.Equal(t, map[string]int64{"resil.pipeline=users": 1, "resil.pipeline=orders": 1}, c.counts(t, "resil.timeouts"))
		assert.Equal(t, map[string]int64{"resil.pipeline=users,resil.rejection.reason=breaker_open": 2}, c.counts(t, "resil.rejections"))
		assert.Equal(t, map[string]int64{"resil.pipeline=users": 1}, c.counts(t, "resil.fallbacks"))
		assert.Equal(t, map[string]int64{
			"resil.breaker.state=open,resil.pipeline=users":      1,
			"resil.breaker.state=half-open,resil.pipeline=users": 1,
			"resil.breaker.state=closed,resil.pipeline=users":    1,
		}, c.counts(t, "resil.breaker.transitions"))
		assert.Equal(t, map[string]int64{"resil.pipeline=users": 0}, c.gauge(t, "resil.breaker.state"), "closed")

		h := c.histograms(t, "resil.call.duration")
		require.Len(t, h, 5)
		assert.Equal(t, uint64(4), h["resil.outcome=success,resil.pipeline=users"].count)
		assert.InDelta(t, 0.06, h["resil.outcome=success,resil.pipeline=users"].sum, 1e-9)
		assert.Equal(t, uint64(2), h["resil.outcome=failure,resil.pipeline=users"].count)
		assert.InDelta(t, 0.04, h["resil.outcome=failure,resil.pipeline=users"].sum, 1e-9)
		assert.Equal(t, uint64(1), h["resil.outcome=rejected,resil.pipeline=users"].count)
		assert.InDelta(t, 0.02, h["resil.outcome=timeout,resil.pipeline=orders"].sum, 1e-9)
		assert.InDelta(t, 0.0, h["resil.outcome=canceled,resil.pipeline=orders"].sum, 1e-9)
	})
}

func TestObserverInstruments(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()
	obs, err := resilotel.NewObserver(mp)
	require.NoError(t, err)
	// One event of each kind, so that every instrument has a point.
	for _, e := range []resil.Event{
		{Kind: resil.EventAttempt, Attempt: 1},
		{Kind: resil.EventRetry, Attempt: 1, Err: errFlaky},
		{Kind: resil.EventTimeout, Err: resil.ErrTimeout},
		{Kind: resil.EventRejected, Err: errFlaky},
		{Kind: resil.EventFallback, Err: errFlaky},
		{Kind: resil.EventStateChange, From: resil.StateClosed, To: resil.StateOpen},
		{Kind: resil.EventStateChange, From: resil.StateOpen, To: resil.BreakerState(9)}, // unknown: ignored
		{Kind: resil.EventFailure, Err: errFlaky, Elapsed: 1500 * ms},
	} {
		obs.Observe(context.Background(), e)
	}
	c := collect(t, reader)
	units := map[string]string{}
	for name, m := range c {
		units[name] = m.Unit
		assert.NotEmpty(t, m.Description, name)
	}
	assert.Equal(t, map[string]string{
		"resil.calls":               "{call}",
		"resil.call.duration":       "s",
		"resil.attempts":            "{attempt}",
		"resil.retries":             "{retry}",
		"resil.timeouts":            "{timeout}",
		"resil.rejections":          "{rejection}",
		"resil.fallbacks":           "{fallback}",
		"resil.breaker.transitions": "{transition}",
		"resil.breaker.state":       "{state}",
	}, units)
	assert.Equal(t, map[string]int64{"resil.pipeline=,resil.rejection.reason=other": 1}, c.counts(t, "resil.rejections"))
	assert.Equal(t, map[string]int64{"resil.pipeline=": 1}, c.gauge(t, "resil.breaker.state"))
	h := c.histograms(t, "resil.call.duration")
	assert.Equal(t, hist{1, 1.5}, h["resil.outcome=failure,resil.pipeline="])
}

func TestNewObserverNilMeterProviderUsesGlobal(t *testing.T) {
	obs, err := resilotel.NewObserver(nil)
	require.NoError(t, err)
	obs.Observe(context.Background(), resil.Event{Kind: resil.EventSuccess}) // the global no-op provider
}

func TestObserverConcurrent(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()
	obs, err := resilotel.NewObserver(mp)
	require.NoError(t, err)
	p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 2, Backoff: resil.Constant(0)}).Observe(obs)
	done := make(chan struct{})
	const goroutines, calls = 4, 100
	for g := range goroutines {
		go func() {
			defer func() { done <- struct{}{} }()
			name := []string{"a", "b"}[g%2]
			for range calls {
				_, _ = p.Named(name).Run(context.Background(), script(errFlaky))
			}
		}()
	}
	for range goroutines {
		<-done
	}
	c := collect(t, reader)
	assert.Equal(t, map[string]int64{
		"resil.outcome=success,resil.pipeline=a": 2 * calls,
		"resil.outcome=success,resil.pipeline=b": 2 * calls,
	}, c.counts(t, "resil.calls"))
	assert.Equal(t, map[string]int64{"resil.pipeline=a": 4 * calls, "resil.pipeline=b": 4 * calls}, c.counts(t, "resil.attempts"))
}

func BenchmarkObserver(b *testing.B) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	obs, err := resilotel.NewObserver(mp)
	require.NoError(b, err)
	p := resil.New[int]().Retry(resil.RetryPolicy{}).Named("p").Observe(obs)
	ok := func(context.Context) (int, error) { return 1, nil }
	b.ReportAllocs()
	for b.Loop() {
		_, _ = p.Run(context.Background(), ok)
	}
}

func TestObserverClassifies(t *testing.T) {
	for _, c := range []struct {
		name    string
		err     error
		reason  string // of a rejection with err
		outcome string // of a call that ended with err
	}{
		{"breaker open", resil.ErrBreakerOpen, "breaker_open", "rejected"},
		{"bulkhead full", resil.ErrBulkheadFull, "bulkhead_full", "rejected"},
		{"rate limited", resil.ErrRateLimited, "rate_limited", "rejected"},
		{"wrapped rejection", fmt.Errorf("users: %w", resil.ErrBreakerOpen), "breaker_open", "rejected"},
		{"retry budget exhausted", resil.ErrRetryBudgetExhausted, "retry_budget_exhausted", "failure"},
		{"chaos fault", resil.ErrChaosFault, "chaos_fault", "failure"},
		{"timeout", resil.ErrTimeout, "other", "timeout"},
		{"caller's deadline", context.DeadlineExceeded, "other", "timeout"},
		{"canceled", context.Canceled, "other", "canceled"},
		{"retries ran out", &resil.RetryError{Attempts: 3, Err: errFlaky}, "other", "failure"},
		{"other error", errFlaky, "other", "failure"},
		// Chains on which errors.Is never returns (or overflows the
		// stack) are classified all the same: the observer is called on
		// every call's way out and must not hang it.
		{"Unwrap returns itself", &cyclicerr.Self{}, "other", "failure"},
		{"Unwrap() []error holds itself", &cyclicerr.SelfJoin{}, "other", "failure"},
		{"rejection before a cycle", errors.Join(resil.ErrRateLimited, &cyclicerr.SelfJoin{}), "rate_limited", "rejected"},
	} {
		t.Run(c.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()
			obs, err := resilotel.NewObserver(mp)
			require.NoError(t, err)
			obs.Observe(context.Background(), resil.Event{Pipeline: "p", Kind: resil.EventRejected, Err: c.err})
			obs.Observe(context.Background(), resil.Event{Pipeline: "p", Kind: resil.EventFailure, Err: c.err})
			col := collect(t, reader)
			assert.Equal(t, map[string]int64{"resil.pipeline=p,resil.rejection.reason=" + c.reason: 1}, col.counts(t, "resil.rejections"))
			assert.Equal(t, map[string]int64{"resil.outcome=" + c.outcome + ",resil.pipeline=p": 1}, col.counts(t, "resil.calls"))
		})
	}
}
