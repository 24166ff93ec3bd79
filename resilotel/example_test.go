package resilotel_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resilotel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// An observer built on a MeterProvider records every observed pipeline's
// calls, attempts and retries; here a ManualReader collects them.
func ExampleNewObserver() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()

	obs, err := resilotel.NewObserver(mp)
	if err != nil {
		panic(err)
	}
	p := resil.New[int]().
		Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)}).
		Named("users").
		Observe(obs)
	calls := 0
	_, _ = p.Run(context.Background(), func(context.Context) (int, error) {
		if calls++; calls < 3 {
			return 0, errors.New("503")
		}
		return 1, nil
	})

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		panic(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
			for _, dp := range sum.DataPoints {
				fmt.Printf("%s %s %d\n", m.Name, dp.Attributes.Encoded(attributeEncoder), dp.Value)
			}
		}
	}
	// Unordered output:
	// resil.attempts resil.pipeline=users 3
	// resil.retries resil.pipeline=users 2
	// resil.calls resil.outcome=success,resil.pipeline=users 1
}
