package redisstore

// fleetLimiter is one rate limiter's share of the fleet.
type fleetLimiter struct{}
