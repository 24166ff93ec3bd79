package resil_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strconv"
)

// errFlaky is an unmarked error: transient by default.
var errFlaky = errors.New("flaky")

// goid returns the current goroutine's id, to prove where fn runs.
func goid() int {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	buf = bytes.TrimPrefix(buf, []byte("goroutine "))
	id, _ := strconv.Atoi(string(buf[:bytes.IndexByte(buf, ' ')]))
	return id
}

// failN returns fn that fails with err its first n calls, then returns v,
// and a pointer to the number of calls made.
func failN[T any](n int, err error, v T) (func(context.Context) (T, error), *int) {
	calls := new(int)
	return func(context.Context) (T, error) {
		*calls++
		if *calls <= n {
			var zero T
			return zero, err
		}
		return v, nil
	}, calls
}

// blockUntilDone returns fn that waits for its context and returns its error.
func blockUntilDone(ctx context.Context) (int, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}
