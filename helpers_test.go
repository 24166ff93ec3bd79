package resil_test

import (
	"bytes"
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
