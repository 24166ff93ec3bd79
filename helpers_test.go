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

// bubbleGoroutines counts the goroutines of the synctest bubble the caller
// runs in. runtime.NumGoroutine counts the whole process, where a goroutine
// of an earlier test (a real-time timer's callback, say) may start or end
// at any moment.
func bubbleGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	// The caller's goroutine comes first: "goroutine N [running, synctest bubble B]:".
	first, _, _ := bytes.Cut(buf, []byte("\n"))
	i := bytes.Index(first, []byte(", synctest bubble "))
	if i < 0 {
		panic("bubbleGoroutines: not called in a synctest bubble")
	}
	tag := first[i : bytes.IndexByte(first[i:], ']')+i+1] // ", synctest bubble B]"
	count := 0
	for _, line := range bytes.Split(buf, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("goroutine ")) && bytes.Contains(line, tag) {
			count++
		}
	}
	return count
}
