package resil_test

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"testing/synctest"
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
func bubbleGoroutines() int { return len(bubbleStacks()) }

// bubbleStacks returns the stack traces of the goroutines of the synctest
// bubble the caller runs in, the caller's first.
func bubbleStacks() [][]byte {
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
		panic("bubbleStacks: not called in a synctest bubble")
	}
	tag := first[i : bytes.IndexByte(first[i:], ']')+i+1] // ", synctest bubble B]"
	var stacks [][]byte
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if header, _, _ := bytes.Cut(g, []byte("\n")); bytes.HasPrefix(header, []byte("goroutine ")) && bytes.Contains(header, tag) {
			stacks = append(stacks, g)
		}
	}
	return stacks
}

// forEachSeed runs a model test's seeded scenarios: for each seed from 0 to
// n-1 (100 with -short) it draws the scenario on the test's goroutine
// (scenario, so that statistics over every seed hold also when -run picks
// one), and runs the check it returns in a synctest bubble of its own, as
// the subtest seed=N (replay one with -run 'TestX/seed=N$').
func forEachSeed(t *testing.T, n int, scenario func(seed uint64) func(t *testing.T)) {
	if testing.Short() {
		n = min(n, 100)
	}
	for seed := range uint64(n) {
		check := scenario(seed)
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { synctest.Test(t, check) })
	}
}
