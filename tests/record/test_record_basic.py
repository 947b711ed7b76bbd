"""The issue's example and the basic shape of a recorded call, sessions, stats,
configuration and the reader's entry points."""

import datetime
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import threading
import time

import pytest
from _util import UTC, child_env, last_json, only_call, read_calls, run_python, to_utc

import calltape


@calltape.record
def rec_alpha(x):
    return x + 1


@calltape.record
def rec_beta(x):
    return x * 2


def test_issue_example(tape):
    @calltape.record
    def price(qty: int, unit: float, currency: str = "EUR", *, discount=0.0):
        return qty * unit * (1 - discount)

    before = datetime.datetime.now(UTC)
    value = price(3, 9.5, discount=0.1)
    after = datetime.datetime.now(UTC)
    assert value == 3 * 9.5 * (1 - 0.1)

    c = only_call(tape)
    assert c.qualname == price.__qualname__
    assert c.function == c.qualname
    assert c.module == __name__
    assert c.args == {"qty": 3, "unit": 9.5, "currency": "EUR", "discount": 0.1}
    assert type(c.args["qty"]) is int and type(c.args["unit"]) is float
    assert "currency" in c.defaults
    assert not ({"qty", "unit", "discount"} & set(c.defaults))
    assert c.result == value
    assert c.outcome == "returned"
    assert c.exception is None

    start = to_utc(c.start)
    assert before - datetime.timedelta(seconds=1) <= start <= after + datetime.timedelta(seconds=1)
    assert abs(c.start_ns / 1e9 - start.timestamp()) < 1e-3
    assert isinstance(c.duration, float)
    assert 0 < c.duration < 5
    assert isinstance(c.duration_ns, int) and c.duration_ns > 0
    assert abs(c.duration_ns / 1e9 - c.duration) < 1e-6

    assert c.thread == threading.get_ident()
    assert c.thread_name == threading.current_thread().name
    assert c.session == calltape.stats()["session"]
    assert c.parent is None
    assert c.depth == 0
    assert os.path.realpath(c.file) == os.path.realpath(__file__)
    assert c.line == price.__wrapped__.__code__.co_firstlineno

    tp = calltape.open(tape, trust=True)
    sessions = {s.id: s for s in tp.sessions()}
    assert c.session in sessions
    assert sessions[c.session].pid == os.getpid()
    fns = [f for f in tp.functions() if f.qualname == price.__qualname__]
    assert len(fns) == 1
    assert fns[0].parameters == ["qty", "unit", "currency", "discount"]
    assert fns[0].calls == 1
    assert fns[0].module == __name__


def test_configure_exports_env_and_accepts_str(tmp_path):
    path = tmp_path / "as-str.db"
    calltape.configure(tape=str(path))
    try:
        assert os.environ["CALLTAPE_TAPE"] == str(path)
        assert rec_alpha(41) == 42
        c = only_call(path)
        assert c.args == {"x": 41} and c.result == 42
    finally:
        calltape.flush(timeout=30)


def test_configure_with_a_namer_names_the_tape_at_the_first_call(tmp_path):
    """configure(tape=callable): asked once, when a call first needs the
    tape (not at configure), and what it names is exported like a path."""
    run_python(tmp_path, """
        import calltape, warnings
        asked = []
        def namer():
            asked.append(len(asked))
            return os.path.join(os.getcwd(), f"named-{len(asked)}.db")
        calltape.configure(tape=namer)
        assert asked == [] and "CALLTAPE_TAPE" not in os.environ
        f = calltape.record(lambda x: x)
        f(1), f(2)
        assert asked == [0], asked
        assert os.environ["CALLTAPE_TAPE"] == os.path.join(os.getcwd(), "named-1.db")
        calltape.configure(tape=lambda: 1 / 0)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            assert f(3) == 3 and f(4) == 4      # the calls run, unrecorded
        (msg,) = [str(x.message) for x in w]
        assert "failed (ZeroDivisionError: division by zero)" in msg, msg
        assert "calls are not recorded until it names a tape" in msg
        calltape.configure(tape="after.db")
        f(5)
        assert calltape.flush(timeout=30)
        print([c.args["x"] for c in calltape.open("named-1.db").calls()],
              [c.args["x"] for c in calltape.open("after.db").calls()])
    """)
    assert calltape.open(tmp_path / "named-1.db").functions()[0].calls == 2
    assert [c.args["x"] for c in calltape.open(tmp_path / "after.db").calls()] == [5]
    assert not (tmp_path / "named-2.db").exists()


def test_reconfigure_moves_recording_to_new_tape(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    calltape.configure(tape=a)
    rec_alpha(1)
    rec_beta(1)
    assert calltape.flush(timeout=30)
    calltape.configure(tape=b)
    rec_alpha(2)
    assert calltape.flush(timeout=30)
    ca = calltape.open(a, trust=True).calls()
    cb = calltape.open(b, trust=True).calls()
    assert [(c.qualname, c.args) for c in ca] == [("rec_alpha", {"x": 1}), ("rec_beta", {"x": 1})]
    assert [(c.qualname, c.args) for c in cb] == [("rec_alpha", {"x": 2})]
    fb = calltape.open(b, trust=True).functions()
    assert [f.qualname for f in fb] == ["rec_alpha"]


def test_calls_filter_and_order(tape):
    for i in range(5):
        rec_alpha(i)
        rec_beta(i)
    calls = read_calls(tape)
    assert [(c.qualname, c.args["x"]) for c in calls] == [
        (name, i) for i in range(5) for name in ("rec_alpha", "rec_beta")
    ]
    ids = [c.id for c in calls]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    tp = calltape.open(tape, trust=True)
    only_a = tp.calls(function="rec_alpha")
    assert [c.args["x"] for c in only_a] == list(range(5))
    assert all(c.qualname == "rec_alpha" for c in only_a)
    dotted = tp.calls(function=f"{__name__}.rec_beta")
    assert [c.result for c in dotted] == [i * 2 for i in range(5)]
    assert len(tp.calls(function="no_such_function")) == 0


def test_values_are_captured_at_call_time(tape):
    @calltape.record
    def mutate(items, d):
        items.append("added inside")
        d["inside"] = True
        return items

    items = [1, 2]
    d = {"a": 1}
    out = mutate(items, d)
    items.append("added after")
    c = only_call(tape)
    assert c.args["items"] == [1, 2]
    assert c.args["d"] == {"a": 1}
    # the result is encoded when the call returns, before the later mutation
    assert c.result == [1, 2, "added inside"]
    assert out is items


def test_flush_and_stats_counters(tape):
    before = calltape.stats()
    for key in ("recorded", "written", "dropped", "unencodable", "pickled", "redacted",
                "truncated", "write_errors", "writer_cpu_ns", "session"):
        assert key in before, key
    for i in range(250):
        rec_alpha(i)
    assert calltape.flush(timeout=30) is True
    after = calltape.stats()
    assert after["recorded"] - before["recorded"] == 250
    assert after["written"] - before["written"] >= 250
    assert after["dropped"] == before["dropped"]
    assert after["write_errors"] == before["write_errors"]
    assert isinstance(after["session"], int) and after["session"] > 0
    # the writer thread's CPU: some, and a part of this process's
    assert 0 < after["writer_cpu_ns"] <= time.process_time_ns()
    assert after["writer_cpu_ns"] >= before["writer_cpu_ns"]
    assert len(read_calls(tape)) == 250


def test_open_missing_or_invalid_tape_raises_tape_error(tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(calltape.TapeError):
        calltape.open(missing)
    assert not missing.exists(), "opening a tape for reading must not create it"

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an sqlite database\n" * 100)
    with pytest.raises(calltape.TapeError):
        calltape.open(garbage)
    assert garbage.read_bytes() == b"this is not an sqlite database\n" * 100

    with pytest.raises(calltape.TapeError):
        calltape.open(tmp_path)


def test_default_tape_is_calltape_db_in_cwd(tmp_path):
    run_python(tmp_path, """
        import calltape
        @calltape.record
        def f(x):
            return x * 3
        assert f(5) == 15
    """, tape=None)
    path = tmp_path / "calltape.db"
    assert path.exists()
    c = only_call(path)
    assert c.args == {"x": 5} and c.result == 15


def test_env_var_selects_tape_and_configure_overrides_it(tmp_path):
    env_tape = tmp_path / "from-env.db"
    conf_tape = tmp_path / "from-configure.db"
    proc = run_python(tmp_path, f"""
        import calltape
        @calltape.record
        def f(x):
            return x
        f(1)
        calltape.flush()
        calltape.configure(tape={str(conf_tape)!r})
        print(os.environ["CALLTAPE_TAPE"])
        f(2)
    """, tape=env_tape)
    assert proc.stdout.strip().splitlines()[-1] == str(conf_tape)
    assert [c.args["x"] for c in calltape.open(env_tape, trust=True).calls()] == [1]
    assert [c.args["x"] for c in calltape.open(conf_tape, trust=True).calls()] == [2]


def test_session_row_describes_the_process(tmp_path):
    path = tmp_path / "s.db"
    proc = run_python(tmp_path, """
        import json, threading, calltape
        @calltape.record
        def f(x):
            return 1
        for _ in range(3):
            f(threading.Lock())
        print(json.dumps({"pid": os.getpid()}))
    """, tape=path, args=("alpha", "beta"))
    child_pid = last_json(proc)["pid"]
    tp = calltape.open(path, trust=True)
    sessions = tp.sessions()
    assert len(sessions) == 1
    s = sessions[0]
    assert s.pid == child_pid
    assert s.ppid == os.getpid()
    assert s.parent is None
    assert s.host == socket.gethostname()
    assert "alpha" in s.argv and "beta" in s.argv
    assert platform.python_version() in s.python
    assert s.version == importlib.metadata.version("calltape")
    start = to_utc(s.start)
    now = datetime.datetime.now(UTC)
    assert now - datetime.timedelta(minutes=2) < start <= now + datetime.timedelta(seconds=5)
    assert s.counters.get("unencodable", 0) >= 3
    calls = tp.calls()
    assert len(calls) == 3 and all(c.session == s.id for c in calls)


def test_child_env_helper_isolated(tmp_path):
    # guards the other subprocess tests: the child gets exactly the tape we name
    env = child_env(tmp_path / "x.db")
    assert env["CALLTAPE_TAPE"] == str(tmp_path / "x.db")
    assert "CALLTAPE_TAPE" not in child_env(None)


def test_many_tapes_one_after_another_in_one_process(tmp_path):
    """A process that moves to a new tape again and again (one per test, one
    per day...) keeps recording onto each of them."""
    proc = run_python(tmp_path, """
        import json, calltape
        @calltape.record
        def f(x):
            return x
        flushed = []
        for i in range(100):
            calltape.configure(tape=os.path.join(sys.argv[1], f"t{i}.db"))
            f(i)
            flushed.append(calltape.flush(timeout=10))
        print(json.dumps({"flushed": all(flushed)}))
    """, tape=None, args=(str(tmp_path),))
    assert last_json(proc) == {"flushed": True}
    for i in range(100):
        path = tmp_path / f"t{i}.db"
        assert path.exists(), f"tape {i} was never written"
        assert [c.args["x"] for c in calltape.open(path, trust=True).calls()] == [i]


def test_thread_known_on_every_one_of_many_tapes(tmp_path):
    """Each tape gets the thread's description, however many tapes came before."""
    proc = subprocess.run([sys.executable, "-c", f"""
import threading, calltape
f = calltape.record(lambda x: x)
for k in range(70):
    calltape.configure(tape=r"{tmp_path}/t%d.db" % k)
    f(k)
calltape.flush()
for k in range(70):
    (c,) = calltape.open(r"{tmp_path}/t%d.db" % k).calls()
    assert c.thread == threading.get_ident(), (k, c.thread)
    assert c.thread_name == "MainThread"
"""], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_value_counters_are_exact_per_tape_when_sent_in_batches(tmp_path):
    """Counters (here: unencodable values) are sent with calls at most every
    few milliseconds, not with each: each tape's session still counts exactly
    the values of the calls on it, across a tape switch and at exit."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    run_python(tmp_path, f"""
        import threading, calltape
        @calltape.record
        def hold(lock, n):
            return n
        lock = threading.Lock()
        for i in range(2500):
            hold(lock, i)
        calltape.configure(tape={str(b)!r})
        for i in range(1500):
            hold(lock, i)
    """, tape=a)
    for path, n in ((a, 2500), (b, 1500)):
        tp = calltape.open(path)
        (s,) = tp.sessions()
        assert len(tp.calls("hold")) == n
        assert s.counters.get("unencodable") == n, (path.name, s.counters)
