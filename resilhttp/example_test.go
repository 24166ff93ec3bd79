package resilhttp_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/resil-go/resil"
	"github.com/resil-go/resil/resilhttp"
)

func ExampleTransport() {
	// A server that is busy twice, then answers.
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) <= 2 {
			w.Header().Set("Retry-After", "0")
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "hello")
	}))
	defer srv.Close()
	base := &http.Transport{}
	defer base.CloseIdleConnections()

	client := &http.Client{Transport: &resilhttp.Transport{
		Base: base,
		Pipeline: resil.New[*http.Response]().
			Timeout(5 * time.Second). // per attempt, until the headers arrive
			Retry(resil.RetryPolicy{MaxAttempts: 3, Backoff: resil.Constant(time.Millisecond)}),
	}}
	resp, err := client.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status, string(body), "after", hits.Load(), "attempts")
	// Output: 200 OK hello after 3 attempts
}

func ExampleParseRetryAfter() {
	now := time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)
	for _, v := range []string{"120", "Sun, 01 Mar 2026 12:00:30 GMT", "Sun, 01 Mar 2026 11:00:00 GMT", "99999999999999", "soon"} {
		d, ok := resilhttp.ParseRetryAfter(v, now)
		fmt.Printf("%-31q %v %v\n", v, d, ok)
	}
	// Output:
	// "120"                           2m0s true
	// "Sun, 01 Mar 2026 12:00:30 GMT" 30s true
	// "Sun, 01 Mar 2026 11:00:00 GMT" 0s true
	// "99999999999999"                2562047h47m16.854775807s true
	// "soon"                          0s false
}
