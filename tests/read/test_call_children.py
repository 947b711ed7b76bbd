"""Tape.children(), Call.children() and Calls.count(): a call's children and a
session's roots through the children index, on a tape a child process
recorded."""

import os
import subprocess
import sys
import textwrap

import pytest

import calltape

PROGRAM = """
import threading, time
import calltape

@calltape.record
def leaf(i):
    if i == 3:
        time.sleep(0.02)
    return i

@calltape.record
def fan(n):
    return [leaf(i) for i in range(n)]

@calltape.record
def main():
    fan(5000)                  # children over several segments and index ranges
    t = threading.Thread(target=fan, args=(2,))
    t.start()
    t.join()
    fan(1)

main()
fan(3)
calltape.flush()
"""


@pytest.fixture(scope="module")
def tape(tmp_path_factory):
    folder = tmp_path_factory.mktemp("children")
    path = folder / "t.db"
    script = folder / "prog.py"
    script.write_text(textwrap.dedent(PROGRAM))
    subprocess.run([sys.executable, str(script)], check=True, timeout=120,
                   env=dict(os.environ, CALLTAPE_TAPE=str(path)))
    with calltape.open(path) as t:
        yield t


def test_a_calls_children_oldest_first_with_limit_and_count(tape):
    main = tape.search(function="main")[0]
    fans = tape.children(main)
    assert [c.preview for c in fans] == ["5000", "1"]  # the thread's fan is not main's
    big = fans[0]
    kids = tape.children(big, limit=4)
    assert [c.args["i"] for c in kids] == [0, 1, 2, 3]
    assert kids.count() == 5000 and len(kids) == 4
    assert [c.id for c in big.children()] == [c.id for c in tape.children(big.id)]
    assert [c.args["i"] for c in big.children()] == list(range(5000))
    assert {c.parent for c in big.children()} == {big.id}
    slow = tape.children(big, min_duration=0.01)
    assert [c.args["i"] for c in slow] == [3] and slow.count() == 1
    assert tape.children(kids[0]).count() == 0 and kids[0].children() == []


def test_a_sessions_roots_and_a_threads_calls(tape):
    (session,) = tape.sessions()
    roots = tape.children(session=session.id)
    assert [(c.qualname, c.preview) for c in roots] == [("main", ""), ("fan", "2"),
                                                        ("fan", "3")]
    assert roots.count() == 3
    threaded = roots[1]
    assert threaded.thread != roots[0].thread and threaded.parent is None
    assert [c.args["i"] for c in threaded.children()] == [0, 1]
    assert tape.children(session=session.id + 1).count() == 0


def test_bad_arguments_say_what_is_wrong(tape):
    with pytest.raises(TypeError, match="a parent .* or a session, not both"):
        tape.children()
    with pytest.raises(TypeError, match="not both"):
        tape.children(1, session=1)
    with pytest.raises(ValueError, match="session must be a session id"):
        tape.children(session=0)
    with pytest.raises(ValueError, match="limit must be"):
        tape.children(session=1, limit=-1)
    with pytest.raises(KeyError):
        tape.children(10**12)
