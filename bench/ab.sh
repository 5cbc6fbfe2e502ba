#!/usr/bin/env bash
# Interleaved A/B runs of two server binaries with the same load generator, on one machine:
#   bench/ab.sh A_BIN B_BIN [ROUNDS] [latchkey-bench options…]
# e.g. bench/ab.sh /tmp/latchkey-main target/release/latchkey 3 --users 10000 --accept-encoding ""
# Each round runs A then B (the order alternates every round, so drift of the machine's speed
# within a round favours neither); every run prints its own calibration. Results: one JSON line
# per run on stdout, prefixed with the variant.
set -euo pipefail
a=$1 b=$2
rounds=${3:-3}
shift 3 || shift $#
bench="$(dirname "$0")/../target/release/latchkey-bench"
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
  for v in $order; do
    bin=$a; [ "$v" = B ] && bin=$b
    line=$("$bench" --server-bin "$bin" "$@" 2>/dev/null | tail -n1)
    echo "$v round=$round $line"
  done
done
