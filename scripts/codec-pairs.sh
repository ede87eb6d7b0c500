#!/usr/bin/env bash
# Compares the entry codec with encoding/gob on each realistic result, in
# time-paired runs: cachedpq's benchmark, then gob's, repeated. On a shared
# machine the load of other tenants drifts over minutes; `go test -count N`
# runs all of one codec's samples before the other's, so the drift lands
# on one side, while a ratio taken from back-to-back runs cancels it.
#
#   scripts/codec-pairs.sh [pairs] [benchtime]     (defaults: 6, 0.5s)
#
# Prints, per operation and result, the sorted gob/cachedpq time ratios and
# their median. Needs no database.
set -euo pipefail
cd "$(dirname "$0")/.."

pairs=${1:-6}
benchtime=${2:-0.5s}
bin=$(mktemp -d)/codec.test
trap 'rm -rf "$(dirname "$bin")"' EXIT
go test -c -o "$bin" .

nsop() { # benchmark -> ns/op
	"$bin" -test.run '^$' -test.bench "^$1\$" -test.benchtime "$benchtime" | awk '/^Benchmark/ {print $3}'
}

for op in Decode Encode; do
	for r in 1x8 50x4 agg20 jsonb1000; do
		ratios=()
		for _ in $(seq "$pairs"); do
			ours=$(nsop "BenchmarkCodec$op/$r/cachedpq")
			gob=$(nsop "BenchmarkCodec$op/$r/gob")
			ratios+=("$(awk -v a="$ours" -v b="$gob" 'BEGIN {printf "%.1f", b / a}')")
		done
		sorted=$(printf '%s\n' "${ratios[@]}" | sort -n)
		median=$(printf '%s\n' "$sorted" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
		printf '%-6s %-9s gob/cachedpq median %5s×   (%s)\n' "$op" "$r" "$median" "$(echo $sorted)"
	done
done
