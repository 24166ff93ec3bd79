//go:build !race

package resil

// raceEnabled reports whether the race detector is on (see shard.count).
const raceEnabled = false
