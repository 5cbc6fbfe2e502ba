#!/usr/bin/env bash
# Interleaved A/B runs of two server binaries on one machine:
#   bench/ab.sh A_BIN B_BIN [ROUNDS] [latchkey-bench options…]
# e.g. bench/ab.sh /tmp/latchkey-main target/release/latchkey 3 --users 10000 --accept-encoding ""
# Each round runs A then B (the order alternates every round, so drift of the machine's speed
# within a round favours neither); every run prints its own calibration. Results: one JSON line
# per run on stdout, prefixed with the variant.
#
# When the two binaries have different migrations, each needs its own load generator (it seeds
# the database with its own store code) and its own database: set A_BENCH and B_BENCH to the
# two `latchkey-bench` binaries and SEPARATE_DBS=1 (target/bench/ab-a.db and ab-b.db, fresh
# at the first round).
set -euo pipefail
a=$1 b=$2
rounds=${3:-3}
shift 3 || shift $#
default_bench="$(dirname "$0")/../target/release/latchkey-bench"
a_bench=${A_BENCH:-$default_bench}
b_bench=${B_BENCH:-$default_bench}
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
  for v in $order; do
    bin=$a bench=$a_bench db=target/bench/ab-a.db
    if [ "$v" = B ]; then bin=$b bench=$b_bench db=target/bench/ab-b.db; fi
    extra=()
    if [ "${SEPARATE_DBS:-0}" = 1 ]; then
      extra=(--database "$db")
      [ "$round" = 1 ] && extra+=(--fresh)
    fi
    line=$("$bench" --server-bin "$bin" "${extra[@]}" "$@" 2>/dev/null | tail -n1)
    echo "$v round=$round $line"
  done
done
