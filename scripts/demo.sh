#!/usr/bin/env bash
# The main job: build budgetd, start it on a temporary data folder, load the decision
# "Utökat trygghetsarbete, fördelning av kommunstyrelsens utökade ram år 2021"
# (KS 2021-08-24 § 241): its frame and split, avrop in the autumn and one too late, a
# reversal, outcome imported, the year closed and carried over, budget 2022 with plan 2023-2027 adopted with
# the efforts made permanent, and the years side by side; print the balances, write the committee's
# report (an HTML page kept after the demo; its path is printed), and stop the daemon.
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
  --purpose "Fritidsverksamhet som säkerställer skolgång" --last-avrop-day 2021-12-31
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
echo "== The resources are for avrop during the autumn of 2021 (\"under hösten 2021\"):"
echo "   KFN's share took 2021-12-31 as its last day, so an avrop entered today is too late"
ctl avrop kfn-fritid --amount "100 tkr" --note "Sommarlovsaktiviteter" || true

echo
echo "== A reversal (återföring): 100 tkr of SON's avrop was booked wrongly and goes back"
ctl reverse son-avrop-1 "100 tkr" --id son-aterforing-1 --reason "Felaktigt avrop, dubbelbokat"
ctl_approver approve son-aterforing-1 --id beslut-son-aterforing-1 \
  --decision "KS 2021-11-23 § 301"

echo
echo "== Outcome (utfall): the financial system's export, imported every figure or none"
printf '%s\r\n' "Period;Ansvar;Konto;Belopp" "2021-09;1100;4010;85 000,00" \
  "2021-10;1100;4010;120 500,50" "2021-10;1100;6110;4 499,50" "2021-11;1100;4010;90 000,00" \
  "2021-10;1000;6420;210 000,00" >"$work/utfall-2021.csv"
printf '%s\n' "# utfall ur ekonomisystemet" "period=Period" "unit=Ansvar" "amount=Belopp" \
  "unit.1000=KS" "unit.1100=SON" >"$work/utfall.map"
ctl import outcome "$work/utfall-2021.csv" --map "$work/utfall.map"
echo "   (the same file again records nothing)"
ctl import outcome "$work/utfall-2021.csv" --map "$work/utfall.map"
ctl outcome --unit SON --year 2021

echo
echo "== No krona is promised twice: one öre more than the frame is refused"
ctl allocate ks-2021-trygghet --unit KS --amount "0,01 kr" --purpose "Ett öre för mycket" || true

echo
echo "== Balances"
ctl balances

echo
echo "== The year's end: 2021 is closed by a decision; what was not called off is unspent"
ctl close-year 2021 --id bokslut-2021 --decision "KS 2022-01-25 § 12"
echo "   (after the close nothing on the year's frames moves)"
ctl avrop son-trygghet --amount "1 kr" || true

echo
echo "== Ombudgetering: 1 mkr of the unspent money is carried over into a frame for 2022"
ctl carry-over ks-2021-trygghet --id ks-2022-ombudgeterat --amount "1 mkr" \
  --title "Ombudgetering: utökat trygghetsarbete" --decision "KF 2022-02-21 § 20"
ctl unspent 2021

echo
echo "== Budget 2022 with plan 2023-2027: the efforts are made permanent"
echo "   One decision adopts every unit's binding frame for 2022 and its planned amounts;"
echo "   KS's line continues the 2021 frame, so the thread shows in its history."
lines="$work/budget-2022.txt"
cat >"$lines" <<LINES
# enhet;budget 2022;plan 2023;2024;2025;2026;2027
KS;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;1,5 mkr;continues=ks-2021-trygghet
SON;1 mkr;1 mkr;1 mkr;1 mkr;1 mkr;1 mkr
KFN;0,5 mkr;0,5 mkr;0,5 mkr;0;0;0
LINES
cat "$lines"
ctl adopt --year 2022 --plan 2023-2027 --id budget-2022 --title "Utökat trygghetsarbete" \
  --decision "KF 2021-11-22 § 150" --lines "$lines"
ctl history ks-2021-trygghet | tail -n 3

echo
echo "== The years side by side: budget, plan, allocated, called off, unspent"
ctl years 2021-2027

echo
ctl verify

echo
echo "== The report for the committee: one HTML page, for the screen or A4"
report=$(mktemp -t budgetd-demo-report.XXXXXX.html)
ctl report --output "$report"
echo "   report: $report"
