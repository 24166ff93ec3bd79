// Command benchtable reads `go test -bench` output (several -count runs of
// the benchmarks in this module) on standard input and prints, for each
// scenario, every system's median ns/op, B/op and allocs/op, and resil's
// ratio to the fastest peer; then a summary of the targets resil is held to.
//
// Benchmarks are named BenchmarkScenario/system. Direct/bare and
// Direct/withtimeout are the floors: TimeoutOK is also compared with the
// second, NoTimeoutOK with the first. A scenario in which resil is the only
// system (NoTimeoutOK) has no peer ratio.
//
//	go test -run '^$' -bench . -count 10 | go run ./benchtable
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// sample is one benchmark line's measurements.
type sample struct{ ns, bytes, allocs float64 }

// result is a system's medians in one scenario.
type result struct {
	system string
	n      int // samples
	sample
}

// target is a bound on a ratio that the summary checks.
type target struct {
	scenario string
	what     string                                    // what the ratio is taken against
	ratio    func(map[string][]result) (float64, bool) // the measured ratio
	max      float64
	zero     bool // allocs/op must be 0 too
}

var line = regexp.MustCompile(`^Benchmark([^/\s]+)/(\S+?)(-\d+)?\s+\d+\s+(.*)$`)

func main() {
	scenarios, order, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	if len(order) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no benchmark lines on standard input")
		os.Exit(1)
	}
	printSummary(os.Stdout, order, scenarios)
	for _, sc := range order {
		printScenario(os.Stdout, sc, scenarios[sc])
	}
	printTargets(os.Stdout, scenarios)
}

// printSummary prints one row per scenario that resil is in: resil's
// median ns/op and allocs/op, each other system's, and resil's ratio to the
// fastest of them. Systems are columns in the order they first appear.
func printSummary(w io.Writer, order []string, all map[string][]result) {
	var systems []string
	for _, sc := range order {
		if _, ok := find(all[sc], "resil"); !ok {
			continue
		}
		for _, r := range all[sc] {
			if r.system != "resil" && !slices.Contains(systems, r.system) {
				systems = append(systems, r.system)
			}
		}
	}
	fmt.Fprintln(w, "\nns/op (allocs/op), medians; the ratio is resil ÷ the fastest other system in the row.")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "| scenario | resil | %s | resil ÷ fastest |\n", strings.Join(systems, " | "))
	fmt.Fprintf(w, "|---|---:|%s---:|\n", strings.Repeat("---:|", len(systems)))
	for _, sc := range order {
		resil, ok := find(all[sc], "resil")
		if !ok {
			continue
		}
		cells := make([]string, len(systems))
		for i, sys := range systems {
			if r, ok := find(all[sc], sys); ok {
				cells[i] = cell(r)
			}
		}
		ratio := ""
		if best, ok := fastestPeer(all[sc]); ok {
			ratio = fmt.Sprintf("**%.2f** (%s)", resil.ns/best.ns, best.system)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", sc, cell(resil), strings.Join(cells, " | "), ratio)
	}
	if d, ok := all["Direct"]; ok {
		var floors []string
		for _, r := range d {
			floors = append(floors, r.system+" "+cell(r))
		}
		fmt.Fprintf(w, "\nFloors (Direct): %s.\n", strings.Join(floors, ", "))
	}
}

func cell(r result) string { return fmt.Sprintf("%s (%.0f)", ns(r.ns), r.allocs) }

// parse collects the samples of each scenario and system, in the order
// they first appear, and reduces them to medians.
func parse(r io.Reader) (map[string][]result, []string, error) {
	samples := map[string]map[string][]sample{}
	var order []string
	systems := map[string][]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		scenario, system := m[1], m[2]
		s, ok := parseMetrics(m[4])
		if !ok {
			continue
		}
		if samples[scenario] == nil {
			samples[scenario] = map[string][]sample{}
			order = append(order, scenario)
		}
		if samples[scenario][system] == nil {
			systems[scenario] = append(systems[scenario], system)
		}
		samples[scenario][system] = append(samples[scenario][system], s)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	out := map[string][]result{}
	for _, scenario := range order {
		for _, system := range systems[scenario] {
			ss := samples[scenario][system]
			out[scenario] = append(out[scenario], result{
				system: system,
				n:      len(ss),
				sample: sample{
					ns:     median(ss, func(s sample) float64 { return s.ns }),
					bytes:  median(ss, func(s sample) float64 { return s.bytes }),
					allocs: median(ss, func(s sample) float64 { return s.allocs }),
				},
			})
		}
	}
	return out, order, nil
}

// parseMetrics reads "12.3 ns/op  0 B/op  0 allocs/op".
func parseMetrics(s string) (sample, bool) {
	f := strings.Fields(s)
	var out sample
	seen := false
	for i := 0; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return sample{}, false
		}
		switch f[i+1] {
		case "ns/op":
			out.ns, seen = v, true
		case "B/op":
			out.bytes = v
		case "allocs/op":
			out.allocs = v
		}
	}
	return out, seen
}

func median(ss []sample, f func(sample) float64) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func find(rs []result, system string) (result, bool) {
	i := slices.IndexFunc(rs, func(r result) bool { return r.system == system })
	if i < 0 {
		return result{}, false
	}
	return rs[i], true
}

// fastestPeer is the fastest system other than resil.
func fastestPeer(rs []result) (result, bool) {
	var best result
	found := false
	for _, r := range rs {
		if r.system != "resil" && (!found || r.ns < best.ns) {
			best, found = r, true
		}
	}
	return best, found
}

func printScenario(w io.Writer, scenario string, rs []result) {
	fmt.Fprintf(w, "\n### %s\n\n", scenario)
	fmt.Fprintln(w, "| system | ns/op | B/op | allocs/op | resil ÷ system |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	resil, hasResil := find(rs, "resil")
	for _, r := range rs {
		ratio := ""
		if hasResil && r.system != "resil" {
			ratio = fmt.Sprintf("%.3f", resil.ns/r.ns)
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %s |\n", r.system, ns(r.ns), r.bytes, r.allocs, ratio)
	}
	if !hasResil {
		return
	}
	if best, ok := fastestPeer(rs); ok {
		fmt.Fprintf(w, "\nresil ÷ fastest peer (%s): **%.3f**\n", best.system, resil.ns/best.ns)
	}
}

func ns(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// vsPeer is resil's ratio to the fastest peer in scenario.
func vsPeer(scenario string) func(map[string][]result) (float64, bool) {
	return func(all map[string][]result) (float64, bool) {
		resil, ok := find(all[scenario], "resil")
		best, ok2 := fastestPeer(all[scenario])
		if !ok || !ok2 {
			return 0, false
		}
		return resil.ns / best.ns, true
	}
}

// vsDirect is resil's ratio to a floor of the Direct scenario.
func vsDirect(scenario, floor string) func(map[string][]result) (float64, bool) {
	return func(all map[string][]result) (float64, bool) {
		resil, ok := find(all[scenario], "resil")
		f, ok2 := find(all["Direct"], floor)
		if !ok || !ok2 {
			return 0, false
		}
		return resil.ns / f.ns, true
	}
}

var targets = []target{
	{"RetryOK", "fastest peer", vsPeer("RetryOK"), 1.0, true},
	{"RetryFail2", "fastest peer", vsPeer("RetryFail2"), 0.1, true},
	{"BreakerOK", "fastest peer", vsPeer("BreakerOK"), 1.0, true},
	{"BreakerPar", "fastest peer", vsPeer("BreakerPar"), 1.0, true},
	{"BreakerOpen", "fastest peer", vsPeer("BreakerOpen"), 1.0, true},
	{"FullOK", "fastest peer", vsPeer("FullOK"), 0.4, false},
	{"TimeoutOK", "Direct/withtimeout", vsDirect("TimeoutOK", "withtimeout"), 1.05, false},
	{"NoTimeoutOK", "Direct/bare", vsDirect("NoTimeoutOK", "bare"), 12, true},
}

func printTargets(w io.Writer, all map[string][]result) {
	fmt.Fprintln(w, "\n### Targets")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | resil ÷ | ratio | target | resil allocs/op | holds |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|")
	for _, t := range targets {
		r, ok := t.ratio(all)
		if !ok {
			continue
		}
		resil, _ := find(all[t.scenario], "resil")
		holds := r <= t.max && (!t.zero || resil.allocs == 0)
		verdict := "yes"
		if !holds {
			verdict = fmt.Sprintf("no (%.2f× the target)", r/t.max)
			if r <= t.max {
				verdict = "no (allocates)"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %.3f | ≤ %g | %.0f | %s |\n", t.scenario, t.what, r, t.max, resil.allocs, verdict)
	}
}
