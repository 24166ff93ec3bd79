package resiltest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resiltest"
)

// printT stands in for a test's *testing.T in these examples: it prints
// what an assertion reports.
type printT struct{}

func (printT) Helper() {}

func (printT) Errorf(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// A dependency that fails twice and then answers, behind a retrying
// pipeline. In a test, t is the *testing.T; wrap the test in
// synctest.Test to make latencies and backoffs take no real time (see the
// package documentation).
func Example() {
	t := printT{}
	dep := resiltest.Script[int](resiltest.Fail(io.ErrUnexpectedEOF, 2), resiltest.Return(42))
	p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(0)})

	v, err := p.Run(context.Background(), dep.Call)

	fmt.Println(v, err)
	resiltest.AssertAttempts(t, dep, 3) // passes: prints nothing
	resiltest.AssertAttempts(t, dep, 2) // fails: reports to t
	// Output:
	// 42 <nil>
	// resiltest: want 2 attempts, got 3
}

func ExampleScript() {
	dep := resiltest.Script[string](
		resiltest.Fail(io.ErrUnexpectedEOF, 2),
		resiltest.Return("hello"),
	)
	for range 4 { // the last step repeats when the script runs out
		v, err := dep.Call(context.Background())
		fmt.Printf("%q %v\n", v, err)
	}
	// Output:
	// "" unexpected EOF
	// "" unexpected EOF
	// "hello" <nil>
	// "hello" <nil>
}

func ExampleReturn() {
	dep := resiltest.Script[int64](resiltest.Return[int64](1), resiltest.Return(int64(2)))
	a, _ := dep.Call(context.Background())
	b, _ := dep.Call(context.Background())
	fmt.Println(a, b)
	// Output: 1 2
}

func ExampleFail() {
	errBadRequest := errors.New("bad request")
	dep := resiltest.Script[int](
		resiltest.Fail(resil.Permanent(errBadRequest), 1), // never retried
		resiltest.Return(1),
	)
	p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0)})
	_, err := p.Run(context.Background(), dep.Call)
	fmt.Println(errors.Is(err, errBadRequest), dep.Count())
	// Output: true 1
}

func ExampleHang() {
	dep := resiltest.Script[int](resiltest.Hang(), resiltest.Return(7))
	p := resil.New[int]().
		Timeout(10 * time.Millisecond). // each attempt
		Retry(resil.RetryPolicy{Backoff: resil.Constant(0)})
	v, err := p.Run(context.Background(), dep.Call)
	fmt.Println(v, err)
	fmt.Println(dep.Calls()[0].Err)
	// Output:
	// 7 <nil>
	// context deadline exceeded
}

func ExamplePanic() {
	dep := resiltest.Script[int](resiltest.Panic("out of range"))
	defer func() {
		fmt.Println("recovered:", recover(), "recorded:", dep.Calls()[0].Panicked)
	}()
	_, _ = resil.New[int]().Run(context.Background(), dep.Call)
	// Output: recovered: out of range recorded: true
}

func ExampleStep_After() {
	dep := resiltest.Script[string](resiltest.Return("slow").After(time.Minute)) // the 5ms timeout ends it first
	p := resil.New[string]().Timeout(5 * time.Millisecond)
	_, err := p.Run(context.Background(), dep.Call)
	fmt.Println(errors.Is(err, resil.ErrTimeout))
	// Output: true
}

func ExampleStep_Times() {
	dep := resiltest.Script[int](resiltest.Return(1).Times(2), resiltest.Return(2))
	for range 3 {
		v, _ := dep.Call(context.Background())
		fmt.Print(v, " ")
	}
	fmt.Println()
	// Output: 1 1 2
}

func ExampleStep_String() {
	fmt.Println(resiltest.Fail(io.ErrUnexpectedEOF, 2).After(time.Second))
	fmt.Println(resiltest.Return(42))
	// Output:
	// fail(unexpected EOF)×2 after 1s
	// return(42)
}

func ExampleFake_Call() {
	dep := resiltest.Script[int](resiltest.Return(1))
	// Call is what Run wants.
	v, err := resil.New[int]().Run(context.Background(), dep.Call)
	fmt.Println(v, err)
	// Output: 1 <nil>
}

func ExampleFake_Calls() {
	dep := resiltest.Script[int](resiltest.Fail(io.EOF, 1), resiltest.Return(1))
	p := resil.New[int]().
		Timeout(time.Minute).
		Retry(resil.RetryPolicy{Backoff: resil.Constant(0)})
	_, _ = p.Run(context.Background(), dep.Call)
	for _, c := range dep.Calls() {
		fmt.Println(c.Attempt, c.Err, !c.Deadline.IsZero())
	}
	// Output:
	// 1 EOF true
	// 2 <nil> true
}

func ExampleFake_Count() {
	dep := resiltest.Script[int](resiltest.Fail(io.EOF, 1))
	p := resil.New[int]().Retry(resil.RetryPolicy{MaxAttempts: 4, Backoff: resil.Constant(0)})
	_, err := p.Run(context.Background(), dep.Call)
	fmt.Println(dep.Count(), err)
	// Output: 4 resil: gave up after 4 attempts: EOF
}

func ExampleFake_MaxConcurrent() {
	dep := resiltest.Script[int](resiltest.Hang())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { _, _ = dep.Call(ctx) })
	}
	for dep.Count() < 3 { // all three are hanging
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	fmt.Println(dep.MaxConcurrent())
	// Output: 3
}

func ExampleRandom() {
	// Seed 1 fails a quarter of the calls, give or take, and the same
	// ones every run: two fakes with the same Faults agree call by call.
	f := resiltest.Faults{Seed: 1, FailRate: 0.25}
	a, b := resiltest.Random(f, "ok"), resiltest.Random(f, "ok")
	same, fails := true, 0
	var first []int // the numbers of the first failed calls
	for n := 1; n <= 1000; n++ {
		_, errA := a.Call(context.Background())
		_, errB := b.Call(context.Background())
		same = same && errA == errB
		if errA != nil {
			fails++
			if len(first) < 5 {
				first = append(first, n)
			}
		}
	}
	fmt.Println("same outcomes:", same)
	fmt.Println("failed:", fails, "of 1000, first:", first)
	// Output:
	// same outcomes: true
	// failed: 244 of 1000, first: [5 6 8 9 10]
}

func ExampleFaults_Validate() {
	fmt.Println(resiltest.Faults{FailRate: 1.5}.Validate())
	// Output: resiltest: Faults.FailRate must be in [0, 1], got 1.5
}

func ExampleHandler() {
	h := resiltest.Handler(
		resiltest.Reply{Status: http.StatusServiceUnavailable, RetryAfter: time.Second},
		resiltest.Reply{Drop: true},
		resiltest.Reply{Body: "hello"},
	)
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for range 3 {
		resp, err := client.Get(srv.URL)
		if err != nil {
			fmt.Println("error")
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, resp.Header.Get("Retry-After"), string(body))
	}
	// Output:
	// 503 1 Service Unavailable
	// error
	// 200  hello
}

func ExampleRandomHandler() {
	h := resiltest.RandomHandler(resiltest.HTTPFaults{Seed: 3, ErrorRate: 0.5})
	codes := map[int]int{}
	for range 100 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		codes[rec.Code]++
	}
	fmt.Println(codes[200]+codes[503], codes[503] > 30 && codes[503] < 70)
	// Output: 100 true
}

func ExampleHTTPFaults_Validate() {
	fmt.Println(resiltest.HTTPFaults{ErrorRate: 0.5, DropRate: 0.75}.Validate())
	// Output: resiltest: HTTPFaults.ErrorRate+DropRate+TruncateRate must be <= 1, got 1.25
}

func ExampleFlakyHandler_ServeHTTP() {
	h := resiltest.Handler(resiltest.Reply{Status: http.StatusTooManyRequests, RetryAfter: 1500 * time.Millisecond})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	fmt.Println(rec.Code, rec.Header().Get("Retry-After"), rec.Body.String())
	// Output: 429 2 Too Many Requests
}

func ExampleFlakyHandler_Calls() {
	h := resiltest.Handler(resiltest.Reply{Status: 502}, resiltest.Reply{})
	for range 2 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}
	for _, c := range h.Calls() {
		fmt.Println(c.Attempt, c.Status)
	}
	// Output:
	// 1 502
	// 2 200
}

func ExampleFlakyHandler_Count() {
	h := resiltest.Handler()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	fmt.Println(h.Count())
	// Output: 1
}

// trip runs a pipeline guarded by a breaker that opens on its first
// failure and admits a trial after 20ms, through its whole life: a failure
// opens it, a call is rejected, a trial succeeds and closes it.
func trip(policy resil.BreakerPolicy, dep *resiltest.Fake[int]) {
	policy.MinCalls, policy.OpenFor = 1, 20*time.Millisecond
	p := resil.New[int]().Breaker(resil.NewBreaker(policy))
	_, _ = p.Run(context.Background(), dep.Call) // fails: opens
	_, _ = p.Run(context.Background(), dep.Call) // rejected
	time.Sleep(30 * time.Millisecond)
	_, _ = p.Run(context.Background(), dep.Call) // a good trial closes
}

func ExampleBreakerLog_OnStateChange() {
	var log resiltest.BreakerLog
	dep := resiltest.Script[int](resiltest.Fail(io.EOF, 1), resiltest.Return(1))
	trip(resil.BreakerPolicy{OnStateChange: log.OnStateChange}, dep)
	fmt.Println(log.States())
	// Output: [open half-open closed]
}

func ExampleBreakerLog_Transitions() {
	var log resiltest.BreakerLog
	dep := resiltest.Script[int](resiltest.Fail(io.EOF, 1), resiltest.Return(1))
	trip(resil.BreakerPolicy{OnStateChange: log.OnStateChange}, dep)
	ts := log.Transitions()
	fmt.Println(ts[0], ts[1], ts[2], ts[1].At.Sub(ts[0].At) >= 20*time.Millisecond)
	// Output: closed→open open→half-open half-open→closed true
}

func ExampleBreakerLog_States() {
	var log resiltest.BreakerLog
	log.OnStateChange(resil.StateClosed, resil.StateOpen)
	fmt.Println(log.States())
	// Output: [open]
}

func ExampleTransition_String() {
	fmt.Println(resiltest.Transition{From: resil.StateOpen, To: resil.StateHalfOpen})
	// Output: open→half-open
}

func ExampleWaits() {
	dep := resiltest.Script[int](resiltest.Fail(io.EOF, 2), resiltest.Return(1))
	p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(10 * time.Millisecond)})
	_, _ = p.Run(context.Background(), dep.Call)
	// In real time a wait is at least the backoff; in a synctest bubble it
	// is exactly the backoff.
	for _, w := range resiltest.Waits(dep) {
		fmt.Println(w >= 10*time.Millisecond)
	}
	// Output:
	// true
	// true
}

func ExampleAssertAttempts() {
	t := printT{} // a test's *testing.T
	dep := resiltest.Script[int](resiltest.Fail(io.EOF, 1), resiltest.Return(1))
	p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(0)})
	_, _ = p.Run(context.Background(), dep.Call)
	fmt.Println(resiltest.AssertAttempts(t, dep, 2))
	// Output: true
}

func ExampleAssertWaits() {
	t := printT{} // a test's *testing.T, inside synctest.Test
	dep := resiltest.Script[int](resiltest.Fail(resil.Permanent(io.EOF), 1))
	p := resil.New[int]().Retry(resil.RetryPolicy{Backoff: resil.Constant(time.Second)})
	_, _ = p.Run(context.Background(), dep.Call)
	// A permanent error is not retried: there was no wait.
	resiltest.AssertWaits(t, dep, time.Second)
	// Output: resiltest: want waits [1s] between attempts, got []
}

func ExampleAssertBreakerStates() {
	t := printT{} // a test's *testing.T
	var log resiltest.BreakerLog
	dep := resiltest.Script[int](resiltest.Fail(io.EOF, 1), resiltest.Return(1))
	trip(resil.BreakerPolicy{OnStateChange: log.OnStateChange}, dep)
	fmt.Println(resiltest.AssertBreakerStates(t, &log, resil.StateOpen, resil.StateHalfOpen, resil.StateClosed))
	// Output: true
}

func ExampleAssertNoCallWhileOpen() {
	t := printT{} // a test's *testing.T
	var log resiltest.BreakerLog
	dep := resiltest.Script[int](resiltest.Fail(io.EOF, 1), resiltest.Return(1))
	trip(resil.BreakerPolicy{OnStateChange: log.OnStateChange}, dep)
	fmt.Println(dep.Count(), resiltest.AssertNoCallWhileOpen(t, dep, &log))
	// Output: 2 true
}

// A Server needs no network: inside a synctest bubble its delays take no
// real time. Outside one, as here, it works as well.
func ExampleNewServer() {
	srv := resiltest.NewServer(resiltest.Handler(
		resiltest.Reply{Status: http.StatusBadGateway},
		resiltest.Reply{Body: "hello"},
	))
	defer srv.Close()
	for range 2 {
		resp, err := srv.Client().Get(srv.URL + "/greeting")
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, string(body))
	}
	// Output:
	// 502 Bad Gateway
	// 200 hello
}

func ExampleServer_Client() {
	h := resiltest.Handler(resiltest.Reply{Drop: true}, resiltest.Reply{Body: "ok"})
	srv := resiltest.NewServer(h)
	defer srv.Close()
	_, err := srv.Client().Get(srv.URL)
	fmt.Println(err != nil, h.Count()) // the transport does not resend by itself
	// Output: true 1
}

func ExampleServer_Transport() {
	srv := resiltest.NewServer(resiltest.Handler())
	defer srv.Close()
	// Use it as the base of another RoundTripper, such as a retrying one.
	client := &http.Client{Transport: srv.Transport()}
	resp, err := client.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.Status)
	// Output: 200 OK
}

func ExampleServer_Close() {
	srv := resiltest.NewServer(resiltest.Handler())
	srv.Close()
	_, err := srv.Client().Get(srv.URL)
	fmt.Println(err != nil)
	// Output: true
}
