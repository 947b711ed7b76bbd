"""Benchmark "run": whole programs under ``calltape run``, beside cProfile and VizTracer.

``python -m bench run`` runs two programs, each as a fresh process, side by
side in interleaved rounds (the median round is reported):

* ``mixed``: many small functions doing real work (parsing lines, dataclasses,
  a JSON round trip, string formatting);
* ``fib``: recursive fib, whose calls arrive faster than any store can write
  them.

under these variants: plain ``python``; ``calltape run --no-args
--no-result``; ``calltape run`` (arguments and results); ``calltape run
--sample 10``; ``calltape run --exclude '*'`` (everything excluded: the cost
of excluded code); ``python -m cProfile``; and VizTracer without and with
``--log_func_args --log_func_retval`` when it is installed (skipped, and said
so, when it is not).

Two times per run: ``program``, measured by the program itself around its
work (what the recording costs the program's own thread), and ``process``,
the whole process from start to exit (which includes interpreter start-up and
each tool's work at exit: calltape waiting for its writer to drain,
VizTracer saving its trace).  Slowdowns are ratios to plain python; the
per-call cost is (program time - plain) / recorded calls.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass

MIXED = '''
import json, sys, time
from dataclasses import dataclass, asdict

@dataclass
class Order:
    id: int
    item: str
    qty: int
    unit: float

def parse_line(line):
    oid, item, qty, unit = line.split(",")
    return Order(int(oid), item.strip(), int(qty), float(unit))

def line_total(order):
    return round(order.qty * order.unit, 2)

def discount(total, qty):
    return total * (0.9 if qty > 3 else 1.0)

def to_record(order):
    total = discount(line_total(order), order.qty)
    return {**asdict(order), "total": total}

def round_trip(record):
    return json.loads(json.dumps(record))

def format_row(record):
    return f"{record['id']:>6} {record['item']:<10} {record['qty']:>3} x {record['unit']:8.2f}"

def receipt(lines):
    rows, total = [], 0.0
    for line in lines:
        record = round_trip(to_record(parse_line(line)))
        rows.append(format_row(record))
        total += record["total"]
    return len(rows), round(total, 2)

def main(n):
    lines = [f"{i}, item{i % 17}, {1 + i % 7}, {i % 13 + 0.5}" for i in range(n)]
    t0 = time.perf_counter()
    out = receipt(lines)
    print(json.dumps({"seconds": time.perf_counter() - t0, "out": out}))

main(int(sys.argv[1]))
'''

FIB = '''
import json, sys, time

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

t0 = time.perf_counter()
out = fib(int(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - t0, "out": out}))
'''


@dataclass(frozen=True)
class Variant:
    name: str
    argv: list[str]  # before the script; {tape} and {out} are filled in
    records: bool = False  # writes a calltape tape


def variants(have_viztracer: bool) -> list[Variant]:
    py = sys.executable
    ct = [py, "-m", "calltape", "run", "--quiet", "--tape", "{tape}"]
    out = [
        Variant("python", [py]),
        Variant("calltape --no-args --no-result", [*ct, "--no-args", "--no-result"], True),
        Variant("calltape (args + result)", ct, True),
        Variant("calltape --sample 10", [*ct, "--sample", "10"], True),
        Variant("calltape, all code excluded", [*ct, "--exclude", "*"], True),
        Variant("cProfile", [py, "-m", "cProfile", "-o", "{out}"]),
    ]
    if have_viztracer:
        vz = [py, "-m", "viztracer", "--quiet", "-o", "{out}.json"]
        out += [Variant("VizTracer", vz),
                Variant("VizTracer --log_func_args --log_func_retval",
                        [*vz, "--log_func_args", "--log_func_retval"])]
    return out


def run_once(v: Variant, script: str, arg: str, work: str, i: int) -> dict:
    tape = os.path.join(work, f"t{i}.db")
    argv = [a.replace("{tape}", tape).replace("{out}", os.path.join(work, f"o{i}"))
            for a in v.argv]
    t0 = time.perf_counter()
    proc = subprocess.run([*argv, script, arg], check=False, capture_output=True, text=True,
                          cwd=work,
                          env={**os.environ, "CALLTAPE_TAPE": tape})
    process = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{v.name} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    calls = 0
    if v.records and os.path.exists(tape):
        with sqlite3.connect(tape) as db:
            calls = db.execute("SELECT coalesce(sum(calls), 0) FROM functions").fetchone()[0]
            dropped = db.execute("SELECT coalesce(sum(dropped), 0) FROM sessions").fetchone()[0]
        result["dropped"] = dropped
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(tape + suffix):
                os.unlink(tape + suffix)
    return {"program": result["seconds"], "process": process, "calls": calls,
            "dropped": result.get("dropped", 0)}


def measure(name: str, source: str, arg: str, rounds: int, vs: list[Variant]) -> list[dict]:
    work = tempfile.mkdtemp(prefix="calltape-bench-run-")
    try:
        script = os.path.join(work, f"{name}.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(source))
        samples: dict[str, list[dict]] = {v.name: [] for v in vs}
        for r in range(rounds):
            order = vs[r % len(vs):] + vs[:r % len(vs)]
            for k, v in enumerate(order):
                samples[v.name].append(run_once(v, script, arg, work, r * 100 + k))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for v in vs:
        s = samples[v.name]
        rows.append({"variant": v.name,
                     "program": statistics.median(x["program"] for x in s),
                     "process": statistics.median(x["process"] for x in s),
                     "calls": max(x["calls"] for x in s),
                     "dropped": max(x["dropped"] for x in s)})
    return rows


def report(title: str, rows: list[dict]) -> None:
    base = rows[0]
    print(f"\n### {title}\n")
    print("| variant | program s | × python | process s | × python | calls recorded |"
          " ns per recorded call |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        per = ""
        if r["calls"]:
            per = f"{(r['program'] - base['program']) * 1e9 / r['calls']:.0f}"
        calls = f"{r['calls']:,}" if r["calls"] else ""
        if r["dropped"]:
            calls += f" ({r['dropped']:,} dropped)"
        print(f"| {r['variant']} | {r['program']:.3f} | {r['program'] / base['program']:.2f} |"
              f" {r['process']:.3f} | {r['process'] / base['process']:.2f} | {calls} | {per} |")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench run", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--orders", type=int, default=40_000, help="orders of the mixed program")
    p.add_argument("--fib", type=int, default=25, help="n of fib(n)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.orders, args.fib = 1, 2_000, 15
    try:
        import viztracer  # noqa: F401
        have_viz = True
    except ImportError:
        have_viz = False
    print(f"Python {sys.version.split()[0]}; rounds: {args.rounds} (median)")
    if not have_viz:
        print("VizTracer is not installed: its variants are skipped"
              " (pip install '.[bench]' installs it)")
    vs = variants(have_viz)
    report(f"mixed workload ({args.orders:,} orders)",
           measure("mixed", MIXED, str(args.orders), args.rounds, vs))
    report(f"fib({args.fib})", measure("fib", FIB, str(args.fib), args.rounds, vs))
    return 0
