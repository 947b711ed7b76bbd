"""The options of @calltape.record: args, result, cpu, memory, sample, tape,
max_value_bytes (see test_values), and rejection of bad options."""

import mmap
import os
import stat
import subprocess
import sys
import time

import pytest
from _util import child_env, only_call, read_calls

import calltape


def tape_bytes(path):
    data = b""
    for suffix in ("", "-wal"):
        p = path.parent / (path.name + suffix)
        if p.exists():
            data += p.read_bytes()
    return data


def test_bare_and_called_decorator_forms_are_equivalent(tape):
    @calltape.record()
    def a(x):
        return x

    @calltape.record
    def b(x):
        return x

    assert isinstance(a, calltape.Recorder) and isinstance(b, calltape.Recorder)
    a(1)
    b(2)
    calls = read_calls(tape)
    assert [(c.qualname.split(".")[-1], c.args, c.result) for c in calls] == [
        ("a", {"x": 1}, 1), ("b", {"x": 2}, 2)]


def test_args_false_records_no_arguments(tape):
    marker = "ARG-MARKER-" + os.urandom(8).hex()

    @calltape.record(args=False)
    def f(a, b):
        return "result-kept"

    assert f(1, marker) == "result-kept"
    c = only_call(tape)
    assert not c.args
    assert c.result == "result-kept"
    assert marker.encode() not in tape_bytes(tape)


def test_result_false_records_no_result(tape):
    marker = "RESULT-MARKER-" + os.urandom(8).hex()

    @calltape.record(result=False)
    def f(a):
        return marker

    assert f(5) == marker
    c = only_call(tape)
    assert c.args == {"a": 5}
    assert c.result is None
    assert c.outcome == "returned"
    assert marker.encode() not in tape_bytes(tape)


def test_result_false_still_records_exceptions(tape):
    @calltape.record(result=False)
    def f():
        raise KeyError("still recorded")

    with pytest.raises(KeyError):
        f()
    c = only_call(tape)
    assert c.outcome == "raised"
    assert c.exception.type == "builtins.KeyError"


def _spin(seconds):
    """Burns `seconds` of this thread's CPU time (not wall time: a loaded
    machine may give the thread only part of each second)."""
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


def test_cpu_time(tape):
    @calltape.record(cpu=True)
    def busy():
        return _spin(0.05)

    @calltape.record(cpu=True)
    def sleepy():
        time.sleep(0.1)

    @calltape.record
    def plain():
        return 1

    busy()
    sleepy()
    plain()
    c_busy, c_sleepy, c_plain = read_calls(tape)
    assert isinstance(c_busy.cpu_time, float)
    assert 0.02 < c_busy.cpu_time < 1.0
    # thread CPU time, not wall time: a sleeping call uses almost none
    assert isinstance(c_sleepy.cpu_time, float)
    assert 0 <= c_sleepy.cpu_time < 0.05
    assert c_sleepy.duration >= 0.09
    assert c_plain.cpu_time is None


def test_memory(tape):
    @calltape.record(memory=True, result=False)
    def grow(n):
        # fresh pages from the kernel, touched one by one: malloc could hand
        # back pages an earlier test freed but the process still holds
        buf = mmap.mmap(-1, n)
        for i in range(0, n, mmap.PAGESIZE):
            buf[i] = 1
        return buf

    @calltape.record
    def plain():
        return 1

    keep = grow(40 * 1024 * 1024)
    plain()
    c, c_plain = read_calls(tape)
    m = c.memory
    assert isinstance(m, dict)
    assert {"rss_before", "rss_after", "peak"} == set(m)  # all in bytes
    assert all(isinstance(m[k], int) for k in ("rss_before", "rss_after", "peak"))
    assert m["rss_before"] > 1_000_000          # bytes, not KiB or pages
    assert m["rss_after"] - m["rss_before"] >= 30 * 1024 * 1024
    assert m["peak"] >= m["rss_after"] // 2
    assert c_plain.memory is None
    keep.close()


def test_sample_records_one_call_in_n(tape):
    @calltape.record(sample=3)
    def f(x):
        return x * 10

    assert [f(i) for i in range(9)] == [i * 10 for i in range(9)]
    calls = read_calls(tape)
    assert len(calls) == 3
    assert len({c.args["x"] for c in calls}) == 3
    assert all(c.result == c.args["x"] * 10 for c in calls)


def test_sample_one_records_everything(tape):
    @calltape.record(sample=1)
    def f(x):
        return x

    for i in range(9):
        f(i)
    assert [c.args["x"] for c in read_calls(tape)] == list(range(9))


def test_per_function_tape(tape, tmp_path):
    other = tmp_path / "other.db"

    @calltape.record(tape=other)
    def to_other(x):
        return x + 1

    @calltape.record
    def to_default(x):
        return x + 2

    assert to_other(1) == 2
    assert to_default(1) == 3
    assert to_other(2) == 3
    assert calltape.flush(timeout=30)
    on_other = calltape.open(other, trust=True).calls()
    on_default = calltape.open(tape, trust=True).calls()
    assert [(c.qualname.split(".")[-1], c.args["x"]) for c in on_other] == [
        ("to_other", 1), ("to_other", 2)]
    assert [(c.qualname.split(".")[-1], c.args["x"]) for c in on_default] == [("to_default", 1)]
    assert stat.S_IMODE(os.stat(other).st_mode) == 0o600


@pytest.mark.parametrize("kwargs", [
    {"sample": 0},
    {"sample": -2},
    {"max_value_bytes": -1},
    {"no_such_option": True},
])
def test_invalid_options_are_rejected_at_decoration(kwargs):
    with pytest.raises((TypeError, ValueError)):
        @calltape.record(**kwargs)
        def f():
            pass


def test_sanitize_must_be_callable():
    with pytest.raises(TypeError):
        calltape.record(sanitize=42)(lambda: None)



# One set of options: the same bad value gets the same exception and message
# from configure(), @calltape.record, calltape.monitor() and `calltape run`.
SAME_MESSAGE = [
    ("sample", 0, "--sample", "0", ValueError),
    ("sample", "often", None, None, TypeError),
    ("max_value_bytes", 8, "--max-value-bytes", "8", ValueError),
    ("max_depth", -1, "--max-depth", "-1", ValueError),
    ("tape", 42, None, None, TypeError),
]


def _message(call):
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return info.type, str(info.value)


@pytest.mark.parametrize(("option", "value", "flag", "text", "kind"), SAME_MESSAGE)
def test_a_bad_option_gets_one_message_everywhere(tmp_path, option, value, flag, text, kind):
    from calltape import _native

    got = {"monitor": _message(lambda: calltape.monitor(**{option: value})),
           "check_options": _message(lambda: _native.check_options(**{option: value}))}
    if option != "max_depth":  # a monitor option only
        got["record"] = _message(lambda: calltape.record(**{option: value})(lambda: None))
    if option in ("tape", "max_value_bytes"):  # those configure() takes
        got["configure"] = _message(lambda: calltape.configure(**{option: value}))
    assert {kind} == {k for k, _ in got.values()}, got
    messages = {m for _, m in got.values()}
    assert len(messages) == 1, got
    (message,) = messages
    assert option in message
    if flag is not None:
        proc = subprocess.run([sys.executable, "-m", "calltape", "run", flag, text, "prog.py"],
                              cwd=tmp_path, capture_output=True, text=True,
                              env=child_env(tmp_path / "t.db"), timeout=60)
        assert proc.returncode == 2
        assert message in proc.stderr, proc.stderr


def test_default_tape_rule_is_one(tmp_path):
    from calltape import _native

    env = child_env()
    code = ("import calltape, os; from calltape import _native; "
            "print(_native.default_tape()); print(calltape.stats()['tape'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env=env, timeout=60).stdout.split("\n")
    assert out[0] == "calltape.db"
    assert out[1] == str(tmp_path / "calltape.db")
    env["CALLTAPE_TAPE"] = str(tmp_path / "x.db")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env=env, timeout=60).stdout.split("\n")
    assert out[:2] == [str(tmp_path / "x.db")] * 2
    assert _native.default_tape()  # in this process too
