"""Benchmark "read": search speed on a large tape.

Records ``--calls`` calls (default 10 million) over 50 functions from 4
processes (4 sessions) onto one tape, through the real recorder, then times
with medians of ``--repeat`` runs:

- ``tape.functions()``
- ``tape.search(function=..., since=..., until=..., limit=100)``
- ``tape.search(min_duration=..., limit=100)``
- a full iteration of one function's calls, values left unrebuilt;
- ``calltape functions TAPE`` as a user runs it (the console script in a
  subprocess: interpreter start, import, the tape, the table), for every
  session, ``--last`` and ``--session ID``.
- ``calltape tree TAPE --depth 3`` as a user runs it: the venv's console
  script in a subprocess, interpreter start and import included, its
  output to /dev/null (the newest session's first 25 roots, and the count
  of the rest, from the children index).

Goals (issue 3): functions() under 10 ms, each limited search under 20 ms,
full iteration at least 1 million calls per second; (issue 13) each
``calltape functions`` command and the tree command under 100 ms.

    python -m bench read [--calls N] [--tape PATH|URL] [--repeat 7]

A ``postgresql://`` URL as ``--tape`` records into (and reads from) that
server tape when it holds no calls yet (``python -m bench pg --read N``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

FUNCTIONS = 50
SESSIONS = 4

CHILD = """
import sys, calltape
n = int(sys.argv[1])
fns = []
for k in range({functions}):
    ns = {{}}
    exec(f"def f{{k}}(i, x):\\n    return i + x\\n", ns)
    ns[f"f{{k}}"].__module__ = "bench_read"
    fns.append(calltape.record(ns[f"f{{k}}"]))
for i in range(n):
    fns[i % {functions}](i, i * 0.5)
calltape.flush()
"""


def build(path: str, calls: int) -> float:
    """Records `calls` calls onto `path` from SESSIONS processes, two at a time."""
    env = dict(os.environ, CALLTAPE_TAPE=path)
    source = CHILD.format(functions=FUNCTIONS)
    per = calls // SESSIONS
    t0 = time.perf_counter()
    for pair in range(0, SESSIONS, 2):
        procs = [subprocess.Popen([sys.executable, "-c", source, str(per)], env=env)
                 for _ in range(min(2, SESSIONS - pair))]
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(f"bench read: a recording process failed ({p.returncode})")
    return time.perf_counter() - t0


def _recorded(calltape: Any, url: str) -> bool:
    """Whether the server tape at `url` holds calls already (a new database: no)."""
    try:
        with calltape.open(url) as tape:
            return any(f.calls for f in tape.functions())
    except calltape.TapeError:
        return False


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median seconds of `repeat` runs of fn, and its last result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or reuse) the big tape and print the timings."""
    ap = argparse.ArgumentParser(prog="python -m bench read", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=10_000_000)
    ap.add_argument("--tape", help="reuse (or keep) the tape at this path")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)

    import calltape

    tmp = None
    path = args.tape
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="calltape-bench-read-")
        path = os.path.join(tmp.name, "big.db")
    on_server = "://" in path  # a PostgreSQL tape (python -m bench pg --read)
    if not (_recorded(calltape, path) if on_server else os.path.exists(path)):
        print(f"recording {args.calls:,} calls over {FUNCTIONS} functions from {SESSIONS}"
              f" processes into {path} ...", file=sys.stderr)
        seconds = build(path, args.calls)
        print(f"recorded in {seconds:.1f} s", file=sys.stderr)

    tape = calltape.open(path)
    total = sum(f.calls for f in tape.functions())
    name = "f7"
    # a window of 5 ms around the middle call of one function
    middle = tape.search(function=name, order="oldest")[
        sum(f.calls for f in tape.functions() if f.qualname == name) // 2]
    window = (middle.start, middle.start + timedelta(milliseconds=5))
    size = "on a PostgreSQL server" if on_server else f"{os.path.getsize(path) / 1e6:.0f} MB"
    print(f"Python {sys.version.split()[0]}, calltape {calltape.__version__};"
          f" tape: {total:,} calls, {len(tape.functions())} functions,"
          f" {len(tape.sessions())} sessions, {size}\n")

    def fresh_functions() -> object:
        t = calltape.open(path)
        return t.functions()

    rows = []
    sec, fns = timed(fresh_functions, args.repeat)
    rows.append(("functions() (fresh Tape each time)", sec, f"{len(fns)} functions", 0.010))
    sec, found = timed(lambda: list(tape.search(function=name, since=window[0],
                                                until=window[1], limit=100)), args.repeat)
    rows.append((f"search(function={name!r}, since, until, limit=100)", sec,
                 f"{len(found)} calls", 0.020))
    def iterate() -> int:
        n = 0
        for _ in tape.search(function=name, order="oldest"):
            n += 1
        return n

    sec, n = timed(iterate, max(1, args.repeat // 2))
    rate = n / sec

    # min_duration: the slowest 0.1% of the calls, what a person hunting
    # outliers asks for (rarer outliers make any store scan further)
    durations = sorted(c.duration_ns for c in tape.search(function=name))
    threshold = durations[int(len(durations) * 0.999)] / 1e9
    qsec, found = timed(lambda: list(tape.search(min_duration=threshold, limit=100)),
                        args.repeat)
    rows.append((f"search(min_duration={threshold * 1e6:.1f} us, limit=100)", qsec,
                 f"{len(found)} calls", 0.020))

    # the command line, as its user runs it
    script = os.path.join(sysconfig.get_path("scripts"), "calltape")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "calltape"]
    sessions = sorted(s.id for s in tape.sessions())
    for extra in ([], ["--last"], ["--session", str(sessions[0])]):
        argv = [*command, "functions", path, *extra]

        def cli(argv: list[str] = argv) -> object:
            return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

        sec, out = timed(cli, args.repeat)
        label = " ".join(["calltape functions TAPE", *extra])
        rows.append((label, sec, f"{len(str(out).splitlines())} lines", 0.100))
    # what every command pays before it opens the tape
    floor, _ = timed(lambda: subprocess.run([sys.executable, "-c", "import calltape.cli"],
                                            check=True), args.repeat)
    tree = [*command, "tree", path, "--depth", "3"]

    cpu: list[float] = []  # the command's own user + sys time: what a busy machine moves least

    def tree_command() -> int:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        rc = subprocess.run(tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            check=True).returncode
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        return rc

    tree_lines = len(subprocess.run(tree, capture_output=True, text=True,
                                    check=True).stdout.splitlines())
    tsec, _ = timed(tree_command, args.repeat)
    rows.append(("calltape tree TAPE --depth 3 (a new process)", tsec, f"{tree_lines} lines",
                 0.100))

    print(f"{'operation':<52} {'median':>10}  {'result':<14} goal")
    print("-" * 86)
    ok = True
    for label, s, result, goal in rows:
        passed = s <= goal
        ok &= passed
        print(f"{label:<52} {s * 1e3:>7.2f} ms  {result:<14} <= {goal * 1e3:.0f} ms"
              f" {'PASS' if passed else 'FAIL'}")
    print(f"{'  of which interpreter start + import calltape.cli':<52} {floor * 1e3:>7.2f} ms")
    passed = rate >= 1_000_000 and n == total // FUNCTIONS
    ok &= passed
    print(f"{'full iteration of ' + name + ' (values unrebuilt)':<52} {sec * 1e3:>7.0f} ms"
          f"  {n:,} calls  {rate / 1e6:.2f} M calls/s (>= 1 M/s) {'PASS' if passed else 'FAIL'}")
    print(f"(calltape tree: {statistics.median(cpu) * 1e3:.1f} ms of CPU, user + sys, median;"
          f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print("\n| operation | median | goal |\n|---|---:|---:|")
    for label, s, _, goal in rows:
        print(f"| `{label}` | {s * 1e3:.2f} ms | {goal * 1e3:.0f} ms |")
    print(f"| full iteration of one function ({n:,} calls) | {rate / 1e6:.2f} M calls/s"
          " | 1 M calls/s |")
    tape.close()
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1
