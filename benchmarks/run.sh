#!/usr/bin/env bash
# Runs every scenario on resil and its peers, then prints benchstat's table
# (medians with their spread) and, per scenario, resil's median ns/op and
# allocs/op beside each peer's and its ratio to the fastest peer, with the
# targets resil is held to.
#
#   benchmarks/run.sh                 # all scenarios, 10 rounds
#   COUNT=20 benchmarks/run.sh        # more samples
#   BENCH='BreakerOK|RetryOK' benchmarks/run.sh
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
# COUNT rounds of one run of every benchmark, rather than -count COUNT:
# the systems of a scenario then take turns, so a burst of load on the
# machine slows them alike instead of one system's whole series.
: > "$OUT"
for round in $(seq "$COUNT"); do
	echo "# round $round/$COUNT: benchmarks.test -test.bench '$BENCH' -test.benchtime $BENCHTIME" >&2
	(cd . && "$bin" -test.run '^$' -test.bench "$BENCH" -test.benchtime "$BENCHTIME" -test.count 1) | tee -a "$OUT" >&2
done

echo
echo "## benchstat"
echo
go run "$BENCHSTAT" "$OUT"
echo
echo "## resil and its peers (medians of $COUNT runs)"
go run ./benchtable < "$OUT"
