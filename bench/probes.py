"""Benchmark "probes": what a probe costs per call of a small function.

``python -m bench probes`` times ``f(x) -> x + 1`` called in a loop, in a
fresh interpreter per case, for calltape.probes and for the original
Diagnose side by side:

- no probe; a stopped probe (attached, started, stopped);
- a count instrument (``"1"`` at call; Diagnose: an Instrument subclass
  adding the value, as its IncrementInstrument without statsd);
- a log instrument of ``x`` at call, calltape's to the ``calltape.probes``
  logger with a null handler, Diagnose's LogInstrument to os.devnull.
  calltape's line is made in C and handed to logging by its log thread:
  "log" counts the handing too (``flush_logs()`` every 32,768 calls inside
  the timing: the queue never fills, nothing is dropped, and the worker
  fails if anything was), "log-caller" only what the calling thread pays
  (the flushes untimed); under callgrind both count every thread;
- "print": the same line written to os.devnull on both sides (calltape:
  calltape.compat.diagnose.LogInstrument, Diagnose: its LogInstrument).

It prints ns per call (the best of ``--rounds``) and, with ``--callgrind``,
instructions per call (valgrind: a run of N calls and one of 2N, the
difference over N, so that start-up cancels).  Diagnose runs from the
interpreter ``--diagnose-python`` (default $DIAGNOSE_PYTHON, else this one
when it can import diagnose; its rows are left out when none can).
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

KINDS = ("none", "stopped", "count", "log", "log-caller", "print")

WORKER = textwrap.dedent('''
    import json, logging, os, sys, time
    impl, kind, loops, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def f(x):
        return x + 1

    sys.modules["__main__"].f = f
    if impl == "calltape":
        import calltape
        import calltape.probes as probes
        log = logging.getLogger("calltape.probes")
        log.addHandler(logging.NullHandler())
        log.propagate = False
        log.setLevel(logging.INFO)
        from calltape.compat import diagnose as facade
        facade.LogInstrument.out = open(os.devnull, "w")
        make = {"count": lambda: probes.CountInstrument("n", "1", event="call"),
                "log": lambda: probes.LogInstrument("x", "x", event="call"),
                "log-caller": lambda: probes.LogInstrument("x", "x", event="call"),
                "print": lambda: facade.LogInstrument("x", "x", event="call")}
        attach = probes.attach_to
    else:
        import diagnose
        from diagnose import instruments, probes

        class Count(instruments.Instrument):
            n = 0
            def fire(self, _globals, _locals):
                self.n += self.evaluate(self.value, _globals, _locals)

        class Log(instruments.LogInstrument):
            out = open(os.devnull, "w")

        make = {"count": lambda: Count("n", "1", "call"), "log": lambda: Log("x", "x", "call"),
                "log-caller": lambda: Log("x", "x", "call"), "print": lambda: Log("x", "x", "call")}
        attach = probes.attach_to
    if kind != "none":
        p = attach("__main__.f")
        p.instruments["i"] = make.get(kind, make["count"])()
        p.start()
        if kind == "stopped":
            p.stop()
    g = sys.modules["__main__"].f   # what the module holds now (Diagnose patches it)
    # calltape's log lines are handed to logging by its log thread: "log" counts the
    # handing (flush_logs() every CHUNK calls, inside the timing, so that the queue of
    # 65,536 never fills), "log-caller" only the calls (the flushes are not timed)
    queued = impl == "calltape" and kind.startswith("log")
    chunk = 32768 if queued else loops
    best = None
    for _ in range(rounds):
        dt = 0
        for c0 in range(0, loops, chunk):
            t0 = time.perf_counter_ns()
            for i in range(c0, min(loops, c0 + chunk)):
                g(i)
            if kind == "log" and queued:
                calltape.flush_logs()
            dt += time.perf_counter_ns() - t0
            if queued:
                calltape.flush_logs()
        dt /= loops
        best = dt if best is None else min(best, dt)
    if queued and calltape._native.logq_stats()["dropped"]:
        sys.exit("log lines were dropped: the figures would not count them")
    print(json.dumps({"ns": best}))
''')


def run_case(python: str, impl: str, kind: str, loops: int, rounds: int,
             valgrind: bool = False, workdir: Path | None = None) -> float:
    """ns per call, or with ``valgrind`` the instructions of the whole run."""
    out = None
    if valgrind:
        assert workdir is not None
        out = workdir / f"cg.{impl}.{kind}.{loops}"
    return run_worker([python, "-c", WORKER, impl, kind, str(loops), str(rounds)], out)


def diagnose_python(given: str | None) -> str | None:
    """The interpreter that can import diagnose, or None."""
    return peer_python(given, "DIAGNOSE_PYTHON", "import diagnose")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench probes", description=__doc__.split("\n")[0])
    ap.add_argument("--loops", type=int, default=200_000, help="calls per round (default 200,000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the best is kept (default 5)")
    ap.add_argument("--callgrind", action="store_true", help="also instructions per call")
    ap.add_argument("--callgrind-loops", type=int, default=20_000,
                    help="calls of the shorter callgrind run (default 20,000)")
    ap.add_argument("--diagnose-python", help="an interpreter with diagnose 5.0.1 installed")
    args = ap.parse_args(argv)
    dpy = diagnose_python(args.diagnose_python)
    impls = {"calltape": sys.executable, **({"diagnose": dpy} if dpy else {})}
    if not dpy:
        print("(diagnose not importable: its column is left out; see --diagnose-python)")
    ns = {(impl, k): run_case(py, impl, k, args.loops, args.rounds)
          for impl, py in impls.items() for k in KINDS}
    ins: dict[tuple[str, str], float] = {}
    if args.callgrind:
        if not shutil.which("valgrind"):
            print("valgrind not found: no instruction counts", file=sys.stderr)
        else:
            n = args.callgrind_loops
            with tempfile.TemporaryDirectory(prefix="calltape-probes-cg-") as tmp:
                for impl, py in impls.items():
                    for k in KINDS:
                        a = run_case(py, impl, k, n, 1, True, Path(tmp))
                        b = run_case(py, impl, k, 2 * n, 1, True, Path(tmp))
                        ins[(impl, k)] = (b - a) / n
    print(f"== probes: f(x) -> x + 1, {args.loops:,} calls per round, best of {args.rounds}"
          f" (Python {sys.version.split()[0]})")
    head = "| case | calltape ns/call | added |"
    if dpy:
        head += " diagnose ns/call | added | diagnose / calltape (added) |"
    if ins:
        head += " calltape instr/call |" + (" diagnose instr/call |" if dpy else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for k in KINDS:
        base_c = ns[("calltape", "none")]
        row = f"| {k} | {ns[('calltape', k)]:.1f} | {ns[('calltape', k)] - base_c:+.1f} |"
        if dpy:
            base_d = ns[("diagnose", "none")]
            add_c = ns[("calltape", k)] - base_c
            add_d = ns[("diagnose", k)] - base_d
            ratio = f"{add_d / add_c:.1f}x" if k != "none" and k != "stopped" and add_c > 0 else "-"
            row += f" {ns[('diagnose', k)]:.1f} | {add_d:+.1f} | {ratio} |"
        if ins:
            row += f" {ins[('calltape', k)]:.1f} |" + (f" {ins[('diagnose', k)]:.1f} |" if dpy else "")
        print(row)
    if ins:
        c0, c1 = ins[("calltape", "none")], ins[("calltape", "stopped")]
        print(f"stopped probe vs no probe: {100 * (c1 - c0) / c0:+.2f}% instructions per call")
    return 0
