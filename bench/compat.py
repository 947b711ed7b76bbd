"""Benchmark "compat": the facades beside the systems they stand in for.

``python -m bench compat`` prints, from one run:

1. the time per call of ``f(x, y=2) -> x + y`` bare, under
   ``calltape.compat.callmonitor.intercept`` and under the original
   callmonitor's ``@intercept`` (0.3.7 from the package index), side by
   side: each round a fresh interpreter in a temporary folder of its own
   (where both write their output folders), the rounds interleaved with the
   order rotating, the median round per variant; then what writing out
   costs at the end (``calltape.flush()`` / callmonitor's ``save_db()``),
   per call, and a check that every call was kept (calltape: ``stats()``,
   nothing dropped; callmonitor: one folder per call).  Goal (issue 17): at
   least 100 times faster per call.  callmonitor runs from the interpreter
   ``--callmonitor-python`` (default $CALLMONITOR_PYTHON, else this one when
   it can import callmonitor); its rows are left out, and that is said, when
   none can.
2. ``calltape.compat.reanimator``'s ``search`` (by function, unfiltered, a
   5 ms time window, both) and ``get_call_details`` (calls spread over the
   tape) on the tape of ``bench read``: ``--calls`` calls (default 10
   million) over 50 functions from 4 processes, built as ``bench read``
   builds it (``--tape PATH`` reuses or keeps one), medians of ``--repeat``
   runs.  Goal (issue 17): each under 20 ms.

    python -m bench compat [--loops N] [--rounds 7] [--calls N] [--tape PATH]
                           [--skip-read | --skip-intercept]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from datetime import timedelta

from bench._measure import peer_python
from bench.read import FUNCTIONS, SESSIONS, build, timed

GOAL_RATIO = 100.0
GOAL_READ_S = 0.020

WORKER = textwrap.dedent('''
    import json, os, sys, time
    impl, loops = sys.argv[1], int(sys.argv[2])
    if impl == "calltape":
        import calltape
        from calltape.compat.callmonitor import intercept, save_db
    elif impl == "callmonitor":
        from callmonitor import intercept, save_db

    def f(x, y=2):
        return x + y

    g = f if impl == "bare" else intercept(f)
    g(-1)                                  # the first call makes the output folder
    t0 = time.perf_counter_ns()
    for i in range(loops):
        g(i)
    ns = (time.perf_counter_ns() - t0) / loops
    t0 = time.perf_counter_ns()
    if impl != "bare":
        save_db()
    out = {"ns": ns, "flush_ns": (time.perf_counter_ns() - t0) / loops}
    if impl == "calltape":
        s = calltape.stats()
        out["kept"] = s["written"] == s["recorded"] == loops + 1 and not s["dropped"]
    elif impl == "callmonitor":
        roots = [d for d in os.listdir(".") if d.startswith("call-monitor")]
        out["kept"] = len(roots) == 1 and len(os.listdir(os.path.join(roots[0], "f"))) == loops + 1
    print(json.dumps(out))
''')


def run_round(python: str, impl: str, loops: int) -> dict[str, float]:
    """One round of `impl` in a fresh interpreter, in a fresh temporary folder."""
    with tempfile.TemporaryDirectory(prefix=f"calltape-bench-compat-{impl}-") as folder:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTAPE_")}
        proc = subprocess.run([python, "-c", WORKER, impl, str(loops)], cwd=folder, env=env,
                              check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(proc.stdout.splitlines()[-1])
    return result


def callmonitor_python(given: str | None) -> str | None:
    """The interpreter that can import the original callmonitor, or None."""
    return peer_python(given, "CALLMONITOR_PYTHON", "import callmonitor")


def bench_intercept(args: argparse.Namespace) -> bool:
    """Part 1; returns whether the goal was met (True when callmonitor is missing)."""
    cpy = callmonitor_python(args.callmonitor_python)
    impls = {"bare": (sys.executable, args.loops), "calltape": (sys.executable, args.loops)}
    if cpy:
        impls["callmonitor"] = (cpy, args.callmonitor_loops)
    else:
        print("(skipped: the original callmonitor is not importable here, nor from"
              " --callmonitor-python / $CALLMONITOR_PYTHON: pip install callmonitor==0.3.7)")
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in impls}
    order = list(impls)
    for r in range(args.rounds):
        for impl in order[r % len(order):] + order[:r % len(order)]:
            python, loops = impls[impl]
            rounds[impl].append(run_round(python, impl, loops))
    med = {k: statistics.median(x["ns"] for x in v) for k, v in rounds.items()}
    flush = {k: statistics.median(x["flush_ns"] for x in v) for k, v in rounds.items()}
    kept = {k: all(x.get("kept", True) for x in v) for k, v in rounds.items()}
    print(f"== intercept: f(x, y=2) -> x + y, {args.rounds} interleaved rounds, a fresh"
          f" interpreter each (Python {sys.version.split()[0]}); calltape {args.loops:,} calls"
          f" a round, callmonitor {args.callmonitor_loops:,}")
    labels = {"bare": "bare f", "calltape": "`calltape.compat.callmonitor.intercept`",
              "callmonitor": "callmonitor 0.3.7 `@intercept`"}
    print("| | ns per call (median round) | added | written out at the end, per call |"
          " every call kept |")
    print("|---|---:|---:|---:|---|")
    for k in impls:
        added = "-" if k == "bare" else f"+{med[k] - med['bare']:,.0f}"
        out = "-" if k == "bare" else f"{flush[k]:,.0f} ns"
        ok = "-" if k == "bare" else ("yes" if kept[k] else "NO")
        print(f"| {labels[k]} | {med[k]:,.0f} | {added} | {out} | {ok} |")
    passed = all(kept.values())
    if cpy:
        ratio = med["callmonitor"] / med["calltape"]
        whole = (med["callmonitor"] + flush["callmonitor"]) / (med["calltape"] + flush["calltape"])
        passed &= ratio >= GOAL_RATIO
        print(f"callmonitor / calltape per call: {ratio:,.0f}x (goal >= {GOAL_RATIO:.0f}x)"
              f" {'PASS' if ratio >= GOAL_RATIO else 'FAIL'}; with writing out: {whole:,.0f}x")
    return passed


def bench_read(args: argparse.Namespace) -> bool:
    """Part 2; returns whether every timing met its goal."""
    import calltape
    from calltape.compat import reanimator

    tmp = None
    path = args.tape
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="calltape-bench-compat-read-")
        path = os.path.join(tmp.name, "big.db")
    if not os.path.exists(path):
        print(f"recording {args.calls:,} calls over {FUNCTIONS} functions from {SESSIONS}"
              f" processes into {path} ...", file=sys.stderr)
        print(f"recorded in {build(path, args.calls):.1f} s", file=sys.stderr)
    tape = calltape.open(path)
    total = sum(f.calls for f in tape.functions())
    name = "f7"
    oldest = tape.search(order="oldest", limit=1)[0].start
    span = tape.search(limit=1)[0].start - oldest
    # a window of 5 ms from the middle call of one function, as bench read's
    calls = sum(f.calls for f in tape.functions() if f.qualname == name)
    middle = tape.search(function=name, order="oldest")[calls // 2].start
    window = (middle, middle + timedelta(milliseconds=5))
    # calls spread over the tape, for get_call_details (found here, not timed)
    ids = [tape.search(since=oldest + span * k / 8, order="oldest", limit=1)[0].id
           for k in range(1, 8)]
    db = reanimator.load_pydb(path)
    print(f"\n== reanimator on the tape of `bench read`: {total:,} calls, {FUNCTIONS} functions,"
          f" {len(tape.sessions())} sessions, {os.path.getsize(path) / 1e6:.0f} MB; median of"
          f" {args.repeat}")
    rows = []
    for label, call in [
        (f"search(function_filter={name!r}, limit=100)",
         lambda: db.search(function_filter=name, limit=100)),
        ("search(limit=100)", lambda: db.search(limit=100)),
        ("search(time_range=(5 ms window), limit=100)",
         lambda: db.search(time_range=window, limit=100)),
        (f"search(function_filter={name!r}, time_range=(5 ms window))",
         lambda: db.search(function_filter=name, time_range=window)),
    ]:
        sec, found = timed(call, args.repeat)
        rows.append((label, sec, f"{len(found)} calls"))  # type: ignore[arg-type]

    times = []
    for _ in range(args.repeat):
        for i in ids:
            t0 = time.perf_counter()
            details = db.get_call_details(i)
            times.append(time.perf_counter() - t0)
    assert details["id"] == ids[-1]
    rows.append((f"get_call_details(id) ({len(ids)} calls spread over the tape)",
                 statistics.median(times), f"max {max(times) * 1e3:.2f} ms"))
    print("| operation | median | result | goal |\n|---|---:|---|---:|")
    ok = True
    for label, sec, result in rows:
        passed = sec <= GOAL_READ_S
        ok &= passed
        print(f"| `{label}` | {sec * 1e3:.2f} ms | {result} | {GOAL_READ_S * 1e3:.0f} ms"
              f" {'PASS' if passed else 'FAIL'} |")
    db.close()
    tape.close()
    if tmp is not None:
        tmp.cleanup()
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    """Run both parts (or the one not skipped) and print their tables."""
    ap = argparse.ArgumentParser(prog="python -m bench compat", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", type=int, default=200_000,
                    help="calls per round, bare and calltape (default 200,000)")
    ap.add_argument("--callmonitor-loops", type=int, default=2_000,
                    help="calls per round of the original callmonitor (default 2,000: it"
                         " writes a folder and a pickle per call)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    ap.add_argument("--callmonitor-python", help="an interpreter with callmonitor 0.3.7")
    ap.add_argument("--calls", type=int, default=10_000_000,
                    help="calls on the read tape (default 10 million)")
    ap.add_argument("--tape", help="reuse (or keep) the read tape at this path")
    ap.add_argument("--repeat", type=int, default=7, help="repeats of each read (default 7)")
    ap.add_argument("--skip-read", action="store_true", help="only part 1")
    ap.add_argument("--skip-intercept", action="store_true", help="only part 2")
    args = ap.parse_args(argv)
    ok = True
    if not args.skip_intercept:
        ok &= bench_intercept(args)
    if not args.skip_read:
        ok &= bench_read(args)
    return 0 if ok else 1
