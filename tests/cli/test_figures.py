"""Honest figures: the CPU time of a call lies inside its wall time, the
memory peak is never below what was seen around the call, and the exit
line of ``calltape run`` counts the functions the tape holds."""

import os
import subprocess
import sys
import time

from _util import child_env, open_tape, write_script

import calltape

# the two clocks read around a call: a CPU reading may exceed the wall
# reading around it by at most their resolutions
RESOLUTION = time.clock_getres(time.CLOCK_THREAD_CPUTIME_ID) + time.clock_getres(
    time.CLOCK_MONOTONIC)


def _calltape_command():
    """The ``calltape`` console script beside this Python, as a user runs it."""
    script = os.path.join(os.path.dirname(sys.executable), "calltape")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "calltape"]


def _cpu_beyond_wall(calls):
    return [(c.cpu_time, c.duration) for c in calls if c.cpu_time > c.duration + RESOLUTION]


def test_cpu_never_exceeds_wall_on_a_thousand_tiny_calls(tape):
    @calltape.record(cpu=True)
    def tiny(x):
        return x

    @calltape.record(cpu=True, memory=True)
    def tiny_with_memory(x):
        return x

    @calltape.record(cpu=True)
    def work(n):
        return sum(range(n))

    for i in range(1000):
        tiny(i)
        tiny_with_memory(i)
        work(10)
    tp = open_tape(tape)
    for name in ("tiny", "tiny_with_memory", "work"):
        calls = tp.calls(f"*.{name}")
        assert len(calls) == 1000
        assert all(c.cpu_time is not None for c in calls)
        assert _cpu_beyond_wall(calls) == [], name


def test_memory_peak_is_at_least_before_and_after(tape):
    @calltape.record(memory=True)
    def tiny(x):
        return x

    @calltape.record(memory=True, result=False)
    def grow(n):
        return b"x" * n

    for i in range(1000):
        tiny(i)
    kept = [grow(1 << 20) for _ in range(20)]
    calls = list(open_tape(tape).calls())
    assert len(calls) == 1020
    low = [c.memory for c in calls
           if c.memory["peak"] < max(c.memory["rss_before"], c.memory["rss_after"])]
    assert low == []
    del kept


def test_memory_of_a_forked_child_is_the_childs(tmp_path):
    """RSS is read from a file opened once per process: a forked child reads
    its own, not the parent's it inherited."""
    path = tmp_path / "t.db"
    script = write_script(tmp_path, """
        import calltape
        @calltape.record(memory=True)
        def where(who):
            return who
        where("parent")               # the parent opens its /proc file
        pid = os.fork()
        if pid == 0:
            big = bytearray(300 << 20)    # touched: resident in the child only
            where("child")
            calltape.flush(timeout=30)
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
    """)
    subprocess.run([sys.executable, str(script)], env=child_env(path), check=True, timeout=120)
    calls = {c.args["who"]: c for c in calltape.open(path).calls("where")}
    child, parent = calls["child"], calls["parent"]
    assert child.memory["rss_before"] >= 300 << 20
    assert parent.memory["rss_before"] < 300 << 20


def test_calltape_run_cpu_and_memory_figures(tmp_path):
    (tmp_path / "prog.py").write_text(
        "def tiny(x):\n    return x\n"
        "def work(n):\n    return sum(range(n))\n"
        "for i in range(1000):\n    tiny(i)\n    work(10)\n")
    for options in (["--cpu"], ["--cpu", "--memory"]):
        path = tmp_path / f"t{len(options)}.db"
        subprocess.run([*_calltape_command(), "run", "--tape", str(path), *options, "prog.py"],
                       cwd=tmp_path, env=child_env(), check=True, capture_output=True,
                       timeout=120)
        tp = calltape.open(path)
        for name in ("tiny", "work"):
            calls = tp.calls(name)
            assert len(calls) == 1000
            assert _cpu_beyond_wall(calls) == [], (options, name)
            if "--memory" in options:
                assert all(c.memory["peak"] >= max(c.memory["rss_before"],
                                                   c.memory["rss_after"]) for c in calls)


def test_exit_line_counts_decorated_functions(tmp_path):
    (tmp_path / "prog.py").write_text(
        "import calltape\n"
        "@calltape.record\n"
        "def decorated(x):\n    return x\n"
        "def plain(x):\n    return decorated(x)\n"
        "for i in range(10):\n    plain(i)\n")
    path = tmp_path / "t.db"
    proc = subprocess.run([*_calltape_command(), "run", "--tape", str(path), "prog.py"],
                          cwd=tmp_path, env=child_env(), check=True, capture_output=True,
                          text=True, timeout=120)
    names = sorted(fn.qualname for fn in calltape.open(path).functions())
    assert names == ["decorated", "plain"]
    assert "recorded 20 calls of 2 functions" in proc.stderr


def test_exit_line_counts_the_functions_of_child_processes(tmp_path):
    (tmp_path / "prog.py").write_text(
        "import os\n"
        "def parent_work(x):\n    return x\n"
        "def child_work(x):\n    return x\n"
        "parent_work(1)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    child_work(2)\n"
        "else:\n"
        "    os.waitpid(pid, 0)\n")
    path = tmp_path / "t.db"
    proc = subprocess.run([*_calltape_command(), "run", "--tape", str(path), "prog.py"],
                          cwd=tmp_path, env=child_env(), check=True, capture_output=True,
                          text=True, timeout=120)
    names = sorted(fn.qualname for fn in calltape.open(path).functions())
    assert names == ["child_work", "parent_work"]
    assert "recorded 2 calls of 2 functions" in proc.stderr.splitlines()[-1], proc.stderr
