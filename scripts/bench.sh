#!/usr/bin/env bash
# Builds budgetd and its benchmarks optimized (build-bench/), then runs, on one disk and in one
# go: the raw LMDB baseline, budgetd under four load mixes, and the replay benchmark on a log
# of a million events (with budgetd's snapshots, and again without them as the baseline);
# prints one table of every figure beside its target and its baseline.
#
# usage: scripts/bench.sh [--quick] [--dir DIR] [--no-build] [--baseline BUDGETD] [--pages-only]
#                         [--peer] [--seconds S]
#   --quick     one round of short runs (~25 s instead of ~70 s); same figures, more noise
#   --peer      also run the same appends on PostgreSQL 15 (tests/bench/pg_ledger.sql, driven by
#               pg_loadgen: 64 x 4, 64 x 1 and 1 x 1) in each round, right after budgetd's, in
#               a throwaway cluster in a temp folder on the same disk (fsync=on,
#               synchronous_commit=on, socket only); installs postgresql-15 and libpq-dev
#               with apt-get when they are missing (never without --peer)
#   --seconds S  seconds measured per load run (default 3; --quick 2)
#   --dir DIR   where the data goes (default: $BENCH_DIR, else /tmp); the disk under test
#   --no-build  use what is already built in build-bench/
#   --baseline BUDGETD  also run the appends of each round and the paged-read mix on this
#               budgetd (an older build), in the same run, for before/after ratios
#   --pages-only  only the paged-read mix (and its baseline)
# The paged-read mix seeds a ledger of PAGES_ALLOCATIONS (default 1 000 000; --quick 200 000)
# allocations through batches, then runs 32 x 4 appenders alone and beside 4 x 4 readers of
# every page of plain balances (each reader keeps 4 pages in flight, at 4 places in the list),
# then the same with readers of every page of per-unit balances. Targets: appends
# beside the readers >= 0.5 x alone, and each read's p99 < 50 ms.
# Every figure is also left as "RESULT key value" lines in the work folder's results.txt.
#
# The appends are CPU-bound and the baseline is disk-bound, so a neighbour that takes the CPU
# for a few seconds moves one and not the other. Each round therefore measures raw LMDB right
# before budgetd's append runs, and the table shows the median of the rounds' ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
build=1
parent=${BENCH_DIR:-/tmp}
baseline=
pages_only=0
peer=0
seconds=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --no-build) build=0 ;;
    --dir) parent=$2; shift ;;
    --baseline) baseline=$2; shift ;;
    --pages-only) pages_only=1 ;;
    --peer) peer=1 ;;
    --seconds) seconds=$2; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "bench: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$quick" = 1 ]; then
  rounds=1; lmdb_seconds=1; load_seconds=2; warmup=0.5
  pages_allocations=${PAGES_ALLOCATIONS:-200000}
else
  rounds=3; lmdb_seconds=1.5; load_seconds=3; warmup=1
  pages_allocations=${PAGES_ALLOCATIONS:-1000000}
fi
if [ -n "$seconds" ]; then load_seconds=$seconds; fi

# ---- the PostgreSQL peer (--peer only) -------------------------------------------------------
pg_bin=/usr/lib/postgresql/15/bin
pg_owner=
pg_dir=
pg_conninfo=

# PostgreSQL 15's server programs and libpq's headers, installed with apt-get when missing.
peer_install() {
  local missing=()
  [ -x "$pg_bin/initdb" ] || missing+=(postgresql-15)
  pkg-config --exists libpq 2>/dev/null || missing+=(libpq-dev)
  [ "${#missing[@]}" -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "bench: --peer needs ${missing[*]}: apt-get install ${missing[*]}, or run as root" >&2
    exit 1
  fi
  echo "bench: installing ${missing[*]} for --peer"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The server's programs run as the caller, or as the postgres user when the caller is root.
as_pg_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$pg_owner" -- "$@"; else "$@"; fi
}

peer_sql() {
  local db=$1; shift
  "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$pg_dir" -p 5432 -U postgres -d "$db" "$@" >/dev/null
}

# A throwaway cluster in a folder of its own beside the work folder (the same disk), durable as
# shipped (fsync, synchronous_commit and full_page_writes on), reachable only by its socket.
peer_start() {
  pg_owner=$(id -un)
  if [ "$(id -u)" = 0 ]; then pg_owner=postgres; fi
  pg_dir=$(mktemp -d "$parent/budgetd-peer-XXXXXX")
  chown "$pg_owner" "$pg_dir"
  chmod 0755 "$pg_dir"
  if ! as_pg_owner "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust --encoding=UTF8 \
         --locale=C.UTF-8 --no-sync >"$pg_dir/initdb.log" 2>&1; then
    cat "$pg_dir/initdb.log" >&2
    echo "bench: initdb failed" >&2
    exit 1
  fi
  printf '%s\n' "" "# scripts/bench.sh --peer" "listen_addresses = ''" \
    "unix_socket_directories = '$pg_dir'" "port = 5432" "max_connections = 100" \
    "shared_buffers = 256MB" "fsync = on" "synchronous_commit = on" "full_page_writes = on" \
    "wal_sync_method = fdatasync" | as_pg_owner tee -a "$pg_dir/data/postgresql.conf" >/dev/null
  if ! as_pg_owner "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 start \
         >/dev/null; then
    tail -n 20 "$pg_dir/server.log" >&2
    echo "bench: PostgreSQL did not start" >&2
    exit 1
  fi
  pg_conninfo="host=$pg_dir port=5432 user=postgres dbname=budget"
  peer_sql postgres -c "CREATE DATABASE budget"
  peer_sql budget -f tests/bench/pg_ledger.sql
  echo "bench: $("$pg_bin/postgres" --version), a cluster in $pg_dir"
}

peer_stop() {
  [ -n "$pg_dir" ] || return 0
  if [ -f "$pg_dir/data/postmaster.pid" ]; then
    as_pg_owner "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$pg_dir"
  pg_dir=
}

# One run of the peer's driver, after a checkpoint, so that every run pays the same full-page
# writes.
peer_load() {
  local name=$1; shift
  peer_sql budget -c CHECKPOINT
  run "$tree/tests/bench/pg_loadgen" --conninfo "$pg_conninfo" --seconds "$load_seconds" \
      --warmup "$warmup" --name "$name" "$@"
}

if [ "$peer" = 1 ]; then peer_install; fi

tree="build-bench"
peer_target=
if [ "$peer" = 1 ]; then peer_target=pg_loadgen; fi
if [ "$build" = 1 ]; then
  echo "bench: building into $tree/ (RelWithDebInfo)"
  mkdir -p "$tree"
  if ! { cmake -S . -B "$tree" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUDGET_SANITIZE=OFF \
           -DBUDGET_BENCH=ON &&
         cmake --build "$tree" -j"$(nproc)" --target budgetd bench_lmdb loadgen bench_replay \
           ${peer_target:+"$peer_target"}
       } >"$tree/bench-build.log" 2>&1; then
    cat "$tree/bench-build.log"
    echo "bench: the build failed" >&2
    exit 1
  fi
fi
budgetd=$tree/budgetd
loadgen=$tree/tests/bench/loadgen
if [ "$peer" = 1 ] && [ ! -x "$tree/tests/bench/pg_loadgen" ]; then
  echo "bench: --peer: $tree/tests/bench/pg_loadgen is not built (libpq not found?)" >&2
  exit 1
fi

work=$(mktemp -d "$parent/budgetd-bench-XXXXXX")
# Open to group root: loadgen makes its approvals as another uid in group root (four-eyes).
chmod 0750 "$work"
results=$work/results.txt
: >"$results"
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  peer_stop
  rm -rf "$work"
}
trap cleanup EXIT

# Runs a benchmark: its RESULT lines go to results.txt, the rest to the terminal.
run() {
  local out=$work/step.out status=0
  "$@" >"$out" || status=$?
  grep '^RESULT ' "$out" >>"$results" || true
  grep -v '^RESULT ' "$out" || true
  if [ "$status" != 0 ]; then echo "bench: $1 exited with status $status" >&2; fi
  return 0
}

# As run, with the prefix put before each RESULT key.
run_as() {
  local prefix=$1 out=$work/step_as.out status=0
  shift
  "$@" >"$out" || status=$?
  sed -n "s/^RESULT /RESULT $prefix/p" "$out" >>"$results"
  grep -v '^RESULT ' "$out" || true
  if [ "$status" != 0 ]; then echo "bench: $1 exited with status $status" >&2; fi
  return 0
}

start_daemon() {
  local dir=$work/$1 daemon=${2:-$budgetd}
  mkdir -p "$dir"
  "$daemon" --data "$dir/data" --socket "$dir/budgetd.sock" 2>"$dir/budgetd.log" &
  daemon_pid=$!
  for _ in $(seq 200); do
    [ -S "$dir/budgetd.sock" ] && return 0
    sleep 0.05
  done
  echo "bench: budgetd did not start; its log:" >&2
  cat "$dir/budgetd.log" >&2
  exit 1
}

stop_daemon() {
  kill "$daemon_pid"
  wait "$daemon_pid" || true
  daemon_pid=
}

load() {
  local name=$1; shift
  load_on "$budgetd" "$name" "$@"
}

# As load, on the budgetd $1.
load_on() {
  local daemon=$1 name=$2; shift 2
  start_daemon "$name" "$daemon"
  run "$loadgen" --socket "$work/$name/budgetd.sock" --seconds "$load_seconds" \
      --warmup "$warmup" --name "$name" --daemon-pid "$daemon_pid" "$@"
  stop_daemon
}

# The paged-read mix on one budgetd ($2; prefix $1): a seeded ledger, 32 x 4 appenders alone
# and beside 4 x 4 readers of every page of plain balances, then the same with a unit's.
pages() {
  local prefix=$1 daemon=$2
  start_daemon "$prefix" "$daemon"
  run "$loadgen" --socket "$work/$prefix/budgetd.sock" --seed-allocations "$pages_allocations"
  sed -i "s/^RESULT seed_/RESULT ${prefix}_seed_/" "$results"
  run "$loadgen" --socket "$work/$prefix/budgetd.sock" --seconds "$load_seconds" --warmup "$warmup" \
      --name "${prefix}_plain" --append-clients 32 --depth 4 --read-clients 4 --read-mode pages \
      --read-spread "$pages_allocations" --compare
  run "$loadgen" --socket "$work/$prefix/budgetd.sock" --seconds "$load_seconds" --warmup "$warmup" \
      --name "${prefix}_unit" --append-clients 32 --depth 4 --read-clients 4 --read-mode unit \
      --read-spread "$pages_allocations" --compare
  stop_daemon
  rm -rf "${work:?}/$prefix"
}

# This build beside the baseline budgetd (--baseline), appending in the same rounds: the medians
# of the rounds' ratios.
base_table() {
  awk -v rounds="$rounds" -v base="$baseline" '
    $1 == "RESULT" { v[$2] = $3 }
    function num(k) { return (k in v) && v[k] != "" ? v[k] + 0 : -1 }
    # The median over the rounds of a<size>_r<i><suffix> / base_a<size>_r<i><suffix>.
    function median_ratio(size, suffix,    n, i, x, y, arr, j, t) {
      n = 0
      for (i = 1; i <= rounds; i++) {
        x = num("a" size "_r" i suffix); y = num("base_a" size "_r" i suffix)
        if (x > 0 && y > 0) arr[++n] = x / y
      }
      if (n == 0) return -1
      for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
      return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }
    function row(what, size, suffix,    i, out) {
      out = ""
      for (i = 1; i <= rounds; i++)
        out = out sprintf("%s %.1f / %.1f", i > 1 ? ";" : "", num("a" size "_r" i suffix), num("base_a" size "_r" i suffix))
      printf "%-40s median ratio %.2f  (this / baseline per round:%s)\n", what, median_ratio(size, suffix), out
    }
    END {
      print ""
      print "this build beside the baseline " base " (the same rounds)"
      row("one client, depth 1: p50 latency (us)", "1", "_appends_p50_us")
      row("one client, depth 1: p99 latency (us)", "1", "_appends_p99_us")
      row("64 clients x depth 4: appends/s", "64", "_appends_per_s")
      row("64 x 4: budgetd CPU per event (us)", "64", "_cpu_us_per_event")
    }' "$results"
}

# budgetd beside the PostgreSQL peer, round by round: each side and its ratio to the raw LMDB
# baseline of its round, and budgetd / PostgreSQL; the medians of the rounds.
peer_table() {
  awk -v rounds="$rounds" '
    $1 == "RESULT" { v[$2] = $3 }
    function num(k) { return (k in v) && v[k] != "" ? v[k] + 0 : -1 }
    function row(a, b, c, d, e, f) { printf "%-40s %-16s %-16s %-18s %-16s %s\n", a, b, c, d, e, f }
    # The median over the rounds of a_r<i>a_suffix / b_r<i>b_suffix (b "": of a alone).
    function median_of(a, a_suffix, b, b_suffix,    n, i, x, y, arr, j, t) {
      n = 0
      for (i = 1; i <= rounds; i++) {
        x = num(a "_r" i a_suffix)
        if (x < 0) continue
        if (b != "") { y = num(b "_r" i b_suffix); if (y <= 0) continue; x = x / y }
        arr[++n] = x
      }
      if (n == 0) return -1
      for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
      return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }
    function r2(x) { return x < 0 ? "-" : sprintf("%.2f", x) }
    # One figure: budgetd, PostgreSQL, each / its round s baseline, budgetd / PostgreSQL.
    # A target is "> X" (budgetd / PG at least X) or "< X" (below X); "" is none.
    function figure(title, bd, pg, suffix, base, base_suffix, unit, target,    q, x, met) {
      q = median_of(bd, suffix, pg, suffix)
      x = substr(target, 3) + 0
      met = q > 0 && (substr(target, 1, 1) == ">" ? q >= x : q < x)
      row(title, sprintf(unit, median_of(bd, suffix)), sprintf(unit, median_of(pg, suffix)),
          base == "" ? "" : r2(median_of(bd, suffix, base, base_suffix)) " / " r2(median_of(pg, suffix, base, base_suffix)),
          r2(q), target == "" ? "" : (substr(target, 1, 1) == ">" ? ">= " x "x " : "< " x "x ") (met ? "met" : "MISSED"))
    }
    END {
      print ""
      print "budgetd beside PostgreSQL 15 (the same appends, the same disk, each round right after budgetd)"
      row("figure", "budgetd", "PostgreSQL", "each / raw LMDB", "budgetd / PG", "target")
      figure("appends/s, 64 clients x depth 4", "a64", "pg_a64", "_appends_per_s", "lmdb", "_b64_events_per_s", "%.0f/s", "> 10")
      figure("  p50 latency", "a64", "pg_a64", "_appends_p50_us", "", "", "%.0f us", "")
      figure("  p99 latency", "a64", "pg_a64", "_appends_p99_us", "", "", "%.0f us", "")
      figure("  against PostgreSQL at 64 x depth 1", "a64", "pg_a64d1", "_appends_per_s", "lmdb", "_b64_events_per_s", "%.0f/s", "> 10")
      figure("one client, depth 1: p50 latency", "a1", "pg_a1", "_appends_p50_us", "lmdb", "_b1_commit_p50_us", "%.0f us", "< 1")
      figure("  p99 latency", "a1", "pg_a1", "_appends_p99_us", "lmdb", "_b1_commit_p99_us", "%.0f us", "")
      figure("  appends/s", "a1", "pg_a1", "_appends_per_s", "lmdb", "_b1_events_per_s", "%.0f/s", "")
      printf "raw LMDB in the same rounds: 64 per commit %.0f events/s; 1 per commit %.0f events/s, commit p50 %.0f us, p99 %.0f us\n",
        median_of("lmdb", "_b64_events_per_s"), median_of("lmdb", "_b1_events_per_s"),
        median_of("lmdb", "_b1_commit_p50_us"), median_of("lmdb", "_b1_commit_p99_us")
      for (i = 1; i <= rounds; i++)
        line = line sprintf("%s round %d: %.2f / %.2f", i > 1 ? ";" : "", i,
          num("a64_r" i "_appends_per_s") / num("pg_a64_r" i "_appends_per_s"),
          num("a1_r" i "_appends_p50_us") / num("pg_a1_r" i "_appends_p50_us"))
      print "budgetd / PostgreSQL per round (appends/s 64x4; depth-1 p50):" line
      line = ""
      for (i = 1; i <= rounds; i++)
        line = line sprintf("%s %.0f/s", i > 1 ? "," : "", num("pg_a64d1_r" i "_appends_per_s"))
      print "PostgreSQL 64 x depth 1 per round:" line
      for (i = 1; i <= rounds; i++) errors += num("pg_a64_r" i "_appends_errors") + num("pg_a64d1_r" i "_appends_errors") + num("pg_a1_r" i "_appends_errors")
      printf "PostgreSQL: %.0f WAL bytes per append (64 x 4); errors answered: %d\n",
        median_of("pg_a64", "_wal_bytes_per_append"), errors
    }' "$results"
}

pages_table() {
  awk -v n="$pages_allocations" -v base="$baseline" '
    $1 == "RESULT" { v[$2] = $3 }
    function num(k) { return (k in v) ? v[k] + 0 : -1 }
    function row(a, b, c, d, e) { printf "%-44s %-18s %-18s %-18s %s\n", a, b, c, d, e }
    END {
      print ""
      print "paged reads on a ledger of " n " allocations (32 x 4 appenders; 4 x 4 readers of every page)"
      row("figure", "this build", base != "" ? "baseline" : "", base != "" ? "this / baseline" : "", "target")
      split("plain unit", kind, " ")
      for (i = 1; i <= 2; i++) {
        k = kind[i]
        row(k " pages: appends alone", sprintf("%.0f/s", num("pages_" k "_alone_appends_per_s")),
            base != "" ? sprintf("%.0f/s", num("base_" k "_alone_appends_per_s")) : "", "", "")
        row("  appends beside the readers", sprintf("%.0f/s", num("pages_" k "_appends_per_s")),
            base != "" ? sprintf("%.0f/s", num("base_" k "_appends_per_s")) : "", "", "")
        q = num("pages_" k "_appends_ratio"); qb = num("base_" k "_appends_ratio")
        row("  beside / alone", sprintf("%.2f", q), base != "" ? sprintf("%.2f", qb) : "",
            base != "" && qb > 0 ? sprintf("%.2fx", q / qb) : "", ">= 0.5 " (q >= 0.5 ? "met" : "MISSED"))
        r = num("pages_" k "_reads_per_s"); b = num("base_" k "_reads_per_s")
        row("  pages read/s", sprintf("%.0f/s", r), base != "" ? sprintf("%.0f/s", b) : "",
            base != "" && b > 0 ? sprintf("%.2fx", r / b) : "", "")
        p = num("pages_" k "_reads_p99_us"); pb = num("base_" k "_reads_p99_us")
        row("  p50 / p99 of each read", sprintf("%.1f / %.1f ms", num("pages_" k "_reads_p50_us") / 1e3, p / 1e3),
            base != "" ? sprintf("%.1f / %.1f ms", num("base_" k "_reads_p50_us") / 1e3, pb / 1e3) : "",
            base != "" && pb > 0 ? sprintf("%.2fx", p / pb) : "", "p99 < 50 ms " (p >= 0 && p < 50000 ? "met" : "MISSED"))
      }
    }' "$results"
}

echo "bench: $(nproc) cores, $(uname -r), data in $work ($(df -T "$work" | awk 'NR==2 {print $2}'))"
if [ "$pages_only" = 1 ]; then
  echo "== paged reads, this build =="
  pages pages "$budgetd"
  if [ -n "$baseline" ]; then
    echo "== paged reads, baseline $baseline =="
    pages base "$baseline"
  fi
  pages_table
  exit 0
fi
if [ "$peer" = 1 ]; then peer_start; fi
echo "== raw LMDB, 1024 events per commit =="
run "$tree/tests/bench/bench_lmdb" --dir "$work" --seconds "$lmdb_seconds" --batches 1024
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds: raw LMDB, then budgetd appending =="
  run "$tree/tests/bench/bench_lmdb" --dir "$work" --seconds "$lmdb_seconds" --batches 1,64 \
      --name "lmdb_r$round" --fdatasync
  load "a64_r$round" --append-clients 64 --depth 4
  load "a1_r$round" --append-clients 1 --depth 1
  if [ -n "$baseline" ]; then
    load_on "$baseline" "base_a64_r$round" --append-clients 64 --depth 4
    load_on "$baseline" "base_a1_r$round" --append-clients 1 --depth 1
  fi
  if [ "$peer" = 1 ]; then
    peer_load "pg_a64_r$round" --clients 64 --depth 4
    peer_load "pg_a64d1_r$round" --clients 64 --depth 1
    peer_load "pg_a1_r$round" --clients 1 --depth 1
  fi
done
peer_stop
echo "== budgetd reading =="
load r8 --read-clients 8 --depth 4
load mix --read-clients 8 --append-clients 16 --depth 4
echo "== paged reads on a ledger of $pages_allocations allocations =="
pages pages "$budgetd"
if [ -n "$baseline" ]; then
  echo "== the same on the baseline $baseline =="
  pages base "$baseline"
fi
# A daemon that committed the log holds a snapshot every 100 000 events (its default); the
# same log replayed from its first event (--snapshot-every 0) is the baseline, its figures
# kept under "nosnap_".
echo "== replay of a million events, a snapshot every 100 000 (budgetd's default) =="
run "$tree/tests/bench/bench_replay" --dir "$work" --budgetd "$budgetd" --snapshots 100000 --keep
echo "== the same log without snapshots (--snapshot-every 0) =="
run_as nosnap_ "$tree/tests/bench/bench_replay" --dir "$work" --budgetd "$budgetd" --reuse \
  --snapshots 0

# ---- the table ------------------------------------------------------------------------------
awk -v quick="$quick" -v rounds="$rounds" '
  $1 == "RESULT" { v[$2] = $3 }
  function has(k) { return (k in v) && v[k] != "" }
  function num(k) { return has(k) ? v[k] + 0 : -1 }
  function row(figure, target, measured, baseline, ratio, verdict) {
    printf "%-44s %-26s %-22s %-26s %-9s %s\n", figure, target, measured, baseline, ratio, verdict
  }
  function verdict(ok) { return ok ? "met" : "MISSED" }
  function fmt_rate(x) { return x < 0 ? "-" : sprintf("%.0f/s", x) }
  # The median over the rounds of v[prefix "_r" i suffix] (or of its ratio to the baseline key).
  function median_of(prefix, suffix, base_prefix, base_suffix,    n, i, a, b, arr, j, t) {
    n = 0
    for (i = 1; i <= rounds; i++) {
      a = num(prefix "_r" i suffix)
      if (a < 0) continue
      if (base_prefix != "") { b = num(base_prefix "_r" i base_suffix); if (b <= 0) continue; a = a / b }
      arr[++n] = a
    }
    if (n == 0) return -1
    for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
    return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
  }
  END {
    row("figure", "target", "measured", "baseline", "ratio", "")
    row("------", "------", "--------", "--------", "-----", "")
    a = median_of("a64", "_appends_per_s"); b = median_of("lmdb", "_b64_events_per_s")
    q = median_of("a64", "_appends_per_s", "lmdb", "_b64_events_per_s")
    row("durable appends, 64 clients x depth 4", ">= 0.6 x raw batch 64", fmt_rate(a),
        "raw LMDB b64 " fmt_rate(b), q > 0 ? sprintf("%.2f", q) : "-", verdict(q >= 0.6))
    row("  p50 / p99 / p999 latency", "", sprintf("%.0f/%.0f/%.0f us", median_of("a64", "_appends_p50_us"), median_of("a64", "_appends_p99_us"), median_of("a64", "_appends_p999_us")),
        sprintf("%.1f events/commit", median_of("a64", "_events_per_commit")), "", "")
    row("  budgetd CPU per event (all threads)", "", sprintf("%.1f us", median_of("a64", "_cpu_us_per_event")), "", "", "")
    a = median_of("a1", "_appends_p50_us"); b = median_of("lmdb", "_fdatasync_p50_us")
    q = median_of("a1", "_appends_p50_us", "lmdb", "_fdatasync_p50_us")
    row("one client, depth 1: median latency", "<= 1.3 x one fdatasync", sprintf("%.0f us", a),
        sprintf("one page fdatasync %.0f us", b), q > 0 ? sprintf("%.2f", q) : "-", verdict(q > 0 && q <= 1.3))
    q = median_of("a1", "_appends_p50_us", "lmdb", "_b1_commit_p50_us")
    row("  against one raw LMDB commit (two syncs)", "", "", sprintf("raw LMDB b1 commit %.0f us", median_of("lmdb", "_b1_commit_p50_us")),
        q > 0 ? sprintf("%.2f", q) : "-", "")
    row("  appends/s, p99", "", sprintf("%s, p99 %.0f us", fmt_rate(median_of("a1", "_appends_per_s")), median_of("a1", "_appends_p99_us")),
        "raw LMDB b1 " fmt_rate(median_of("lmdb", "_b1_events_per_s")), "", "")
    for (i = 1; i <= rounds; i++)
      line = line sprintf("%s round %d: %.2f / %.2f", i > 1 ? ";" : "", i,
        num("a64_r" i "_appends_per_s") / num("lmdb_r" i "_b64_events_per_s"),
        num("a1_r" i "_appends_p50_us") / num("lmdb_r" i "_fdatasync_p50_us"))
    r = num("r8_reads_per_s")
    row("reads (balances of a frame), 8 x depth 4", ">= 100000/s", fmt_rate(r), "", "", verdict(r >= 100000))
    c = num("r8_cpu_us_per_read")
    row("  budgetd CPU per read (all threads)", "", c > 0 ? sprintf("%.1f us", c) : "-", "", "", "")
    m = num("mix_reads_per_s")
    row("  the same beside 16 x 4 appending clients", "slowed <= 2x", fmt_rate(m), "reads alone " fmt_rate(r),
        r > 0 && m > 0 ? sprintf("%.2fx", r / m) : "-", verdict(r > 0 && m > 0 && r / m <= 2))
    row("  appends during that mix", "", fmt_rate(num("mix_appends_per_s")), "", "", "")
    t = num("daemon_replay_s"); e = num("replay_log_events"); ip = num("inproc_replay_events_per_s")
    row("start-up replay of " e " events", "<= 0.5 s a 1M (>= 2M/s)", t > 0 ? sprintf("%.2fM/s (%.3f s)", e / t / 1e6, t) : "-",
        sprintf("in-process %.2fM/s", ip / 1e6), t > 0 && ip > 0 ? sprintf("%.2f", (e / t) / ip) : "-", verdict(t > 0 && e / t >= 2e6))
    b = num("nosnap_daemon_replay_s")
    row("  from snapshots / without (every hash checked)", "", "", sprintf("no snapshots %.3f s", b), t > 0 && b > 0 ? sprintf("%.2f", t / b) : "-", "")
    row("  until the socket answers", "", sprintf("%.3f s", num("daemon_ready_s")), "", "", "")
    split("start middle end", where, " ")
    for (i = 1; i <= 3; i++) {
      s = num("daemon_balances_as_of_" where[i] "_s"); b = num("nosnap_daemon_balances_as_of_" where[i] "_s")
      row("balances as_of an event near the " where[i], "< 0.05 s", sprintf("%.3f s", s), sprintf("no snapshots %.3f s", b),
          s > 0 && b > 0 ? sprintf("%.2f", s / b) : "-", verdict(s >= 0 && s < 0.05))
    }
    s = num("inproc_snapshot_restore_ms"); b = num("inproc_ledger_clone_ms")
    row("  in-process: the newest snapshot restored", "", s > 0 ? sprintf("%.1f ms", s) : "-",
        sprintf("a copy of the ledger %.1f ms", b), s > 0 && b > 0 ? sprintf("%.2f", s / b) : "-", "")
    s = num("inproc_tail_events_per_s")
    row("  in-process: the events after a snapshot", "", s > 0 ? sprintf("%.2fM/s", s / 1e6) : "-",
        sprintf("replay, one thread %.2fM/s", ip / 1e6), s > 0 && ip > 0 ? sprintf("%.2f", s / ip) : "-", "")
    s = num("daemon_as_of_8_wall_s"); b = num("nosnap_daemon_as_of_8_wall_s")
    row("8 as_of at once: wall time", "", sprintf("%.3f s", s), sprintf("no snapshots %.3f s", b), s > 0 && b > 0 ? sprintf("%.2f", s / b) : "-", "")
    s = num("daemon_as_of_8_hwm_mib"); b = num("nosnap_daemon_as_of_8_hwm_mib")
    row("  peak VmRSS meanwhile", "< 200 MiB", sprintf("%.1f MiB", s), sprintf("no snapshots %.1f MiB", b),
        s > 0 && b > 0 ? sprintf("%.2f", s / b) : "-", verdict(s > 0 && s < 200))
    s = num("daemon_as_of_8_same_wall_s"); b = num("daemon_as_of_8_wall_s")
    row("8 as_of at once, all at one point: wall time", "", sprintf("%.3f s", s), sprintf("8 points %.3f s", b), s > 0 && b > 0 ? sprintf("%.2f", s / b) : "-", "")
    row("  peak VmRSS meanwhile", "", sprintf("%.1f MiB", num("daemon_as_of_8_same_hwm_mib")), "", "", "")
    s = num("daemon_as_of_every_page_s"); b = num("daemon_as_of_first_page_s")
    row("every page of one as_of (" num("daemon_as_of_pages") " pages)", "", sprintf("%.3f s", s), sprintf("the first page %.3f s", b),
        s > 0 && b > 0 ? sprintf("%.2f", s / b) : "-", "")
    s = num("daemon_as_of_step_s"); b = num("daemon_as_of_step_first_s")
    row("as_of stepping forward 1000 events: each step", "< 0.05 s", sprintf("%.3f s", s), sprintf("the first point %.3f s", b),
        s > 0 && b > 0 ? sprintf("%.2f", s / b) : "-", verdict(s > 0 && s < 0.05))
    # decided_by starts from the newest snapshot that is the view by that day, or the first event;
    # the run without snapshots replays from the first event each time.
    split("decided_by:balances decided_by 2024-06-30|decided_late:  decided_by after every decision, at the head|decided_late_end:  the same as of the event before the head", dl, "|")
    for (i = 1; i <= 3; i++) {
      split(dl[i], kv, ":")
      s = num("daemon_balances_" kv[1] "_s"); b = num("nosnap_daemon_balances_" kv[1] "_s")
      row(kv[2], "< 0.05 s", sprintf("%.3f s", s), sprintf("no snapshots %.3f s", b),
          s > 0 && b > 0 ? sprintf("%.2f", s / b) : "-", verdict(s > 0 && s < 0.05))
    }
    row("  balances now (from memory)", "", sprintf("%.4f s", num("daemon_balances_now_s")), "", "", "")
    vr = num("daemon_verify_events_per_s"); iv = num("inproc_verify_events_per_s")
    row("verify of the whole chain", ">= 2M events/s", sprintf("%.2fM/s (%.3f s)", vr / 1e6, num("daemon_verify_s")),
        sprintf("in-process 1 thread %.2fM/s", iv / 1e6), vr > 0 && iv > 0 ? sprintf("%.2f", vr / iv) : "-", verdict(vr >= 2e6))
    rss = num("daemon_rss_replayed_mib")
    row("resident memory after replay (VmRSS)", "< 200 MiB", sprintf("%.1f MiB", rss),
        sprintf("anon %.1f, file %.1f", num("daemon_rss_anon_replayed_mib"), num("daemon_rss_file_replayed_mib")), "", verdict(rss > 0 && rss < 200))
    row("  after the reads above (VmRSS / peak)", "", sprintf("%.1f / %.1f MiB", num("daemon_rss_after_reads_mib"), num("daemon_hwm_after_reads_mib")),
        sprintf("one ledger %.1f MiB heap", num("inproc_ledger_heap_mib")), "", "")
    print ""
    print "ratios per round (appends 64x4 / raw b64; depth-1 p50 / one page fdatasync p50):" line
    errors = num("r8_reads_errors") + num("mix_appends_errors") + num("mix_reads_errors")
    for (i = 1; i <= rounds; i++) errors += num("a64_r" i "_appends_errors") + num("a1_r" i "_appends_errors")
    printf "errors answered during the load runs: %d\n", errors
    printf "raw LMDB, synced, events/s by events per commit: 1: %.0f  64: %.0f  1024: %.0f (events of %d bytes)\n",
      median_of("lmdb", "_b1_events_per_s"), median_of("lmdb", "_b64_events_per_s"), num("lmdb_b1024_events_per_s"), num("event_bytes_mean")
    if (quick) print "(--quick: short runs; figures are noisier)"
  }' "$results"
if [ "$peer" = 1 ]; then peer_table; fi
if [ -n "$baseline" ]; then base_table; fi
pages_table
