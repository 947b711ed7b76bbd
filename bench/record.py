"""Benchmark "record": what ``@calltape.record`` costs a call, beside its peers.

``python -m bench record`` prints, from one run:

1. the time per call of ``f(a: int, b: float, s: str) -> int`` bare, under
   ``@calltape.record``, under cProfile, under a plain Python decorator that
   pickles its arguments, and under the optional peers that are installed
   (yappi, callmonitor's ``@intercept``, PyMAAP's ``Timer``): loops of
   200,000 calls with arguments that change on every call, 7 rounds
   interleaved (the order rotates every round), the median round per variant;
2. the sustained rate: 3,000,000 recorded calls timed from the first call
   until ``calltape.flush()`` returns, checked against ``calltape.stats()``
   (nothing dropped) and the ``functions`` table of the tape (every call
   counted);
3. the bytes on disk per recorded call: the tape's size after a WAL
   checkpoint, and the size of the segment data alone, divided by the calls;
4. a markdown table for the README's performance section.

``--callgrind`` instead runs the loops under ``valgrind --tool=callgrind`` in
subprocesses and prints machine instructions per call; ``--quick`` runs small
sizes for a smoke test.  The measurements run in a child process inside a
temporary directory that is removed afterwards (``--keep`` keeps it,
``--workdir DIR`` measures in this process, in DIR).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import importlib
import importlib.metadata
import json
import logging
import os
import pickle
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from time import perf_counter_ns
from typing import Any, cast

# --------------------------------------------------------------------------
# Sizes and the bar of issue 2
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much work each part of the benchmark does."""

    loops: int = 200_000
    """Calls per round and variant in the side-by-side comparison."""
    rounds: int = 7
    """Interleaved rounds; the median round is reported."""
    sustained: int = 3_000_000
    """Recorded calls in the sustained-rate measurement."""
    callgrind: int = 100_000
    """Calls of the shorter callgrind run (the longer one makes twice as many)."""
    budget_s: float = 0.5
    """Longest round for a slow peer: its loop is shortened to fit."""


FULL = Sizes()
QUICK = Sizes(loops=20_000, rounds=3, sustained=200_000, callgrind=10_000, budget_s=0.1)

BAR_ADDED_NS = 150.0
BAR_RATE = 1_000_000.0
BAR_BYTES = 40.0
BAR_PYTHON = (3, 12)

ARGS_TEXT = 'f(i, i * 0.5, "abc")'
SIGNATURE = "f(a: int, b: float, s: str) -> int"


# --------------------------------------------------------------------------
# The function under test and the timed loops
# --------------------------------------------------------------------------


def f(a: int, b: float, s: str) -> int:
    """Return a + len(s): the function under test, with three small arguments."""
    return a + len(s)


Fn = Callable[[int, float, str], int]
Hook = Callable[[], object]


def timed_loop(fn: Fn, n: int, start: Hook | None = None, stop: Hook | None = None) -> int:
    """Call ``fn(i, i * 0.5, "abc")`` for i in range(n); return the elapsed ns.

    ``start`` and ``stop`` (a profiler's enable and disable) run inside the
    timed region.  The cyclic garbage collector is off while timing, as in
    :mod:`timeit`.
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = perf_counter_ns()
        if start is not None:
            start()
        for i in range(n):
            fn(i, i * 0.5, "abc")
        if stop is not None:
            stop()
        t1 = perf_counter_ns()
    finally:
        if gc_was_enabled:
            gc.enable()
    return t1 - t0


def timed_empty_loop(n: int) -> int:
    """Time the loop of :func:`timed_loop` without the call: what the loop costs."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = perf_counter_ns()
        for i in range(n):
            i * 0.5  # the loop body of timed_loop, without the call
        t1 = perf_counter_ns()
    finally:
        if gc_was_enabled:
            gc.enable()
    return t1 - t0


def pickling_decorator(func: Fn) -> Fn:
    """Wrap func in a plain recorder that pickles ``(args, kwargs)`` into a list."""
    log: list[bytes] = []

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> int:
        log.append(pickle.dumps((args, kwargs), protocol=5))
        return func(*args, **kwargs)  # type: ignore[arg-type]

    wrapper.log = log  # type: ignore[attr-defined]
    return wrapper


# --------------------------------------------------------------------------
# The variants compared side by side
# --------------------------------------------------------------------------


@dataclass
class Contender:
    """One variant of the call: how to time n calls, and what to do between rounds."""

    key: str
    label: str
    runner: Callable[[int], int]
    after_round: Hook | None = None
    reference: bool = False
    """A reference row (the loop alone): shown as a note, not in the table."""
    md_label: str = ""
    """The label in the markdown table (default: label)."""
    loops: int = 0
    samples: list[float] = field(default_factory=list)
    calls_made: int = 0

    def run(self, n: int) -> float:
        """Time n calls, tidy up outside the timed region; return ns per call."""
        elapsed = self.runner(n)
        self.calls_made += n
        if self.after_round is not None:
            self.after_round()
        return elapsed / n

    def __post_init__(self) -> None:
        """Default the markdown label to the plain one."""
        self.md_label = self.md_label or self.label

    @property
    def median(self) -> float:
        """The median ns per call over the rounds."""
        return statistics.median(self.samples)


def looping(fn: Fn, start: Hook | None = None, stop: Hook | None = None) -> Callable[[int], int]:
    """Return a runner that times its own copy of :func:`timed_loop` over ``fn``.

    Each runner gets a fresh code object, so that the interpreter specializes
    the call in its loop for its callable alone: the variants interleave, and a
    shared loop would keep re-specializing its call site for each of them.
    """
    loop = own_copy(timed_loop)
    return lambda n: loop(fn, n, start, stop)


def own_copy(func: Callable[..., int]) -> Callable[..., int]:
    """Return a copy of func with its own code object (and so its own caches)."""
    code = func.__code__.replace()
    copy = types.FunctionType(code, func.__globals__, func.__name__, func.__defaults__)
    return cast(Callable[..., int], copy)


def contender_calltape(calltape: types.ModuleType, recorded: Fn) -> Contender:
    """``@calltape.record``; the tape is flushed between rounds, outside the timing."""
    return Contender(
        "calltape",
        "@calltape.record",
        looping(recorded),
        after_round=lambda: calltape.flush(timeout=120),
        md_label="`@calltape.record`",
    )


def contender_cprofile() -> Contender:
    """Time the bare f under cProfile, enabled and disabled around the loop."""
    state = {"profile": cProfile.Profile()}
    loop = own_copy(timed_loop)

    def runner(n: int) -> int:
        profile = state["profile"]
        return loop(f, n, profile.enable, profile.disable)

    def fresh() -> None:
        state["profile"] = cProfile.Profile()

    return Contender("cprofile", "cProfile", runner, after_round=fresh)


def contender_pickle() -> Contender:
    """Time f under the plain decorator that pickles its arguments into a list."""
    wrapped = pickling_decorator(f)
    log: list[bytes] = wrapped.log  # type: ignore[attr-defined]
    return Contender("pickle", "pickling decorator", looping(wrapped), after_round=log.clear)


def contender_yappi() -> Contender | str:
    """Time the bare f under yappi (wall clock), or say why it is skipped."""
    try:
        yappi: Any = importlib.import_module("yappi")
    except ImportError:
        return "skipped: yappi not installed"
    yappi.set_clock_type("wall")
    return Contender(
        "yappi",
        "yappi (wall clock)",
        looping(f, lambda: yappi.start(builtins=False), yappi.stop),
        after_round=yappi.clear_stats,
    )


def contender_callmonitor() -> Contender | str:
    """Time callmonitor's ``@intercept`` (a folder per call), or say why not."""
    try:
        callmonitor: Any = importlib.import_module("callmonitor")
    except ImportError:
        return "skipped: callmonitor not installed"

    def f_callmonitor(a: int, b: float, s: str) -> int:
        return a + len(s)

    return Contender(
        "callmonitor",
        "callmonitor @intercept",
        looping(callmonitor.intercept(f_callmonitor)),
        md_label="callmonitor `@intercept`",
    )


def contender_pymaap() -> Contender | str:
    """Time PyMAAP's ``@Timer`` (a CSV row per call, no console log), or say why not."""
    try:
        pymaap: Any = importlib.import_module("pymaap")
    except ImportError:
        return "skipped: pymaap not installed"

    def f_pymaap(a: int, b: float, s: str) -> int:
        return a + len(s)

    mute_console_logging("pymaap")
    timed = pymaap.Timer(log_to_console=False)(f_pymaap)
    mute_console_logging("pymaap")  # Timer adds a console handler to the root
    return Contender("pymaap", "PyMAAP @Timer", looping(timed), md_label="PyMAAP `@Timer`")


def mute_console_logging(prefix: str) -> None:
    """Remove console handlers from the root logger and the loggers named ``prefix*``.

    PyMAAP logs every call to the console as well as to its files, even with
    ``log_to_console=False``; the file logging (its record) stays.  The logger
    ``prefix`` gets a NullHandler so that no console handler is added to it
    lazily on the first call.
    """
    logging.getLogger(prefix).addHandler(logging.NullHandler())
    names = [name for name in logging.root.manager.loggerDict if name.startswith(prefix)]
    for logger in [logging.getLogger(), *map(logging.getLogger, names)]:
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler and handler.stream in (
                sys.stderr,
                sys.stdout,
            ):
                logger.removeHandler(handler)


PEERS: tuple[Callable[[], Contender | str], ...] = (
    contender_yappi,
    contender_callmonitor,
    contender_pymaap,
)


def rotated(items: Sequence[Contender], k: int) -> list[Contender]:
    """``items`` rotated left by k, so that no variant always runs first."""
    k %= len(items)
    return [*items[k:], *items[:k]]


def compare(contenders: Sequence[Contender], sizes: Sizes, progress: Callable[[str], None]) -> None:
    """Warm each variant up, fit slow ones into the budget, then run the rounds."""
    for c in contenders:
        probe = max(1, min(sizes.loops // 10, 2_000))
        per_call = min(c.run(probe) for _ in range(2))
        fitting = int(sizes.budget_s * 1e9 / max(per_call, 1.0))
        c.loops = max(min(sizes.loops, fitting), min(sizes.loops, 1_000))
    for r in range(sizes.rounds):
        progress(f"round {r + 1}/{sizes.rounds}")
        for c in rotated(contenders, r):
            gc.collect()
            c.samples.append(c.run(c.loops))


# --------------------------------------------------------------------------
# The tape: checkpoint, sizes and counts
# --------------------------------------------------------------------------


def checkpoint(tape: Path, attempts: int = 100) -> tuple[int, int, int]:
    """Run ``PRAGMA wal_checkpoint(TRUNCATE)`` on a new connection, while busy."""
    con = sqlite3.connect(tape, timeout=30)
    try:
        row: tuple[int, int, int] = (1, -1, -1)
        for _ in range(attempts):
            row = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if row[0] == 0:
                break
            time.sleep(0.1)
        return row
    finally:
        con.close()


def file_size(path: Path) -> int:
    """Return the size of a file, 0 when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def recorded_calls(tape: Path, qualname: str, module: str) -> int:
    """``SELECT calls FROM functions`` for one function (summed over its rows)."""
    con = sqlite3.connect(tape, timeout=30)
    try:
        cur = con.execute("SELECT * FROM functions")
        cols = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    calls = cols.index("calls")
    wanted = {"qualname": qualname, "module": module}
    keys = [(cols.index(name), value) for name, value in wanted.items() if name in cols]
    return sum(row[calls] or 0 for row in rows if all(row[i] == v for i, v in keys))


@dataclass
class DiskUsage:
    """What the tape holds after a checkpoint."""

    checkpoint: tuple[int, int, int]
    tape_bytes: int
    wal_bytes: int
    journal_mode: str
    page_size: int
    page_count: int
    freelist_count: int
    segments: int
    segment_bytes: int
    segment_calls: int | None
    """sum(n) over the segments: the calls the segments hold."""


def disk_usage(tape: Path) -> DiskUsage:
    """Checkpoints the tape and measures the file and the segments table."""
    ckpt = checkpoint(tape)
    con = sqlite3.connect(tape, timeout=30)
    try:
        journal_mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        page_count = con.execute("PRAGMA page_count").fetchone()[0]
        freelist = con.execute("PRAGMA freelist_count").fetchone()[0]
        segments, data = con.execute("SELECT count(*), sum(length(data)) FROM segments").fetchone()
        try:
            segment_calls = con.execute("SELECT sum(n) FROM segments").fetchone()[0]
        except sqlite3.OperationalError:  # a schema without the column n
            segment_calls = None
    finally:
        con.close()
    return DiskUsage(
        checkpoint=ckpt,
        tape_bytes=file_size(tape),
        wal_bytes=file_size(tape.with_name(tape.name + "-wal")),
        journal_mode=journal_mode,
        page_size=page_size,
        page_count=page_count,
        freelist_count=freelist,
        segments=segments,
        segment_bytes=data or 0,
        segment_calls=segment_calls,
    )


# --------------------------------------------------------------------------
# Sustained rate
# --------------------------------------------------------------------------


@dataclass
class Sustained:
    """The sustained-rate measurement and its integrity checks."""

    calls: int
    loop_ns: int
    total_ns: int
    flushed: bool
    stats: dict[str, Any]
    in_table: int
    disk: DiskUsage | None
    disk_error: str | None = None

    @property
    def rate(self) -> float:
        """Calls per second reaching the tape (first call until flush returned)."""
        return self.calls / (self.total_ns / 1e9)

    @property
    def dropped(self) -> int:
        """calltape.stats()['dropped']."""
        return int(self.stats.get("dropped", -1))

    @property
    def writer_ns(self) -> float:
        """The writer thread's CPU per call (stats()['writer_cpu_ns'] / calls), 0 if unknown."""
        return int(self.stats.get("writer_cpu_ns", 0)) / self.calls

    @property
    def lossless(self) -> bool:
        """Nothing dropped; every call counted in the functions table and segments."""
        in_segments = self.disk is None or self.disk.segment_calls in (None, self.calls)
        return self.flushed and self.dropped == 0 and self.in_table == self.calls and in_segments


def sustained(calltape: types.ModuleType, recorded: Fn, tape: Path, n: int) -> Sustained:
    """Record n calls, timed until ``calltape.flush()`` returns; check the tape."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = perf_counter_ns()
        for i in range(n):
            recorded(i, i * 0.5, "abc")
        t1 = perf_counter_ns()
        flushed = bool(calltape.flush())
        t2 = perf_counter_ns()
    finally:
        if gc_was_enabled:
            gc.enable()
    stats = dict(calltape.stats())
    in_table = recorded_calls(tape, f.__qualname__, f.__module__)
    disk: DiskUsage | None = None
    disk_error: str | None = None
    try:
        disk = disk_usage(tape)
    except sqlite3.Error as exc:
        disk_error = f"{type(exc).__name__}: {exc}"
    return Sustained(n, t1 - t0, t2 - t0, flushed, stats, in_table, disk, disk_error)


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def python_text() -> str:
    """``Python 3.12.1 (CPython, linux x86_64)``."""
    return (
        f"Python {platform.python_version()} "
        f"({platform.python_implementation()}, {sys.platform} {platform.machine()})"
    )


def cpu_model() -> str:
    """Return the CPU model from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages, or 'unknown'."""
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine_load(at_start: str) -> str:
    """Describe the CPUs and the load average, to judge how quiet the machine was."""
    return (
        f"{os.cpu_count()} CPUs; load average (1, 5, 15 min) {at_start} at the start,"
        f" {load_average()} at the end"
    )


def calltape_version(calltape: types.ModuleType) -> str:
    """Return the version of calltape."""
    version = getattr(calltape, "__version__", None)
    if version:
        return str(version)
    try:
        return importlib.metadata.version("calltape")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def fmt_int(n: float) -> str:
    """1234567 -> '1,234,567'."""
    return f"{round(n):,}"


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


def comparison_table(contenders: Sequence[Contender], bare: Contender) -> list[str]:
    """Format the plain-text table of the side-by-side comparison."""
    head = (
        f"{'variant':<26} {'ns/call':>9} {'added ns':>9} {'x bare':>7}"
        f"   {'rounds min..max':>19} {'calls/round':>11}"
    )
    lines = [head, "-" * len(head)]
    for c in contenders:
        if c.reference:
            continue
        added = "-" if c is bare else f"{c.median - bare.median:+.1f}"
        spread = f"{min(c.samples):.1f}..{max(c.samples):.1f}"
        lines.append(
            f"{c.label:<26} {c.median:>9.1f} {added:>9} {c.median / bare.median:>7.2f}"
            f"   {spread:>19} {c.loops:>11,}"
        )
    return lines


def markdown(
    contenders: Sequence[Contender],
    bare: Contender,
    sus: Sustained,
    header: str,
    sizes: Sizes,
) -> list[str]:
    """Format the markdown block for the README's performance section."""
    times = "\N{MULTIPLICATION SIGN}"
    title = (
        f"{header}; `{ARGS_TEXT}`, {sizes.rounds} interleaved rounds"
        f" of {sizes.loops:,} calls, medians:"
    )
    columns = f"| `{SIGNATURE}` | ns per call | added ns | {times} bare |"
    lines = [title, "", columns, "|---|---:|---:|---:|"]
    for c in contenders:
        if c.reference:
            continue
        added = "\N{EN DASH}" if c is bare else f"+{c.median - bare.median:,.0f}"
        ratio = c.median / bare.median
        lines.append(f"| {c.md_label} | {c.median:,.0f} | {added} | {ratio:,.1f} |")
    rate = f"recorded calls per second, sustained ({sus.calls:,} calls until flush)"
    lines += [
        "",
        "| recording into the tape | |",
        "|---|---:|",
        f"| {rate} | {fmt_int(sus.rate)} |",
        f"| dropped calls | {sus.dropped} |",
    ]
    if sus.writer_ns:
        lines.append(
            f"| writer thread CPU per call (the calls a second it could store) |"
            f" {sus.writer_ns:.0f} ns ({fmt_int(1e9 / sus.writer_ns)}) |"
        )
    if sus.disk is not None:
        per_call = sus.disk.tape_bytes / sus.calls
        data_per_call = sus.disk.segment_bytes / sus.calls
        lines += [
            f"| bytes on disk per call (tape file after checkpoint) | {per_call:.1f} |",
            f"| bytes of segment data per call | {data_per_call:.1f} |",
        ]
    return lines


def print_comparison(contenders: Sequence[Contender], skipped: Sequence[str], sizes: Sizes) -> None:
    """Print the side-by-side table, the skipped peers and the loop's own cost."""
    bare = next(c for c in contenders if c.key == "bare")
    print(f"== time per call: {ARGS_TEXT}, {sizes.rounds} rounds interleaved, median round ==")
    for line in comparison_table(contenders, bare):
        print(line)
    for reason in skipped:
        print(reason)
    loop_only = next((c for c in contenders if c.key == "loop"), None)
    if loop_only is not None:
        print(
            f"(the loop alone, without the call: {loop_only.median:.1f} ns per"
            f" iteration; the bare call net of the loop:"
            f" {bare.median - loop_only.median:.1f} ns)"
        )


def print_sustained(sus: Sustained) -> None:
    """Print the sustained rate and its integrity checks."""
    flush_s = (sus.total_ns - sus.loop_ns) / 1e9
    loop_rate = sus.calls / (sus.loop_ns / 1e9)
    print(
        f"== sustained rate: {sus.calls:,} recorded calls, timed from the first call"
        " until flush() returned =="
    )
    print(
        f"{fmt_int(sus.rate)} calls/s reaching the tape (loop {sus.loop_ns / 1e9:.3f} s"
        f" + flush {flush_s:.3f} s = {sus.total_ns / 1e9:.3f} s;"
        f" the loop alone ran at {fmt_int(loop_rate)} calls/s)"
    )
    print(f"flush() returned {sus.flushed}")
    if sus.writer_ns:
        could = 1e9 / sus.writer_ns
        bound = "the loop" if could > loop_rate else "the writer"
        print(
            f"the writer thread's CPU: {sus.writer_ns:.0f} ns a call, so it alone could"
            f" store {fmt_int(could)} calls/s ({bound} is the bound here)"
        )
    print("calltape.stats(): " + ", ".join(f"{k}={v}" for k, v in sus.stats.items()))
    print(f"stats()['dropped'] == 0: {verdict(sus.dropped == 0)} ({sus.dropped})")
    print(
        f"SELECT calls FROM functions (f) == {sus.calls:,}:"
        f" {verdict(sus.in_table == sus.calls)} ({sus.in_table:,})"
    )


def print_disk(sus: Sustained) -> None:
    """Print the bytes on disk per call after the checkpoint."""
    print("== bytes on disk per call ==")
    d = sus.disk
    if d is None:
        print(f"could not measure the tape: {sus.disk_error}")
        return
    busy, log, done = d.checkpoint
    print(
        f"journal_mode={d.journal_mode}; PRAGMA wal_checkpoint(TRUNCATE) -> busy={busy},"
        f" log={log}, checkpointed={done}; -wal now {d.wal_bytes:,} bytes"
    )
    print(
        f"tape file {d.tape_bytes:,} bytes / {sus.calls:,} calls ="
        f" {d.tape_bytes / sus.calls:.2f} bytes per call ({d.page_count:,} pages"
        f" of {d.page_size:,} bytes, {d.freelist_count:,} free)"
    )
    per_segment = sus.calls / d.segments if d.segments else 0.0
    print(
        f"segments: sum(length(data)) = {d.segment_bytes:,} bytes / {sus.calls:,}"
        f" calls = {d.segment_bytes / sus.calls:.2f} bytes per call"
        f" ({d.segments:,} segments, {per_segment:,.0f} calls per segment)"
    )
    if d.segment_calls is not None:
        print(
            f"SELECT sum(n) FROM segments == {sus.calls:,}:"
            f" {verdict(d.segment_calls == sus.calls)} ({d.segment_calls:,})"
        )


def print_bar(sus: Sustained, added: float, expected_total: int, in_table: int) -> None:
    """Print the measurements against the bar of issue 2."""
    bytes_per_call = sus.disk.tape_bytes / sus.calls if sus.disk else float("inf")
    print("== the bar of issue 2 ==")
    print(
        f"added ns per recorded call <= {BAR_ADDED_NS:.0f}:"
        f" {verdict(added <= BAR_ADDED_NS)} ({added:.1f})"
    )
    print(
        f"sustained calls/s >= {fmt_int(BAR_RATE)}:"
        f" {verdict(sus.rate >= BAR_RATE)} ({fmt_int(sus.rate)})"
    )
    print(f"nothing dropped: {verdict(sus.lossless)}")
    print(
        f"bytes on disk per call <= {BAR_BYTES:.0f}:"
        f" {verdict(bytes_per_call <= BAR_BYTES)} ({bytes_per_call:.2f})"
    )
    print(
        f"every recorded call of the whole run in the tape ({expected_total:,}):"
        f" {verdict(in_table == expected_total)} ({in_table:,})"
    )


def report(
    *,
    contenders: Sequence[Contender],
    skipped: Sequence[str],
    sus: Sustained,
    calltape: types.ModuleType,
    sizes: Sizes,
    expected_total: int,
    total_in_table: int,
    load_at_start: str,
) -> bool:
    """Print the report; return False when a recorded call went missing."""
    bare = next(c for c in contenders if c.key == "bare")
    rec = next(c for c in contenders if c.key == "calltape")
    header = f"{python_text()}, calltape {calltape_version(calltape)}, {cpu_model()}"
    print(header)
    print(machine_load(load_at_start))
    if sys.version_info[:2] != BAR_PYTHON:
        major, minor = BAR_PYTHON
        print(f"note: the bar of issue 2 is stated for Python {major}.{minor}")
    print()
    print_comparison(contenders, skipped, sizes)
    print()
    print_sustained(sus)
    print()
    print_disk(sus)
    print()
    print_bar(sus, rec.median - bare.median, expected_total, total_in_table)
    print()
    print("== markdown (README performance section) ==")
    for line in markdown(contenders, bare, sus, header, sizes):
        print(line)
    return sus.lossless and total_in_table == expected_total


# --------------------------------------------------------------------------
# The measuring process
# --------------------------------------------------------------------------


def progress_printer(enabled: bool) -> Callable[[str], None]:
    """Progress messages on stderr (not part of the report)."""

    def say(message: str) -> None:
        if enabled:
            print(f"[bench record] {message}", file=sys.stderr, flush=True)

    return say


def import_calltape() -> types.ModuleType:
    """Import calltape, or explain how to install it and exit."""
    try:
        return importlib.import_module("calltape")
    except ImportError as exc:
        print(
            f"bench record: cannot import calltape ({exc}); `pip install .` first",
            file=sys.stderr,
        )
        raise SystemExit(2) from exc


def measure(workdir: Path, sizes: Sizes, peers: bool, quiet: bool) -> int:
    """Run the sustained and side-by-side measurements in this process, in workdir."""
    say = progress_printer(not quiet)
    load_at_start = load_average()
    os.chdir(workdir)  # peers write their logs into the current directory
    calltape = import_calltape()
    tape = workdir / "bench.db"
    calltape.configure(tape=str(tape))
    recorded: Fn = calltape.record(f)

    # The sustained rate runs first, on an empty tape, so that the tape holds
    # exactly its calls when its size and its functions table are measured.
    say(f"sustained rate: {sizes.sustained:,} recorded calls")
    sus = sustained(calltape, recorded, tape, sizes.sustained)

    contenders = [
        Contender("bare", "bare f", looping(f)),
        Contender("loop", "loop alone", timed_empty_loop, reference=True),
        contender_calltape(calltape, recorded),
        contender_cprofile(),
        contender_pickle(),
    ]
    skipped: list[str] = []
    if peers:
        for make in PEERS:
            made = make()
            if isinstance(made, str):
                skipped.append(made)
            else:
                contenders.append(made)
    say("side by side: " + ", ".join(c.label for c in contenders))
    compare(contenders, sizes, say)

    calltape.flush()
    rec = next(c for c in contenders if c.key == "calltape")
    expected = sus.calls + rec.calls_made
    total = recorded_calls(tape, f.__qualname__, f.__module__)
    ok = report(
        contenders=contenders,
        skipped=skipped,
        sus=sus,
        calltape=calltape,
        sizes=sizes,
        expected_total=expected,
        total_in_table=total,
        load_at_start=load_at_start,
    )
    return 0 if ok else 1


# --------------------------------------------------------------------------
# callgrind mode
# --------------------------------------------------------------------------

CALLGRIND_KINDS = ("bare", "calltape", "cprofile", "pickle")


def worker(kind: str, loops: int, workdir: Path) -> int:
    """One loop of ``kind`` (run under valgrind by :func:`callgrind`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    calltape: types.ModuleType | None = None
    if kind == "bare":
        elapsed = timed_loop(f, loops)
    elif kind == "calltape":
        calltape = import_calltape()
        calltape.configure(tape=str(workdir / "bench.db"))
        elapsed = timed_loop(calltape.record(f), loops)
        calltape.flush()
    elif kind == "cprofile":
        profile = cProfile.Profile()
        elapsed = timed_loop(f, loops, profile.enable, profile.disable)
    elif kind == "pickle":
        elapsed = timed_loop(pickling_decorator(f), loops)
    else:
        print(f"bench record: unknown worker kind {kind!r}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {"kind": kind, "loops": loops, "ns": elapsed}
    if calltape is not None:
        result["stats"] = dict(calltape.stats())
    print(json.dumps(result))
    return 0


@dataclass
class Instructions:
    """Instructions counted by callgrind in one run, by thread."""

    main: int
    others: int


def read_callgrind(prefix: Path) -> Instructions:
    """Sum the ``totals:``/``summary:`` lines of the per-thread callgrind outputs."""
    main = 0
    others = 0
    pattern = re.compile(re.escape(prefix.name) + r"(?:-(\d+))?")
    files = sorted(
        path
        for path in prefix.parent.iterdir()
        if pattern.fullmatch(path.name) and path.stat().st_size > 0
    )
    if not files:
        raise RuntimeError(f"callgrind wrote no output named {prefix.name}*")
    for path in files:
        total = None
        for line in path.read_text(errors="replace").splitlines():
            m = re.match(r"(?:totals|summary):\s+(\d+)", line)
            if m:
                total = int(m.group(1))
        if total is None:
            raise RuntimeError(f"no totals in {path}")
        thread = pattern.fullmatch(path.name)
        if thread is None or thread.group(1) is None or int(thread.group(1)) == 1:
            main += total
        else:
            others += total
    return Instructions(main, others)


def run_under_callgrind(kind: str, loops: int, root: Path) -> Instructions:
    """Run one worker under ``valgrind --tool=callgrind --separate-threads=yes``."""
    tag = f"{kind}-{loops}"
    prefix = root / f"callgrind.{tag}"
    env = dict(os.environ)
    bench_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (bench_root, env.get("PYTHONPATH")) if p)
    env["PYTHONHASHSEED"] = "0"
    env.pop("CALLTAPE_TAPE", None)
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        f"--callgrind-out-file={prefix}",
        sys.executable,
        "-m",
        "bench",
        "record",
        "--worker",
        kind,
        "--loops",
        str(loops),
        "--workdir",
        str(root / tag),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    worker_out = proc.stdout.strip().splitlines()
    if worker_out:
        stats = json.loads(worker_out[-1]).get("stats")
        if stats and stats.get("dropped"):
            print(
                f"warning: {kind} worker dropped {stats['dropped']} calls",
                file=sys.stderr,
            )
    return read_callgrind(prefix)


def callgrind(sizes: Sizes, workdir: Path | None, keep: bool, quiet: bool) -> int:
    """Instructions per call of each kind: runs of n and 2n calls, differenced."""
    say = progress_printer(not quiet)
    if shutil.which("valgrind") is None:
        print("skipped: valgrind not found on PATH")
        return 0
    n = sizes.callgrind
    root = Path(tempfile.mkdtemp(prefix="calltape-callgrind-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    per_call: dict[str, tuple[float, float]] = {}
    try:
        for kind in CALLGRIND_KINDS:
            say(f"callgrind: {kind}, {n:,} and {2 * n:,} calls")
            short = run_under_callgrind(kind, n, root)
            long = run_under_callgrind(kind, 2 * n, root)
            per_call[kind] = (
                (long.main - short.main) / n,
                (long.others - short.others) / n,
            )
    finally:
        if workdir is None and not keep:
            shutil.rmtree(root, ignore_errors=True)
        elif keep:
            print(f"(callgrind outputs kept in {root})")

    print_callgrind(per_call, n)
    return 0


CALLGRIND_LABELS = {
    "bare": "bare f",
    "calltape": "@calltape.record",
    "cprofile": "cProfile",
    "pickle": "pickling decorator",
}


def print_callgrind(per_call: dict[str, tuple[float, float]], n: int) -> None:
    """Print instructions per call: calling thread, added over bare, other threads."""
    bare_main = per_call["bare"][0]
    print(f"{python_text()}, {cpu_model()}")
    print(
        f"== instructions per call under callgrind: {ARGS_TEXT}, runs of {n:,}"
        f" and {2 * n:,} calls, (I(2n) - I(n)) / n =="
    )
    head = (
        f"{'variant':<20} {'calling thread':>15} {'added':>9} {'x bare':>7}"
        f" {'other threads':>14} {'all threads':>12}"
    )
    print(head)
    print("-" * len(head))
    for kind, (main, others) in per_call.items():
        added = "-" if kind == "bare" else f"{main - bare_main:+.0f}"
        print(
            f"{CALLGRIND_LABELS[kind]:<20} {main:>15.0f} {added:>9}"
            f" {main / bare_main:>7.2f} {others:>14.0f} {main + others:>12.0f}"
        )
    print(
        "(other threads: calltape's writer thread, which builds the segments"
        " and commits them to SQLite)"
    )
    print()
    print("| instructions per call (callgrind) | calling thread | added | other threads |")
    print("|---|---:|---:|---:|")
    for kind, (main, others) in per_call.items():
        added = "\N{EN DASH}" if kind == "bare" else f"+{main - bare_main:,.0f}"
        label = CALLGRIND_LABELS[kind].replace("@calltape.record", "`@calltape.record`")
        print(f"| {label} | {main:,.0f} | {added} | {others:,.0f} |")


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the options of ``python -m bench record``."""
    p = argparse.ArgumentParser(
        prog="python -m bench record",
        description="Time per call of f(int, float, str) -> int bare, under"
        " @calltape.record, cProfile, a pickling decorator and installed peers;"
        " sustained rate; bytes on disk per call.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument(
        "--loops",
        type=int,
        help=f"calls per round (default {FULL.loops:,}); with --callgrind, calls of"
        f" the shorter run (default {FULL.callgrind:,}, the longer makes twice as many)",
    )
    p.add_argument("--rounds", type=int, help=f"interleaved rounds (default {FULL.rounds})")
    p.add_argument(
        "--calls",
        type=int,
        help=f"calls of the sustained rate (default {FULL.sustained:,})",
    )
    p.add_argument(
        "--no-peers",
        action="store_true",
        help="leave out yappi, callmonitor and PyMAAP",
    )
    p.add_argument(
        "--callgrind",
        action="store_true",
        help="instructions per call under valgrind --tool=callgrind instead of times",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="measure in this process, in DIR, and keep the files"
        " (default: in a child process, in a temporary directory)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory and print its path",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    p.add_argument("--worker", choices=CALLGRIND_KINDS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for option in ("loops", "rounds", "calls"):
        value = getattr(args, option)
        if value is not None and value < 1:
            p.error(f"--{option} must be at least 1")
    overrides: dict[str, int] = {}
    if args.loops is not None:
        overrides["loops"] = overrides["callgrind"] = args.loops
    if args.rounds is not None:
        overrides["rounds"] = args.rounds
    if args.calls is not None:
        overrides["sustained"] = args.calls
    args.sizes = replace(sizes, **overrides)
    return args


@contextmanager
def scratch_dir(keep: bool) -> Iterator[Path]:
    """Yield a temporary directory, removed afterwards unless keep."""
    path = Path(tempfile.mkdtemp(prefix="calltape-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"(files kept in {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


def run_child(argv: Sequence[str], workdir: Path) -> int:
    """Run the measurements in a fresh interpreter whose tape lives in workdir.

    The tape stays open in the recording process until it exits, so the
    directory is removed only once that process has finished.
    """
    env = dict(os.environ)
    bench_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (bench_root, env.get("PYTHONPATH")) if p)
    env.pop("CALLTAPE_TAPE", None)
    cmd = [sys.executable, "-m", "bench", "record", *argv, "--workdir", str(workdir)]
    sys.stdout.flush()
    return subprocess.run(cmd, env=env, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench record``."""
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    if args.worker is not None:
        if args.workdir is None:
            print("bench record: --worker needs --workdir", file=sys.stderr)
            return 2
        return worker(args.worker, args.sizes.callgrind, args.workdir)
    if args.callgrind:
        return callgrind(args.sizes, args.workdir, args.keep, args.quiet)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return measure(args.workdir.resolve(), args.sizes, not args.no_peers, args.quiet)
    passed = [a for a in raw if a != "--keep"]
    with scratch_dir(args.keep) as workdir:
        return run_child(passed, workdir)


if __name__ == "__main__":
    sys.exit(main())
