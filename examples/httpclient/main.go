// Command httpclient calls a flaky local HTTP server through a plain
// http.Client and through one whose Transport is a resilhttp.Transport, and
// prints what each got, side by side. It needs no network beyond loopback
// and prints the same thing every time.
//
//	go run ./examples/httpclient
package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resilhttp"
)

// step is what the server does on one attempt at a path.
type step func(w http.ResponseWriter)

func status(code int) step {
	return func(w http.ResponseWriter) { http.Error(w, http.StatusText(code), code) }
}

func ok(w http.ResponseWriter) { _, _ = io.WriteString(w, "ok") }

func retryAfter(secs string) step {
	return func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", secs)
		status(http.StatusTooManyRequests)(w)
	}
}

// drop cuts the connection in the middle of the response headers. (A
// connection closed before any byte of the answer would be retried by
// net/http itself when it had been reused.)
func drop(w http.ResponseWriter) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err == nil {
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
		_ = buf.Flush()
		_ = conn.Close()
	}
}

// scenario is one request and how the server answers its attempts (the
// last step repeats).
type scenario struct {
	name   string
	method string
	path   string
	key    bool // send an Idempotency-Key
	steps  []step
}

var scenarios = []scenario{
	{"GET, 503 twice, then 200", "GET", "/busy", false, []step{status(503), status(503), ok}},
	{"GET, 429 Retry-After: 86400", "GET", "/limited", false, []step{retryAfter("86400"), ok}},
	{"GET, connection dropped, then 200", "GET", "/drop", false, []step{drop, ok}},
	{"GET, 401 (permanent)", "GET", "/secret", false, []step{status(401), ok}},
	{"GET, 503 for good", "GET", "/down", false, []step{status(503)}},
	{"POST, 503, then 200", "POST", "/order", false, []step{status(503), ok}},
	{"POST + Idempotency-Key, 503, then 200", "POST", "/order-keyed", true, []step{status(503), ok}},
}

// flakyServer plays each scenario's steps, counting attempts per path.
func flakyServer() (*httptest.Server, func(path string) int) {
	var (
		mu    sync.Mutex
		count = map[string]int{}
	)
	byPath := map[string][]step{}
	for _, s := range scenarios {
		byPath[s.path] = s.steps
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		n := count[r.URL.Path]
		count[r.URL.Path]++
		mu.Unlock()
		steps := byPath[r.URL.Path]
		steps[min(n, len(steps)-1)](w)
	}))
	return srv, func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		return count[path]
	}
}

// call makes one scenario's request and describes the outcome.
func call(client *http.Client, base string, s scenario, attempts func(string) int) string {
	req, err := http.NewRequest(s.method, base+s.path, strings.NewReader("{}"))
	if err != nil {
		return err.Error()
	}
	if s.key {
		req.Header.Set("Idempotency-Key", "order-42")
	}
	resp, err := client.Do(req)
	n := attempts(s.path)
	if err != nil {
		return fmt.Sprintf("error (%s)  [%d attempt%s]", errorKind(err), n, plural(n))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return fmt.Sprintf("%s  [%d attempt%s]", resp.Status, n, plural(n))
}

// errorKind names err without the URL (its port changes from run to run).
func errorKind(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var re *resil.RetryError
	if errors.As(err, &re) {
		err = re.Err
	}
	return strings.TrimPrefix(err.Error(), "net/http: HTTP/1.x transport connection broken: ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func main() { run(os.Stdout) }

// run calls every scenario through both clients and writes the table to w.
func run(w io.Writer) {
	plainSrv, plainAttempts := flakyServer()
	defer plainSrv.Close()
	resilSrv, resilAttempts := flakyServer()
	defer resilSrv.Close()

	plainBase, resilBase := &http.Transport{}, &http.Transport{}
	defer plainBase.CloseIdleConnections()
	defer resilBase.CloseIdleConnections()
	plain := &http.Client{Transport: plainBase}
	resilient := &http.Client{Transport: &resilhttp.Transport{
		Base: resilBase,
		Pipeline: resil.New[*http.Response]().
			Timeout(2 * time.Second). // per attempt, until the headers arrive
			Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(10 * time.Millisecond)}),
		MaxRetryAfter: 50 * time.Millisecond, // a hostile Retry-After is capped
	}}

	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "scenario\tplain http.Client\tresilhttp.Transport")
	fmt.Fprintln(tw, "--------\t-----------------\t-------------------")
	for _, s := range scenarios {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.name,
			call(plain, plainSrv.URL, s, plainAttempts),
			call(resilient, resilSrv.URL, s, resilAttempts))
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "resilhttp retries only what is safe to send again (idempotent methods, or an")
	fmt.Fprintln(w, "Idempotency-Key), honours Retry-After up to a cap, and returns the last")
	fmt.Fprintln(w, "response, body intact, when attempts run out.")
}
