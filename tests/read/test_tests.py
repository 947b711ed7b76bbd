"""The tests of a tape, read in process: the spans _native.Context writes (as
the pytest plugin does for each test), Call.test and search(test=) on a tape
still being recorded, a Tape kept open across tests, and bad arguments."""

import sqlite3
import threading

import pytest
from _util import open_tape

import calltape
from calltape import _native


@calltape.record
def work(x):
    return x


def test_a_tape_kept_open_sees_later_tests(tape):
    reader = None
    with _native.Context("t.py::first"):
        work(1)
        calltape.flush()
        reader = calltape.open(tape)
        [c1] = reader.search(test="t.py::first")  # its span still open
        assert c1.test == "t.py::first"
    work(2)  # between tests
    with _native.Context("t.py::second"):
        work(3)
    calltape.flush()
    # the same reader: the first span's end and the second span are read now
    calls = {c.args["x"]: c for c in reader.search()}
    assert calls[2].test is None and calls[3].test == "t.py::second"
    assert [c.args["x"] for c in reader.search(test="t.py::first")] == [1]
    assert [r["test"] for r in reader.tests()] == ["t.py::first", "t.py::second"]
    reader.close()
    assert calls[3].test == "t.py::second"  # read before closing: kept
    assert calls[1].test == "t.py::first"


def test_context_spans_and_their_arguments(tape):
    ctx = _native.Context("t.py::paused", kind="test")
    assert (ctx.name, ctx.kind, ctx.open) == ("t.py::paused", "test", False)
    ctx.begin()
    with pytest.raises(RuntimeError, match="open already"):
        ctx.begin()
    work(1)
    ctx.end()
    work(2)  # a fixture of a wider scope, say: outside the test
    ctx.begin()
    work(3)
    ctx.end()
    ctx.end()  # nothing open: nothing done
    t = open_tape(tape)
    assert [c.args["x"] for c in t.search(test="t.py::paused", order="oldest")] == [1, 3]
    [row] = t.tests("t.py::paused")  # its two spans, one test
    assert row["end"] is not None
    with pytest.raises(TypeError, match="node id"):
        t.search(test=3)
    with pytest.raises(TypeError, match="node id"):
        t.tests(3)
    with pytest.raises(ValueError, match="NUL"):
        _native.Context("a\0b")
    with pytest.raises(TypeError, match="monotonic_ns"):
        ctx.end(at="soon")
    assert t.tests(session=[]) == [] and len(t.tests(session=t.last_run())) == 1


def test_threads_share_a_tapes_tests(tape):
    for i in range(50):
        with _native.Context(f"t.py::test_{i}"):
            work(i)
        work(-1)
    t = open_tape(tape)
    calls = list(t.search(limit=None))
    errors = []

    def read():
        try:
            for c in calls:
                want = None if c.args["x"] < 0 else f"t.py::test_{c.args['x']}"
                assert c.test == want
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and len(calls) == 100


def test_damaged_spans_read_as_they_are(tape):
    with _native.Context("t.py::ok"):
        work(1)
    work(2)
    calltape.flush()
    with sqlite3.connect(tape) as con:  # not UTF-8, and ending before it starts
        [sid] = con.execute("SELECT session FROM contexts").fetchone()
        con.execute("INSERT INTO contexts VALUES (?, 99, 'test', CAST(X'ff61' AS TEXT), ?, ?)",
                    (sid, 2**62, 2**61))
    t = calltape.open(tape)
    assert {c.args["x"]: c.test for c in t.search()} == {1: "t.py::ok", 2: None}
    assert [r["test"] for r in t.tests()] == ["t.py::ok", "\ufffda"]
    assert len(t.search(test="*a")) == 0  # the glob matches it; its span holds no time
    assert len(t.search(test="t.py::ok")) == 1
