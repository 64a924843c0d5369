#!/usr/bin/env python3
"""Mutation testing of budgetd's core: plants each mutation of a list in a scratch copy of the
tree, builds it, runs the suites named for it, and counts the mutations the suites kill.

usage: scripts/mutate.py [--list FILE] [--only TEXT] [--jobs N] [--keep]

  --list FILE  the mutations (default tests/mutations.txt; its head says the format)
  --only TEXT  only the mutations whose file, name or text contains TEXT (repeatable)
  --jobs N     build jobs (default: the number of CPUs)
  --keep       leave the scratch copy (its path is printed)

The working tree is never changed: the script copies the tree's files (tracked and new, as they
are on disk) into a scratch folder, builds there once, checks that the suites pass unmutated,
then for each mutation writes the mutated file, rebuilds, runs the suites (stopping at the first
that fails) and writes the file back. A mutation is

  killed       a suite failed, crashed or passed its time limit
  survived     every suite passed: a test is missing (or the list says why it cannot be seen)
  stale        its original text is not in the file exactly once (the code moved on: update
               the list); not counted
  unbuildable  the mutated tree does not build; not counted

It prints a line per mutation, the kill ratio and the survivors; the exit status is 1 when a
mutation survived that the list does not expect to, or one is stale.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE_TIMEOUT_S = 900


def parse(path):
    """Entries of the list: blocks of "key: value" lines, separated by blank lines."""
    entries, cur, lineno = [], {}, 0
    keys = ("name", "file", "from", "to", "breaks", "suites", "survives")
    with open(path, encoding="utf-8") as f:
        for raw in f:
            lineno += 1
            line = raw.rstrip("\n")
            if line.startswith("#"):
                continue
            if not line.strip():
                if cur:
                    entries.append(cur)
                    cur = {}
                continue
            key, sep, value = line.partition(":")
            if not sep or key not in keys:
                sys.exit(f"mutate: {path}:{lineno}: expected one of {', '.join(keys)}: ...")
            # Exactly one space after the colon; the rest is the text, spaces and all.
            value = value[1:] if value.startswith(" ") else value
            if key in cur:
                sys.exit(f"mutate: {path}:{lineno}: {key} twice in one mutation")
            cur[key] = value
            cur.setdefault("line", lineno)
    if cur:
        entries.append(cur)
    for e in entries:
        for k in ("name", "file", "from", "to", "breaks", "suites"):
            if k not in e:
                sys.exit(f"mutate: {path}:{e['line']}: the mutation has no {k}")
        if e["from"] == e["to"]:
            sys.exit(f"mutate: {path}:{e['line']}: {e['name']} changes nothing")
        e["suites"] = e["suites"].split()
    names = [e["name"] for e in entries]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        sys.exit(f"mutate: names used twice: {', '.join(sorted(dup))}")
    return entries


def tree_files():
    out = subprocess.run(
        ["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(ROOT, p))]


def run(cmd, cwd, log, timeout=None):
    """Runs cmd with its output in log; returns (status, timed out). The whole process group is
    killed at the timeout."""
    with open(log, "ab") as out:
        out.write(("\n+ " + " ".join(cmd) + "\n").encode())
        out.flush()
        p = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            return p.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return -1, True
        except BaseException:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise


def main():
    ap = argparse.ArgumentParser(add_help=True)
    ap.add_argument("--list", default=os.path.join(ROOT, "tests", "mutations.txt"))
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    entries = parse(args.list)
    if args.only:
        entries = [e for e in entries
                   if any(o in e[k] for o in args.only for k in ("name", "file", "from", "to"))]
    # Stale before anything is built: the text must be in the working tree's file once.
    live, stale = [], []
    for e in entries:
        path = os.path.join(ROOT, e["file"])
        text = open(path, encoding="utf-8").read() if os.path.isfile(path) else ""
        count = text.count(e["from"])
        if count != 1:
            e["why"] = "not found" if count == 0 else f"found {count} times"
            stale.append(e)
        else:
            live.append(e)
    for e in stale:
        print(f"STALE       {e['name']}: {e['file']}: original text {e['why']}: {e['from'].strip()}")
    if not live:
        print("mutate: nothing to run")
        return 1 if stale else 0

    scratch = tempfile.mkdtemp(prefix="budgetd-mutate-")
    # The suites run budgetctl as other users (four-eyes, access): they must reach the binaries.
    os.chmod(scratch, 0o755)
    log = os.path.join(scratch, "mutate.log")
    build = os.path.join(scratch, "build")
    status = 0
    try:
        for p in tree_files():
            dst = os.path.join(scratch, "src", p)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, p), dst)
        src = os.path.join(scratch, "src")
        print(f"mutate: {len(live)} mutations in {src} (log: {log})", flush=True)
        rc, _ = run(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                     "-DBUDGET_BENCH=OFF"], scratch, log)
        if rc == 0:
            rc, _ = run(["cmake", "--build", build, f"-j{args.jobs}"], scratch, log)
        if rc != 0:
            print(f"mutate: the unmutated tree does not build (log: {log})")
            return 1

        def suites_pass(suites):
            """None, or the first suite that failed and the tests of it that did."""
            for s in suites:
                start = os.path.getsize(log)
                rc, late = run([os.path.join(build, "tests", s), "--jobs", "2"], scratch, log,
                               timeout=SUITE_TIMEOUT_S)
                if rc != 0:
                    with open(log, encoding="utf-8", errors="replace") as f:
                        f.seek(start)
                        failed = sorted({line.split("::", 1)[1].split(":")[0]
                                         for line in f if line.startswith(("[FAIL]", "[CRASH]"))
                                         and "::" in line})
                    what = f" ({', '.join(failed)})" if failed else ""
                    return s + what + (" (time limit)" if late else "")
            return None

        every = sorted({s for e in live for s in e["suites"]})
        t0 = time.monotonic()
        failed = suites_pass(every)
        if failed:
            print(f"mutate: {failed} fails on the unmutated tree (log: {log}); its end:")
            with open(log, encoding="utf-8", errors="replace") as f:
                print("".join(f.readlines()[-40:]))
            return 1
        print(f"mutate: the unmutated suites pass ({time.monotonic() - t0:.0f} s)", flush=True)

        killed, survived, unbuildable = [], [], []
        for i, e in enumerate(live, 1):
            path = os.path.join(src, e["file"])
            with open(path, encoding="utf-8") as f:
                original = f.read()
            t0 = time.monotonic()
            try:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original.replace(e["from"], e["to"], 1))
                rc, _ = run(["cmake", "--build", build, f"-j{args.jobs}"], scratch, log)
                if rc != 0:
                    verdict, by = "UNBUILDABLE", ""
                    unbuildable.append(e)
                else:
                    by = suites_pass(e["suites"])
                    verdict = "killed" if by else "SURVIVED"
                    (killed if by else survived).append(e)
            finally:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original)
            note = f" by {by}" if by else ""
            if verdict == "SURVIVED" and "survives" in e:
                note = f" (expected: {e['survives']})"
            print(f"[{i:2}/{len(live)}] {verdict:<11} {e['name']}{note} "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)

        counted = len(killed) + len(survived)
        ratio = 100.0 * len(killed) / counted if counted else 0.0
        print(f"\nmutate: killed {len(killed)} of {counted} ({ratio:.1f} %); "
              f"{len(stale)} stale, {len(unbuildable)} unbuildable (not counted)")
        for e in survived:
            known = f"\n    expected: {e['survives']}" if "survives" in e else ""
            print(f"  survivor {e['name']}: {e['file']}: {e['from'].strip()} -> "
                  f"{e['to'].strip()}\n    breaks: {e['breaks']}{known}")
            if "survives" not in e:
                status = 1
        for e in unbuildable:
            print(f"  unbuildable {e['name']}: fix the list (log: {log})")
        if stale:
            status = 1
        return status
    finally:
        if args.keep:
            print(f"mutate: the scratch copy is left in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nmutate: interrupted; the working tree was never changed", file=sys.stderr)
        sys.exit(130)
