"""Benchmark "pytest": a real project's test suite plain, under the pytest plugin and pytest-cov.

``python -m bench pytest`` takes a suite of ``bench.suite`` (toolz by default;
``--suite more-itertools`` for its 765 tests and 21,000 subtests), installs
pytest-cov next to it in its own virtual environment under the benchmark cache,
and runs it side by side in interleaved rounds (medians reported):

* plain ``python -m pytest``;
* ``python -m pytest --calltape=TAPE`` (arguments and results recorded);
* ``python -m pytest --calltape=TAPE --calltape-no-args --calltape-no-result``
  (timing only);
* ``python -m pytest --cov=PKG`` (coverage.py's line coverage, pytest-cov).

The table shows wall and CPU time against plain, the outcomes (which must be
the same in every row), the calls recorded and the tape's size.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import suite as s

COV = "pytest-cov==7.1.0"


def variants(env: s.Env, suite: s.Suite, tape: Path) -> dict[str, list[str]]:
    """The command line of each variant, up to the suite's selection."""
    py = [str(env.python), "-m", "pytest"]
    include = [a for pkg in suite.record for a in ("--calltape-include", pkg)]
    cov = [f"--cov={pkg}" for pkg in suite.record if pkg != "tests"]
    return {"python -m pytest": py,
            "--calltape": [*py, f"--calltape={tape}", *include],
            "--calltape --calltape-no-args --calltape-no-result":
                [*py, f"--calltape={tape}", "--calltape-no-args", "--calltape-no-result",
                 *include],
            "pytest-cov": [*py, *cov, "--cov-report="]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench pytest",
                                description=__doc__.split("\n")[0])
    p.add_argument("--suite", choices=list(s.SUITES), default="toolz")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--quick", action="store_true", help="the suite's subset of test files")
    args = p.parse_args(argv)
    cache = s.cache_root()
    base = s.SUITES[args.suite]
    suite = dataclasses.replace(base, deps=(*base.deps, COV))
    print(f"Python {sys.version.split()[0]}; calltape from {s.CHECKOUT}; cache {cache};"
          f" suite {args.suite} {suite.version}; rounds: {args.rounds} (median)")
    try:
        env = s.prepare(f"pytest-{args.suite}", suite, cache)
    except s.Skip as exc:
        print(f"the {args.suite} suite is skipped: {exc}")
        return 0
    if not env.calltape:
        return 1
    work = cache / "work-pytest"
    work.mkdir(parents=True, exist_ok=True)
    tape = work / "tape.db"
    selection = [*suite.pytest_args, *(suite.quick if args.quick else suite.full)]
    pytest_args = ["-q", "-p", "no:cacheprovider", *selection]
    vs = variants(env, suite, tape)
    runs: dict[str, list[s.Run]] = {name: [] for name in vs}
    names = list(vs)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            records = "--calltape" in name
            if records:
                s.remove_tape(tape)
            run = s.run_once(env, [*vs[name], *pytest_args], tape if records else None)
            runs[name].append(run)
            print(f"  round {r + 1}/{args.rounds} {name}: {run.seconds:.1f} s"
                  f" ({run.cpu:.1f} s CPU), {s.outcome_text(run.counts)}", flush=True)
    s.report_runs(runs)
    outcomes = {name: [{k: v for k, v in r.counts.items() if k != "warnings"} for r in rs]
                for name, rs in runs.items()}
    same = len({repr(o) for os_ in outcomes.values() for o in os_}) == 1
    print("outcomes identical in every run" if same else "OUTCOMES DIFFER between variants")
    return 0 if same else 1
