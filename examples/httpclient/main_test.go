package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOutputIsDeterministicAndTellsTheStory(t *testing.T) {
	var a, b strings.Builder
	run(&a)
	run(&b)
	assert.Equal(t, a.String(), b.String(), "the same table every run")
	rows := map[string][2]string{}
	for _, line := range strings.Split(a.String(), "\n") {
		cols := strings.Split(line, "   ")
		var cells []string
		for _, c := range cols {
			if c = strings.TrimSpace(c); c != "" {
				cells = append(cells, c)
			}
		}
		if len(cells) == 3 {
			rows[cells[0]] = [2]string{cells[1], cells[2]}
		}
	}
	for _, tt := range []struct{ scenario, plain, resil string }{
		{"GET, 503 twice, then 200", "503 Service Unavailable  [1 attempt]", "200 OK  [3 attempts]"},
		{"GET, 429 Retry-After: 86400", "429 Too Many Requests  [1 attempt]", "200 OK  [2 attempts]"},
		{"GET, connection dropped, then 200", "error (unexpected EOF)  [1 attempt]", "200 OK  [2 attempts]"},
		{"GET, 401 (permanent)", "401 Unauthorized  [1 attempt]", "401 Unauthorized  [1 attempt]"},
		{"GET, 503 for good", "503 Service Unavailable  [1 attempt]", "503 Service Unavailable  [3 attempts]"},
		{"POST, 503, then 200", "503 Service Unavailable  [1 attempt]", "503 Service Unavailable  [1 attempt]"},
		{"POST + Idempotency-Key, 503, then 200", "503 Service Unavailable  [1 attempt]", "200 OK  [2 attempts]"},
	} {
		assert.Equal(t, [2]string{tt.plain, tt.resil}, rows[tt.scenario], tt.scenario)
	}
}
