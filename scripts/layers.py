#!/usr/bin/env python3
"""Checks that budgetd's daemon files form layers: no module depends on itself through others.

A module is a stem in daemon/ (conn.c with conn.h). Two graphs are built and each must have
no cycle:
  - the include graph: module A -> B when daemon/A.c or daemon/A.h includes "B.h";
  - with --objects FILE... (budgetd's object files, daemon/X.c.o; an argument may hold several
    separated by ';', as CMake's $<TARGET_OBJECTS:budgetd> gives them), the link graph: A -> B when
    A.c.o uses a function or variable that B.c.o defines (a header shared by several modules
    can hide a circle from the include graph; the link graph cannot).
Every daemon header must also belong to a module: X.h has an X.c, so that no header holds
what several modules share.

Prints the layers, bottom first (each module only depends on those in layers below it), or
every cycle found, and exits 1 on any.

usage: scripts/layers.py [--root DIR] [--objects FILE...] [--quiet]
"""
import argparse
import os
import re
import subprocess
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)

# Files that are one module under two names: the table of event types is the ledger core's
# own (ledger.h includes it, and its field tables are made from the ledger's types).
SAME_MODULE = {"event_types": "ledger"}


def module(stem):
    return SAME_MODULE.get(stem, stem)


def include_graph(daemon):
    files = sorted(f for f in os.listdir(daemon) if f.endswith((".c", ".h")))
    stems = {f[:-2] for f in files}
    graph = {module(s): set() for s in stems}
    problems = []
    for f in files:
        with open(os.path.join(daemon, f), encoding="utf-8") as fh:
            text = fh.read()
        for inc in INCLUDE.findall(text):
            if "/" in inc or not inc.endswith(".h") or inc[:-2] not in stems:
                continue  # a library header (budget/, proto/) or a system one
            target = inc[:-2]
            if not os.path.exists(os.path.join(daemon, target + ".c")):
                problems.append(f"daemon/{f} includes {inc}, which no module owns "
                                f"(there is no daemon/{target}.c)")
            if module(target) != module(f[:-2]):
                graph[module(f[:-2])].add(module(target))
    return graph, problems


def link_graph(objects):
    defined, used = {}, {}
    for path in objects:
        f = os.path.basename(path)
        if not f.endswith(".c.o") or os.path.basename(os.path.dirname(path)) != "daemon":
            continue  # only daemon/ modules
        stem = f[:-4]
        out = subprocess.run(["nm", path], check=True, capture_output=True, text=True).stdout
        used[stem] = set()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TDBR":
                defined[parts[2]] = stem
            elif len(parts) == 2 and parts[0] == "U":
                used[stem].add(parts[1])
    graph = {s: set() for s in used}
    for stem, symbols in used.items():
        for sym in symbols:
            owner = defined.get(sym)
            if owner and owner != stem:
                graph[stem].add(owner)
    return graph


def cycles(graph):
    """Every elementary cycle found by a depth-first walk (each reported once)."""
    found, seen = [], set()
    state = {}

    def walk(node, path):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle)
            elif nxt not in state:
                walk(nxt, path)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [])
    return found


def layers(graph):
    level = {}

    def depth(node):
        if node not in level:
            level[node] = 0  # guards against a cycle; only called on acyclic graphs
            level[node] = 1 + max((depth(n) for n in graph.get(node, ())), default=-1)
        return level[node]

    for node in graph:
        depth(node)
    rows = {}
    for node, lv in level.items():
        rows.setdefault(lv, []).append(node)
    return [sorted(rows[k]) for k in sorted(rows)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), ".."))
    ap.add_argument("--objects", nargs="+", default=[], help="budgetd's object files")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    graph, problems = include_graph(os.path.join(args.root, "daemon"))
    graphs = [("include", graph)]
    objects = [p for arg in args.objects for p in arg.split(";") if p]
    if objects:
        graphs.append(("link", link_graph(objects)))
    failed = bool(problems)
    for p in problems:
        print("layers: " + p)
    for name, g in graphs:
        found = cycles(g)
        for c in found:
            print(f"layers: {name} cycle: " + " -> ".join(c))
        failed |= bool(found)
        if not found and not args.quiet:
            print(f"{name} graph: no cycle; layers, bottom first:")
            for i, row in enumerate(layers(g)):
                print(f"  {i}: " + " ".join(row))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
