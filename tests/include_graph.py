#!/usr/bin/env python3
"""Keeps loom's include graph layered: every header under include/loom sits on
a floor, includes only headers on its own floor or below, and no include loop
exists. The floors, bottom up (a header's floor is the first pattern it matches):

  0 base      the tensor, errors, config, registry, files, threads, random streams
  1 kernels   kernels/: the inner loops (GEMM, Winograd, im2col, pooling); no layer
  2 training  losses, metrics, schedules, optimizers
  3 layers    layers/: Layer<T>, the layers, the fusion planner
  4 model     model/: the model, its fit loop, step, state, files, callbacks
  5 parts     the umbrella loom.hpp and the optional parts: data/, keras/, onnx/, distributed

    tests/include_graph.py [source dir]        (ctest: include_graph)

Prints every include that points up a floor and every loop, and exits 1 if
there is any; a header that matches no floor fails too, naming where to add it.
"""
import os
import re
import sys
from fnmatch import fnmatch

FLOORS = [
    ("base", ["error.hpp", "option.hpp", "random.hpp", "version.hpp", "tensor.hpp", "config.hpp", "enums.hpp",
              "parameter.hpp", "regularizers.hpp", "registry.hpp", "io.hpp", "io/*", "parallel.hpp", "communicator.hpp",
              "initializers.hpp"]),
    ("kernels", ["kernels/*"]),
    ("training", ["losses.hpp", "metrics.hpp", "schedules.hpp", "optimizers.hpp", "optimizers/*"]),
    ("layers", ["layers/*"]),
    ("model", ["model/*"]),
    ("parts", ["loom.hpp", "data/*", "keras.hpp", "keras/*", "onnx.hpp", "onnx/*", "distributed.hpp"]),
]
INCLUDE = re.compile(r'^\s*#\s*include\s*(?:"([^"]+)"|<(loom/[^>]+)>)', re.M)


def floor_of(header):
    for i, (_, patterns) in enumerate(FLOORS):
        if any(fnmatch(header, p) for p in patterns):
            return i
    return None


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    base = os.path.join(root, "include", "loom")
    headers = sorted(os.path.relpath(os.path.join(d, f), base).replace(os.sep, "/")
                     for d, _, files in os.walk(base) for f in files if f.endswith(".hpp"))
    graph, problems = {}, []
    for h in headers:
        with open(os.path.join(base, h), encoding="utf-8") as f:
            text = f.read()
        deps = []
        for quoted, angled in INCLUDE.findall(text):
            if angled:
                target = angled[len("loom/"):]
            else:
                target = os.path.normpath(os.path.join(os.path.dirname(h), quoted)).replace(os.sep, "/")
            if target in headers:
                deps.append(target)
        graph[h] = deps
        if floor_of(h) is None:
            problems.append(f"{h}: on no floor: add it to FLOORS in tests/include_graph.py")
    for h, deps in graph.items():
        fh = floor_of(h)
        for d in deps:
            fd = floor_of(d)
            if fh is not None and fd is not None and fd > fh:
                problems.append(f"{h} ({FLOORS[fh][0]}) includes {d}, a floor up ({FLOORS[fd][0]})")
    # Loops: depth-first search, reporting each loop once by its path.
    state, stack = {}, []

    def visit(h):
        state[h] = 1
        stack.append(h)
        for d in graph[h]:
            if state.get(d) == 1:
                problems.append("include loop: " + " -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[h] = 2

    for h in headers:
        if h not in state:
            visit(h)
    for p in problems:
        print(p)
    print(f"include_graph: {len(headers)} headers, {sum(len(d) for d in graph.values())} includes, "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
