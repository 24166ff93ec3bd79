// Package benchmarks measures resil side by side with the Go libraries a
// programmer would pick instead: failsafe-go, sony/gobreaker, cenkalti/backoff,
// avast/retry-go, eapache/go-resiliency and afex/hystrix-go.
//
// Every scenario is a Go benchmark named BenchmarkScenario/system, so that
// one run on one machine compares them all; run.sh runs them with enough
// repetitions for benchstat and prints, per scenario, resil's median ns/op
// and allocs/op, each peer's, and resil's ratio to the fastest peer. Each
// peer is configured to do the same work as resil: the same number of
// attempts, no delay between them (no jitter sleeps either), the same
// timeout, and its closures are built once, outside the measured loop,
// whenever its API allows.
//
// This is a nested module so that the peers never become dependencies of
// resil itself.
package benchmarks
