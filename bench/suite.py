"""Benchmark "suite": real projects' own test suites plain, under cProfile and under calltape run.

``python -m bench suite`` takes the test suites of more-itertools,
python-dateutil, attrs and toolz from their sdists on the package index (the
versions pinned in ``SUITES``) and, for each, runs the suite side by side in
interleaved rounds (medians reported):

* plain ``python -m pytest``;
* ``python -m cProfile -o /dev/null -m pytest``;
* ``python -m calltape run --include PKG --include tests -m pytest`` onto a
  fresh tape each round (the package and the suite's own test code are
  recorded; pytest, the standard library and other site-packages are not).

For each it prints the wall time of the whole process, the suite's outcome
counts (flagged loudly when recording or profiling changed them), the calls
recorded, the tape's size and bytes per call.  Then it replays every call of
the last tape (``calltape._replay.replay_calls`` over the streamed calls,
which ``Tape.replay`` does for a search) in the suite's folder and prints
passed/changed/failed/skipped with the skip reasons, changed and failed calls
grouped (top 20).  Everything measured, with every group, is also written as
JSON under the cache folder.

Everything lives under ``$CALLTAPE_BENCH_CACHE`` (default
``~/.cache/calltape-bench``), reused across runs: one virtual environment
per suite and Python version, made with the Python running the benchmark; the
sdists; a wheel of calltape built from this checkout (rebuilt when its
sources change).  Every process gets ``PYTHONHASHSEED=0`` and suites using
hypothesis ``--hypothesis-seed=0``, so that runs, recording and replay see
the same orders and examples.  What cannot be installed is skipped with a
sentence saying so.  This benchmark needs the package index the first time
and takes long: ``--quick`` runs a subset of each suite's tests (about a
minute per suite).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[1]
PYTEST = "pytest==9.2.0"
HYPOTHESIS = "hypothesis==6.170.15"
TOP = 20


@dataclass(frozen=True)
class Suite:
    """One project's test suite: where it comes from and how it is run and recorded."""

    dist: str  # distribution name on the package index
    version: str  # pinned
    record: tuple[str, ...]  # calltape run --include names: the package and its tests
    full: tuple[str, ...]  # pytest arguments of the whole suite
    quick: tuple[str, ...]  # pytest arguments of --quick
    deps: tuple[str, ...] = ()  # test requirements, pinned
    optional: tuple[str, ...] = ()  # test requirements the suite skips itself without
    pytest_args: tuple[str, ...] = ()  # after -q -p no:cacheprovider
    pytest: str = PYTEST  # the pytest its tests work with


SUITES: dict[str, Suite] = {
    "more-itertools": Suite(
        "more-itertools", "11.2.1", ("more_itertools", "tests"), ("tests",),
        ("tests/test_recipes.py", "-k", "not PrimeFunctionTests")),
    "dateutil": Suite(
        "python-dateutil", "2.9.0.post0", ("dateutil", "tests"), ("tests",),
        ("tests/test_tz.py", "tests/test_relativedelta.py", "tests/test_easter.py"),
        deps=(HYPOTHESIS, "freezegun==1.5.5", "pytest-cov==7.1.0"),  # its conftest: no_cover
        pytest_args=("--hypothesis-seed=0",),
        pytest="pytest==8.3.5"),  # pytest 9's deprecations are errors in its configuration
    "attrs": Suite(
        "attrs", "26.1.0", ("attr", "attrs", "tests"), ("tests",),
        ("tests/test_dunders.py", "tests/test_functional.py", "tests/test_slots.py",
         "tests/test_validators.py"),
        deps=(HYPOTHESIS,), optional=("pympler==1.1", "cloudpickle==3.1.2"),
        pytest_args=("--hypothesis-seed=0",)),
    "toolz": Suite(
        "toolz", "1.2.0", ("toolz", "tlz"), ("toolz/tests",),
        ("toolz/tests/test_itertoolz.py", "toolz/tests/test_functoolz.py",
         "toolz/tests/test_dicttoolz.py")),
}


class Skip(Exception):
    """Something the benchmark needs could not be had: the message says what is skipped."""


def cache_root() -> Path:
    """The cache folder, ``$CALLTAPE_BENCH_CACHE`` or ``~/.cache/calltape-bench``."""
    env = os.environ.get("CALLTAPE_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "calltape-bench"


def clean_env() -> dict[str, str]:
    """The environment of every child: no calltape settings, no outside PYTHONPATH or venv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CALLTAPE_") and k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env.update(PYTHONHASHSEED="0", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pip ARGS`` quietly, returning the finished process."""
    return subprocess.run([str(python), "-m", "pip", "-q", *args], check=False,
                          capture_output=True, text=True, env=clean_env())


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The last error line pip printed, for a one-sentence reason."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    return lines[-1].strip() if lines else f"exit status {proc.returncode}"


def source_hash() -> str:
    """A digest of the checkout's calltape sources: the wheel is rebuilt when it changes."""
    h = hashlib.sha256()
    files = [CHECKOUT / "setup.py", CHECKOUT / "pyproject.toml",
             *sorted(p for p in (CHECKOUT / "src").rglob("*") if p.is_file()
                     and "__pycache__" not in p.parts and p.suffix != ".so")]
    for p in files:
        if p.exists():
            h.update(str(p.relative_to(CHECKOUT)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def stamped(stamp: Path, value: str) -> bool:
    """True when ``stamp`` already records ``value`` (an install step already done)."""
    return stamp.exists() and stamp.read_text() == value


@dataclass
class Env:
    """A suite made ready: its venv's python, its source folder, and whether calltape is in."""

    python: Path
    root: Path
    calltape: bool


def make_venv(where: Path) -> Path:
    """The python of the venv at ``where``, created (with setuptools and wheel) if needed."""
    python = where / "bin" / "python"
    if not python.exists():
        proc = subprocess.run([sys.executable, "-m", "venv", str(where)], check=False,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise Skip(f"cannot create a virtual environment at {where}: {last_line(proc)}")
    if not stamped(where / "base.stamp", "setuptools wheel"):
        proc = pip(python, "install", "setuptools", "wheel")
        if proc.returncode != 0:
            raise Skip(f"cannot install setuptools and wheel into {where}: {last_line(proc)}")
        (where / "base.stamp").write_text("setuptools wheel")
    return python


def fetch_sdist(python: Path, suite: Suite, cache: Path) -> Path:
    """The suite's sdist unpacked under the cache (downloaded once)."""
    root = cache / "src" / f"{suite.dist}-{suite.version}"
    if (root / ".unpacked").exists():
        return root
    downloads = cache / "sdists"
    downloads.mkdir(parents=True, exist_ok=True)
    proc = pip(python, "download", "--no-deps", "--no-binary", ":all:", "-d", str(downloads),
               f"{suite.dist}=={suite.version}")
    if proc.returncode != 0:
        raise Skip(f"{suite.dist} {suite.version}'s sdist cannot be downloaded ({last_line(proc)})")
    prefix = re.sub(r"[-_.]+", "[-_.]", suite.dist)
    found = [p for p in downloads.glob("*.tar.gz")
             if re.fullmatch(f"(?i){prefix}-{re.escape(suite.version)}\\.tar\\.gz", p.name)]
    if not found:
        raise Skip(f"pip downloaded no .tar.gz sdist of {suite.dist} {suite.version}")
    shutil.rmtree(root, ignore_errors=True)
    with tarfile.open(found[0]) as tar:
        top = tar.getnames()[0].split("/")[0]
        tar.extractall(root.parent, filter="data")
    (root.parent / top).rename(root)
    (root / ".unpacked").touch()
    return root


def calltape_wheel(python: Path, cache: Path) -> Path:
    """A wheel of this checkout's calltape for ``python``'s version, built once per source hash."""
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    where = cache / "wheels" / f"{tag}-{source_hash()}"
    wheels = list(where.glob("calltape-*.whl"))
    if wheels:
        return wheels[0]
    proc = pip(python, "wheel", "--no-deps", "--no-build-isolation", "-w", str(where),
               str(CHECKOUT))
    wheels = list(where.glob("calltape-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise Skip(f"calltape cannot be built from {CHECKOUT} ({last_line(proc)})")
    return wheels[0]


def prepare(name: str, suite: Suite, cache: Path) -> Env:
    """Make the suite's venv ready: the suite's package and test requirements, calltape."""
    tag = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    where = cache / tag / name
    python = make_venv(where / "venv")
    root = fetch_sdist(python, suite, cache)
    wanted = " ".join([str(root), suite.pytest, *suite.deps])
    if not stamped(where / "deps.stamp", wanted):
        proc = pip(python, "install", str(root), suite.pytest, *suite.deps)
        if proc.returncode != 0:
            raise Skip(f"its package or test requirements"
                       f" ({', '.join([suite.pytest, *suite.deps])}) cannot be installed"
                       f" ({last_line(proc)})")
        (where / "deps.stamp").write_text(wanted)
    for req in suite.optional:
        stamp = where / f"optional-{req}.stamp"
        if not stamp.exists():
            proc = pip(python, "install", req)
            if proc.returncode != 0:
                print(f"{req} cannot be installed: the {name} tests that need it are skipped"
                      f" by the suite itself ({last_line(proc)})")
                continue
            stamp.touch()
    try:
        wheel = calltape_wheel(python, cache)
        if not stamped(where / "calltape.stamp", wheel.name + str(wheel.parent)):
            proc = pip(python, "install", "--no-deps", "--force-reinstall", str(wheel))
            if proc.returncode != 0:
                raise Skip(f"calltape cannot be installed into {where} ({last_line(proc)})")
            (where / "calltape.stamp").write_text(wheel.name + str(wheel.parent))
    except Skip as exc:
        print(f"{exc}: the calltape run and the replay of {name} are skipped, the rest runs")
        return Env(python, root, calltape=False)
    return Env(python, root, calltape=True)


OUTCOME = re.compile(r"(\d+) ((?:subtests )?[a-z]+)")


def outcomes(output: str) -> dict[str, int]:
    """The counts of pytest's closing line (``765 passed, 3 skipped, 12 warnings in 2.1s``)."""
    for line in reversed(output.splitlines()):
        line = line.strip("= ")
        if re.search(r" in [\d.]+s\b", line) and OUTCOME.match(line):
            counts = {word: int(n) for n, word in OUTCOME.findall(line.rsplit(" in ", 1)[0])}
            return {("errors" if k == "error" else "warnings" if k == "warning" else k): v
                    for k, v in counts.items()}
    return {}


def outcome_text(counts: dict[str, int]) -> str:
    """The counts as pytest words them, warnings left out."""
    return ", ".join(f"{n:,} {w}" for w, n in counts.items() if w != "warnings") or "no summary"


@dataclass
class Run:
    """One run of one variant."""

    seconds: float
    counts: dict[str, int]
    status: int
    cpu: float = 0.0  # user + system seconds of the process and its children
    calls: int = 0
    dropped: int = 0
    tape_bytes: int = 0
    tail: str = ""


def tape_figures(tape: Path) -> tuple[int, int, int]:
    """Calls recorded, calls dropped and bytes on disk (the file and its WAL) of a tape."""
    if not tape.exists():
        return 0, 0, 0
    size = sum(p.stat().st_size for p in (tape, Path(f"{tape}-wal")) if p.exists())
    with sqlite3.connect(f"file:{tape}?mode=ro", uri=True) as db:
        calls = db.execute("SELECT coalesce(sum(calls), 0) FROM functions").fetchone()[0]
        dropped = db.execute("SELECT coalesce(sum(dropped), 0) FROM sessions").fetchone()[0]
    return calls, dropped, size


def remove_tape(tape: Path) -> None:
    """Delete a tape and its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tape}{suffix}").unlink(missing_ok=True)


def variants(env: Env, suite: Suite, tape: Path) -> dict[str, list[str]]:
    """The command line of each variant, up to and including ``-m pytest``."""
    py = str(env.python)
    out = {"python -m pytest": [py, "-m", "pytest"],
           "cProfile": [py, "-m", "cProfile", "-o", os.devnull, "-m", "pytest"]}
    if env.calltape:
        includes = [a for pkg in suite.record for a in ("--include", pkg)]
        out["calltape run"] = [py, "-m", "calltape", "run", "--quiet", "--tape", str(tape),
                               *includes, "-m", "pytest"]
    return out


def run_once(env: Env, argv: list[str], tape: Path | None) -> Run:
    """Run one variant in the suite's folder; a tape it wrote is measured."""
    shutil.rmtree(env.root / ".hypothesis", ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, cwd=env.root,
                          env=clean_env(), stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = proc.stdout + proc.stderr
    run = Run(seconds, outcomes(proc.stdout), proc.returncode, cpu=cpu, tail=output[-3000:])
    if tape is not None:
        run.calls, run.dropped, run.tape_bytes = tape_figures(tape)
    return run


def measure(env: Env, suite: Suite, args: argparse.Namespace, work: Path) -> dict[str, list[Run]]:
    """Interleaved rounds of every variant; the last round's tape is kept for replay."""
    tape = work / "tape.db"
    selection = [*suite.pytest_args, *(suite.quick if args.quick else suite.full)]
    pytest_args = ["-q", "-p", "no:cacheprovider", *selection]
    subprocess.run([str(env.python), "-m", "pytest", "--collect-only", *pytest_args],
                   check=False, capture_output=True, cwd=env.root, env=clean_env())  # compile
    vs = variants(env, suite, tape)
    runs: dict[str, list[Run]] = {name: [] for name in vs}
    names = list(vs)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            records = name == "calltape run"
            if records:
                remove_tape(tape)
            run = run_once(env, [*vs[name], *pytest_args], tape if records else None)
            runs[name].append(run)
            print(f"  round {r + 1}/{args.rounds} {name}: {run.seconds:.1f} s"
                  f" ({run.cpu:.1f} s CPU),"
                  f" {outcome_text(run.counts)}", flush=True)
    return runs


def human(n: float) -> str:
    """Bytes as B, KB, MB or GB (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def report_runs(runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Print the side-by-side table and any change of outcomes; return the medians."""
    base = statistics.median(r.seconds for r in runs["python -m pytest"])
    base_cpu = statistics.median(r.cpu for r in runs["python -m pytest"]) or 1e-9
    plain = runs["python -m pytest"][0].counts
    print("\n| variant | wall s (median) | x plain | CPU s (median) | x plain | outcomes"
          " | warnings | calls recorded | tape | bytes per call |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    summary: dict[str, Any] = {}
    for name, rs in runs.items():
        med = statistics.median(r.seconds for r in rs)
        cpu = statistics.median(r.cpu for r in rs)
        last = rs[-1]
        calls = f"{last.calls:,}" + (f" ({last.dropped:,} dropped)" if last.dropped else "")
        per = f"{last.tape_bytes / last.calls:,.0f}" if last.calls else ""
        print(f"| {name} | {med:.1f} | {med / base:.2f} | {cpu:.1f} | {cpu / base_cpu:.2f} |"
              f" {outcome_text(last.counts)} |"
              f" {last.counts.get('warnings', 0):,} | {calls if last.calls else ''} |"
              f" {human(last.tape_bytes) if last.calls else ''} | {per} |")
        summary[name] = {"seconds": [r.seconds for r in rs], "median": med,
                         "cpu": [r.cpu for r in rs], "cpu_median": cpu,
                         "counts": [r.counts for r in rs], "calls": last.calls,
                         "dropped": last.dropped, "tape_bytes": last.tape_bytes}
    strip = {k: v for k, v in plain.items() if k != "warnings"}
    if not strip:
        first = runs["python -m pytest"][0]
        print(f"\n!!! the suite did not run under plain python (exit status {first.status}):"
              " its last lines:\n    " + "\n    ".join(first.tail.splitlines()[-15:]))
    for name, rs in runs.items():
        for i, r in enumerate(rs):
            got = {k: v for k, v in r.counts.items() if k != "warnings"}
            if got != strip:
                print(f"\n!!! OUTCOMES CHANGED: {name}, round {i + 1}: {outcome_text(got)}"
                      f" where plain python had {outcome_text(strip)} !!!")
                print("    last lines of its output:\n    "
                      + "\n    ".join(r.tail.splitlines()[-15:]))
            elif r.counts.get("warnings", 0) != plain.get("warnings", 0):
                print(f"\nnote: {name}, round {i + 1}: the suite saw"
                      f" {r.counts.get('warnings', 0):,} warnings where plain python saw"
                      f" {plain.get('warnings', 0):,}")
    return summary


def replay(env: Env, tape: Path, out: Path, timeout: float) -> dict[str, Any] | None:
    """Replay the tape in the suite's folder (a child in the suite's venv); its JSON summary."""
    out.unlink(missing_ok=True)
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen([str(env.python), str(Path(__file__).resolve()), str(tape),
                                 str(out)], cwd=env.root, env=clean_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            status: int | str = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            status = f"stopped after the --replay-timeout of {timeout:.0f} s"
    if not out.exists():
        print(f"the replay wrote no results ({status}); its stderr is in {log}")
        return None
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall"] = time.perf_counter() - t0
    if status != 0 or not result.get("finished"):
        print(f"the replay did not finish ({status}; its stderr is in {log}):"
              " the figures below cover the calls replayed until then")
    return result


def top(groups: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The TOP largest groups."""
    return sorted(groups.items(), key=lambda kv: -kv[1]["count"])[:TOP]


def cell(text: str, width: int = 160) -> str:
    """Text fit for one table cell."""
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[:width - 3] + "..."


def report_replay(result: dict[str, Any], calls: int) -> None:
    """Print the replay's counts and its groups of skipped, changed and failed calls."""
    c = result["counts"]
    done = sum(c.values())
    ran = c["passed"] + c["changed"] + c["failed"]
    share = f"{100 * c['passed'] / ran:.2f}%" if ran else "-"
    print(f"\nreplay of the calltape tape: {done:,} of {calls:,} calls in"
          f" {result['seconds']:.0f} s ({done / max(result['seconds'], 1e-9):,.0f} calls/s)")
    print(f"\n| passed | changed | failed | skipped | passed of those run |\n|---:|---:|---:|---:|---:|"
          f"\n| {c['passed']:,} | {c['changed']:,} | {c['failed']:,} | {c['skipped']:,} |"
          f" {share} |")
    print(f"\nskipped, by reason (top {TOP}; <function> is the call's own function):\n")
    print("| calls | reason | functions (calls) |\n|---:|---|---|")
    for reason, g in top(result["skipped"]):
        fns = sorted(g["functions"].items(), key=lambda kv: -kv[1])[:3]
        more = len(g["functions"]) - len(fns)
        names = ", ".join(f"{f} ({n:,})" for f, n in fns) + (f" +{more} more" if more else "")
        print(f"| {g['count']:,} | {cell(reason)} | {cell(names, 200)} |")
    for status in ("changed", "failed"):
        print(f"\n{status}, by function (top {TOP}, with the first call's difference):\n")
        print("| calls | function | first |\n|---:|---|---|")
        for fn, g in top(result[status]):
            print(f"| {g['count']:,} | {cell(fn, 90)} | {cell(g['example'])} |")


def run_suite(name: str, suite: Suite, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """Prepare, measure, replay and report one suite; the figures as a dict."""
    print(f"\n## {name}: {suite.dist} {suite.version}"
          f" ({'--quick: ' + ' '.join(suite.quick) if args.quick else 'the whole suite'})",
          flush=True)
    env = prepare(name, suite, cache)
    work = cache / f"py{sys.version_info[0]}.{sys.version_info[1]}" / name / "work"
    work.mkdir(parents=True, exist_ok=True)
    runs = measure(env, suite, args, work)
    figures = {"suite": name, "dist": suite.dist, "version": suite.version,
               "quick": args.quick, "python": sys.version.split()[0],
               "runs": report_runs(runs)}
    tape = work / "tape.db"
    if env.calltape and tape.exists():
        result = None if args.no_replay else replay(env, tape, work / "replay.json",
                                                    args.replay_timeout)
        if result is not None:
            report_replay(result, runs["calltape run"][-1].calls)
            figures["replay"] = result
        if args.keep_tape:
            print(f"\nthe tape is kept: {tape}")
        else:
            remove_tape(tape)
    out = cache / "results" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1))
    print(f"\nevery figure and group: {out}")
    return figures


def summary_table(all_figures: list[dict[str, Any]]) -> None:
    """One line per suite: times, ratios, calls, tape and replay counts."""
    print("\n## summary (medians; x: ratio to plain python -m pytest; CPU: user + system"
          " seconds, the figure to trust on a loaded machine)\n")
    print("| suite | plain s | cProfile s | calltape s | plain CPU s | cProfile CPU s"
          " | calltape CPU s | calltape / cProfile CPU | calls | tape | B/call"
          " | replay passed | changed | failed | skipped |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for f in all_figures:
        r = f["runs"]
        base, base_cpu = r["python -m pytest"]["median"], r["python -m pytest"]["cpu_median"]
        prof, prof_cpu = r["cProfile"]["median"], r["cProfile"]["cpu_median"]
        ct = r.get("calltape run")
        cts = f"{ct['median']:.1f} ({ct['median'] / base:.1f}x)" if ct else "skipped"
        ct_cpu = (f"{ct['cpu_median']:.1f} ({ct['cpu_median'] / base_cpu:.1f}x) |"
                  f" {ct['cpu_median'] / prof_cpu:.2f}") if ct else "skipped | -"
        calls = ct["calls"] if ct else 0
        c = f.get("replay", {}).get("counts", {})
        rep = " | ".join(f"{c[s]:,}" if c else "-" for s in ("passed", "changed", "failed",
                                                              "skipped"))
        print(f"| {f['suite']} {f['version']} | {base:.1f} | {prof:.1f} ({prof / base:.1f}x) |"
              f" {cts} | {base_cpu:.1f} | {prof_cpu:.1f} ({prof_cpu / base_cpu:.1f}x) |"
              f" {ct_cpu} | {calls:,} | {human(ct['tape_bytes']) if calls else '-'} |"
              f" {ct['tape_bytes'] / calls if calls else 0:,.0f} | {rep} |")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench suite",
                                description=__doc__.split("\n")[0])
    p.add_argument("--suite", action="append", choices=list(SUITES),
                   help="a suite to run (repeatable; default: all four)")
    p.add_argument("--quick", action="store_true",
                   help="a subset of each suite's test files, one round unless --rounds says"
                        " (about a minute per suite)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; 1 with --quick)")
    p.add_argument("--replay-timeout", type=float, default=3600, metavar="SECONDS",
                   help="stop a replay after this long (default 3600)")
    p.add_argument("--no-replay", action="store_true",
                   help="measure the runs only; do not replay the last tape")
    p.add_argument("--keep-tape", action="store_true", help="keep the last tape of each suite")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    cache = cache_root()
    print(f"Python {sys.version.split()[0]}; calltape from {CHECKOUT}; cache {cache};"
          f" rounds: {args.rounds} (median); PYTHONHASHSEED=0")
    figures = []
    for name in args.suite or list(SUITES):
        try:
            figures.append(run_suite(name, SUITES[name], args, cache))
        except Skip as exc:
            print(f"the {name} suite is skipped: {exc}")
    if figures:
        summary_table(figures)
    return 0


# --- the replay child: runs in the suite's venv, in the suite's folder --------------------

STATUSES = ("passed", "changed", "failed", "skipped")


def tally(outcome: Any, result: dict[str, Any]) -> None:
    """Count one replay outcome into the summary: skip reasons and changed/failed functions."""
    status, fn = outcome.status, outcome.function
    result["counts"][status] += 1
    if status == "skipped":
        # one group per kind of reason: the marker's type is kept, its details are not
        reason = (outcome.reason or "").replace(fn, "<function>")
        reason = re.sub(r"((?:Unencodable|Truncated)\(type='[^']*').*", r"\1, ...)", reason)
        reason = re.sub(r"\d+", "N", reason)
        g = result["skipped"].setdefault(reason, {"count": 0, "functions": Counter()})
        g["count"] += 1
        g["functions"][fn] += 1
    elif status != "passed":
        g = result[status].setdefault(fn, {"count": 0, "example": None})
        g["count"] += 1
        if g["example"] is None:
            exc = outcome.exception
            what = outcome.diff or f"raised {type(exc).__name__}: {exc}"
            g["example"] = f"call {outcome.call_id}: {what}"[:500]


def replay_child(tape_path: str, out_path: str, batch: int = 5000) -> int:
    """Replay every call of the tape, oldest first, writing the summary after each batch."""
    sys.path[0] = os.getcwd()  # as under python -m pytest: the suite's folder is importable
    import calltape
    from calltape._replay import replay_calls  # what Tape.replay runs, on streamed calls

    tape = calltape.open(tape_path, trust=True)
    result: dict[str, Any] = {"counts": dict.fromkeys(STATUSES, 0), "skipped": {},
                              "changed": {}, "failed": {}, "seconds": 0.0, "finished": False}
    t0 = time.perf_counter()

    def step(calls: list[Any]) -> None:
        for o in replay_calls(tape, calls):
            tally(o, result)
        calls.clear()
        result["seconds"] = time.perf_counter() - t0
        tmp = out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f)
        os.replace(tmp, out_path)

    pending: list[Any] = []
    for call in tape.search(order="oldest"):
        pending.append(call)
        if len(pending) >= batch:
            step(pending)
    result["finished"] = True
    step(pending)
    return 0


if __name__ == "__main__":
    sys.exit(replay_child(sys.argv[1], sys.argv[2]))
