"""calltape's benchmarks: measurements printed side by side, never timed tests.

Run ``python -m bench`` from the repository root to list the benchmarks and
``python -m bench NAME [options]`` to run one (``--help`` after the name shows
its options).  Each benchmark is a module of this package with a
``main(argv) -> int`` function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["BENCHMARKS", "Benchmark"]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its command-line name, its module and a one-line summary."""

    name: str
    module: str
    summary: str

    def load(self) -> Callable[[Sequence[str] | None], int]:
        """Import the benchmark's module and return its ``main`` function."""
        module = importlib.import_module(self.module)
        main: Callable[[Sequence[str] | None], int] = module.main
        return main


BENCHMARKS: dict[str, Benchmark] = {
    bench.name: bench
    for bench in (
        Benchmark(
            "record",
            "bench.record",
            "time per call of f(int, float, str) bare, under @calltape.record, "
            "cProfile, a pickling decorator and installed peers; sustained "
            "recorded calls per second; bytes on disk per call "
            "(--callgrind: instructions per call)",
        ),
        Benchmark(
            "read",
            "bench.read",
            "functions(), limited searches and a full iteration on a tape of 10 million"
            " calls over 50 functions and 4 sessions",
        ),
        Benchmark(
            "export",
            "bench.export",
            "calltape.export of the read benchmark's tape (10 million calls; --calls) as a"
            " Chrome trace, JSON lines and CSV: calls per second, file size, peak RSS",
        ),
        Benchmark(
            "replay",
            "bench.replay",
            "replay fidelity over 35+ standard-library functions with varied argument"
            " types (share reproduced exactly) and calls replayed per second",
        ),
        Benchmark(
            "run",
            "bench.run",
            "whole programs (a mixed workload, recursive fib) plain, under calltape run,"
            " cProfile and VizTracer: slowdowns and ns per recorded call",
        ),
        Benchmark(
            "lifecycle",
            "bench.lifecycle",
            "what a SIGKILL loses while producers outrun the writer (ms of calls), and how"
            " long configure(tape=...) blocks while threads record",
        ),
        Benchmark(
            "soak",
            "bench.soak",
            "20 million calls from 3 threads with the RSS sampled every second, then 20"
            " SIGKILLs at full speed: memory against the buffer, and the calls each loses",
        ),
        Benchmark(
            "pg",
            "bench.pg",
            "recording into PostgreSQL beside SQLite: the calling thread's ns per call and"
            " calls per second from 1, 2 and 4 processes (a server of its own, or --url)",
        ),
        Benchmark(
            "probes",
            "bench.probes",
            "cost per call of a small function with no probe, a stopped probe, a count and"
            " a log instrument, calltape.probes beside the original diagnose"
            " (--callgrind: instructions per call)",
        ),
        Benchmark(
            "flat",
            "bench.flat",
            "a function making 10 and 100 inner calls plain, under calltape.flat_profile,"
            " cProfile and the original recompyle 0.2.1: ns and instructions added per"
            " inner call, and what code outside a profiled function pays",
        ),
        Benchmark(
            "wrapcalls",
            "bench.wrapcalls",
            "a function making 10 and 100 inner calls plain, under calltape.wrap_calls, its"
            " Recompyle facade and recompyle 0.4.1's wrap_calls: ns added per inner call"
            " (--callgrind: instructions)",
        ),
        Benchmark(
            "timer",
            "bench.timer",
            "time per call of a small function under calltape.timer with and without"
            " track_resources (log output off) beside PyMAAP 0.2.1's Timer"
            " (--callgrind: instructions per call)",
        ),
        Benchmark(
            "compat",
            "bench.compat",
            "time per call under calltape.compat.callmonitor.intercept beside the original"
            " callmonitor; the reanimator's search and get_call_details on the tape of"
            " bench read",
        ),
        Benchmark(
            "suite",
            "bench.suite",
            "real test suites (more-itertools, python-dateutil, attrs, toolz from the index)"
            " plain, under cProfile and calltape run: times, calls, tape size; then the"
            " tape replayed, with what replay loses",
        ),
        Benchmark(
            "tee",
            "bench.tee",
            "instructions per call of more-itertools' _concurrent_tee.__next__, whose self"
            " holds a generator, a lock and a linked list: plain, cProfile, calltape with"
            " and without values (callgrind)",
        ),
        Benchmark(
            "pytest",
            "bench.pytest_suite",
            "a real test suite (toolz; --suite more-itertools) plain, under pytest --calltape,"
            " --calltape --calltape-no-args and pytest-cov: times, outcomes, calls",
        ),
    )
}
