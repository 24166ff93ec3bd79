package resilhttp_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resilhttp"
	"github.com/stretchr/testify/assert"
)

// pipelines are the Transport configurations measured against a bare
// http.Transport.
func pipelines() []struct {
	name string
	p    resil.Pipeline[*http.Response]
} {
	return []struct {
		name string
		p    resil.Pipeline[*http.Response]
	}{
		{"empty", resil.New[*http.Response]()},
		{"retry", resil.New[*http.Response]().Retry(resil.RetryPolicy{})},
		{"retry+breaker", resil.New[*http.Response]().Retry(resil.RetryPolicy{}).Breaker(resil.NewBreaker(resil.BreakerPolicy{}))},
		{"timeout+retry", resil.New[*http.Response]().Timeout(time.Minute).Retry(resil.RetryPolicy{})},
	}
}

// BenchmarkRoundTrip compares a request through Transport with the same
// request through the bare http.Transport it wraps, on a loopback
// keep-alive connection. Compare ns/op and allocs/op within one run.
func BenchmarkRoundTrip(b *testing.B) {
	s := newServer(b, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }, nil)
	bare := base(b)
	req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
	run := func(b *testing.B, rt http.RoundTripper) {
		b.ReportAllocs()
		for b.Loop() {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	}
	b.Run("bare", func(b *testing.B) { run(b, bare) })
	// The baseline for "timeout+retry": what a caller pays to bound a
	// request with its own context, without resil.
	b.Run("bare+timeout", func(b *testing.B) { run(b, timeoutRT{bare}) })
	for _, p := range pipelines() {
		b.Run(p.name, func(b *testing.B) { run(b, &resilhttp.Transport{Base: bare, Pipeline: p.p}) })
	}
}

// BenchmarkRoundTripPaired measures Transport's overhead on a loaded
// machine, where consecutive benchmarks see different load: each iteration
// sends one request through the bare http.Transport and one through
// Transport, back to back in alternating order, and the reported
// overhead-% is the median of the per-pair differences over the median
// bare request. (Separate benchmarks, compared by their ns/op, are only
// meaningful on a quiet machine.)
func BenchmarkRoundTripPaired(b *testing.B) {
	s := newServer(b, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }, nil)
	bare := base(b)
	req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
	timed := func(rt http.RoundTripper) int64 {
		start := time.Now()
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return int64(time.Since(start))
	}
	for _, p := range pipelines() {
		b.Run(p.name, func(b *testing.B) {
			var barePlain timeoutRT // the baseline for a Timeout stage bounds its requests too
			var baseline http.RoundTripper = bare
			if p.name == "timeout+retry" {
				barePlain = timeoutRT{bare}
				baseline = barePlain
			}
			tr := &resilhttp.Transport{Base: bare, Pipeline: p.p}
			var bares, diffs []int64
			for i := 0; b.Loop(); i++ {
				var tb, tt int64
				if i%2 == 0 {
					tb = timed(baseline)
					tt = timed(tr)
				} else {
					tt = timed(tr)
					tb = timed(baseline)
				}
				bares = append(bares, tb)
				diffs = append(diffs, tt-tb)
			}
			mb, md := median(bares), median(diffs)
			b.ReportMetric(float64(mb), "bare-ns/req")
			b.ReportMetric(float64(md), "added-ns/req")
			b.ReportMetric(100*float64(md)/float64(mb), "overhead-%")
		})
	}
}

func median(v []int64) int64 {
	slices.Sort(v)
	return v[len(v)/2]
}

// timeoutRT bounds each request with a context of its own, cancelled when
// the body is closed, as http.Client does for Client.Timeout.
type timeoutRT struct{ rt http.RoundTripper }

func (t timeoutRT) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), time.Minute)
	resp, err := t.rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error { err := c.ReadCloser.Close(); c.cancel(); return err }

// BenchmarkOverhead measures Transport alone: a Base that answers at once
// and allocates nothing, so ns/op is what Transport adds to each request.
func BenchmarkOverhead(b *testing.B) {
	resp := &http.Response{StatusCode: 200, Status: "200 OK", Body: http.NoBody}
	req, _ := http.NewRequest(http.MethodGet, "http://example.test/", nil)
	for _, p := range pipelines() {
		b.Run(p.name, func(b *testing.B) {
			tr := &resilhttp.Transport{Base: static{resp}, Pipeline: p.p}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tr.RoundTrip(req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// static is a Base that allocates nothing: the same response every time.
type static struct{ resp *http.Response }

func (s static) RoundTrip(*http.Request) (*http.Response, error) { return s.resp, nil }

// TestRoundTripAllocs pins what Transport adds to Base: one allocation per
// request (its call state) with stages that need no context of their own.
// Under a Timeout stage (6 allocations of its own: its context, which the
// transport arms by watching it, 5 with context.WithDeadline) the attempt gets a request copy with a cancellable context and a watch on the
// stage's context (7 more; see RoundTrip).
func TestRoundTripAllocs(t *testing.T) {
	resp := &http.Response{StatusCode: 200, Status: "200 OK", Body: http.NoBody}
	req, _ := http.NewRequest(http.MethodGet, "http://example.test/", nil)
	want := map[string]float64{"empty": 1, "retry": 1, "retry+breaker": 1, "timeout+retry": 14}
	for _, p := range pipelines() {
		tr := &resilhttp.Transport{Base: static{resp}, Pipeline: p.p}
		got := testing.AllocsPerRun(1000, func() {
			if _, err := tr.RoundTrip(req); err != nil {
				t.Fatal(err)
			}
		})
		assert.Equal(t, want[p.name], got, p.name)
	}
}
