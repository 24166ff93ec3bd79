package main

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/resil-go/resil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The program runs in real time; the test runs the same simulation twice in
// a synctest bubble, where its sleeps, timeouts and the breaker's open
// period use the fake clock: the table is exactly what an idle machine
// prints, however loaded the machine running the test is.
func TestQuickstartIsDeterministicAndTellsTheStory(t *testing.T) {
	synctest.Test(t, testQuickstart)
}

func testQuickstart(t *testing.T) {
	ctx := context.Background()
	var outputs []string
	for range 2 {
		b, p := bare(ctx), protected(ctx)

		// Every call ends one way or another.
		for _, tl := range []*tally{b, p} {
			assert.Equal(t, calls, tl.answered+tl.fallbacks+tl.errors)
		}
		// Bare: one attempt per call, nothing protects it.
		assert.Equal(t, calls, b.attempts)
		assert.Equal(t, 4, b.slow, "the slow calls waited")
		assert.Zero(t, b.fallbacks)
		assert.Greater(t, b.errors, 15, "transient errors, the 404 and the outage reach the caller")
		assert.Empty(t, b.events)

		// Pipeline: each stage did its part.
		assert.Equal(t, 1, p.errors, "only the permanent 404 reaches the caller")
		assert.Zero(t, p.slow, "the timeout cut the slow attempts short")
		assert.Equal(t, 4, p.events[resil.EventTimeout])
		assert.Positive(t, p.events[resil.EventRetry])
		assert.Greater(t, p.answered, b.answered, "retries turn passing errors into answers")
		assert.Positive(t, p.events[resil.EventRejected], "the open breaker rejects calls during the outage")
		assert.Greater(t, p.fallbacks, p.events[resil.EventRejected], "rejected and failed calls get a cached answer")
		require.NotEmpty(t, p.transitions)
		assert.Equal(t, resil.StateOpen, p.transitions[0].To, "the outage trips the breaker")
		assert.Equal(t, resil.StateClosed, p.transitions[len(p.transitions)-1].To, "and it closes after the outage")
		assert.Equal(t, p.attempts, calls-p.events[resil.EventRejected]+p.events[resil.EventRetry],
			"attempts: one per admitted call plus one per retry")

		var out strings.Builder
		require.NoError(t, report(&out, b, p))
		outputs = append(outputs, out.String())
	}
	assert.Equal(t, outputs[0], outputs[1], "the same seed prints the same table")
	assert.Contains(t, outputs[0], "breaker: closed → open → half-open")
	// The stages as README.md draws them: a call goes from the outermost
	// (the last added) to the innermost, then to the service.
	assert.Contains(t, outputs[0], "pipeline: Fallback(cached) → Breaker(20% of 5+ calls, open 390ms) → Retry(3 attempts) → Timeout(20ms per attempt) → service\n")
}
