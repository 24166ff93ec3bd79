// Package redisstore shares resil's circuit breakers and rate limiters
// between the replicas of a service through Redis.
//
//	store := redisstore.New(client, redisstore.Options{})
//	defer store.Close()
//	payments := store.Breaker("payments", resil.BreakerPolicy{FailureRatio: 0.25})
//	p := resil.New[*Receipt]().Breaker(payments) // used like any breaker
//
// # Breakers: no I/O per call
//
// A store's breaker is a resil.Breaker made by resil.NewSharedBreaker: a
// call through it costs what a call through a local breaker does (no
// network I/O, no allocation). A background goroutine per store exchanges
// every breaker's window counts and state with the fleet every
// Options.SyncEvery, in one pipelined round trip for all of them:
//
//   - The failure ratio and MinCalls are computed over the whole fleet's
//     counts: a failure's trip decision adds the rest of the fleet's counts
//     as of the last sync.
//   - A trip on one replica is sent at once (the failing call wakes the
//     sync goroutine) and opens the breaker on every other replica at its
//     next sync, within SyncEvery.
//   - Half-open, the fleet admits HalfOpenCalls trials in all: each takes a
//     lease in Redis (one round trip, bounded by Options.Timeout) that
//     expires after Options.TrialLease, so a crashed replica cannot hold a
//     place for ever. The fleet closes once HalfOpenCalls trials succeeded
//     anywhere; the first failed trial reopens it everywhere.
//
// # Rate limiters: one round trip per call
//
// A store's rate limiter enforces Rate and Burst across the fleet with one
// atomic Lua script per call (GCRA on the server's clock). That round trip
// is on the call's path: see the package README for its cost.
//
// # When Redis is down or slow
//
// Nothing fails because Redis does. Every round trip is bounded by
// Options.Timeout; after one fails the store stops asking Redis on the
// call path until a background sync succeeds again. Meanwhile breakers
// decide on their own counts as local breakers do, and each rate limiter
// allows its local share: Rate and Burst divided by the number of replicas
// seen at the last successful sync. The client reconnects by itself, and
// the first sync that succeeds brings every breaker back to the fleet's
// state.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/resil-go/resil"
)

// Options configures a Store. The zero value is valid: every field has a
// default.
type Options struct {
	// Prefix starts every key the store writes. "" means "resil". Replicas
	// that share state must use the same Prefix (and names).
	Prefix string
	// SyncEvery is how often the store exchanges its breakers' counts and
	// states with the fleet: one pipelined round trip each time. 0 means
	// 250ms; any other value must be at least 1ms (a sync per millisecond
	// is already aggressive: a shorter period would run syncs back to back,
	// spending Redis commands and CPU for nothing). Less, negative
	// included, is invalid.
	SyncEvery time.Duration
	// Timeout bounds every round trip the store makes, on a call's path (a
	// half-open trial, a rate-limited call) or in the background. 0 means
	// 100ms. Negative is invalid.
	Timeout time.Duration
	// TrialLease is how long a half-open trial holds its fleet-wide place
	// when its replica never reports back (it crashed); a trial that runs
	// longer may see another admitted in its place, and its success then
	// counts on its own replica only. 0 means 10s. Negative is invalid.
	TrialLease time.Duration
	// Replica names this process in the fleet. "" means a name made of the
	// host name, the process id and random bytes. Replicas must have
	// distinct names.
	Replica string
}

// minSyncEvery is the shortest Options.SyncEvery, other than 0 (the
// default), that Validate accepts.
const minSyncEvery = time.Millisecond

// Validate returns nil when o is valid, or an error naming the first
// invalid field and its value, with the message New would panic with.
func (o Options) Validate() error {
	switch {
	case o.SyncEvery != 0 && o.SyncEvery < minSyncEvery:
		return errors.New("redisstore: Options.SyncEvery must be 0 or >= " + minSyncEvery.String() + ", got " + o.SyncEvery.String())
	case o.Timeout < 0:
		return errors.New("redisstore: Options.Timeout must be >= 0, got " + o.Timeout.String())
	case o.TrialLease < 0:
		return errors.New("redisstore: Options.TrialLease must be >= 0, got " + o.TrialLease.String())
	}
	return nil
}

// Store shares breakers and rate limiters through one Redis deployment.
// It is safe for concurrent use. It runs one background goroutine, which
// Close stops.
//
// Create it with New; the zero Store is not usable. On a zero Store,
// Breaker, RateLimiter and Replicas panic with "redisstore: Store must be
// made by New, got a zero Store"; Close does nothing and returns nil, and
// Connected returns false (a zero Store has no Redis to reach).
type Store struct {
	client  redis.UniversalClient
	opts    Options
	nonce   string // random hex: this store's part of its trial lease ids and sync records
	up      atomic.Bool
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}
	calls   sync.WaitGroup // round trips running on goroutines of their own
	life    sync.RWMutex   // orders calls.Add before Close's calls.Wait
	closed  bool           // guarded by life
	fleet   atomic.Int64   // live replicas at the last sync, >= 1
	once    sync.Once

	mu       sync.Mutex
	breakers map[string]*fleetBreaker
	limiters map[string]*fleetLimiter
}

// New returns a store that shares state through client, and starts its
// background sync. The caller keeps ownership of client: Close does not
// close it. The store stops waiting for a round trip after Options.Timeout
// whatever the client's settings; set ContextTimeoutEnabled on the client,
// and keep its DialTimeout, ReadTimeout and WriteTimeout short, so that an
// abandoned round trip also ends soon (Close waits for them). New panics
// when opts is invalid (see Options.Validate) or client is nil (a nil
// interface, or a nil *redis.Client in one).
func New(client redis.UniversalClient, opts Options) *Store {
	// A nil *redis.Client (or other nil pointer) in the interface is nil
	// too: it would only fail later, in the background sync, where the
	// panic could not be recovered.
	if client == nil {
		panic("redisstore: New client must be non-nil, got nil")
	}
	if v := reflect.ValueOf(client); v.Kind() == reflect.Pointer && v.IsNil() {
		panic(fmt.Sprintf("redisstore: New client must be non-nil, got a nil %T", client))
	}
	if err := opts.Validate(); err != nil {
		panic(err.Error())
	}
	s := newStore(client, opts)
	go s.loop()
	return s
}

// newStore is New's store, its options' defaults filled in, before its
// sync goroutine starts.
func newStore(client redis.UniversalClient, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = "resil"
	}
	if opts.SyncEvery == 0 {
		opts.SyncEvery = 250 * time.Millisecond
	}
	if opts.Timeout == 0 {
		opts.Timeout = 100 * time.Millisecond
	}
	if opts.TrialLease == 0 {
		opts.TrialLease = 10 * time.Second
	}
	if opts.Replica == "" {
		opts.Replica = replicaName()
	}
	var n [4]byte
	_, _ = rand.Read(n[:])
	s := &Store{
		client:   client,
		opts:     opts,
		nonce:    hex.EncodeToString(n[:]),
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		stopped:  make(chan struct{}),
		breakers: map[string]*fleetBreaker{},
		limiters: map[string]*fleetLimiter{},
	}
	s.fleet.Store(1)
	s.up.Store(true) // until a round trip says otherwise
	return s
}

// Close stops the background sync and waits for the store's round trips
// in flight. Breakers and rate limiters made by the store keep working, on
// local state only. It does not close the client. Close is idempotent and
// always returns nil.
func (s *Store) Close() error {
	if s.done == nil {
		return nil // a zero Store: no sync goroutine to stop
	}
	s.once.Do(func() {
		s.life.Lock()
		s.closed = true
		s.up.Store(false)
		s.life.Unlock()
		close(s.done)
		<-s.stopped
		s.calls.Wait()
		// On local state only: the fleet's last counts leave the
		// breakers' windows now, since no sync will ever replace them.
		for _, fb := range s.breakerList() {
			fb.link.SetFleet(fb.link.Snapshot().Gen, 0, 0)
		}
	})
	return nil
}

func replicaName() string {
	host, _ := os.Hostname()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}

// errZeroStore is the panic of a method that needs a Store made by New.
const errZeroStore = "redisstore: Store must be made by New, got a zero Store"

// mustBeMade panics with errZeroStore when s is a zero Store.
func (s *Store) mustBeMade() {
	if s.done == nil {
		panic(errZeroStore)
	}
}

// available reports whether call paths may ask Redis: the store is open
// and the last round trip succeeded.
func (s *Store) available() bool { return s.up.Load() }

// do runs f with a context bounded by Options.Timeout and returns what it
// returns, never waiting longer than the timeout: f runs on a goroutine of
// its own, abandoned (Close waits for it) once the timeout passes. The
// goroutine makes the bound hold whatever the client does (a client
// without ContextTimeoutEnabled, or one that dials and handshakes on its
// own timeouts, may block longer than the context says); it costs about a
// microsecond, against a round trip's tens. A failure marks Redis
// unavailable until a sync succeeds.
func do[T any](s *Store, f func(ctx context.Context) (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return *new(T), errClosed
	}
	s.calls.Add(1)
	s.life.RUnlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		defer s.calls.Done()
		v, err := f(ctx)
		done <- result{v, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		r.err = ctx.Err()
	}
	if r.err != nil && !errors.Is(r.err, redis.Nil) {
		s.up.Store(false)
	}
	return r.v, r.err
}

// errClosed is what a round trip asked of a closed store returns.
var errClosed = errors.New("redisstore: store closed")

// wake asks the sync goroutine for a sync now. It never blocks.
func (s *Store) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Store) loop() {
	defer close(s.stopped)
	t := time.NewTicker(s.opts.SyncEvery)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		case <-s.kick:
		}
		s.sync()
	}
}

// key builds a key for one shared object. The braces are a hash tag: a
// breaker's keys live in one cluster slot, as its scripts require.
func (s *Store) key(kind, name, part string) string {
	return s.opts.Prefix + ":{" + kind + ":" + name + "}:" + part
}

// stale is how long a replica's report counts without a newer one: three
// missed syncs.
func (s *Store) stale() time.Duration {
	if s.opts.SyncEvery > math.MaxInt64/3 {
		return math.MaxInt64 // a SyncEvery of a century: never stale, not negative
	}
	return 3 * s.opts.SyncEvery
}

// keyTTL is how long the store's keys outlive the last replica that uses
// them.
const keyTTL = 24 * time.Hour

// fromMs is a script's milliseconds as a duration, saturated: an OpenFor
// of centuries comes back as more milliseconds than a Duration holds in
// nanoseconds, and must not wrap into the past.
func fromMs(m int64) time.Duration {
	if m > math.MaxInt64/int64(time.Millisecond) {
		return math.MaxInt64
	}
	return time.Duration(m) * time.Millisecond
}

// ms is d in whole milliseconds for the scripts, rounded up: a positive
// duration under 1ms is not sent as 0.
func ms(d time.Duration) int64 {
	m := d.Milliseconds()
	if d > 0 && d%time.Millisecond != 0 {
		m++
	}
	return m
}

// breakerList returns the store's breakers, taken under s.mu.
func (s *Store) breakerList() []*fleetBreaker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Values(s.breakers))
}

// sync is one round of the background work: in one pipelined round trip,
// every breaker publishes its counts (and its own transitions) and reads
// the fleet's; the replica's presence is refreshed for the rate limiters'
// local share. Then every breaker adopts the fleet's state.
func (s *Store) sync() {
	bs := s.breakerList()
	reqs := make([]syncRequest, len(bs))
	for i, fb := range bs {
		reqs[i] = fb.request()
	}
	type replies struct {
		cmds     []*redis.Cmd
		presence *redis.Cmd
	}
	run := func(ctx context.Context) (replies, error) {
		pipe := s.client.Pipeline()
		var r replies
		for i, fb := range bs {
			r.cmds = append(r.cmds, fb.syncCmd(ctx, pipe, reqs[i]))
		}
		r.presence = presenceScript.EvalSha(ctx, pipe, []string{s.opts.Prefix + ":replicas"},
			s.opts.Replica, ms(s.stale()), ms(keyTTL))
		_, err := pipe.Exec(ctx)
		if err != nil {
			// Exec reports the first failed command's error; look for
			// NOSCRIPT in all of them.
			for _, c := range append(r.cmds, r.presence) {
				if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
					return r, c.Err()
				}
			}
		}
		return r, err
	}
	r, err := do(s, run)
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		// The server lost its scripts (a restart or SCRIPT FLUSH): load
		// them and try once more.
		r, err = do(s, func(ctx context.Context) (replies, error) {
			for _, sc := range syncScripts {
				if err := sc.Load(ctx, s.client).Err(); err != nil {
					return replies{}, err
				}
			}
			return run(ctx)
		})
	}
	if err != nil {
		for i, fb := range bs {
			fb.lost(reqs[i])
		}
		return
	}
	s.life.RLock()
	if !s.closed { // a sync that Close did not stop in time: a closed store stays down
		s.up.Store(true)
	}
	s.life.RUnlock()
	if n, err := r.presence.Int64(); err == nil && n > 0 && n != s.fleet.Swap(n) {
		s.mu.Lock()
		for _, fl := range s.limiters {
			fl.share(n)
		}
		s.mu.Unlock()
	}
	for i, fb := range bs {
		fb.adopt(reqs[i], r.cmds[i])
	}
}

// Breaker returns the store's circuit breaker called name, made with
// policy the first time (later calls return the same breaker and ignore
// policy). Breakers of the same name (and Options.Prefix) on every replica
// act as one: see the package documentation. The replicas should agree on
// policy; a fleet-wide transition takes OpenFor and HalfOpenCalls from the
// policy of the replica that makes it. It panics when policy is invalid
// (also on a later call, whose policy is otherwise ignored), as
// resil.NewBreaker does, and on a zero Store.
func (s *Store) Breaker(name string, policy resil.BreakerPolicy) *resil.Breaker {
	s.mustBeMade()
	if err := policy.Validate(); err != nil {
		panic(err.Error()) // also when the name is taken: a bad policy is a bug wherever it comes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if fb, ok := s.breakers[name]; ok {
		return fb.link.Breaker()
	}
	fb := &fleetBreaker{
		s:    s,
		keys: []string{s.key("breaker", name, "state"), s.key("breaker", name, "counts"), s.key("breaker", name, "trials"), s.key("breaker", name, "syncs")},
	}
	_, fb.link = resil.NewSharedBreaker(policy, fb)
	p := fb.link.Policy()
	fb.openFor, fb.halfOpen = ms(p.OpenFor), int64(p.HalfOpenCalls)
	fb.synced = fb.link.Snapshot().Gen
	s.breakers[name] = fb
	s.wake() // join the fleet's state now, not at the next tick
	return fb.link.Breaker()
}

// Replicas returns the number of live replicas (stores with the same
// Prefix that synced within three SyncEvery) seen at the last successful
// sync, this one included; 1 before the first. It panics on a zero Store.
func (s *Store) Replicas() int {
	s.mustBeMade()
	return int(s.fleet.Load())
}

// Connected reports whether the store's last round trip to Redis
// succeeded; while it is false, breakers and rate limiters decide locally
// and the store retries every SyncEvery. It is false on a zero Store and
// after Close.
func (s *Store) Connected() bool { return s.up.Load() }
