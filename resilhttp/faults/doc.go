// Package faults tests resilhttp against real network faults injected by
// Toxiproxy (github.com/Shopify/toxiproxy/v2, run in-process) between a
// client and a real HTTP server on loopback: latency, connection resets and
// a peer that stops answering. It is a module of its own so that the core
// module keeps no third-party dependency; it has no API, only tests.
package faults
