"""Benchmark "run": whole programs under ``calltape run``, beside cProfile and VizTracer.

``python -m bench run`` runs two programs, each as a fresh process, side by
side in interleaved rounds (the median round is reported):

* ``mixed``: many small functions doing real work (parsing lines, dataclasses,
  a JSON round trip, string formatting);
* ``fib``: recursive fib, whose calls arrive faster than any store can write
  them;
* ``gen``: generators feeding generators and generator expressions (the
  shape of itertools-style code), where every ``yield`` suspends a recorded
  call and every ``next()`` resumes it.

under these variants: plain ``python``; the floor (3.12+: ``bench/_floor.py``
registers a C function that does nothing for the events ``calltape run`` listens
to, so its row is what CPython's dispatch of them costs before any recording);
``calltape run --no-args
--no-result``; ``calltape run`` (arguments and results); ``calltape run
--sample 10``; ``calltape run --exclude '*'`` (everything excluded: the cost
of excluded code); ``python -m cProfile``; and VizTracer without and with
``--log_func_args --log_func_retval`` when it is installed (skipped, and said
so, when it is not).

``--callgrind`` instead counts the instructions of the program's own thread
under ``valgrind --tool=callgrind --separate-threads=yes`` (PYTHONHASHSEED=0:
the same dict probes every run), for two sizes of
each program so that start-up cancels out (a generator's resume counts as a
call, as in ``sys.setprofile``): the added instructions per call are stable on a shared, noisy machine where times are not.

Three times per run: ``program``, the wall time measured by the program itself
around its work; ``program thread CPU``, the CPU time of the program's thread
over the same work (what the recording costs the program's own thread, apart
from the writer thread, which on a loaded machine competes for the same
cores); and ``process``,
the whole process from start to exit (which includes interpreter start-up and
each tool's work at exit: calltape waiting for its writer to drain,
VizTracer saving its trace).  Slowdowns are ratios to plain python; the
per-call cost is (program thread CPU - plain) / recorded calls.
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
    t0, c0 = time.perf_counter(), time.thread_time()
    out = receipt(lines)
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.thread_time() - c0,
                      "out": out}))

main(int(sys.argv[1]))
'''

FIB = '''
import json, sys, time

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

t0, c0 = time.perf_counter(), time.thread_time()
out = fib(int(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.thread_time() - c0,
                  "out": out}))
'''

GEN = '''
import json, sys, time

def numbers(n):
    for i in range(n):
        yield i

def evens(items):
    for x in items:
        if x % 2 == 0:
            yield x

def squares(n):
    return sum(x * x for x in numbers(n))

def main(n):
    total = 0
    for _ in range(n // 1000):
        total += sum(evens(numbers(1000)))
        total += squares(100)
    return total

t0, c0 = time.perf_counter(), time.thread_time()
out = main(int(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.thread_time() - c0,
                  "out": out}))
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
    if sys.version_info >= (3, 12):
        floor = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_floor.py")
        out.insert(1, Variant("floor: sys.monitoring, empty C callbacks", [py, floor]))
    else:
        print("Python 3.11 has no sys.monitoring: the floor row is skipped")
    if have_viztracer:
        vz = [py, "-m", "viztracer", "--quiet", "-o", "{out}.json"]
        out += [Variant("VizTracer", vz),
                Variant("VizTracer --log_func_args --log_func_retval",
                        [*vz, "--log_func_args", "--log_func_retval"])]
    return out


def command(v: Variant, work: str, i: int) -> tuple[list[str], str]:
    """The command line of run `i` of variant `v` (before the script) and its tape."""
    tape = os.path.join(work, f"t{i}.db")
    return [a.replace("{tape}", tape).replace("{out}", os.path.join(work, f"o{i}"))
            for a in v.argv], tape


def run_once(v: Variant, script: str, arg: str, work: str, i: int) -> dict:
    argv, tape = command(v, work, i)
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
    return {"program": result["seconds"], "cpu": result["cpu"], "process": process,
            "calls": calls,
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
                     "cpu": statistics.median(x["cpu"] for x in s),
                     "process": statistics.median(x["process"] for x in s),
                     "calls": max(x["calls"] for x in s),
                     "dropped": max(x["dropped"] for x in s)})
    return rows


def report(title: str, rows: list[dict]) -> None:
    base = rows[0]
    calls_made = max(r["calls"] for r in rows)  # the program's calls, as calltape saw them
    print(f"\n### {title}\n")
    print("| variant | program s | × python | program thread CPU s | × python | process s |"
          " × python | calls recorded | added ns per call (thread CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        per = ""
        if r is not base and (r["calls"] or calls_made):
            per = f"{(r['cpu'] - base['cpu']) * 1e9 / (r['calls'] or calls_made):.0f}"
        calls = f"{r['calls']:,}" if r["calls"] else ""
        if r["dropped"]:
            calls += f" ({r['dropped']:,} dropped)"
        print(f"| {r['variant']} | {r['program']:.3f} | {r['program'] / base['program']:.2f} |"
              f" {r['cpu']:.3f} | {r['cpu'] / base['cpu']:.2f} |"
              f" {r['process']:.3f} | {r['process'] / base['process']:.2f} | {calls} | {per} |")


def main_thread_instructions(v: Variant, script: str, arg: str, work: str, i: int) -> int:
    """Instructions executed by the main thread of one run under callgrind."""
    out = os.path.join(work, f"cg{i}")
    argv, tape = command(v, work, i)
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                           f"--callgrind-out-file={out}", *argv, script, arg], check=False,
                          capture_output=True, text=True, cwd=work,
                          env={**os.environ, "CALLTAPE_TAPE": tape, "PYTHONHASHSEED": "0"})
    if proc.returncode != 0:
        raise RuntimeError(f"{v.name} failed under callgrind:\n{proc.stderr[-2000:]}")
    with open(out + "-01") as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no summary in {out}-01")


def count_calls(source: str, arg: str, work: str) -> int:
    """Python-level calls of one program run, counted by sys.setprofile."""
    probe = os.path.join(work, "count.py")
    with open(probe, "w") as f:
        f.write("import sys, runpy, io, contextlib\nn = 0\nsys.argv = sys.argv[1:]\n"
                "def prof(frame, ev, arg):\n    global n\n"
                "    if ev == 'call' and frame.f_code.co_filename == sys.argv[0]:\n"
                "        n += 1\n"
                "sys.setprofile(prof)\n"
                "with contextlib.redirect_stdout(io.StringIO()):\n"
                "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
                "sys.setprofile(None)\nprint(n)\n")
    script = os.path.join(work, "counted.py")
    with open(script, "w") as f:
        f.write(textwrap.dedent(source))
    proc = subprocess.run([sys.executable, probe, script, arg], check=True,
                          capture_output=True, text=True, cwd=work)
    return int(proc.stdout.split()[-1])


def callgrind(name: str, source: str, sizes: tuple[str, str], vs: list[Variant]) -> None:
    work = tempfile.mkdtemp(prefix="calltape-bench-cg-")
    try:
        script = os.path.join(work, f"{name}.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(source))
        calls = count_calls(source, sizes[1], work) - count_calls(source, sizes[0], work)
        print(f"\n### {name}: instructions of the program's thread, per call"
              f" ({name} {sizes[0]} -> {sizes[1]}: {calls:,} more calls)\n")
        print("| variant | instructions per call | added per call |")
        print("|---|---:|---:|")
        base = None
        for k, v in enumerate(vs):
            small = main_thread_instructions(v, script, sizes[0], work, 2 * k)
            large = main_thread_instructions(v, script, sizes[1], work, 2 * k + 1)
            per = (large - small) / calls
            base = per if base is None else base
            added = "-" if v is vs[0] else f"+{per - base:,.0f}"
            print(f"| {v.name} | {per:,.0f} | {added} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def have_viztracer() -> bool:
    """True when VizTracer can run; says so when its variants are skipped."""
    try:
        import viztracer  # noqa: F401
    except ImportError:
        print("VizTracer is not installed: its variants are skipped"
              " (pip install '.[bench]' installs it)")
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench run", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--orders", type=int, default=10_000, help="orders of the mixed program")
    p.add_argument("--fib", type=int, default=25, help="n of fib(n)")
    p.add_argument("--gen", type=int, default=200_000, help="size of the generator program")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.add_argument("--callgrind", action="store_true",
                   help="count the program thread's instructions per call under callgrind")
    p.add_argument("--program", action="append", choices=["mixed", "fib", "gen"],
                   help="run only this program (repeatable; default: all three)")
    p.add_argument("--variant", action="append", metavar="TEXT",
                   help="run only the variants whose name contains TEXT (repeatable;"
                        " plain python always runs)")
    args = p.parse_args(argv)
    programs = args.program or ["mixed", "fib", "gen"]

    def chosen(vs: list[Variant]) -> list[Variant]:
        return [v for v in vs if v.name == "python" or not args.variant
                or any(t in v.name for t in args.variant)]

    if args.callgrind:
        if not shutil.which("valgrind"):
            print("valgrind is not installed: --callgrind needs it", file=sys.stderr)
            return 2
        have = have_viztracer()
        vs = chosen([v for v in variants(have) if "sample" not in v.name])
        if "mixed" in programs:
            callgrind("mixed", MIXED, ("500", "1500"), vs)
        if "fib" in programs:
            callgrind("fib", FIB, ("15", "18"), vs)
        if "gen" in programs:
            callgrind("gen", GEN, ("2000", "6000"), vs)
        return 0
    if args.quick:
        args.rounds, args.orders, args.fib, args.gen = 1, 2_000, 15, 20_000
    have_viz = have_viztracer()
    print(f"Python {sys.version.split()[0]}; rounds: {args.rounds} (median)")
    vs = chosen(variants(have_viz))
    if "mixed" in programs:
        report(f"mixed workload ({args.orders:,} orders)",
               measure("mixed", MIXED, str(args.orders), args.rounds, vs))
    if "fib" in programs:
        report(f"fib({args.fib})", measure("fib", FIB, str(args.fib), args.rounds, vs))
    if "gen" in programs:
        report(f"generators ({args.gen:,} values)",
               measure("gen", GEN, str(args.gen), args.rounds, vs))
    return 0
