"""Benchmark "export": `calltape export` on a large tape, each format.

Builds (or reuses, ``--tape``) the tape of ``bench read`` (``--calls``
calls, default 10 million, over 50 functions and 4 sessions, through the
real recorder), then runs ``calltape.export`` for each format in a fresh
subprocess of its own, and prints calls per second, the file's size and the
subprocess's peak RSS (ru_maxrss of the child: interpreter and import
included).

Goals (issue 20): chrome at least 1 million calls per second, peak RSS
under 200 MB on 10 million calls.

    python -m bench export [--calls N] [--tape PATH] [--formats chrome,jsonl,csv]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from bench.read import build

CHILD = """
import resource, sys, time, calltape
t = calltape.open(sys.argv[1])
t0 = time.perf_counter()
n = calltape.export(t, format=sys.argv[2], out=sys.argv[3])
print(n, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def export_once(tape: str, fmt: str, out: str) -> tuple[int, float, int]:
    """(calls, seconds, peak RSS in KiB) of one export in a fresh subprocess."""
    proc = subprocess.run([sys.executable, "-c", CHILD, tape, fmt, out],
                          check=False, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"bench export: the {fmt} export failed ({proc.returncode})")
    n, sec, peak = proc.stdout.split()
    return int(n), float(sec), int(peak)


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or reuse) the big tape and print each format's figures."""
    ap = argparse.ArgumentParser(prog="python -m bench export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=10_000_000)
    ap.add_argument("--tape", help="reuse (or keep) the tape at this path")
    ap.add_argument("--formats", default="chrome,jsonl,csv")
    args = ap.parse_args(argv)

    import calltape

    with tempfile.TemporaryDirectory(prefix="calltape-bench-export-") as tmp:
        path = args.tape or os.path.join(tmp, "big.db")
        if not os.path.exists(path):
            print(f"recording {args.calls:,} calls onto {path} ...", flush=True)
            print(f"  {build(path, args.calls):.1f} s")
        with calltape.open(path) as tape:
            total = sum(f.calls for f in tape.functions())
        print(f"Python {sys.version.split()[0]}, calltape {calltape.__version__};"
              f" tape: {total:,} calls, {os.path.getsize(path) / 1e6:.0f} MB\n")
        print(f"{'format':8} {'calls':>12} {'seconds':>8} {'calls/s':>12} {'file MB':>9}"
              f" {'peak RSS MB':>12}")
        for fmt in args.formats.split(","):
            out = os.path.join(tmp, f"export.{fmt}")
            n, sec, peak = export_once(path, fmt, out)
            size = os.path.getsize(out)
            os.unlink(out)
            print(f"{fmt:8} {n:>12,} {sec:>8.2f} {n / sec:>12,.0f} {size / 1e6:>9.0f}"
                  f" {peak / 1024:>12.0f}", flush=True)
    return 0
