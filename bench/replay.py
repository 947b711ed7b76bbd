"""Benchmark "replay": how faithfully and how fast recorded calls replay.

(a) Fidelity: standard-library functions are wrapped at run time with
``calltape.record(fn)`` and called by a workload with varied arguments (text,
ints, floats, decimals, fractions, dates, containers, dataclasses, numpy arrays
when numpy is installed); every recorded call is then replayed and the share
that reproduces exactly (status "passed", no tolerance) is reported, over the
calls whose values were encodable.  Calls that did not pass are listed with
their reason.  Goal: 100%.

(b) Throughput: ``--calls`` calls of a cheap function ``add(a, b)`` are
recorded, then ``tape.replay(function=...)`` is timed (search, rebuild,
call, compare, outcome); the median of ``--repeat`` runs is reported in calls
replayed per second.  Goal: at least 100,000 per second.  Then the same calls
replayed one by one, ``call.replay()`` in a loop over the searched calls (issue
14's goal: 200,000 per second both ways).  Each rate is given by the clock and
by this process's CPU time (``time.process_time``), which other programs on a
shared machine move less.

    python -m bench replay [--rounds 40] [--calls 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import base64
import bisect
import calendar
import copy
import dataclasses
import datetime
import difflib
import fnmatch
import fractions
import hashlib
import heapq
import html
import json
import math
import operator
import os
import posixpath
import re
import shlex
import statistics
import string
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import zlib
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import calltape

try:
    import numpy as np
except ImportError:  # numpy is optional
    np = None  # type: ignore[assignment]


@dataclasses.dataclass(frozen=True)
class Point:
    """A dataclass argument and result."""

    x: float
    y: float
    label: str = ""


def add(a: int, b: int) -> int:
    """The cheap function of the throughput run."""
    return a + b


def stdlib_functions() -> dict[str, Callable[..., Any]]:
    """The functions whose calls are recorded, by a display name."""
    fns: dict[str, Callable[..., Any]] = {
        "textwrap.wrap": textwrap.wrap, "textwrap.dedent": textwrap.dedent,
        "json.dumps": json.dumps, "json.loads": json.loads, "math.gcd": math.gcd,
        "math.fsum": math.fsum, "math.hypot": math.hypot, "statistics.mean": statistics.mean,
        "statistics.median": statistics.median, "operator.add": operator.add,
        "operator.mul": operator.mul, "operator.sub": operator.sub,
        "Fraction.limit_denominator": fractions.Fraction.limit_denominator,
        "calendar.monthrange": calendar.monthrange, "calendar.isleap": calendar.isleap,
        "re.sub": re.sub, "re.findall": re.findall, "string.capwords": string.capwords,
        "html.escape": html.escape, "urllib.parse.quote": urllib.parse.quote,
        "urllib.parse.urlsplit": urllib.parse.urlsplit, "base64.b64encode": base64.b64encode,
        "zlib.crc32": zlib.crc32, "bisect.bisect_left": bisect.bisect_left,
        "heapq.nlargest": heapq.nlargest, "dataclasses.asdict": dataclasses.asdict,
        "dataclasses.replace": dataclasses.replace, "copy.deepcopy": copy.deepcopy,
        "difflib.get_close_matches": difflib.get_close_matches, "shlex.split": shlex.split,
        "shlex.quote": shlex.quote, "fnmatch.fnmatch": fnmatch.fnmatch,
        "posixpath.join": posixpath.join, "posixpath.splitext": posixpath.splitext,
        "sorted": sorted,
        "hashlib.sha256": hashlib.sha256,  # its result cannot be encoded: shows a skip
    }
    if np is not None:
        fns.update({"numpy.cumsum": np.cumsum, "numpy.dot": np.dot,
                    "numpy.linalg.norm": np.linalg.norm})
    return fns


def workload(rec: dict[str, Callable[..., Any]], rounds: int) -> int:
    """Calls every recorded function with varied arguments; returns the call count."""
    words = ["apple", "apply", "ample", "maple", "angle", "ankle"]
    n = 0
    for i in range(rounds):
        text = f"  The {i} quick brown foxes jump over {i * 3} lazy dogs & <cats>  " * (1 + i % 3)
        day = datetime.date(2020 + i % 5, 1 + i % 12, 1 + i % 28)
        nums = [j * 0.37 - i for j in range(1 + i % 9)]
        decs = [Decimal(f"{j}.{i % 100:02d}") for j in range(1, 4 + i % 4)]
        fracs = [fractions.Fraction(j + i, j + 2) for j in range(1, 4)]
        pt = Point(i * 0.5, -i / 3, f"p{i}")
        doc = {"id": i, "tags": sorted({"a", "b", str(i)}), "price": i * 1.1,
               "nested": {"ok": i % 2 == 0, "list": list(range(i % 5))}}
        calls: list[tuple[str, tuple, dict]] = [
            ("textwrap.wrap", (text,), {"width": 20 + i % 30}),
            ("textwrap.dedent", ("    a\n      b\n    c" * (1 + i % 2),), {}),
            ("json.dumps", (doc,), {"sort_keys": True}),
            ("json.loads", (json.dumps(doc),), {}),
            ("math.gcd", (i * 12, 18 + i), {}),
            ("math.fsum", (nums,), {}),
            ("math.hypot", (i * 0.1, 3.0, -4.5), {}),
            ("statistics.mean", (decs,), {}),
            ("statistics.median", (fracs,), {}),
            ("operator.add", (decs[0], decs[-1]), {}),
            ("operator.mul", (fracs[0], fracs[1]), {}),
            ("operator.sub", (day, datetime.date(2019, 12, 31)), {}),
            ("Fraction.limit_denominator", (fractions.Fraction(math.pi),), {"max_denominator": 10 + i}),
            ("calendar.monthrange", (day.year, day.month), {}),
            ("calendar.isleap", (1900 + i * 7,), {}),
            ("re.sub", (r"\d+", "#", text), {}),
            ("re.findall", (r"[a-z]+s\b", text), {}),
            ("string.capwords", (text.strip(),), {}),
            ("html.escape", (text,), {"quote": i % 2 == 0}),
            ("urllib.parse.quote", (f"/a b/{i}?x=ü&y={i}",), {}),
            ("urllib.parse.urlsplit", (f"https://example.org:80{i % 10}/p/{i}?q={i}#f",), {}),
            ("base64.b64encode", (text.encode(),), {}),
            ("zlib.crc32", (text.encode(), i), {}),
            ("bisect.bisect_left", (sorted(nums), i * 0.1), {}),
            ("heapq.nlargest", (3, nums + [i]), {}),
            ("dataclasses.asdict", (pt,), {}),
            ("dataclasses.replace", (pt,), {"label": f"q{i}"}),
            ("copy.deepcopy", ({"pt": pt, "day": day, "l": [decs, fracs]},), {}),
            ("difflib.get_close_matches", (words[i % 6][::-1] if i % 3 else "appel", words), {}),
            ("shlex.split", (f"cmd --opt 'a b {i}' \"c d\" e",), {}),
            ("shlex.quote", (f"it's {i}",), {}),
            ("fnmatch.fnmatch", (f"file{i}.py", "file*.p?"), {}),
            ("posixpath.join", ("/srv", f"d{i}", "f.txt"), {}),
            ("posixpath.splitext", (f"/srv/archive{i}.tar.gz",), {}),
            ("sorted", ([(w, len(w)) for w in words],), {"key": None, "reverse": i % 2 == 0}),
            ("hashlib.sha256", (text.encode(),), {}),
        ]
        if np is not None:
            arr = np.arange(i % 7 + 1, dtype=np.float64) * 0.5
            calls += [("numpy.cumsum", (arr,), {}),
                      ("numpy.dot", (arr, arr[::-1].copy()), {}),
                      ("numpy.linalg.norm", (arr.reshape(-1, 1),), {})]
        for name, args, kwargs in calls:
            rec[name](*args, **kwargs)
            n += 1
    return n


def fidelity(path: str, rounds: int) -> dict[str, Any]:
    """Records the workload onto `path`, replays every call, and sums up."""
    fns = stdlib_functions()
    calltape.configure(tape=path)
    rec = {name: calltape.record(fn) for name, fn in fns.items()}
    calls = workload(rec, rounds)
    calltape.flush()
    tape = calltape.open(path, trust=True)
    report = tape.replay()
    counts = report.counts
    unencodable = [o for o in report if o.status == "skipped"
                   and ("was not recorded" in (o.reason or "")
                        or "the recorded result is" in (o.reason or ""))]
    encodable = len(report) - len(unencodable)
    problems: dict[str, str] = {}
    for o in report:
        if o.status != "passed":
            problems.setdefault(f"{o.function} ({o.status})", o.diff or o.reason or "")
    return {"functions": len(fns), "calls": calls, "replayed": len(report), "counts": counts,
            "encodable": encodable, "exact": counts["passed"],
            "share": counts["passed"] / encodable if encodable else 0.0, "problems": problems}


def rates(n: int, spans: list[tuple[float, float]]) -> tuple[float, float]:
    """Median calls per second of `n` calls timed `spans` times (clock, CPU seconds)."""
    return (statistics.median(n / wall for wall, _ in spans),
            statistics.median(n / cpu for _, cpu in spans))


def timed(fn: Callable[[], Any]) -> tuple[Any, tuple[float, float]]:
    """What fn() returns, and the clock and CPU seconds it took."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - t0, time.process_time() - c0)


def throughput(path: str, calls: int, repeat: int) -> tuple[tuple[float, float], int]:
    """Median calls replayed per second (clock, CPU) of `calls` recorded add() calls."""
    recorded = calltape.record(add, tape=path)
    for i in range(calls):
        recorded(i, i + 1)
    calltape.flush()
    tape = calltape.open(path, allow=[__name__])
    spans = []
    for _ in range(repeat):
        report, span = timed(lambda: tape.replay(function="add"))
        spans.append(span)
        if report.counts["passed"] != calls or len(report) != calls:
            raise SystemExit(f"bench replay: add() replays did not all pass: {report.counts}")
    return rates(calls, spans), calls


def one_by_one(path: str, repeat: int) -> tuple[float, float]:
    """Median calls per second (clock, CPU) of call.replay() over the recorded add() calls."""
    tape = calltape.open(path, allow=[__name__])
    found = list(tape.search(function="add", order="oldest", limit=None))
    spans = []
    for _ in range(repeat):
        passed, span = timed(lambda: sum(c.replay().status == "passed" for c in found))
        spans.append(span)
        if passed != len(found):
            raise SystemExit(f"bench replay: {len(found) - passed} one-by-one replays failed")
    return rates(len(found), spans)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both parts and print the figures."""
    ap = argparse.ArgumentParser(prog="python -m bench replay", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40, help="workload rounds (fidelity)")
    ap.add_argument("--calls", type=int, default=100_000, help="add() calls (throughput)")
    ap.add_argument("--repeat", type=int, default=5, help="timed replays (throughput)")
    ap.add_argument("--in-dir", help=argparse.SUPPRESS)  # the child's folder (below)
    args = ap.parse_args(argv)
    for name in ("rounds", "calls", "repeat"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    if args.in_dir:
        return measure(args, args.in_dir)
    # the parts record and replay in a child process, which has ended (and let
    # go of its tapes) before the folder is removed
    with tempfile.TemporaryDirectory(prefix="calltape-bench-replay-") as tmp:
        cmd = [sys.executable, "-m", "bench", "replay", "--in-dir", tmp, "--rounds",
               str(args.rounds), "--calls", str(args.calls), "--repeat", str(args.repeat)]
        return subprocess.run(cmd, check=False).returncode


def measure(args: argparse.Namespace, tmp: str) -> int:
    """The fidelity, throughput and one-by-one parts, their tapes in `tmp`."""
    fid = fidelity(os.path.join(tmp, "fidelity.db"), args.rounds)
    print(f"replay fidelity: {fid['functions']} standard-library functions"
          f"{' (numpy included)' if np is not None else ' (numpy not installed)'},"
          f" {fid['calls']:,} recorded calls, {fid['replayed']:,} replayed")
    print("  " + ", ".join(f"{n:,} {s}" for s, n in fid["counts"].items()))
    print(f"  reproduced exactly: {fid['exact']:,} of {fid['encodable']:,} calls with"
          f" encodable values = {fid['share']:.1%}  (goal 100%)")
    for what, why in sorted(fid["problems"].items()):
        print(f"  not reproduced: {what}: {why}")
    (rate, cpu), n = throughput(os.path.join(tmp, "throughput.db"), args.calls, args.repeat)
    print(f"replay throughput: {rate:,.0f} calls/s ({cpu:,.0f} per CPU second), median of"
          f" {args.repeat} replays of {n:,} recorded add(a, b) calls  (goal 100,000/s)")
    each, cpu = one_by_one(os.path.join(tmp, "throughput.db"), args.repeat)
    print(f"one by one: {each:,.0f} calls/s ({cpu:,.0f} per CPU second), call.replay() of"
          f" each of them, median of {args.repeat} rounds  (issue 14: 200,000/s)")
    return 0
