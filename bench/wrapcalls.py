"""Benchmark "wrapcalls": what routing every call inside a function through a wrapper costs.

``python -m bench wrapcalls`` times a function making 10 and one making 100
small inner calls (``inner(x)``, which returns ``x``), in a fresh interpreter
per case, side by side in one run:

- plain: the function as written;
- by hand: the same function written as ``w(inner, EXTRAS, x)`` calls (``w``
  and ``EXTRAS`` module globals): the floor, what the wrapper's own call costs;
- calltape: ``calltape.wrap_calls(w)``;
- facade: ``calltape.compat.recompyle.wrap_calls(wrapper=w)`` (a new extras
  dict at every call, as Recompyle builds it);
- recompyle: the original ``recompyle.wrap_calls(wrapper=w)`` (0.4.1),

with the same pass-through wrapper ``w(call, extras, *args, **kwargs)`` for
all. The functions are written to a module file first (the originals read
the source from a file). It prints ns per call of the function (the median of
``--rounds`` rounds of ``--loops`` calls), the ns added per inner call, the
ratio of the original's added cost to calltape's, and with ``--callgrind``
instructions per inner call (valgrind: a run of N calls and one of 2N, the
difference over N, so that start-up and decoration cancel). Recompyle runs from
``--recompyle-python`` (default $RECOMPYLE_PYTHON, else this interpreter when
it has recompyle 0.4); its rows are left out, saying so, when none has it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

from bench._measure import peer_python, run_worker

SIZES = (10, 100)
IMPLS = ("plain", "by hand", "calltape", "facade", "recompyle")


def subject_module(sizes: Sequence[int] = SIZES) -> str:
    """The module the workers import: ``inner`` and one ``fN`` per size."""
    text = "def inner(x):\n    return x\n"
    for n in sizes:
        text += f"\n\ndef f{n}(x):\n" + "    inner(x)\n" * n + "    return x\n"
        text += f"\n\ndef hand{n}(x):\n" + "    w(inner, EXTRAS, x)\n" * n + "    return x\n"
    return text


WORKER = textwrap.dedent('''
    import json, statistics, sys, time
    impl, n, loops, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    import wrapcalls_subjects as mod

    def w(call, extras, *args, **kwargs):
        return call(*args, **kwargs)

    f = getattr(mod, f"f{n}")
    if impl == "by hand":
        mod.w, mod.EXTRAS = w, {"ln_range": (1,), "source": "inner(x)"}
        f = getattr(mod, f"hand{n}")
    elif impl == "calltape":
        import calltape
        f = calltape.wrap_calls(w)(f)
    elif impl == "facade":
        from calltape.compat.recompyle import wrap_calls
        f = wrap_calls(wrapper=w)(f)
    elif impl == "recompyle":
        from recompyle import wrap_calls
        f = wrap_calls(wrapper=w)(f)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for i in range(loops):
            f(i)
        times.append((time.perf_counter_ns() - t0) / loops)
    print(json.dumps({"ns": statistics.median(times)}))
''')


def run_case(python: str, impl: str, n: int, loops: int, rounds: int, root: Path,
             valgrind: bool = False) -> float:
    """ns per call of the function, or with ``valgrind`` the instructions of the whole run."""
    cmd = [python, "-c", WORKER, impl, str(n), str(loops), str(rounds)]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "0"}
    return run_worker(cmd, root / f"cg.{impl}.{n}.{loops}" if valgrind else None, env)


def recompyle_python(given: str | None) -> str | None:
    """The interpreter that has recompyle 0.4 (wrap_calls with extras), or None."""
    probe = "import importlib.metadata as m, sys; sys.exit(m.version('recompyle')[:4] != '0.4.')"
    return peer_python(given, "RECOMPYLE_PYTHON", probe)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench wrapcalls",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--loops", type=int, default=20_000,
                    help="calls of the function per round (default 20,000)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds; the median is kept (default 7)")
    ap.add_argument("--callgrind", action="store_true", help="also instructions per inner call")
    ap.add_argument("--callgrind-loops", type=int, default=2_000,
                    help="calls of the shorter callgrind run (default 2,000)")
    ap.add_argument("--recompyle-python", help="an interpreter with recompyle 0.4.1 installed")
    args = ap.parse_args(argv)
    rpy = recompyle_python(args.recompyle_python)
    pythons = {impl: sys.executable for impl in IMPLS[:-1]}
    if rpy:
        pythons["recompyle"] = rpy
    else:
        print("(recompyle 0.4 not importable: its rows are left out; pip install recompyle==0.4.1"
              " or see --recompyle-python)")
    with tempfile.TemporaryDirectory(prefix="calltape-wrapcalls-") as tmp:
        root = Path(tmp)
        (root / "wrapcalls_subjects.py").write_text(subject_module())
        ns = {(impl, n): run_case(py, impl, n, args.loops, args.rounds, root)
              for n in SIZES for impl, py in pythons.items()}
        ins: dict[tuple[str, int], float] = {}
        if args.callgrind:
            if not shutil.which("valgrind"):
                print("(valgrind not found: no instruction counts)")
            else:
                k = args.callgrind_loops
                for n in SIZES:
                    for impl, py in pythons.items():
                        a = run_case(py, impl, n, k, 1, root, valgrind=True)
                        b = run_case(py, impl, n, 2 * k, 1, root, valgrind=True)
                        ins[(impl, n)] = (b - a) / k
    print(f"== wrapcalls: a function making N calls of inner(x) -> x, {args.loops:,} calls per"
          f" round, median of {args.rounds} (Python {sys.version.split()[0]},"
          f" {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    head = "| N | case | ns/call | added ns per inner call | vs calltape (added) |"
    if ins:
        head += " instr/call | added instr per inner call |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for n in SIZES:
        base = ns[("plain", n)]
        ours = (ns[("calltape", n)] - base) / n
        for impl in pythons:
            added = (ns[(impl, n)] - base) / n
            ratio = f"{added / ours:.2f}x" if impl not in ("plain", "calltape") and ours > 0 else "-"
            row = f"| {n} | {impl} | {ns[(impl, n)]:,.0f} |"
            row += f" {added:+.1f} |" if impl != "plain" else " - |"
            row += f" {ratio} |"
            if ins:
                extra = (ins[(impl, n)] - ins[("plain", n)]) / n
                row += f" {ins[(impl, n)]:,.0f} |"
                row += f" {extra:+,.0f} |" if impl != "plain" else " - |"
            print(row)
    if not rpy:
        print("skipped: recompyle (not installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
