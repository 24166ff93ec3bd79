// Command fleet shows replicas of a service tripping one shared circuit
// breaker together.
//
// It starts a local redis-server (or uses REDIS_ADDR, which must answer a
// PING within pingTimeout: it exits with status 1 otherwise), then starts
// four replica processes (itself, re-executed). Each replica calls a
// dependency that fails 30% of the time, through a breaker from a
// redisstore.Store with FailureRatio 0.25 and MinCalls 40. No replica makes
// 40 calls on its own before the breaker opens: the fleet's counts trip it,
// and every replica opens within SyncEvery of the first. A replica that
// opens after MinCalls calls of its own (Redis stopped answering during
// the run) could trip on its own counts alone: the summary says so instead.
//
//	go run ./examples/fleet   # from the redisstore directory
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/resil-go/resil"
	"github.com/resil-go/resil/redisstore"
)

const (
	replicas  = 4
	syncEvery = 100 * time.Millisecond
	minCalls  = 40
	// pingTimeout bounds the check that REDIS_ADDR answers.
	pingTimeout = 2 * time.Second
)

func main() {
	if name := os.Getenv("FLEET_REPLICA"); name != "" {
		if err := replica(name, os.Getenv("REDIS_ADDR"), os.Getenv("FLEET_PREFIX")); err != nil {
			fmt.Fprintln(os.Stderr, name+":", err)
			os.Exit(1)
		}
		return
	}
	redis.SetLogger(quiet{}) // the replicas keep go-redis's log
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

// run starts redis (unless REDIS_ADDR names one) and the replicas, and
// reports when each opened.
func run() error {
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		stop, a, err := startRedis()
		if errors.Is(err, exec.ErrNotFound) {
			fmt.Println("fleet: redis-server is not installed (Debian: apt-get install redis-server), and REDIS_ADDR is not set; nothing to show.")
			return nil
		}
		if err != nil {
			return err
		}
		defer stop()
		addr = a
	} else if err := ping(addr); err != nil {
		return fmt.Errorf("redis at %s (REDIS_ADDR) does not answer PING: %w", addr, err)
	}
	fmt.Printf("redis at %s; %d replicas, each failing 30%% of its calls; policy: FailureRatio 0.25, MinCalls %d, SyncEvery %v\n",
		addr, replicas, minCalls, syncEvery)

	self, err := os.Executable()
	if err != nil {
		return err
	}
	// A prefix of this run's own: a fleet's state outlives its processes.
	prefix := "fleet-example-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		opened []opening
		failed error
	)
	start := time.Now()
	for i := 1; i <= replicas; i++ {
		name := "replica-" + strconv.Itoa(i)
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), "FLEET_REPLICA="+name, "REDIS_ADDR="+addr, "FLEET_PREFIX="+prefix)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		wg.Go(func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				// "opened <unix ns> <calls> <failures>"
				f := strings.Fields(sc.Text())
				if len(f) != 4 || f[0] != "opened" {
					fmt.Println(name+":", sc.Text())
					continue
				}
				ns, _ := strconv.ParseInt(f[1], 10, 64)
				calls, _ := strconv.Atoi(f[2])
				at := time.Unix(0, ns)
				fmt.Printf("%s: open at +%v after %s calls of its own (%s failed)\n",
					name, at.Sub(start).Round(time.Millisecond), f[2], f[3])
				mu.Lock()
				opened = append(opened, opening{name: name, at: at, calls: calls})
				mu.Unlock()
			}
			if err := cmd.Wait(); err != nil {
				mu.Lock()
				failed = errors.Join(failed, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed != nil {
		return failed
	}
	if len(opened) != replicas {
		return fmt.Errorf("%d of %d replicas opened", len(opened), replicas)
	}
	for _, line := range summary(opened) {
		fmt.Println(line)
	}
	return nil
}

// opening is one replica's report: when its breaker opened, and how many
// calls it had made by then.
type opening struct {
	name  string
	at    time.Time
	calls int
}

// summary is what the run showed, in lines to print. Replicas whose own
// calls had reached MinCalls when they opened could trip on their own
// counts alone (their failure ratio is the fleet's), so their opening
// together shows nothing of the fleet: the summary names them instead of
// claiming a fleet-wide trip.
func summary(opened []opening) []string {
	first, last := opened[0].at, opened[0].at
	var own []string // "name (calls calls)" of those at MinCalls or more
	for _, o := range opened {
		if o.at.Before(first) {
			first = o.at
		}
		if o.at.After(last) {
			last = o.at
		}
		if o.calls >= minCalls {
			own = append(own, fmt.Sprintf("%s (%d calls)", o.name, o.calls))
		}
	}
	within := fmt.Sprintf("all %d replicas opened within %v of each other (SyncEvery %v)",
		len(opened), last.Sub(first).Round(time.Millisecond), syncEvery)
	switch {
	case len(own) == 0:
		return []string{within,
			fmt.Sprintf("none had made MinCalls (%d) calls of its own: the fleet's counts tripped them", minCalls)}
	case len(own) == len(opened):
		return []string{fmt.Sprintf("no fleet-wide trip shown: every replica had made MinCalls (%d) calls of its own when it opened, "+
			"enough to trip on its own counts (did Redis stop answering?): %s", minCalls, strings.Join(own, ", "))}
	default:
		return []string{within,
			fmt.Sprintf("but %d of them had made MinCalls (%d) calls of their own, enough to trip on their own counts (did Redis stop answering?): %s",
				len(own), minCalls, strings.Join(own, ", "))}
	}
}

// ping reports whether a redis at addr answers a PING within pingTimeout.
func ping(addr string) error {
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		DialTimeout:           pingTimeout,
		ReadTimeout:           pingTimeout,
		WriteTimeout:          pingTimeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
	})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	return c.Ping(ctx).Err()
}

// quiet is a go-redis logger that drops its messages: the program reports
// the errors that matter itself.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// replica is one process of the service: it calls its flaky dependency
// until the shared breaker opens, and prints when that happened.
func replica(name, addr, prefix string) error {
	client := redis.NewClient(&redis.Options{
		Addr:                  addr,
		DialTimeout:           100 * time.Millisecond,
		ReadTimeout:           100 * time.Millisecond,
		WriteTimeout:          100 * time.Millisecond,
		ContextTimeoutEnabled: true,
	})
	defer client.Close()
	store := redisstore.New(client, redisstore.Options{Prefix: prefix, SyncEvery: syncEvery, Replica: name})
	defer store.Close()

	opened := make(chan time.Time, 1)
	breaker := store.Breaker("payments", resil.BreakerPolicy{
		FailureRatio: 0.25,
		MinCalls:     minCalls,
		OpenFor:      time.Minute,
		OnStateChange: func(from, to resil.BreakerState) {
			if to == resil.StateOpen {
				select {
				case opened <- time.Now():
				default:
				}
			}
		},
	})
	p := resil.New[string]().Breaker(breaker)
	errUnavailable := errors.New("payments: 503")
	calls, failures := 0, 0
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case at := <-opened:
			fmt.Println("opened", at.UnixNano(), calls, failures)
			return nil
		case <-deadline:
			return errors.New("the breaker never opened")
		case <-tick.C:
		}
		_, err := p.Run(context.Background(), func(context.Context) (string, error) {
			calls++
			if calls%10 == 3 || calls%10 == 6 || calls%10 == 9 {
				failures++
				return "", errUnavailable
			}
			return "ok", nil
		})
		_ = err // the breaker counts it; a real service would fall back
	}
}

// startRedis starts a redis-server on a free loopback port, without
// persistence, and returns a function that stops it.
func startRedis() (stop func(), addr string, err error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "fleet-redis")
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	stop = func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		os.RemoveAll(dir)
	}
	addr = "127.0.0.1:" + strconv.Itoa(port)
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	for deadline := time.Now().Add(5 * time.Second); c.Ping(context.Background()).Err() != nil; {
		if time.Now().After(deadline) {
			stop()
			return nil, "", errors.New("redis-server did not start on " + addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return stop, addr, nil
}
