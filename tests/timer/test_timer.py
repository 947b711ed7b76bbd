"""calltape.timer / catch_errors / metrics and the PyMAAP facade, against the tape."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PY = sys.executable


def run(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "CALLTAPE_TAPE": str(tmp_path / "t.db")}
    p = subprocess.run([PY, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p


def test_csv_and_log_lines_match_the_tape(tmp_path: Path) -> None:
    p = run(tmp_path, """
        import calltape
        @calltape.timer(max_arg_length=4, sanitize=lambda s: s.replace("secret", "*"))
        def f(x, y, z="a secret"):
            return x + y
        f(1, 2); f(3, 4, z="secret,\\"q")
    """)
    import calltape
    calls = calltape.open(tmp_path / "t.db").search(function="f", order="oldest")
    rows = list(csv.DictReader(open(tmp_path / "logs" / "timing_results.csv")))
    lines = [json.loads(x) for x in open(tmp_path / "logs" / "timing.log")]
    assert [r["UUID"] for r in rows] == [c.uuid for c in calls] == [ln["uuid"] for ln in lines]
    for r, c in zip(rows, calls):
        assert float(r["Execution Time (s)"]) == pytest.approx(c.duration, abs=1e-9)
        assert float(r["CPU Time (sec)"]) == pytest.approx(c.cpu_time, abs=1e-9)
        assert c.captured == "timer"
        assert int(r["Process ID"]) > 0 and int(r["Thread Count"]) >= 1
    assert json.loads(rows[1]["Arguments"]) == {"args": ["3", "4"], "kwargs": {"z": "*,\"q"}}
    assert calls[1].args["z"] == '*,"q'  # the tape's copy sanitized too
    assert "Function `f` executed in" in p.stderr  # the console line


def test_options_off(tmp_path: Path) -> None:
    run(tmp_path, """
        import calltape
        @calltape.timer(log_to_console=False, log_to_file=False, track_resources=False)
        def f(x):
            return x
        f(1)
    """)
    import calltape
    (c,) = calltape.open(tmp_path / "t.db").search(function="f")
    assert c.cpu_time is None and not (tmp_path / "logs").exists()


def test_bad_options_one_sentence() -> None:
    import calltape
    with pytest.raises(ValueError, match="results must be"):
        calltape.timer(results="xml")
    with pytest.raises(ValueError, match="max_arg_length"):
        calltape.timer(max_arg_length=-1, log_to_file=False)
    with pytest.raises(TypeError, match="log_to_console"):
        calltape.timer(log_to_console="yes")


def test_catch_errors_logs_and_reraises(tmp_path: Path) -> None:
    run(tmp_path, """
        import calltape
        @calltape.catch_errors(sanitize=lambda s: s.replace("password", "*"), results="csv",
                               log_to_console=False)
        def g(pw):
            raise ValueError("bad password")
        try:
            g("password1")
        except ValueError as e:
            assert str(e) == "bad password"
    """)
    (line,) = [json.loads(x) for x in open(tmp_path / "logs" / "error.log")]
    assert line["level"] == "ERROR" and line["error"] == "bad *"
    assert "Traceback" in line["traceback"] and "password" not in line["traceback"]
    (row,) = list(csv.DictReader(open(tmp_path / "logs" / "error_results.csv")))
    assert row["Error Message"] == "bad *" and row["UUID"] == line["uuid"]


def test_metrics_block(tmp_path: Path) -> None:
    run(tmp_path, """
        import calltape
        def work():
            m = calltape.metrics_start(log_to_console=False)
            sum(range(1000))
            print(calltape.metrics_end(m))
        work()
    """)
    import calltape
    (c,) = calltape.open(tmp_path / "t.db").search(function="work")
    (row,) = list(csv.DictReader(open(tmp_path / "logs" / "timing_results.csv")))
    assert row["UUID"] == c.uuid and row["Function Name"] == "work"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_rows_and_rotation(tmp_path: Path, method: str) -> None:
    run(tmp_path, f"""
        import multiprocessing as mp, calltape
        @calltape.timer(log_to_console=False, max_bytes=4000, backup_count=50)
        def f(x):
            return x
        def work(n):
            for i in range(n):
                f(i)
        if __name__ == "__main__":
            ctx = mp.get_context("{method}")
            ps = [ctx.Process(target=work, args=(100,)) for _ in range(3)]
            for p in ps: p.start()
            for p in ps: p.join()
    """)
    import calltape
    calls = calltape.open(tmp_path / "t.db").search(function="f")
    rows = list(csv.DictReader(open(tmp_path / "logs" / "timing_results.csv")))
    lines = []
    for log in (tmp_path / "logs").glob("timing.log*"):
        if not log.name.endswith(".lock"):
            lines += [json.loads(x) for x in open(log)]  # every line whole JSON
    assert len(calls) == 300
    assert sorted(r["UUID"] for r in rows) == sorted(c.uuid for c in calls)
    assert sorted(ln["uuid"] for ln in lines) == sorted(c.uuid for c in calls)
    assert len(list((tmp_path / "logs").glob("timing.log.*"))) > 2  # it rotated


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (the parquet extra)")
    import pyarrow.parquet as pq
    run(tmp_path, """
        import calltape
        @calltape.timer(log_to_console=False, results="parquet")
        def f(x):
            return x
        for i in range(2500):
            f(i)
    """)
    import calltape
    t = pq.read_table(tmp_path / "logs" / "timing_results.parquet")
    assert isinstance(t, pa.Table) and t.num_rows == 2500
    (part,) = list((tmp_path / "logs" / "timing_results.parquet").iterdir())
    assert pq.ParquetFile(part).num_row_groups == 3  # written as calls came, 1000 at a time
    uuids = {c.uuid for c in calltape.open(tmp_path / "t.db").search(function="f")}
    assert uuids == set(t.column("UUID").to_pylist())


SEED = '''
from calltape.compat.pymaap import Timer, ErrorCatcher, sanitizer
import logging
import time

@Timer(max_arg_length=100, sanitize_func=lambda s: s.replace("secret", "*****"))
def my_function(x, y):
    logging.info("My function started")
    time.sleep(0.01)
    return x + y

result = my_function(5, 10)
print(f"Result: {result}")

@ErrorCatcher(sanitize_func=lambda s: s.replace("password", "*****"))
def error_function():
    raise ValueError("This is a test error with a secret password!")

try:
    error_function()
except Exception as e:
    print(f"Caught an exception as expected: {e}")

@ErrorCatcher(sanitize_func=sanitizer)
@Timer(max_arg_length=100, sanitize_func=sanitizer)
def combined_function(a, b):
    time.sleep(0.01)
    if a < 0:
        raise ValueError("Invalid value for a!")
    return a * b

print("Combined function result:", combined_function(3, 7))
try:
    combined_function(-1, 7)
except Exception as e:
    print(f"Caught an exception: {e}")
'''


def test_facade_seed_examples_and_results(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    script = tmp_path / "seed.py"
    script.write_text(SEED)
    env = {k: v for k, v in os.environ.items() if k != "CALLTAPE_TAPE"}
    p = subprocess.run([PY, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "Result: 15" in p.stdout and "Caught an exception: Invalid value for a!" in p.stdout
    rows = list(csv.DictReader(open(tmp_path / "logs" / "timing_results.csv")))
    assert [r["Function Name"] for r in rows] == ["my_function", "combined_function",
                                                  "combined_function"]
    assert (tmp_path / "logs" / "error.log").stat().st_size > 0  # not empty, unlike 0.2.1
    r = subprocess.run([PY, "-m", "calltape.compat.pymaap.results", "--logdir", "logs",
                        "--tag", "x"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (out,) = list((tmp_path / "figs").iterdir())
    agg = list(csv.DictReader(open(out / "results_aggregate.csv")))
    assert list(agg[0]) == ["Function", "Perf Duration (s)_count", "Perf Duration (s)_sum",
                            "Perf Duration (s)_mean", "Perf Duration (s)_max", "CPU Delta_mean",
                            "Memory Delta (MB)_mean"]
    by = {a["Function"]: a for a in agg}
    assert int(by["my_function"]["Perf Duration (s)_count"]) == 1
    assert (out / "top10_functions_by_total_time.png").stat().st_size > 0
    assert len(open(out / "filtered_log_lines.log").readlines()) == 3


def test_pid_thread_count_and_peak_after_fork(tmp_path: Path) -> None:
    """The pid and /proc/self/stat are kept per process: a forked child writes its own
    pid and thread count; a timed call's peak on the tape is max(RSS before, after)."""
    p = run(tmp_path, """
        import os, threading, calltape
        @calltape.timer(log_to_console=False)
        def f(x):
            return x
        f(0)
        stop = threading.Event()
        ts = [threading.Thread(target=stop.wait) for _ in range(3)]
        for t in ts: t.start()
        f(1)
        stop.set()
        for t in ts: t.join()
        pid = os.fork()
        if pid == 0:
            f(2)
            calltape.flush()
            os._exit(0)
        os.waitpid(pid, 0)
        print(pid)
    """)
    child = int(p.stdout.split()[-1])
    rows = list(csv.DictReader(open(tmp_path / "logs" / "timing_results.csv")))
    by_arg = {json.loads(r["Arguments"])["args"][0]: r for r in rows}
    # + the 3 waiting threads and calltape's log thread, started by f(0)'s log line
    assert int(by_arg["1"]["Thread Count"]) == int(by_arg["0"]["Thread Count"]) + 4
    assert int(by_arg["2"]["Process ID"]) == child != int(by_arg["0"]["Process ID"])
    assert int(by_arg["2"]["Thread Count"]) >= 1
    import calltape
    calls = calltape.open(tmp_path / "t.db").search(function="f")
    assert len(calls) == 3
    for c in calls:  # the high-water mark is not read for @timer (one system call less)
        m = c.memory
        assert m["peak"] == max(m["rss_before"], m["rss_after"]) > 0


def test_timed_generators_and_coroutines_write_their_lines_when_they_finish(
        tmp_path: Path) -> None:
    run(tmp_path, """
        import asyncio, calltape
        @calltape.timer(log_to_console=False)
        def gen(n):
            for i in range(n):
                yield i
        @calltape.timer(log_to_console=False)
        async def co(x):
            await asyncio.sleep(0)
            return x
        @calltape.catch_errors(log_to_console=False, results="csv")
        def bad(n):
            yield n
            raise KeyError("gone")
        g = gen(3)
        assert next(g) == 0
        assert not open("logs/timing_results.csv").read().count("gen")  # not finished yet
        assert list(g) == [1, 2]
        h = gen(5); next(h); h.close()  # closed early: written at its close
        asyncio.run(co(7))
        try:
            list(bad(1))
        except KeyError:
            pass
    """)
    import calltape
    tape = calltape.open(tmp_path / "t.db")
    rows = list(csv.DictReader(open(tmp_path / "logs" / "timing_results.csv")))
    assert [r["Function Name"] for r in rows] == ["gen", "gen", "co"]
    assert [json.loads(r["Arguments"])["args"] for r in rows] == [["3"], ["5"], ["7"]]
    calls = {c.uuid: c for c in tape.search()}
    for r in rows:
        assert float(r["Execution Time (s)"]) == pytest.approx(calls[r["UUID"]].duration, abs=1e-9)
    lines = [json.loads(x) for x in open(tmp_path / "logs" / "timing.log")]
    assert [ln["uuid"] for ln in lines] == [r["UUID"] for r in rows]
    (err,) = [json.loads(x) for x in open(tmp_path / "logs" / "error.log")]
    assert err["function"] == "bad" and err["exception"] == "KeyError" and err["uuid"] in calls
