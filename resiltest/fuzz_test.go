package resiltest

import (
	"math"
	"testing"
	"time"
)

// didPanic reports whether f panicked.
func didPanic(f func()) (panicked bool) {
	defer func() { panicked = recover() != nil }()
	f()
	return false
}

func TestPartNeverOverflows(t *testing.T) {
	for _, u := range []float64{0, 0.5, math.Nextafter(1, 0)} {
		for _, d := range []time.Duration{0, 1, time.Second, math.MaxInt64} {
			if p := part(u, d); p < 0 || p > d {
				t.Errorf("part(%v, %v) = %v", u, d, p)
			}
		}
	}
}

func FuzzFaults(f *testing.F) {
	f.Add(uint64(1), 0.3, 0.1, 0.05, int64(time.Millisecond), int64(time.Millisecond), int64(time.Second), 1)
	f.Add(uint64(0), 1.0, 0.0, 1.0, int64(math.MaxInt64), int64(math.MaxInt64), int64(math.MaxInt64), math.MaxInt)
	f.Add(uint64(0), math.NaN(), -1.0, 2.0, int64(-1), int64(0), int64(0), -5)
	f.Fuzz(func(t *testing.T, seed uint64, fail, hang, slowRate float64, lat, jit, slow int64, n int) {
		fs := Faults{Seed: seed, FailRate: fail, HangRate: hang, SlowRate: slowRate,
			Latency: time.Duration(lat), Jitter: time.Duration(jit), Slow: time.Duration(slow)}
		err := fs.Validate()
		if panicked := didPanic(func() { Random(fs, 0) }); panicked != (err != nil) {
			t.Fatalf("Validate() = %v but Random panicked = %v", err, panicked)
		}
		if err != nil {
			return
		}
		s := fs.step(n, 0)
		if s != fs.step(n, 0) {
			t.Fatalf("call %d drew two different steps", n)
		}
		if s.delay < fs.Latency {
			t.Fatalf("latency %v below Faults.Latency %v", s.delay, fs.Latency)
		}
		if hi := addSat(addSat(fs.Latency, fs.Jitter), fs.Slow); s.delay > hi {
			t.Fatalf("latency %v above Latency+Jitter+Slow %v", s.delay, hi)
		}
		switch {
		case fs.FailRate == 0 && fs.HangRate == 0 && s.kind != stepReturn:
			t.Fatalf("no faults, got %v", s)
		case fs.FailRate == 1 && s.kind != stepFail:
			t.Fatalf("FailRate 1, got %v", s)
		case fs.HangRate == 1 && s.kind != stepHang:
			t.Fatalf("HangRate 1, got %v", s)
		}
	})
}

func FuzzHTTPFaults(f *testing.F) {
	f.Add(uint64(1), 0.2, 0.1, 0.1, 503, int64(time.Second), int64(time.Millisecond), int64(time.Millisecond), 1)
	f.Add(uint64(0), 1.0, 0.0, 0.0, 0, int64(math.MaxInt64), int64(math.MaxInt64), int64(math.MaxInt64), math.MaxInt)
	f.Add(uint64(0), math.Inf(1), -1.0, 0.5, 42, int64(-1), int64(-1), int64(0), 0)
	f.Fuzz(func(t *testing.T, seed uint64, errRate, drop, trunc float64, status int, retryAfter, lat, jit int64, n int) {
		fs := HTTPFaults{Seed: seed, ErrorRate: errRate, DropRate: drop, TruncateRate: trunc, Status: status,
			RetryAfter: time.Duration(retryAfter), Latency: time.Duration(lat), Jitter: time.Duration(jit)}
		err := fs.Validate()
		if panicked := didPanic(func() { RandomHandler(fs) }); panicked != (err != nil) {
			t.Fatalf("Validate() = %v but RandomHandler panicked = %v", err, panicked)
		}
		if err != nil {
			return
		}
		r := fs.reply(n)
		if r.Delay < fs.Latency || r.Delay > addSat(fs.Latency, fs.Jitter) {
			t.Fatalf("delay %v outside [%v, %v+%v]", r.Delay, fs.Latency, fs.Latency, fs.Jitter)
		}
		if r.Status != 0 && (r.Status < 200 || r.Status > 999) {
			t.Fatalf("status %d", r.Status)
		}
		if fs.ErrorRate == 0 && fs.DropRate == 0 && fs.TruncateRate == 0 && (r.Status != 0 || r.Drop || r.Truncate) {
			t.Fatalf("no faults, got %+v", r)
		}
	})
}
