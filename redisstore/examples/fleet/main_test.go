package main

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSummary(t *testing.T) {
	at := time.Unix(0, 0)
	tests := []struct {
		name   string
		opened []opening
		want   []string
	}{
		{"fleet's counts tripped all", []opening{
			{"replica-1", at.Add(30 * time.Millisecond), 15},
			{"replica-2", at, 13},
			{"replica-3", at.Add(41 * time.Millisecond), minCalls - 1},
		}, []string{
			"all 3 replicas opened within 41ms of each other (SyncEvery 100ms)",
			"none had made MinCalls (40) calls of its own: the fleet's counts tripped them",
		}},
		{"each could trip on its own", []opening{
			{"replica-1", at, 43},
			{"replica-2", at.Add(5 * time.Millisecond), minCalls},
		}, []string{
			"no fleet-wide trip shown: every replica had made MinCalls (40) calls of its own when it opened, " +
				"enough to trip on its own counts (did Redis stop answering?): replica-1 (43 calls), replica-2 (40 calls)",
		}},
		{"some could trip on their own", []opening{
			{"replica-1", at, 15},
			{"replica-2", at.Add(60 * time.Millisecond), 43},
		}, []string{
			"all 2 replicas opened within 60ms of each other (SyncEvery 100ms)",
			"but 1 of them had made MinCalls (40) calls of their own, enough to trip on their own counts " +
				"(did Redis stop answering?): replica-2 (43 calls)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, summary(tt.opened))
		})
	}
}

func TestPingFailsWhereNothingListens(t *testing.T) {
	start := time.Now()
	redis.SetLogger(quiet{})   // the failed dial is the point
	err := ping("127.0.0.1:1") // nothing listens on port 1
	require.Error(t, err)
	assert.Contains(t, err.Error(), "127.0.0.1:1")
	assert.Less(t, time.Since(start), pingTimeout+time.Second, "bounded by pingTimeout")
}
