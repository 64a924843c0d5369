#!/usr/bin/env bash
# The main job: build budgetd, start it on a temporary data folder, load the decision
# "Utökat trygghetsarbete, fördelning av kommunstyrelsens utökade ram år 2021"
# (KS 2021-08-24 § 241), print the balances, write the committee's report (an HTML page kept
# after the demo; its path is printed), and stop the daemon.
#
# Two identities take part, as the four-eyes rule wants: you, as the board's clerk (admin,
# clerk, auditor, and approver too: roles never lift four-eyes), and a second local user,
# budgetd-demo-approver, who decides what you propose (approver).
# The second user is made when missing (useradd --system), which needs root or sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
bin=${BUILD_DIR:-build}
approver=budgetd-demo-approver
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if ! sudo -n true 2>/dev/null; then
    echo "demo: the approver runs as a second local user; run the demo as root or with sudo" >&2
    exit 1
  fi
  as_root=(sudo -n)
fi
if ! id "$approver" >/dev/null 2>&1; then
  "${as_root[@]}" useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$approver"
fi
work=$(mktemp -d -t budgetd-demo.XXXXXX)
# The approver passes through to the socket's folder, which budgetd makes for the socket's
# group (mode 0750); it runs a copy of budgetctl from here.
chmod 0711 "$work"
mkdir "$work/bin"
cp "$bin/budgetctl" "$work/bin/budgetctl"
chmod 0755 "$work/bin" "$work/bin/budgetctl"
export BUDGETD_SOCKET="$work/run/budgetd.sock"
cat >"$work/access" <<ACCESS
# Who may do what in this demo (docs/operations.md, "The access file").
user $(id -u) admin
user $(id -u) clerk
user $(id -u) auditor
user $(id -u) approver
user $approver approver
ACCESS
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/budgetd" --data "$work/data" --config "$work/access" --socket-group "$approver" \
  --log-level warn 2>"$work/budgetd.log" &
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
# budgetctl as the approver.
ctl_approver() {
  local shown="\$ budgetctl" a
  for a in "$@"; do
    case "$a" in *[[:space:]\'\"\$]*) shown+=" \"$a\"" ;; *) shown+=" $a" ;; esac
  done
  echo "$shown      (as $approver)"
  "${as_root[@]}" runuser -u "$approver" -- "$work/bin/budgetctl" --socket "$BUDGETD_SOCKET" "$@"
}

echo "== The units, registered once: the board and the two committees that share the frame"
ctl unit register KS --name "Kommunstyrelsen" --kind styrelse
ctl unit register SON --name "Social- och omsorgsnämnden" --kind nämnd --parent KS
ctl unit register KFN --name "Kultur- och fritidsnämnden" --kind nämnd --parent KS
echo "   (a unit that is not registered is refused, with the nearest codes)"
ctl grant --unit SONN --year 2021 --amount "1 kr" --title "Fel kod" || true
ctl units

echo
echo "== The board's frame: KS 2021-08-24 § 241 extends KS's 2021 frame by 3 mkr"
ctl grant --id ks-2021-trygghet --unit KS --year 2021 --amount "3 mkr" \
  --title "Utökat trygghetsarbete" --decision "KS 2021-08-24 § 241"

echo
echo "== The proposal divides it (fördelning)"
ctl allocate ks-2021-trygghet --id son-trygghet --unit SON --amount "1 mkr" \
  --purpose "Förstärka områdesarbetet för trygghetsskapande åtgärder"
ctl allocate ks-2021-trygghet --id kfn-fritid --unit KFN --amount "0,5 mkr" \
  --purpose "Fritidsverksamhet som säkerställer skolgång"
ctl allocate ks-2021-trygghet --id ks-trygghet --unit KS --amount "1,5 mkr" \
  --purpose "Förstärkt trygghetsarbete, bland annat ordningsvakter"

echo
echo "== Four-eyes: whoever proposed may not approve it, whatever roles it holds"
ctl approve son-trygghet --id beslut-son-trygghet --decision "KS 2021-09-28 § 270" || true

echo
echo "== The board decides, through its approver"
ctl_approver hello
for a in son-trygghet kfn-fritid ks-trygghet; do
  ctl_approver approve "$a" --id "beslut-$a" --decision "KS 2021-09-28 § 270"
done
echo "   (an approver grants no frames)"
ctl_approver grant --unit KS --year 2021 --amount "1 kr" --title "Egen ram" \
  --decision "KS 2021-08-24 § 241" || true

echo
echo "== SON calls off part of its share (avrop), and it is approved"
ctl avrop son-trygghet --id son-avrop-1 --amount "400 tkr" --note "Fältorganisationen, hösten 2021"
ctl_approver approve son-avrop-1 --id beslut-son-avrop-1 \
  --decision "KS 2021-10-15 § 12" --reference "KS ordförandebeslut"

echo
echo "== No krona is promised twice: one öre more than the frame is refused"
ctl allocate ks-2021-trygghet --unit KS --amount "0,01 kr" --purpose "Ett öre för mycket" || true

echo
echo "== Balances"
ctl balances

echo
ctl verify

echo
echo "== The report for the committee: one HTML page, for the screen or A4"
report=$(mktemp -t budgetd-demo-report.XXXXXX.html)
ctl report --output "$report"
echo "   report: $report"
