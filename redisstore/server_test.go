package redisstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/resil-go/resil/redisstore"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The outage tests make the client log every failed dial; the tests
	// check what matters.
	redis.SetLogger(quiet{})
	goleak.VerifyTestMain(m,
		// Toxiproxy's own: once a toxic is removed, a link's no-op stage
		// can stay blocked sending to a stage that a stopped proxy no
		// longer reads (it has a history of such hangs). Nothing of the
		// store's.
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"))
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// startRedis starts a redis-server for t, or skips t (see StartRedis).
var startRedis = redisstore.StartRedis

// client returns a client for addr with the short timeouts a store wants,
// closed at the test's end.
func client(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		DialTimeout:           100 * time.Millisecond,
		ReadTimeout:           100 * time.Millisecond,
		WriteTimeout:          100 * time.Millisecond,
		PoolTimeout:           100 * time.Millisecond,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}
