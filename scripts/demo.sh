#!/usr/bin/env bash
# The main job: build budgetd, start it on a temporary data folder, load the decision
# "Utökat trygghetsarbete, fördelning av kommunstyrelsens utökade ram år 2021"
# (KS 2021-08-24 § 241), print the balances, and stop the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
bin=${BUILD_DIR:-build}
work=$(mktemp -d -t budgetd-demo.XXXXXX)
export BUDGETD_SOCKET="$work/budgetd.sock"
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/budgetd" --data "$work/data" --log-level warn 2>"$work/budgetd.log" &
daemon_pid=$!
for _ in $(seq 100); do
  "$bin/budgetctl" hello >/dev/null 2>&1 && break
  sleep 0.1
done
ctl() {
  local shown="\$ budgetctl" a
  for a in "$@"; do
    case "$a" in *[[:space:]\'\"\$]*) shown+=" \"$a\"" ;; *) shown+=" $a" ;; esac
  done
  echo "$shown"
  "$bin/budgetctl" "$@"
}

echo "== The board's frame: KS 2021-08-24 § 241 extends KS's 2021 frame by 3 mkr"
ctl grant --id ks-2021-trygghet --unit KS --year 2021 --amount "3 mkr" \
  --title "Utökat trygghetsarbete" --reference "KS 2021-08-24 § 241"

echo
echo "== The proposal divides it (fördelning)"
ctl allocate ks-2021-trygghet --id son-trygghet --unit SON --amount "1 mkr" \
  --purpose "Förstärka områdesarbetet för trygghetsskapande åtgärder"
ctl allocate ks-2021-trygghet --id kfn-fritid --unit KFN --amount "0,5 mkr" \
  --purpose "Fritidsverksamhet som säkerställer skolgång"
ctl allocate ks-2021-trygghet --id ks-trygghet --unit KS --amount "1,5 mkr" \
  --purpose "Förstärkt trygghetsarbete, bland annat ordningsvakter"

echo
echo "== The board decides"
for a in son-trygghet kfn-fritid ks-trygghet; do
  ctl approve "$a" --id "beslut-$a" --reference "KS 2021-09-28 § 270"
done

echo
echo "== SON calls off part of its share (avrop), and it is approved"
ctl avrop son-trygghet --id son-avrop-1 --amount "400 tkr" --note "Fältorganisationen, hösten 2021"
ctl approve son-avrop-1 --id beslut-son-avrop-1 --reference "KS ordförandebeslut 2021-10-15"

echo
echo "== No krona is promised twice: one öre more than the frame is refused"
ctl allocate ks-2021-trygghet --unit KS --amount "0,01 kr" --purpose "Ett öre för mycket" || true

echo
echo "== Balances"
ctl balances

echo
ctl verify
