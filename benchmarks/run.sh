#!/usr/bin/env bash
# Runs every scenario on resil and its peers, then prints benchstat's table
# (medians with their spread) and, per scenario, resil's median ns/op and
# allocs/op beside each peer's and its ratio to the fastest peer, with the
# targets resil is held to.
#
#   benchmarks/run.sh                 # all scenarios, -count 10
#   COUNT=20 benchmarks/run.sh        # more samples
#   BENCH='BreakerOK|RetryOK' benchmarks/run.sh
#
# Raw results are kept in $OUT (default benchmarks/results.txt) so the
# tables can be printed again without rerunning:
#   go run ./benchtable < results.txt
set -euo pipefail
cd "$(dirname "$0")"

COUNT=${COUNT:-10}          # benchstat wants at least 6 for a 95% interval
BENCHTIME=${BENCHTIME:-1s}
BENCH=${BENCH:-.}
OUT=${OUT:-results.txt}
# benchstat at a fixed version, fetched through the Go module proxy.
BENCHSTAT=golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

echo "# $(go version); $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" >&2
echo "# go test -run '^\$' -bench '$BENCH' -count $COUNT -benchtime $BENCHTIME" >&2
go test -run '^$' -bench "$BENCH" -count "$COUNT" -benchtime "$BENCHTIME" . | tee "$OUT" >&2

echo
echo "## benchstat"
echo
go run "$BENCHSTAT" "$OUT"
echo
echo "## resil and its peers (medians of $COUNT runs)"
go run ./benchtable < "$OUT"
