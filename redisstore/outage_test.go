package redisstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/resil-go/resil"
	"github.com/resil-go/resil/redisstore"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The store's Timeout in these tests: the default.
const storeTimeout = 100 * time.Millisecond

// timed runs one call on r and returns how long it took and its error.
func timed(r *replica, fail bool) (time.Duration, error) {
	start := time.Now()
	err := r.call(fail)
	return time.Since(start), err
}

func TestRedisStoppedAndRestarted(t *testing.T) {
	srv := startRedis(t)
	const (
		syncEvery = 100 * time.Millisecond
		openFor   = 300 * time.Millisecond
	)
	f := newFleet(t, srv.Addr(), 2, redisstore.Options{SyncEvery: syncEvery, Timeout: storeTimeout},
		resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor})
	waitSynced(t, f, syncEvery)

	srv.Stop()
	for _, r := range f {
		took, err := timed(r, false)
		require.NoError(t, err, "nothing fails because Redis does")
		assert.Less(t, took, storeTimeout)
	}
	// Each replica is a local breaker now: a trip stays where it happened.
	require.ErrorIs(t, f[0].call(true), errDown)
	require.Equal(t, resil.StateOpen, f[0].b.State())
	time.Sleep(3 * syncEvery) // syncs that fail
	require.Equal(t, resil.StateClosed, f[1].b.State())
	require.NoError(t, f[1].call(false))
	// Half-open, the trial is local, and waits on Redis no longer than
	// Timeout.
	require.Eventually(t, func() bool { return f[0].b.State() == resil.StateHalfOpen }, converge, time.Millisecond)
	took, err := timed(f[0], false)
	require.NoError(t, err)
	assert.LessOrEqual(t, took, storeTimeout+slack)
	require.Equal(t, resil.StateClosed, f[0].b.State())

	// The server comes back empty (no keys, no scripts): the stores
	// reconnect and resynchronise by themselves.
	srv.Start()
	f[1].tripAlone(t)
	f.waitAll(t, resil.StateOpen, converge)
}

// tripAlone fails calls on r until its breaker opens (its window may hold
// successes).
func (r *replica) tripAlone(t *testing.T) {
	t.Helper()
	for n := 0; r.b.State() == resil.StateClosed; n++ {
		require.Less(t, n, 1000, "the breaker does not trip")
		require.ErrorIs(t, r.call(true), errDown)
	}
}

func TestRedisLosesTheFleetsState(t *testing.T) {
	srv := startRedis(t)
	const syncEvery = 100 * time.Millisecond
	f := newFleet(t, srv.Addr(), 3, redisstore.Options{SyncEvery: syncEvery},
		resil.BreakerPolicy{MinCalls: 1, OpenFor: time.Minute})
	waitSynced(t, f, syncEvery)
	require.ErrorIs(t, f[0].call(true), errDown)
	f.waitAll(t, resil.StateOpen, converge)

	// A restart without persistence: the fleet's keys are gone. The
	// replicas seed the fleet again from their own state (open) instead of
	// adopting an empty, closed one.
	srv.Stop()
	srv.Start()
	require.Eventually(t, func() bool {
		return f[0].store.Connected() && f[1].store.Connected() && f[2].store.Connected()
	}, converge, time.Millisecond)
	time.Sleep(3 * syncEvery) // syncs after the restart
	assert.True(t, f.all(resil.StateOpen), "the fleet stays open")
	require.ErrorIs(t, f[1].call(false), resil.ErrBreakerOpen)
}

// toxic is one way the network between a store and Redis goes wrong.
type toxic struct {
	name string
	json string // the toxic, as toxiproxy's API takes it
	// honors: the client bounds its I/O by the context's deadline
	// (ContextTimeoutEnabled); without it, an abandoned round trip lasts
	// until the client's ReadTimeout (1s here), which the call must not
	// wait for.
	honors bool
}

var toxics = []toxic{
	{"latency", `{"name":"t","type":"latency","stream":"downstream","attributes":{"latency":1000}}`, true},
	{"reset", `{"name":"t","type":"reset_peer","stream":"upstream","attributes":{"timeout":0}}`, true},
	{"silent peer", `{"name":"t","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`, true},
	{"silent peer, client without context deadlines", `{"name":"t","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`, false},
}

// startProxy starts an in-process Toxiproxy in front of upstream.
func startProxy(t *testing.T, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "redis", "127.0.0.1:0", upstream)
	require.NoError(t, p.Start())
	t.Cleanup(p.Stop)
	return p
}

func TestToxicNetwork(t *testing.T) {
	for _, tc := range toxics {
		t.Run(tc.name, func(t *testing.T) {
			srv := startRedis(t)
			proxy := startProxy(t, srv.Addr())
			const (
				syncEvery = 100 * time.Millisecond
				openFor   = 300 * time.Millisecond
			)
			var f fleet
			for range 2 {
				c := redis.NewClient(&redis.Options{
					Addr:                  proxy.Listen,
					DialTimeout:           storeTimeout,
					ReadTimeout:           time.Second,
					WriteTimeout:          time.Second,
					PoolTimeout:           time.Second,
					ContextTimeoutEnabled: tc.honors,
					MaxRetries:            -1,
				})
				s := redisstore.New(c, redisstore.Options{SyncEvery: syncEvery, Timeout: storeTimeout})
				// Cleanups run last in, first out: the store, then its client.
				t.Cleanup(func() { _ = c.Close() })
				t.Cleanup(func() { require.NoError(t, s.Close()) })
				f = append(f, &replica{store: s, b: s.Breaker("dep", resil.BreakerPolicy{MinCalls: 1, OpenFor: openFor})})
			}
			waitSynced(t, f, syncEvery)
			require.ErrorIs(t, f[0].call(true), errDown)
			f.waitAll(t, resil.StateOpen, converge)
			f.waitAll(t, resil.StateHalfOpen, converge)

			_, err := proxy.Toxics.AddToxicJson(strings.NewReader(tc.json))
			require.NoError(t, err)
			// The fleet's trial place is behind the toxic: the trial waits
			// at most Timeout, then runs as a local breaker's would.
			took, err := timed(f[1], false)
			require.NoError(t, err)
			assert.LessOrEqual(t, took, storeTimeout+slack)
			require.Equal(t, resil.StateClosed, f[1].b.State())
			for range 100 {
				took, err := timed(f[1], false)
				require.NoError(t, err)
				assert.Less(t, took, storeTimeout/2, "closed calls never wait on Redis")
			}
			time.Sleep(3 * syncEvery) // syncs that fail
			assert.Equal(t, resil.StateHalfOpen, f[0].b.State(), "the fleet could not hear of replica 1's close")

			require.NoError(t, proxy.Toxics.RemoveToxic(context.Background(), "t"))
			// Replica 1's local close reaches the fleet once Redis answers.
			f.waitAll(t, resil.StateClosed, converge)
			f[1].tripAlone(t)
			f.waitAll(t, resil.StateOpen, converge)
		})
	}
}
