package faults_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resilhttp"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// These tests use real time on loopback: Toxiproxy's faults are real
// sockets and timers, which a synctest bubble cannot host. Bounds are
// generous (seconds for what takes milliseconds) so a loaded machine does
// not fail them.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup starts a server answering "ok" and a Toxiproxy proxy in front of
// it, and returns the proxy and its URL.
func setup(t *testing.T) (*toxiproxy.Proxy, string, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	proxy := toxiproxy.NewProxy(api, t.Name(), "127.0.0.1:0", srv.Listener.Addr().String())
	require.NoError(t, proxy.Start())
	t.Cleanup(func() {
		// Interrupt the toxics first, so that Stop's closing of the
		// connections ends every link goroutine.
		proxy.Toxics.ResetToxics(context.Background())
		proxy.Stop()
	})
	return proxy, "http://" + proxy.Listen, &hits
}

func addToxic(t *testing.T, p *toxiproxy.Proxy, json string) string {
	t.Helper()
	w, err := p.Toxics.AddToxicJson(strings.NewReader(json))
	require.NoError(t, err)
	return w.Name
}

func removeToxic(t *testing.T, p *toxiproxy.Proxy, name string) {
	t.Helper()
	require.NoError(t, p.Toxics.RemoveToxic(context.Background(), name))
}

// counter is a Base that counts its calls.
type counter struct {
	rt    http.RoundTripper
	calls atomic.Int32
}

func (c *counter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.calls.Add(1)
	return c.rt.RoundTrip(r)
}

func newClient(t *testing.T, p resil.Pipeline[*http.Response]) (*http.Client, *counter) {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c := &counter{rt: tr}
	return &http.Client{Transport: &resilhttp.Transport{Base: c, Pipeline: p}}, c
}

func get(t *testing.T, client *http.Client, url string) (string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// healOnRetry is a Retry policy whose OnRetry removes the fault after the
// first failed attempt, as a network that recovers.
func healOnRetry(t *testing.T, p *toxiproxy.Proxy, name *string, firstErr *error) resil.RetryPolicy {
	return resil.RetryPolicy{
		MaxAttempts: 3,
		Backoff:     resil.Constant(0),
		OnRetry: func(e resil.RetryEvent) {
			if *name != "" {
				*firstErr = e.Err
				removeToxic(t, p, *name)
				*name = ""
			}
		},
	}
}

func TestLatencyBelowTimeoutPasses(t *testing.T) {
	proxy, url, _ := setup(t)
	addToxic(t, proxy, `{"type":"latency","stream":"downstream","attributes":{"latency":150}}`)
	client, c := newClient(t, resil.New[*http.Response]().Timeout(5*time.Second).Retry(resil.RetryPolicy{}))
	start := time.Now()
	body, err := get(t, client, url)
	require.NoError(t, err)
	assert.Equal(t, "ok", body)
	assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "the latency was there")
	assert.Equal(t, int32(1), c.calls.Load())
}

func TestLatencyAboveTimeoutRetried(t *testing.T) {
	proxy, url, _ := setup(t)
	name := addToxic(t, proxy, `{"type":"latency","stream":"downstream","attributes":{"latency":3000}}`)
	var first error
	// The Timeout leaves the healed attempt (a new connection through the
	// proxy) ample time on a slow machine, and is far below the latency.
	client, c := newClient(t, resil.New[*http.Response]().Timeout(time.Second).Retry(healOnRetry(t, proxy, &name, &first)))
	start := time.Now()
	body, err := get(t, client, url)
	require.NoError(t, err)
	assert.Equal(t, "ok", body)
	assert.ErrorIs(t, first, resil.ErrTimeout, "the slow attempt was cut off by the Timeout stage")
	assert.Equal(t, int32(2), c.calls.Load())
	assert.Less(t, time.Since(start), 2500*time.Millisecond, "did not wait for the slow answer")
}

func TestLatencyEveryAttemptTimesOut(t *testing.T) {
	proxy, url, _ := setup(t)
	addToxic(t, proxy, `{"type":"latency","stream":"downstream","attributes":{"latency":5000}}`)
	client, c := newClient(t, resil.New[*http.Response]().Timeout(100*time.Millisecond).Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)}))
	start := time.Now()
	_, err := get(t, client, url)
	require.ErrorIs(t, err, resil.ErrTimeout)
	var re *resil.RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 3, re.Attempts)
	assert.Equal(t, int32(3), c.calls.Load())
	assert.Less(t, time.Since(start), 4*time.Second)
}

func TestResetPeerRetried(t *testing.T) {
	proxy, url, hits := setup(t)
	name := addToxic(t, proxy, `{"type":"reset_peer","stream":"upstream","attributes":{"timeout":0}}`)
	var first error
	client, c := newClient(t, resil.New[*http.Response]().Retry(healOnRetry(t, proxy, &name, &first)))
	body, err := get(t, client, url)
	require.NoError(t, err)
	assert.Equal(t, "ok", body)
	require.Error(t, first)
	assert.True(t, resil.IsTransient(first), "a reset is transient: %v", first)
	assert.Equal(t, int32(2), c.calls.Load())
	assert.Equal(t, int32(1), hits.Load(), "the reset request never reached the server")
}

func TestResetPeerEveryAttempt(t *testing.T) {
	proxy, url, _ := setup(t)
	addToxic(t, proxy, `{"type":"reset_peer","stream":"upstream","attributes":{"timeout":0}}`)
	client, c := newClient(t, resil.New[*http.Response]().Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(time.Millisecond)}))
	_, err := get(t, client, url)
	require.Error(t, err)
	var re *resil.RetryError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 3, re.Attempts)
	assert.Equal(t, int32(3), c.calls.Load())
	var ne net.Error
	if !errors.As(err, &ne) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("want a network error, got %v", err)
	}
}

func TestResetPeerPOSTNotRetried(t *testing.T) {
	proxy, url, _ := setup(t)
	addToxic(t, proxy, `{"type":"reset_peer","stream":"upstream","attributes":{"timeout":0}}`)
	client, c := newClient(t, resil.New[*http.Response]().Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)}))
	resp, err := client.Post(url, "text/plain", strings.NewReader("charge the card"))
	require.Error(t, err)
	assert.Nil(t, resp)
	assert.Equal(t, int32(1), c.calls.Load(), "a POST is sent once, whatever the fault")
}

func TestSilentPeerRetried(t *testing.T) {
	proxy, url, _ := setup(t)
	// timeout 0: data is swallowed and the connection is never closed.
	name := addToxic(t, proxy, `{"type":"timeout","stream":"upstream","attributes":{"timeout":0}}`)
	var first error
	// A Timeout that leaves the healed attempt ample time on a slow machine.
	client, c := newClient(t, resil.New[*http.Response]().Timeout(time.Second).Retry(healOnRetry(t, proxy, &name, &first)))
	start := time.Now()
	body, err := get(t, client, url)
	require.NoError(t, err)
	assert.Equal(t, "ok", body)
	assert.ErrorIs(t, first, resil.ErrTimeout)
	assert.Equal(t, int32(2), c.calls.Load())
	assert.Less(t, time.Since(start), 3*time.Second)
}

func TestSilentPeerBoundedByContext(t *testing.T) {
	proxy, url, _ := setup(t)
	addToxic(t, proxy, `{"type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)
	// No Timeout stage: only the request's deadline bounds the call.
	client, c := newClient(t, resil.New[*http.Response]().Retry(resil.RetryPolicy{MaxAttempts: 3}))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	start := time.Now()
	resp, err := client.Do(req)
	assert.Nil(t, resp)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, int32(1), c.calls.Load())
	assert.Less(t, time.Since(start), 3*time.Second)
}
