#!/usr/bin/env bash
# The reliability battery in its long forms (docs/reliability.md). CI runs the short forms:
# the suites in ctest, and `scripts/reliability.sh ci` (short fuzz runs, valgrind pass).
#
#   scripts/reliability.sh crash [CYCLES]      SIGKILL crash loop (default 200 cycles)
#   scripts/reliability.sh powerloss [CYCLES]  SIGKILL, then a power-loss image of the data
#                                              folder (default 200 cycles)
#   scripts/reliability.sh races [SEEDS]       32 clients on the last krona (default 1000 seeds)
#   scripts/reliability.sh faults              storage faults, N = 1, 2, ... at every point
#   scripts/reliability.sh hostile [SECONDS]   each attack for SECONDS (default 10), and the
#                                              known issues (expected to fail until fixed)
#   scripts/reliability.sh fuzz [SECONDS]      each libFuzzer harness for SECONDS (default 600)
#   scripts/reliability.sh valgrind            the end-to-end suites with budgetd under valgrind
#   scripts/reliability.sh mutate [ARGS]       plants each mutation of tests/mutations.txt in a
#                                              scratch copy, runs its suites, prints the kill
#                                              ratio and the survivors (scripts/mutate.py ARGS;
#                                              long: not part of ci)
#   scripts/reliability.sh ci                  fuzz 20 s per harness, then the valgrind pass
#
# RELIABILITY_SEED=N repeats a run's random choices. Builds go to $BUILD_DIR (default build),
# build-fuzz (clang) and build-valgrind. Every figure is printed with the command behind it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

need_packages() {
  "$root/scripts/install-packages.sh" reliability "$@"
}

build_normal() {
  export BUILD_DIR=${BUILD_DIR:-build}
  scripts/setup.sh >/dev/null
}

# Runs one Criterion suite of the normal build, showing its figures.
suite() {
  local name=$1
  shift
  echo "+ $* $BUILD_DIR/tests/$name $SUITE_ARGS"
  env "$@" "$BUILD_DIR/tests/$name" $SUITE_ARGS
}
SUITE_ARGS="--jobs 1"

cmd_crash() {
  build_normal
  suite test_crash RELIABILITY_CRASH_CYCLES="${1:-200}"
}

cmd_powerloss() {
  build_normal
  suite test_powerloss RELIABILITY_POWERLOSS_CYCLES="${1:-200}"
}

cmd_races() {
  build_normal
  suite test_races RELIABILITY_RACE_SEEDS="${1:-1000}"
}

cmd_faults() {
  build_normal
  suite test_faults RELIABILITY_FAULT_STRIDE=1
}

cmd_hostile() {
  build_normal
  suite test_hostile RELIABILITY_ATTACK_S="${1:-10}"
}

build_fuzz() {
  need_packages clang libclang-rt-14-dev
  local log=build-fuzz/setup.log
  mkdir -p build-fuzz
  if ! { cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DBUDGET_FUZZ=ON -DBUDGET_TESTS=OFF \
           -DBUDGET_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
         cmake --build build-fuzz -j"$(nproc)" --target fuzz_frame fuzz_request fuzz_event \
           fuzz_ledger fuzz_snapshot; } >"$log" 2>&1; then
    cat "$log"
    echo "reliability: the fuzz build failed" >&2
    exit 1
  fi
}

# Each harness for $1 seconds on a copy of its seed corpus; stops at the first finding.
cmd_fuzz() {
  local seconds=${1:-600} failed=0
  build_fuzz
  for h in fuzz_frame fuzz_request fuzz_event fuzz_ledger fuzz_snapshot; do
    local work=build-fuzz/corpus/$h
    mkdir -p "$work" build-fuzz/findings
    cp -n tests/fuzz/corpus/$h/* "$work"/ 2>/dev/null || true
    echo "+ build-fuzz/tests/fuzz/$h -max_total_time=$seconds -print_final_stats=1 $work"
    if ! build-fuzz/tests/fuzz/$h -max_total_time="$seconds" -print_final_stats=1 \
         -artifact_prefix=build-fuzz/findings/$h- -close_fd_mask=1 "$work" \
         >build-fuzz/$h.log 2>&1; then
      tail -n 60 build-fuzz/$h.log
      echo "reliability: $h found a failure (input in build-fuzz/findings/)" >&2
      failed=1
    fi
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|^Done" build-fuzz/$h.log |
      sed "s/^/$h: /"
  done
  return $failed
}

# The end-to-end suites with budgetd (and budgetd-faulty) under valgrind: the test binaries
# exec the daemon by its built path, so in build-valgrind those paths hold a script that runs
# the real binary under valgrind. Every daemon writes its own log; a daemon that exits (SIGTERM)
# also reports its leaks, and --error-exitcode makes any error or definite leak a failed stop.
cmd_valgrind() {
  need_packages valgrind
  local dir=build-valgrind logs
  logs=$root/$dir/valgrind-logs
  mkdir -p "$dir"
  if ! { cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build "$dir" -j"$(nproc)"; } \
       >"$dir/setup.log" 2>&1; then
    cat "$dir/setup.log"
    exit 1
  fi
  rm -rf "$logs"
  mkdir -p "$logs"
  local abs=$root/$dir
  for bin in budgetd budgetd-faulty; do
    cp "$dir/$bin" "$dir/$bin.real"
    cat >"$dir/$bin" <<EOF
#!/bin/sh
exec valgrind --error-exitcode=97 --leak-check=full --show-leak-kinds=definite,indirect \\
  --errors-for-leak-kinds=definite,indirect --num-callers=30 \\
  --suppressions=$root/scripts/valgrind.supp --log-file=$logs/$bin.%p.log "$abs/$bin.real" "\$@"
EOF
    chmod +x "$dir/$bin"
  done
  # A rebuild must not run the wrappers as if they were the daemon: put the binaries back.
  trap 'for b in budgetd budgetd-faulty; do [ -f "'"$dir"'/$b.real" ] && mv "'"$dir"'/$b.real" "'"$dir"'/$b"; done' EXIT
  local status=0
  export RELIABILITY_SLOW=10 RELIABILITY_WRAPPED=1 RELIABILITY_CRASH_CYCLES=3 RELIABILITY_RACE_SEEDS=4 \
    RELIABILITY_FAULT_STRIDE=5 RELIABILITY_ATTACK_S=2
  for t in test_e2e test_e2e_snapshots test_crash test_races test_faults test_hostile; do
    [ -x "$dir/tests/$t" ] || continue
    echo "+ RELIABILITY_SLOW=10 $dir/tests/$t --jobs 1   (budgetd under valgrind)"
    "$dir/tests/$t" --jobs 1 >"$logs/$t.out" 2>&1 || { status=1; tail -n 40 "$logs/$t.out"; }
    grep -E "Synthesis" "$logs/$t.out" | sed "s/^/$t: /"
  done
  local runs exited errors
  runs=$(find "$logs" -name 'budgetd*.log' | wc -l)
  exited=$( (grep -l "ERROR SUMMARY: 0 errors" "$logs"/budgetd*.log 2>/dev/null || true) | wc -l)
  errors=$( (grep -hE "Invalid (read|write|free)|uninitialised|Mismatched free|overlap|definitely lost in|indirectly lost in|Syscall param|ERROR SUMMARY: [1-9]" \
           "$logs"/budgetd*.log 2>/dev/null || true) | wc -l)
  echo "valgrind: $runs daemon runs, $exited exited with a full leak check and 0 errors, $errors error lines in all (logs: $logs)"
  if [ "$errors" -ne 0 ]; then
    grep -hE -B2 -A12 "Invalid|uninitialised|Mismatched|overlap|lost in|Syscall param" "$logs"/budgetd*.log | head -n 80
    status=1
  fi
  return $status
}

cmd_mutate() {
  echo "+ python3 scripts/mutate.py $*"
  python3 scripts/mutate.py "$@"
}

cmd_ci() {
  cmd_fuzz "${RELIABILITY_FUZZ_S:-20}"
  cmd_valgrind
}

case "${1:-}" in
  crash) shift; cmd_crash "$@" ;;
  powerloss) shift; cmd_powerloss "$@" ;;
  races) shift; cmd_races "$@" ;;
  faults) shift; cmd_faults "$@" ;;
  hostile) shift; cmd_hostile "$@" ;;
  fuzz) shift; cmd_fuzz "$@" ;;
  valgrind) shift; cmd_valgrind "$@" ;;
  mutate) shift; cmd_mutate "$@" ;;
  ci) shift; cmd_ci "$@" ;;
  *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
