#!/usr/bin/env bash
# Runs every scenario on resil and its peers, then prints benchstat's table
# (medians with their spread) and, per scenario, resil's median ns/op and
# allocs/op beside each peer's and its ratio to the fastest peer, with the
# targets resil is held to.
#
#   benchmarks/run.sh                 # all scenarios, 10 rounds
#   COUNT=20 benchmarks/run.sh        # more samples
#   BENCH='BreakerOK|RetryOK' benchmarks/run.sh   # scenarios whose name matches
#
# Raw results are kept in $OUT (default benchmarks/results/bench.txt) so the
# tables can be printed again without rerunning:
#   go run ./benchtable < results/bench.txt
set -euo pipefail
cd "$(dirname "$0")"

COUNT=${COUNT:-10}          # benchstat wants at least 6 for a 95% interval
BENCHTIME=${BENCHTIME:-1s}
BENCH=${BENCH:-.}
OUT=${OUT:-results/bench.txt}
# benchstat at a fixed version, fetched through the Go module proxy.
BENCHSTAT=golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

echo "# $(go version); $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" >&2
mkdir -p "$(dirname "$OUT")"
bin=$(mktemp -d)/benchmarks.test
trap 'rm -rf "$(dirname "$bin")"' EXIT
go test -c -o "$bin" .
# COUNT rounds, each running every scenario once, each scenario in a fresh
# process, rather than -count COUNT: the systems of a scenario take turns
# under the same load, and no scenario inherits another's heap, timers or
# goroutines (hystrix's monitors, eapache's open-breaker sleeper), which
# would tax the allocating scenarios that happen to run later.
scenarios=$("$bin" -test.list '^Benchmark' | grep -E -- "$BENCH" || true)
if [ -z "$scenarios" ]; then
	echo "no benchmark matches BENCH='$BENCH'" >&2
	exit 1
fi
: > "$OUT"
for round in $(seq "$COUNT"); do
	echo "# round $round/$COUNT, -test.benchtime $BENCHTIME" >&2
	for s in $scenarios; do
		"$bin" -test.run '^$' -test.bench "^$s\$" -test.benchtime "$BENCHTIME" -test.count 1 | tee -a "$OUT" >&2
	done
done

echo
echo "## benchstat"
echo
go run "$BENCHSTAT" "$OUT"
echo
echo "## resil and its peers (medians of $COUNT runs)"
go run ./benchtable < "$OUT"
