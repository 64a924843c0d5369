#!/usr/bin/env bash
# A report of what had been decided by a day, asked again as clerks enter more: `balances
# decided_by` once (the log replayed from its first event), then again after each of ROUNDS
# batches of 20 grants, each read going on from the view kept for the same day (ops.c,
# from_kept). Prints every read's time and the later reads' ratio to the first.
#
#   tests/bench/decided_again.sh BUILD_DIR DATA_DIR [ROUNDS]
#
# DATA_DIR is a data folder of bench_replay's log (bench_replay --dir D --keep leaves it in
# D/replay-data); it is copied, never changed. BUILD_DIR holds budgetd and budgetctl.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BUILD_DIR DATA_DIR [ROUNDS]" >&2; exit 2; }
build=$1 data=$2 rounds=${3:-5}
ctl=$build/budgetctl
work=$(mktemp -d "${TMPDIR:-/tmp}/decided-again-XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cp -r "$data" "$work/data"
rm -f "$work/data/budgetd.lock"
"$build/budgetd" --data "$work/data" --socket "$work/s.sock" 2>"$work/budgetd.log" &
pid=$!
for _ in $(seq 600); do grep -q "serving" "$work/budgetd.log" && break; sleep 0.05; done
grep -q "serving" "$work/budgetd.log" || { cat "$work/budgetd.log" >&2; exit 1; }

# One read, its wall time in seconds on stdout.
read_once() {
  local s e
  s=$(date +%s.%N)
  "$ctl" --socket "$work/s.sock" balances --decided-by 2024-06-30 --frame ram-2024-KS-0 >/dev/null
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}

first=$(read_once)
printf 'decided_by 2024-06-30, the first read: %.3f s\n' "$first"
for k in $(seq "$rounds"); do
  for g in $(seq 20); do
    "$ctl" --socket "$work/s.sock" grant --unit KS --year 2028 --amount "1 kr" \
      --title "decided again $k.$g" --decision "KS 2024-01-15 § $g" --intended >/dev/null
  done
  t=$(read_once)
  printf 'after %d more grants: %.3f s (%.3f of the first)\n' $((k * 20)) "$t" \
    "$(echo "$t / $first" | bc -l)"
done
"$ctl" --socket "$work/s.sock" stats | grep -E "^(as_of_builds|as_of_from_kept):"
