"""Benchmark "timer": ns per call of a small function under calltape.timer.

``python -m bench timer`` times ``f(x) -> x + 1`` in a fresh interpreter per
case, log output off (``log_to_console=False, log_to_file=False``): plain,
``calltape.timer`` with and without ``track_resources``, and PyMAAP 0.2.1's
``Timer`` with the same settings from ``--pymaap-python`` (default
$PYMAAP_PYTHON, else this interpreter when it imports pymaap; its rows are left
out with a message otherwise; its stderr, where it logs every call anyway, goes
to /dev/null).  With ``--callgrind``: instructions per call (valgrind, a run of
N calls and one of 2N, the difference over N), the stable figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench._measure import peer_python, run_worker

WORKER = '''
import json, sys, time, os
case, loops, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def f(x):
    return x + 1
res = case.endswith("+res")
files = "+files" in case  # the JSON log (a file) and the results CSV on
if case.startswith("calltape"):
    import calltape
    calltape.configure(tape=os.path.join(os.getcwd(), "bench.db"), on_full="drop")
    f = calltape.timer(log_to_console=False, log_to_file=files, track_resources=res,
                       log_dir=os.path.join(os.getcwd(), "logs-" + case))(f)
elif case.startswith("pymaap"):
    from pymaap import Timer
    f = Timer(log_to_console=False, log_to_file=files, track_resources=res)(f)
best = None
queued = files and case.startswith("calltape")  # its lines go through the log thread
chunk = 32768 if queued else loops  # the queue (65,536 lines) never fills
for _ in range(rounds):
    t0 = time.perf_counter_ns()
    for c0 in range(0, loops, chunk):
        for i in range(c0, min(loops, c0 + chunk)):
            f(i)
        if queued:
            calltape.flush_logs()  # the lines written, not only queued: timed
    dt = (time.perf_counter_ns() - t0) / loops
    best = dt if best is None else min(best, dt)
if queued and calltape._native.logq_stats()["dropped"]:
    sys.exit("log lines were dropped: the figures would not count them")
print(json.dumps({"ns": best}))
'''

CASES = ("plain", "calltape", "calltape+res", "pymaap", "pymaap+res", "calltape+files",
         "pymaap+files")


def run_case(python: str, script: Path, case: str, loops: int, rounds: int, cwd: str,
             cg_out: Path | None = None) -> float:
    return run_worker([python, str(script), case, str(loops), str(rounds)], cg_out,
                      {**os.environ, "PYTHONHASHSEED": "0"}, cwd)


def pymaap_python(given: str | None) -> str | None:
    return peer_python(given, "PYMAAP_PYTHON", "import pymaap.monitoring")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench timer", description=__doc__.split("\n")[0])
    ap.add_argument("--loops", type=int, default=200_000, help="calls per round (200,000)")
    ap.add_argument("--pymaap-loops", type=int, default=2_000, help="calls per round, PyMAAP")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the best is kept (5)")
    ap.add_argument("--callgrind", action="store_true", help="also instructions per call")
    ap.add_argument("--callgrind-loops", type=int, default=5_000)
    ap.add_argument("--pymaap-python", help="an interpreter with pymaap 0.2.1 installed")
    a = ap.parse_args(argv)
    ppy = pymaap_python(a.pymaap_python)
    if not ppy:
        print("(pymaap not importable: its rows are left out; see --pymaap-python)")
    cases = [c for c in CASES if ppy or not c.startswith("pymaap")]
    ns: dict[str, float] = {}
    ins: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="calltape-timer-") as tmp:
        script = Path(tmp) / "w.py"
        script.write_text(WORKER)
        for c in cases:
            py = ppy if c.startswith("pymaap") else sys.executable
            loops = a.pymaap_loops if c.startswith("pymaap") else a.loops
            ns[c] = run_case(py, script, c, loops, a.rounds, tmp)  # type: ignore[arg-type]
        if a.callgrind and not shutil.which("valgrind"):
            print("valgrind not found: no instruction counts", file=sys.stderr)
        elif a.callgrind:
            k = a.callgrind_loops
            for c in cases:
                if c.startswith("pymaap"):
                    continue  # psutil and pandas under valgrind: minutes; the times suffice
                x = run_case(sys.executable, script, c, k, 1, tmp, Path(tmp) / f"{c}.a")
                y = run_case(sys.executable, script, c, 2 * k, 1, tmp, Path(tmp) / f"{c}.b")
                ins[c] = (y - x) / k
    print(f"== timer: f(x) -> x + 1, log output off, best of {a.rounds}"
          f" (Python {sys.version.split()[0]})")
    head = "| case | ns per call | ns added |" + (" instructions added |" if ins else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for c in cases:
        row = f"| {c} | {ns[c]:,.0f} | {ns[c] - ns['plain']:+,.0f} |"
        if ins:
            row += f" {ins[c] - ins['plain']:+,.0f} |" if c in ins else " - |"
        print(row)
    if ppy:
        for res in ("", "+res"):
            ours = ns["calltape" + res] - ns["plain"]
            theirs = ns["pymaap" + res] - ns["plain"]
            print(f"track_resources={'True' if res else 'False'}: PyMAAP adds"
                  f" {theirs / ours:,.0f}x what calltape adds")
    return 0
