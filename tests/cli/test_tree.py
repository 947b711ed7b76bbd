"""`calltape tree`: the recorded calls as an indented tree, as a user runs the
command (the venv's console script, in a subprocess) on tapes that real
programs recorded: nested calls, --depth and --min-duration folding, --limit,
a CALL_ID's subtree, asyncio.gather children under the awaiting call, a
thread pool (its calls are roots of their thread: what the tape knows),
--json, the session selection, and tapes older than the children index.
"""

import json
import os
import sqlite3
import subprocess
import sys
import sysconfig
import textwrap

import pytest

import calltape
from calltape.cli import format_duration

CALLTAPE = os.path.join(sysconfig.get_path("scripts"), "calltape")

NESTED = """
import calltape

@calltape.record
def leaf(x):
    return x * 2

@calltape.record
def mid(x):
    return leaf(x) + leaf(x + 1)

@calltape.record
def bad(key):
    raise KeyError(key)

@calltape.record
def main(n):
    for i in range(n):
        mid(i)
    try:
        bad("k")
    except KeyError:
        pass
    return n

main(3)
calltape.flush()
"""


def record(tmp_path, source, name="prog.py"):
    """Runs `source` as a script recording onto tmp_path/t.db; returns the tape's path."""
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    tape = tmp_path / "t.db"
    env = dict(os.environ, CALLTAPE_TAPE=str(tape))
    subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=120,
                   cwd=tmp_path)
    return tape


def tree(tape, *args, status=0, encoding="utf-8"):
    """`calltape tree TAPE ARGS`: (stdout lines, stderr)."""
    env = dict(os.environ, PYTHONIOENCODING=encoding)
    env.pop("CALLTAPE_TAPE", None)
    p = subprocess.run([CALLTAPE, "tree", str(tape), *args], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == status, p.stderr
    return p.stdout.splitlines(), p.stderr


def shape(lines):
    """Each line as (its tree prefix, the function's name): durations dropped."""
    out = []
    for line in lines:
        if line.startswith("session "):
            continue
        i = 0
        while i < len(line) and line[i] in " │├└─":
            i += 1
        rest = line[i:]
        if rest.startswith("…") or " calls under " in rest or " call under " in rest:
            out.append((line[:i], rest))
            continue
        _, _, call = rest.partition("  ")
        out.append((line[:i], call))
    return out


def test_nested_calls_print_as_a_tree_oldest_first(tmp_path):
    tape = record(tmp_path, NESTED)
    lines, err = tree(tape)
    assert err == ""
    assert lines[0].startswith("session ") and "prog.py" in lines[0]
    assert shape(lines) == [
        ("", "__main__.main(3)"),
        ("├─ ", "__main__.mid(0)"),
        ("│  ├─ ", "__main__.leaf(0)"),
        ("│  └─ ", "__main__.leaf(1)"),
        ("├─ ", "__main__.mid(1)"),
        ("│  ├─ ", "__main__.leaf(1)"),
        ("│  └─ ", "__main__.leaf(2)"),
        ("├─ ", "__main__.mid(2)"),
        ("│  ├─ ", "__main__.leaf(2)"),
        ("│  └─ ", "__main__.leaf(3)"),
        ("└─ ", "__main__.bad('k')  [raised]"),
    ]
    main = calltape.open(tape).search(function="main")[0]
    assert lines[1].startswith(format_duration(main.duration) + "  ")


def test_depth_cuts_the_tree_and_says_how_many_calls_it_hides(tmp_path):
    tape = record(tmp_path, NESTED)
    lines, _ = tree(tape, "--depth", "1")
    assert shape(lines) == [("", "__main__.main(3)"), ("└─ ", "… 4 more calls")]
    lines, _ = tree(tape, "--depth", "1", encoding="ascii")  # a terminal without UTF-8
    assert lines[1].endswith("__main__.main(3)") and lines[2] == "`- ... 4 more calls"
    lines, _ = tree(tape, "--depth", "2")
    assert shape(lines) == [
        ("", "__main__.main(3)"),
        ("├─ ", "__main__.mid(0)"),
        ("│  └─ ", "… 2 more calls"),
        ("├─ ", "__main__.mid(1)"),
        ("│  └─ ", "… 2 more calls"),
        ("├─ ", "__main__.mid(2)"),
        ("│  └─ ", "… 2 more calls"),
        ("└─ ", "__main__.bad('k')  [raised]"),
    ]


def test_limit_shows_the_first_calls_of_each_parent_and_counts_the_rest(tmp_path):
    tape = record(tmp_path, """
        import calltape

        @calltape.record
        def leaf(x):
            return x

        @calltape.record
        def main():
            return [leaf(i) for i in range(40)]

        main()
        calltape.flush()
    """)
    lines, _ = tree(tape, "--limit", "3")
    assert shape(lines) == [
        ("", "__main__.main()"),
        ("├─ ", "__main__.leaf(0)"),
        ("├─ ", "__main__.leaf(1)"),
        ("├─ ", "__main__.leaf(2)"),
        ("└─ ", "… 37 more calls"),
    ]
    lines, _ = tree(tape)  # the default limit: 25 under each parent
    assert len(lines) == 1 + 1 + 25 + 1 and lines[-1].endswith("… 15 more calls")


def test_min_duration_folds_the_short_calls_into_one_line_per_parent(tmp_path):
    tape = record(tmp_path, """
        import time
        import calltape

        @calltape.record
        def fast(i):
            return i

        @calltape.record
        def slow():
            time.sleep(0.03)
            return fast(-1)

        @calltape.record
        def main():
            for i in range(5):
                fast(i)
            slow()

        main()
        calltape.flush()
    """)
    lines, _ = tree(tape, "--min-duration", "0.01")
    assert shape(lines) == [
        ("", "__main__.main()"),
        ("├─ ", "__main__.slow()"),
        ("│  └─ ", "1 call under 10.00 ms"),
        ("└─ ", "5 calls under 10.00 ms"),
    ]


def test_a_call_id_shows_that_call_and_the_calls_below_it(tmp_path):
    tape = record(tmp_path, NESTED)
    mid = calltape.open(tape).search(function="mid", order="oldest")[1]
    lines, _ = tree(tape, str(mid.id))
    assert shape(lines) == [
        ("", "__main__.mid(1)"),
        ("├─ ", "__main__.leaf(1)"),
        ("└─ ", "__main__.leaf(2)"),
    ]
    lines, _ = tree(tape, str(mid.id), "--depth", "1")
    assert shape(lines) == [("", "__main__.mid(1)"), ("└─ ", "… 2 more calls")]
    _, err = tree(tape, "999999", status=2)
    assert "no call with id 999999" in err


def test_async_gather_children_appear_under_the_awaiting_call(tmp_path):
    tape = record(tmp_path, """
        import asyncio
        import calltape

        @calltape.record
        def leaf(x):
            return x * 2

        @calltape.record
        async def job(x):
            await asyncio.sleep(0.01 * x)
            return leaf(x)

        @calltape.record
        async def gather_all():
            return await asyncio.gather(job(2), job(1))

        asyncio.run(gather_all())
        calltape.flush()
    """)
    lines, _ = tree(tape)
    assert shape(lines) == [
        ("", "__main__.gather_all()"),
        ("├─ ", "__main__.job(2)"),
        ("│  └─ ", "__main__.leaf(2)"),
        ("└─ ", "__main__.job(1)"),
        ("   └─ ", "__main__.leaf(1)"),
    ]


def test_thread_pool_calls_are_roots_of_their_thread(tmp_path):
    """concurrent.futures does not carry the submitting call along (nor does
    asyncio.to_thread reach the recorder), so a pool's calls are recorded as
    roots of the worker thread, with their own children below them: the tree
    shows them after the call that submitted them, none lost."""
    tape = record(tmp_path, """
        import calltape
        from concurrent.futures import ThreadPoolExecutor

        @calltape.record
        def leaf(x):
            return x

        @calltape.record
        def work(x):
            return leaf(x)

        @calltape.record
        def pool():
            with ThreadPoolExecutor(1) as ex:
                return list(ex.map(work, [1, 2]))

        pool()
        calltape.flush()
    """)
    lines, _ = tree(tape)
    assert shape(lines) == [
        ("", "__main__.pool()"),
        ("", "__main__.work(1)"),
        ("└─ ", "__main__.leaf(1)"),
        ("", "__main__.work(2)"),
        ("└─ ", "__main__.leaf(2)"),
    ]
    t = calltape.open(tape)
    pool = t.search(function="pool")[0]
    works = t.search(function="work", order="oldest")
    assert pool.children() == [] and {w.parent for w in works} == {None}
    assert {w.thread for w in works} != {pool.thread}
    assert [c.qualname for c in works[0].children()] == ["leaf"]


def test_json_holds_the_tree(tmp_path):
    tape = record(tmp_path, NESTED)
    lines, _ = tree(tape, "--json", "--depth", "2")
    (session,) = json.loads("\n".join(lines))
    assert session["session"] == calltape.open(tape).sessions()[0].id
    assert "prog.py" in session["argv"]
    (main,) = session["children"]
    assert (main["qualname"], main["preview"], main["outcome"]) == ("main", "3", "returned")
    assert [c["qualname"] for c in main["children"]] == ["mid", "mid", "mid", "bad"]
    assert [c["more"] for c in main["children"]] == [2, 2, 2, 0]
    assert main["children"][3]["outcome"] == "raised"
    assert all(c["children"] == [] for c in main["children"])
    assert isinstance(main["duration"], float) and main["more"] == main["short"] == 0


def test_sessions_are_chosen_and_the_choice_is_said(tmp_path):
    record(tmp_path, NESTED)
    tape = record(tmp_path, """
        import calltape

        @calltape.record
        def second():
            return 2

        second()
        calltape.flush()
    """, name="two.py")
    first, last = sorted(s.id for s in calltape.open(tape).sessions())
    lines, err = tree(tape)
    assert err.strip() == (f"calltape: showing session {last}, the last of 2 runs;"
                           " pick one with --session ID or --last")
    assert shape(lines) == [("", "__main__.second()")]
    lines, err = tree(tape, "--last")
    assert err == "" and shape(lines) == [("", "__main__.second()")]
    lines, err = tree(tape, "--session", str(first), "--depth", "1")
    assert err == "" and shape(lines) == [("", "__main__.main(3)"), ("└─ ", "… 4 more calls")]
    _, err = tree(tape, "--session", "99", status=2)
    assert "no session 99" in err


def test_last_takes_the_sessions_of_child_processes_along(tmp_path):
    tape = record(tmp_path, """
        import multiprocessing as mp
        import calltape

        @calltape.record
        def child(x):
            return x

        def run_child():
            child(7)
            calltape.flush()

        @calltape.record
        def parent():
            p = mp.get_context("spawn").Process(target=run_child)
            p.start()
            p.join()
            return p.exitcode

        if __name__ == "__main__":
            parent()
            calltape.flush()
    """)
    sessions = calltape.open(tape).sessions()
    assert len(sessions) == 2
    for args in [["--last"], []]:  # the last run: the parent process and its child
        lines, err = tree(tape, *args)
        assert err == ""
        assert [ln.split(":")[0] for ln in lines if ln.startswith("session ")] == [
            f"session {s.id}" for s in sorted(sessions, key=lambda s: s.parent or 0)]
        assert [name for _, name in shape(lines)] == ["__main__.parent()",
                                                      "__main__.child(7)"]


def test_a_tape_older_than_the_children_index_is_read_the_slow_way(tmp_path):
    """Schema 3 tapes have no children index: the tree finds children by the
    session and the parent's time window.  A recording upgrades the tape; its
    older segments are still found that way, the newer ones by the index."""
    tape = record(tmp_path, NESTED)
    expected, _ = tree(tape, "--depth", "2")
    with sqlite3.connect(tape) as con:
        con.execute("DROP TABLE children")
        con.execute("DELETE FROM meta WHERE key = 'children_from'")
        con.execute("ALTER TABLE functions DROP COLUMN self_ns")  # the rest of format 4
        con.execute("DROP TABLE function_sessions")
        con.execute("DROP TABLE contexts")  # format 5
        con.execute("PRAGMA user_version = 3")
    lines, _ = tree(tape, "--depth", "2")
    assert lines == expected
    record(tmp_path, NESTED, name="again.py")  # upgrades the tape to the index
    with sqlite3.connect(tape) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 6
    old, new = sorted(s.id for s in calltape.open(tape).sessions())
    lines, _ = tree(tape, "--session", str(old), "--depth", "2")
    assert lines[1:] == expected[1:]
    lines, _ = tree(tape, "--session", str(new), "--depth", "2")
    assert shape(lines) == shape(expected)


@pytest.mark.parametrize("args", [["--depth", "0"], ["--limit", "0"]])
def test_bad_values_name_the_option(tmp_path, args):
    tape = record(tmp_path, NESTED)
    _, err = tree(tape, *args, status=2)
    assert args[0] in err
