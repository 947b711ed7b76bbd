"""``calltape run`` and ``calltape.monitor``: whole programs recorded without
decorators.  Every program here is a real script run in a real interpreter."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from _util import child_env, is_redacted, open_tape

import calltape


def write(tmp_path, files):
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def calltape_run(tmp_path, argv, rc=0, tape="t.db", timeout=120, env_extra=None):
    """Runs ``python -m calltape run --tape TAPE *argv`` in tmp_path."""
    proc = subprocess.run(
        [sys.executable, "-m", "calltape", "run", "--tape", str(tmp_path / tape), *argv],
        env=child_env(None, env_extra), cwd=str(tmp_path), capture_output=True, text=True,
        timeout=timeout)
    if rc is not None:
        assert proc.returncode == rc, (
            f"exit {proc.returncode}, expected {rc}\n--- stdout ---\n{proc.stdout}"
            f"\n--- stderr ---\n{proc.stderr}")
    return proc


def interrupt_when_ready(tmp_path):
    """Starts ``calltape run prog.py``, waits for it to print "ready", sends Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "calltape", "run", "--tape", str(tmp_path / "t.db"), "prog.py"],
        cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    return proc


def calls_by_name(path):
    tape = open_tape(path, flush=False)
    out = {}
    for c in tape.calls():
        out.setdefault(c.qualname, []).append(c)
    return tape, out


def test_script_sees_argv_main_and_exit_status(tmp_path):
    write(tmp_path, {"prog.py": """
        import sys
        def double(x):
            return 2 * x
        if __name__ == "__main__":
            print(sys.argv, double(21), sys.path[0] == __file__.rsplit("/", 1)[0])
            sys.exit(3)
    """})
    proc = calltape_run(tmp_path, ["prog.py", "a", "--flag"], rc=3)
    assert proc.stdout.strip() == "['prog.py', 'a', '--flag'] 42 True"
    assert "calltape: recorded 1 call of 1 function onto" in proc.stderr
    _, calls = calls_by_name(tmp_path / "t.db")
    (c,) = calls["double"]
    assert c.args == {"x": 21} and c.result == 42 and c.module == "__main__"


def test_program_arguments_after_double_dash(tmp_path):
    write(tmp_path, {"prog.py": "import sys; print(sys.argv[1:])\n"})
    proc = calltape_run(tmp_path, ["--no-args", "prog.py", "--", "-x", "--tape"])
    assert proc.stdout.strip() == "['-x', '--tape']"


def test_parent_links_depth_and_call_tree(tmp_path):
    write(tmp_path, {"prog.py": """
        def leaf(i):
            return i
        def branch(n):
            return [leaf(i) for i in range(n)]
        def root():
            return branch(2) + branch(1)
        root()
    """})
    calltape_run(tmp_path, ["prog.py"])
    tape, calls = calls_by_name(tmp_path / "t.db")
    (root,) = calls["root"]
    assert root.parent is None and root.depth == 0
    branches = calls["branch"]
    assert [b.parent for b in branches] == [root.id, root.id]
    assert [b.depth for b in branches] == [1, 1]
    for leaf in calls["leaf"]:
        parent = tape.call(leaf.parent)
        assert parent.qualname in ("branch", "branch.<locals>.<listcomp>")
    assert sorted(c.id for c in root.children()) == sorted(b.id for b in branches)


def test_threads_started_before_and_after_monitoring(tmp_path):
    write(tmp_path, {"prog.py": """
        import threading, calltape
        def work(n):
            return sum(range(n))
        go = threading.Event()
        early = threading.Thread(target=lambda: (go.wait(), work(10)), name="early")
        early.start()              # running before the monitor starts
        with calltape.monitor(paths=[__file__.rsplit("/", 1)[0]]):
            go.set()
            early.join()
            late = [threading.Thread(target=work, args=(i,), name=f"late{i}") for i in range(3)]
            for t in late: t.start()
            for t in late: t.join()
            work(1)
    """})
    proc = subprocess.run([sys.executable, "prog.py"], cwd=tmp_path, capture_output=True,
                          text=True, env=child_env(tmp_path / "t.db"), timeout=60)
    assert proc.returncode == 0, proc.stderr
    _, calls = calls_by_name(tmp_path / "t.db")
    works = calls["work"]
    assert sorted(c.args["n"] for c in works) == [0, 1, 1, 2, 10]
    names = {c.thread_name for c in works}
    assert {"early", "late0", "late1", "late2", "MainThread"} <= names


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_pool_children_are_own_sessions(tmp_path, method):
    write(tmp_path, {"prog.py": f"""
        import multiprocessing as mp, os
        def square(x):
            return x * x
        if __name__ == "__main__":
            ctx = mp.get_context("{method}")
            with ctx.Pool(2) as pool:  # as users write it: terminate() at the end
                print(sum(pool.map(square, range(6))), os.getpid())
    """})
    proc = calltape_run(tmp_path, ["prog.py"])
    total, main_pid = proc.stdout.split()
    assert total == "55"
    tape, calls = calls_by_name(tmp_path / "t.db")
    squares = calls["square"]
    assert sorted(c.args["x"] for c in squares) == list(range(6))
    sessions = {s.id: s for s in tape.sessions()}
    (main,) = [s for s in sessions.values() if s.pid == int(main_pid)]
    for c in squares:
        assert sessions[c.session].pid != int(main_pid)
        assert sessions[c.session].parent == main.id  # the program's session
        if method != "forkserver":  # forkserver workers are the server's children
            assert sessions[c.session].ppid == int(main_pid)


def test_python_subprocess_is_recorded_as_own_session(tmp_path):
    write(tmp_path, {
        "prog.py": """
            import subprocess, sys
            def parent_side():
                return subprocess.run([sys.executable, "child.py", "7"], check=True).returncode
            parent_side()
        """,
        "child.py": """
            import sys
            def child_side(n):
                return n + 1
            child_side(int(sys.argv[1]))
        """})
    calltape_run(tmp_path, ["prog.py"])
    tape, calls = calls_by_name(tmp_path / "t.db")
    (child,) = calls["child_side"]
    (parent,) = calls["parent_side"]
    assert child.args == {"n": 7} and child.result == 8
    assert child.session != parent.session
    pids = {s.id: s for s in tape.sessions()}
    assert pids[child.session].ppid == pids[parent.session].pid


def test_uncaught_exception_status_traceback_and_record(tmp_path):
    write(tmp_path, {"prog.py": """
        def fail(x):
            raise KeyError(x)
        def outer():
            fail("k")
        outer()
    """})
    proc = calltape_run(tmp_path, ["prog.py"], rc=1)
    assert "KeyError: 'k'" in proc.stderr
    assert 'File "' in proc.stderr and "prog.py" in proc.stderr
    assert "runpy" not in proc.stderr and "calltape/_run.py" not in proc.stderr
    _, calls = calls_by_name(tmp_path / "t.db")
    (fail,) = calls["fail"]
    (outer,) = calls["outer"]
    assert fail.outcome == outer.outcome == "raised"
    assert fail.parent == outer.id
    if sys.version_info >= (3, 12):  # 3.11's profiler hook does not show the exception
        assert fail.exception.type.endswith("KeyError")


def test_generators_and_coroutines_give_one_record_each(tmp_path):
    write(tmp_path, {"prog.py": """
        import asyncio
        def count(n):
            for i in range(n):
                yield i
        async def tick(i):
            await asyncio.sleep(0.001)
            return i * 10
        async def gather():
            return await asyncio.gather(tick(1), tick(2))
        def abandon():
            g = count(5)
            next(g)
            g.close()
        print(list(count(3)), asyncio.run(gather()))
        abandon()
    """})
    proc = calltape_run(tmp_path, ["prog.py"])
    assert proc.stdout.strip() == "[0, 1, 2] [10, 20]"
    _, calls = calls_by_name(tmp_path / "t.db")
    counts = calls["count"]
    assert len(counts) == 2
    assert sorted(c.outcome for c in counts) == ["closed", "returned"]
    ticks = calls["tick"]
    assert sorted(c.result for c in ticks) == [10, 20]
    assert all(c.duration >= 0.001 for c in ticks)  # the awaits are inside the call
    (g,) = calls["gather"]
    assert g.result == [10, 20]


def test_run_module_records_its_package(tmp_path):
    write(tmp_path, {
        "shop/__init__.py": "",
        "shop/pricing.py": """
            def price(qty, unit=2.5):
                return qty * unit
        """,
        "shop/main.py": """
            import sys
            from shop.pricing import price
            def main():
                return price(4)
            if __name__ == "__main__":
                print(__name__, main(), sys.argv[1:])
        """})
    proc = calltape_run(tmp_path, ["-m", "shop.main", "x"])
    assert proc.stdout.strip() == "__main__ 10.0 ['x']"
    _, calls = calls_by_name(tmp_path / "t.db")
    (p,) = calls["price"]
    assert p.module == "shop.pricing" and p.args == {"qty": 4, "unit": 2.5}
    (m,) = calls["main"]
    assert p.parent == m.id



def test_run_m_pytest_records_the_projects_code_and_tests(tmp_path):
    """`calltape run -m pytest` in a project: pytest is installed code, the
    project's module and its tests are under the current folder."""
    write(tmp_path, {
        "mylib.py": """
            def add(a, b):
                return a + b
        """,
        "test_mylib.py": """
            import mylib
            def test_add():
                assert mylib.add(1, 2) == 3
        """})
    proc = calltape_run(tmp_path, ["-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   "test_mylib.py"])
    assert "1 passed" in proc.stdout
    _, calls = calls_by_name(tmp_path / "t.db")
    (add,) = calls["add"]
    assert add.args == {"a": 1, "b": 2} and add.result == 3
    assert add.parent == calls["test_add"][0].id
    assert not [c for cs in calls.values() for c in cs if c.module.startswith("_pytest")]

def test_include_exclude_and_standard_library(tmp_path):
    write(tmp_path, {"prog.py": """
        import json
        def keep(x):
            return json.dumps(x)
        def skip_me(x):
            return x
        keep([1]); skip_me(2)
    """})
    calltape_run(tmp_path, ["--exclude", "skip_*", "prog.py"])
    _, calls = calls_by_name(tmp_path / "t.db")
    assert set(calls) == {"keep"}  # json's own functions are not recorded by default
    calltape_run(tmp_path, ["--include", "json", "prog.py"], tape="u.db")
    _, calls = calls_by_name(tmp_path / "u.db")
    assert {"keep", "skip_me", "dumps"} <= set(calls)
    assert all(c.module.startswith("json") for name, cs in calls.items() for c in cs
               if name not in ("keep", "skip_me"))


def test_no_args_no_result_max_depth_and_sample(tmp_path):
    write(tmp_path, {"prog.py": """
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        def tick(i):
            return i
        fib(10)
        for i in range(100):
            tick(i)
    """})
    calltape_run(tmp_path, ["--no-args", "--no-result", "prog.py"])
    _, calls = calls_by_name(tmp_path / "t.db")
    assert len(calls["fib"]) == 177 and len(calls["tick"]) == 100
    assert calls["fib"][0].args == {} and calls["fib"][0].result is None
    calltape_run(tmp_path, ["--max-depth", "3", "prog.py"], tape="d.db")
    _, calls = calls_by_name(tmp_path / "d.db")
    assert max(c.depth for c in calls["fib"]) == 2 and len(calls["fib"]) == 7
    calltape_run(tmp_path, ["--sample", "10", "prog.py"], tape="s.db")
    _, calls = calls_by_name(tmp_path / "s.db")
    assert [c.args["i"] for c in calls["tick"]] == list(range(0, 100, 10))


def test_decorated_functions_are_recorded_once(tmp_path):
    write(tmp_path, {"prog.py": """
        import calltape
        @calltape.record
        def decorated(x):
            return plain(x) + 1
        def plain(x):
            return x
        def caller():
            return decorated(1)
        caller()
    """})
    calltape_run(tmp_path, ["prog.py"])
    _, calls = calls_by_name(tmp_path / "t.db")
    (d,) = calls["decorated"]
    (p,) = calls["plain"]
    (c,) = calls["caller"]
    assert d.parent == c.id and p.parent == d.id  # one tree across both capture paths


def test_ctrl_c_keeps_what_was_recorded(tmp_path):
    write(tmp_path, {"prog.py": """
        import time
        def step(i):
            return i
        for i in range(5):
            step(i)
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
    """})
    proc = interrupt_when_ready(tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err and "recorded 5 calls" in err
    _, calls = calls_by_name(tmp_path / "t.db")
    assert [c.args["i"] for c in calls["step"]] == list(range(5))


def test_bad_program_names_are_one_sentence(tmp_path):
    proc = calltape_run(tmp_path, ["missing.py"], rc=2)
    assert proc.stderr.strip() == "calltape: cannot open the script 'missing.py': no such file"
    proc = calltape_run(tmp_path, ["-m", "no_such_module_here"], rc=2)
    assert proc.stderr.strip() == "calltape: no module named 'no_such_module_here'"
    proc = calltape_run(tmp_path, [], rc=2)
    assert "name a script or -m module to run" in proc.stderr
    proc = calltape_run(tmp_path, ["--sample", "0", "x.py"], rc=2)
    assert "sample must be an integer >= 1, not 0" in proc.stderr  # as monitor() says it
    (tmp_path / "x.py").write_text("print('ran')\n")
    proc = calltape_run(tmp_path, ["x.py"], rc=2, tape="no/such/dir/t.db")
    assert proc.stdout == ""  # the program did not run
    assert proc.stderr.strip() == (f"calltape: cannot write the tape {tmp_path}/no/such/dir/t.db:"
                                   f" the folder {tmp_path}/no/such/dir does not exist")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
def test_profiler_tool_id_held_by_another_tool(tape):
    sys.monitoring.use_tool_id(sys.monitoring.PROFILER_ID, "someprof")
    try:
        with pytest.raises(RuntimeError, match="held by 'someprof'"):
            calltape.monitor().start()
    finally:
        sys.monitoring.free_tool_id(sys.monitoring.PROFILER_ID)


def test_monitor_api_errors_and_state(tape):
    with pytest.raises(ValueError, match="sample"):
        calltape.monitor(sample=0)
    with pytest.raises(ValueError, match="max_depth"):
        calltape.monitor(max_depth=-1)
    with pytest.raises(TypeError, match="include must be strings"):
        calltape.monitor([1])
    m = calltape.monitor(paths=[os.path.dirname(__file__)])
    assert not m.running and "stopped" in repr(m)
    with m:
        assert m.running
        with pytest.raises(RuntimeError, match="already running"):
            calltape.monitor().start()
    assert not m.running
    m.stop()  # idempotent


def _monitored(n):
    return n + 1


def test_in_process_monitor_records_and_stops(tape):
    here = os.path.dirname(os.path.abspath(__file__))
    with calltape.monitor(paths=[here]) as m:
        for i in range(3):
            _monitored(i)
    _monitored(99)  # after stop: not recorded
    assert m.calls >= 3 and m.functions >= 1
    tape_ = open_tape(tape)
    calls = [c for c in tape_.calls() if c.qualname == "_monitored"]
    assert [c.args["n"] for c in calls] == [0, 1, 2]
    assert [c.result for c in calls] == [1, 2, 3]


def test_monitor_start_stop_does_not_leak(tape):
    import gc
    here = os.path.dirname(os.path.abspath(__file__))
    m = calltape.monitor(paths=[here], args=True)

    def cycle():
        with m:
            for i in range(50):
                _monitored(i)

    for _ in range(20):
        cycle()
    gc.collect()
    before = sys.gettotalrefcount() if hasattr(sys, "gettotalrefcount") else None
    blocks = sys.getallocatedblocks()
    for _ in range(200):
        cycle()
    gc.collect()
    calltape.flush(timeout=30)
    assert sys.getallocatedblocks() - blocks < 500
    if before is not None:
        assert sys.gettotalrefcount() - before < 500
    time.sleep(0)


def test_readme_main_command_records_the_shop(tmp_path):
    proc = calltape_run(tmp_path, ["-m", "calltape.examples.shop"])
    # the exit line counts the functions on the tape, the decorated ones too
    # (main, parse_line, a genexpr; checkout and price under @calltape.record)
    assert "6,001 calls of 5 functions" in proc.stderr
    assert len(calltape.open(tmp_path / "t.db").functions()) == 5
    _, calls = calls_by_name(tmp_path / "t.db")
    assert len(calls["parse_line"]) == 2000 and len(calls["checkout"]) == 1000
    line = calls["parse_line"][0]
    assert line.args == {"line": "1 x 9.50"} and line.result == (1, 9.5)
    checkout = calls["checkout"][0]
    assert line.parent == calls["main"][0].id and checkout.parent == calls["main"][0].id
    assert all(not name.startswith("_") for name in calls)  # calltape's own code is not recorded


def test_monitor_left_running_at_exit_keeps_its_calls(tmp_path):
    write(tmp_path, {"prog.py": """
        import calltape
        def work(i):
            return i
        calltape.monitor(paths=[__file__.rsplit("/", 1)[0]]).start()
        for i in range(3):
            work(i)
    """})
    proc = subprocess.run([sys.executable, "prog.py"], cwd=tmp_path, capture_output=True,
                          text=True, env=child_env(tmp_path / "t.db"), timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    _, calls = calls_by_name(tmp_path / "t.db")
    assert [c.args["i"] for c in calls["work"]] == [0, 1, 2]


def test_run_records_energy_cpu_and_memory(tmp_path):
    from test_energy import powercap

    root = powercap(tmp_path / "powercap", pkg=100, pkg_range=1_000_000, dram=50)
    zone = root / "intel-rapl:0"
    write(tmp_path, {"prog.py": f"""
        def burn(pkg, dram):
            # what the machine does while the call runs: the counters move
            with open("{zone}/energy_uj", "w") as f:
                f.write(f"{{pkg}}\\n")
            with open("{zone}/intel-rapl:0:1/energy_uj", "w") as f:
                f.write(f"{{dram}}\\n")
            return sum(range(200_000))
        burn(350, 80)
    """})
    calltape_run(tmp_path, ["--energy", "--cpu", "--memory", "prog.py"],
                 env_extra={"CALLTAPE_POWERCAP_ROOT": str(root)})
    _, calls = calls_by_name(tmp_path / "t.db")
    (c,) = calls["burn"]
    assert c.energy == {"pkg": 250.0, "dram": 30.0}
    assert c.cpu_time > 0 and c.memory["rss_before"] > 0


def test_run_records_locals_and_globals(tmp_path):
    write(tmp_path, {"prog.py": """
        RATE = 0.25
        LIMITS = {"max": 10}
        def price(qty, unit, password="x"):
            total = qty * unit * (1 + RATE)
            if total > LIMITS["max"]:
                raise ValueError("too much")
            return total
        def tally(n):
            acc = 0
            for i in range(n):
                acc += i
                yield acc
        price(2, 3.0)
        try:
            price(20, 3.0)
        except ValueError:
            pass
        list(tally(3))
    """})
    calltape_run(tmp_path, ["--locals", "--globals", "prog.py"])
    _, calls = calls_by_name(tmp_path / "t.db")
    ok, raised = calls["price"]
    assert ok.locals["total"] == 7.5 and ok.locals["qty"] == 2
    assert ok.globals == {"RATE": 0.25, "LIMITS": {"max": 10}}
    assert raised.outcome == "raised" and raised.locals["total"] == 75.0
    assert is_redacted(raised.locals["password"])  # secrets stay out of locals too
    (g,) = calls["tally"]
    assert g.locals["acc"] == 3 and g.globals == {}


def test_generator_resumed_by_another_caller_or_thread(tmp_path):
    write(tmp_path, {"prog.py": """
        import threading
        def gen():
            yield 1
            yield 2
            yield 3
        def helper():
            return 0
        def consumer(g):
            next(g)
            return helper()
        def worker(g):
            next(g)
            return helper()
        def main():
            g = gen()
            next(g)
            consumer(g)
            t = threading.Thread(target=worker, args=(g,))
            t.start()
            t.join()
        main()
    """})
    calltape_run(tmp_path, ["prog.py"])
    _, calls = calls_by_name(tmp_path / "t.db")
    (consumer,) = calls["consumer"]
    (worker,) = calls["worker"]
    by_thread = {c.thread: c for c in calls["helper"]}
    assert by_thread[consumer.thread].parent == consumer.id
    assert by_thread[consumer.thread].depth == consumer.depth + 1
    assert by_thread[worker.thread].parent == worker.id  # not a call of the main thread


@pytest.mark.parametrize("option", [["--sample", "2"], ["--max-depth", "2"]])
def test_recursive_generator_under_sample_and_max_depth(tmp_path, option):
    write(tmp_path, {"prog.py": """
        import time
        def walk(n):
            time.sleep(0.01)
            if n:
                yield from walk(n - 1)
            yield n
        print(list(walk(3)))
    """})
    proc = calltape_run(tmp_path, [*option, "prog.py"])
    assert proc.stdout.strip() == "[0, 1, 2, 3]"
    _, calls = calls_by_name(tmp_path / "t.db")
    outer = next(c for c in calls["walk"] if c.args["n"] == 3)
    assert outer.duration >= 0.04  # it lasts while the nested walks sleep
    assert all(c.outcome == "returned" for c in calls["walk"])


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="3.11's profiler hook cannot tell throw() from close() at a yield")
def test_generator_thrown_into_is_raised(tmp_path):
    write(tmp_path, {"prog.py": """
        def gen():
            yield 1
            yield 2
        g = gen()
        next(g)
        try:
            g.throw(KeyError("in"))
        except KeyError:
            pass
    """})
    calltape_run(tmp_path, ["prog.py"])
    _, calls = calls_by_name(tmp_path / "t.db")
    (g,) = calls["gen"]
    assert g.outcome == "raised"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="cProfile uses sys.monitoring from 3.12")
def test_cprofile_sees_code_after_the_monitor_stopped(tape):
    import cProfile
    import pstats

    def excluded():
        return 1

    with calltape.monitor(include=["nothing_here"]):
        excluded()  # switched off for the profiler id
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        excluded()
    prof.disable()
    stats = pstats.Stats(prof).stats
    assert [v[0] for k, v in stats.items() if k[2] == "excluded"] == [5]


def test_run_module_package_main_symlink_and_console_script_path(tmp_path):
    write(tmp_path, {
        "real/mypkg/__init__.py": "",
        "real/mypkg/__main__.py": """
            def hello(name):
                return "hi " + name
            print(hello("x"))
        """,
        "real/p.py": """
            import builtins
            def f(a):
                return a
            assert __builtins__ is builtins  # as in a script run by python
            f(1)
        """})
    os.symlink(tmp_path / "real", tmp_path / "link")
    # like the `calltape` console script: sys.path[0] is not the current folder
    boot = "import sys; from calltape.cli import main; sys.path[0] = '/nonexistent'; " \
           "sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", boot, "run", "--tape", str(tmp_path / "t.db"),
                           "-m", "mypkg"], cwd=tmp_path / "real", env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hi x"
    _, calls = calls_by_name(tmp_path / "t.db")
    assert calls["hello"][0].args == {"name": "x"}
    calltape_run(tmp_path, ["link/p.py"], tape="s.db")
    _, calls = calls_by_name(tmp_path / "s.db")
    assert calls["f"][0].args == {"a": 1}


def test_ctrl_c_runs_exit_handlers_and_shows_the_traceback(tmp_path):
    write(tmp_path, {"prog.py": """
        import atexit, time
        atexit.register(lambda: print("user atexit ran", flush=True))
        def wait_here():
            print("ready", flush=True)
            while True:
                time.sleep(0.05)
        wait_here()
    """})
    proc = interrupt_when_ready(tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT
    assert "user atexit ran" in out
    assert "in wait_here" in err and "KeyboardInterrupt" in err


def _abandoned():
    yield 1
    yield 2


def test_abandoned_generators_are_closed_when_freed_not_at_stop(tape):
    here = os.path.dirname(os.path.abspath(__file__))
    with calltape.monitor(paths=[here]):
        for _ in range(500):
            g = _abandoned()
            next(g)
            del g  # freed suspended: recorded now, its frame not kept
        calltape.flush(timeout=30)
        closed = [c for c in calltape.open(tape).calls() if c.qualname == "_abandoned"]
        assert len(closed) == 500 and {c.outcome for c in closed} == {"closed"}
