"""Benchmark "flat": what the flat profiler adds per inner call.

``python -m bench flat`` times a function making 10 and 100 small inner
calls (``g(x) -> x + 1`` in a loop), in a fresh interpreter per case:

- plain;
- under ``calltape.flat_profile`` (a limit never reached: the production
  case, the DEBUG record off), and under its Recompyle facade
  (``calltape.compat.recompyle.flat_profile``, its INFO record off);
- "from-events" and "call-sites": ``calltape.flat_profile`` made to time from
  events (sys.monitoring; 3.11's profile hook) or from its call-site rewrite,
  whichever this Python's default is (3.12 on: events; 3.11: call sites);
- "events only": with the events set, the profiled function's own code run
  outside its wrapper (``__wrapped__``), so CPython dispatches every CALL
  event to calltape's callback, which returns at once: the floor of any
  sys.monitoring profiler;
- under ``cProfile`` switched on around the calls;
- under the original ``recompyle.flat_profile`` 0.2.1 (its INFO records
  off), from ``--recompyle-python`` (default $RECOMPYLE_PYTHON, else this
  interpreter when it imports recompyle; its rows are left out when none can);
- "outside": a function that is not profiled, called while a profiled one
  exists, against "imported" (calltape imported, no profile): calltape's
  events are local, so the two must cost the same.

It prints ns per outer call (the best of ``--rounds``) and the ns added per
inner call; with ``--callgrind``, instructions per inner call added
(valgrind: a run of N outer calls and one of 2N, the difference over N).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

from bench._measure import peer_python, run_worker

CASES = ("plain", "events", "calltape", "from-events", "call-sites", "facade", "cprofile", "recompyle")

# recompyle rewrites the function from its source file: the worker is a file
WORKER = textwrap.dedent('''
    import json, logging, sys, time
    case, inner, loops, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    logging.disable(logging.INFO)   # recompyle's records and calltape's DEBUG ones: off

    def g(x):
        return x + 1

    def work10(x):
        for _ in range(10):
            x = g(x)
        return x

    def work100(x):
        for _ in range(100):
            x = g(x)
        return x

    fn = work10 if inner == 10 else work100
    if case == "calltape":
        import calltape
        fn = calltape.flat_profile(fn, limit=3600)
    elif case in ("from-events", "call-sites"):  # one mechanism, whatever the default
        import calltape, calltape.flat
        calltape.flat._CALL_SITES = case == "call-sites"
        fn = calltape.flat_profile(fn, limit=3600)
    elif case == "events":  # the events set, no activation: the callback returns at once
        import calltape, calltape.flat
        calltape.flat._CALL_SITES = False
        keep = calltape.flat_profile(fn, limit=3600)  # its events live while it does
        fn = keep.__wrapped__
    elif case == "facade":
        from calltape.compat.recompyle import flat_profile as facade
        fn = facade(time_limit=3600)(fn)
    elif case == "recompyle":  # it rewrites the source: the decorator must be written there
        from recompyle import flat_profile

        @flat_profile(time_limit=3600)
        def rwork10(x):
            for _ in range(10):
                x = g(x)
            return x

        @flat_profile(time_limit=3600)
        def rwork100(x):
            for _ in range(100):
                x = g(x)
            return x

        fn = rwork10 if inner == 10 else rwork100
    elif case == "imported":
        import calltape
        calltape.flat_profile
    elif case == "outside":
        import calltape
        keep = calltape.flat_profile(work10 if inner == 100 else work100, limit=3600)
        keep(0)
    prof = None
    if case == "cprofile":
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    best = None
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for i in range(loops):
            fn(i)
        dt = (time.perf_counter_ns() - t0) / loops
        best = dt if best is None else min(best, dt)
    if prof:
        prof.disable()
    print(json.dumps({"ns": best}))
''')


def run_case(python: str, script: Path, case: str, inner: int, loops: int, rounds: int,
             cg_out: Path | None = None) -> float:
    """ns per outer call, or with ``cg_out`` the instructions of the whole run."""
    return run_worker([python, str(script), case, str(inner), str(loops), str(rounds)], cg_out)


def recompyle_python(given: str | None) -> str | None:
    """An interpreter that imports recompyle 0.2.1 (it has flat_profile), or None."""
    probe = "import recompyle; recompyle.flat_profile"
    return peer_python(given, "RECOMPYLE_PYTHON", probe)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench flat", description=__doc__.split("\n")[0])
    ap.add_argument("--loops", type=int, default=20_000, help="outer calls per round (20,000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the best is kept (default 5)")
    ap.add_argument("--callgrind", action="store_true", help="also instructions per inner call")
    ap.add_argument("--callgrind-loops", type=int, default=2_000,
                    help="outer calls of the shorter callgrind run (default 2,000)")
    ap.add_argument("--recompyle-python", help="an interpreter with recompyle 0.2.1 installed")
    args = ap.parse_args(argv)
    rpy = recompyle_python(args.recompyle_python)
    if not rpy:
        print("(recompyle 0.2.1 not importable: its rows are left out; see --recompyle-python)")
    pythons = {c: sys.executable for c in (*CASES, "imported", "outside")}
    if rpy:
        pythons["recompyle"] = rpy
    cases = [c for c in CASES if c != "recompyle" or rpy]
    with tempfile.TemporaryDirectory(prefix="calltape-flat-") as tmp:
        script = Path(tmp) / "flat_worker.py"
        script.write_text(WORKER)
        ns = {(c, n): run_case(pythons[c], script, c, n, args.loops, args.rounds)
              for n in (10, 100) for c in (*cases, "imported", "outside")}
        ins: dict[tuple[str, int], float] = {}
        if args.callgrind and not shutil.which("valgrind"):
            print("valgrind not found: no instruction counts", file=sys.stderr)
        elif args.callgrind:
            k = args.callgrind_loops
            for n in (10, 100):
                for c in (*cases, "imported", "outside"):
                    a = run_case(pythons[c], script, c, n, k, 1, Path(tmp) / f"cg.{c}.{n}.a")
                    b = run_case(pythons[c], script, c, n, 2 * k, 1, Path(tmp) / f"cg.{c}.{n}.b")
                    ins[(c, n)] = (b - a) / k
    print(f"== flat: work(x) making 10 or 100 inner calls g(x) -> x + 1, {args.loops:,} calls"
          f" per round, best of {args.rounds} (Python {sys.version.split()[0]})")
    head = "| case | inner calls | ns per call | ns added per inner call |"
    if ins:
        head += " instructions added per inner call |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for n in (10, 100):
        for c in cases:
            added = (ns[(c, n)] - ns[("plain", n)]) / n
            row = f"| {c} | {n} | {ns[(c, n)]:,.0f} | {added:+.1f} |"
            if ins:
                row += f" {(ins[(c, n)] - ins[('plain', n)]) / n:+,.0f} |"
            print(row)
    for n in (10, 100):
        if rpy:
            ours = ns[("calltape", n)] - ns[("plain", n)]
            theirs = ns[("recompyle", n)] - ns[("plain", n)]
            if ours > 0:
                print(f"{n} inner calls: recompyle adds {theirs / ours:.1f}x what calltape adds")
    if ins:
        for n in (10, 100):
            p, o = ins[("imported", n)], ins[("outside", n)]
            print(f"outside a profiled function ({n} inner calls): {100 * (o - p) / p:+.2f}%"
                  " instructions against calltape imported with no profile")
    return 0
