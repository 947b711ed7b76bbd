"""The tape file itself: permissions, schema and version, WAL, per-function
aggregates and the content-addressed blob store."""

import os
import sqlite3
import stat
import subprocess
import sys

import pytest
from _util import last_json, read_calls, run_python

import calltape


def ro_connect(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_tape_is_created_owner_only(tape):
    calltape.record(lambda x: x)(1)
    assert calltape.flush(timeout=30)
    assert _mode(tape) == 0o600
    for suffix in ("-wal", "-shm"):
        p = tape.parent / (tape.name + suffix)
        if p.exists():
            assert _mode(p) == 0o600, suffix


def test_tape_is_owner_only_even_with_umask_zero(tmp_path):
    path = tmp_path / "u.db"
    proc = run_python(tmp_path, """
        import json, stat, calltape
        os.umask(0)
        calltape.record(lambda x: x)(1)
        assert calltape.flush(timeout=30)
        tape = os.environ["CALLTAPE_TAPE"]
        modes = {}
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(tape + suffix):
                modes[suffix] = stat.S_IMODE(os.stat(tape + suffix).st_mode)
        print(json.dumps(modes))
    """, tape=path)
    modes = last_json(proc)
    assert modes[""] == 0o600
    assert all(m == 0o600 for m in modes.values()), modes


def test_schema_tables_version_and_wal(tape):
    calltape.record(lambda x: x)(1)
    assert calltape.flush(timeout=30)
    con = ro_connect(tape)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"sessions", "functions", "segments", "blobs", "meta"} <= tables
        assert con.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        rows = con.execute("SELECT * FROM meta").fetchall()
        user_version = con.execute("PRAGMA user_version").fetchone()[0]
    finally:
        con.close()
    # the schema version: a meta row naming a version, or PRAGMA user_version
    versions = []
    for row in rows:
        key = " ".join(str(v) for v in row if isinstance(v, str)).lower()
        if "version" in key:
            for v in row:
                if isinstance(v, int) or (isinstance(v, str) and v.isdigit()):
                    versions.append(int(v))
    if user_version:
        versions.append(user_version)
    assert versions, f"no schema version: meta={rows!r}, user_version={user_version}"
    assert all(v >= 1 for v in versions)
    assert len(set(versions)) == 1, versions


def _function_row(path, qualname):
    con = ro_connect(path)
    con.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in con.execute("SELECT * FROM functions")]
    finally:
        con.close()
    mine = [r for r in rows if qualname in r.values()]
    assert len(mine) == 1, rows
    return mine[0]


def test_function_aggregates_match_the_calls(tape):
    @calltape.record
    def sometimes(x):
        if x % 5 == 0:
            raise ValueError(x)
        return x

    for i in range(37):
        try:
            sometimes(i)
        except ValueError:
            pass
    calls = read_calls(tape)
    assert len(calls) == 37
    row = _function_row(tape, sometimes.__qualname__)
    durations = [c.duration_ns for c in calls]
    assert row["calls"] == 37
    assert row["total_ns"] == sum(durations)
    assert row["min_ns"] == min(durations)
    assert row["max_ns"] == max(durations)

    fns = [f for f in calltape.open(tape, trust=True).functions()
           if f.qualname == sometimes.__qualname__]
    assert len(fns) == 1
    f = fns[0]
    assert f.calls == 37
    assert f.raised == 8            # 0, 5, ..., 35
    assert f.total == pytest.approx(sum(durations) / 1e9, rel=1e-6, abs=1e-9)
    assert f.min == pytest.approx(min(durations) / 1e9, rel=1e-6, abs=1e-9)
    assert f.max == pytest.approx(max(durations) / 1e9, rel=1e-6, abs=1e-9)
    assert f.parameters == ["x"]
    assert f.line == sometimes.__wrapped__.__code__.co_firstlineno
    assert os.path.realpath(f.file) == os.path.realpath(__file__)


def test_aggregates_add_up_across_sessions(tmp_path):
    path = tmp_path / "agg.db"
    src = """
        import calltape
        @calltape.record
        def shared(x):
            return x
        for i in range(100):
            shared(i)
    """
    run_python(tmp_path, src, tape=path, name="same.py")
    run_python(tmp_path, src, tape=path, name="same.py")
    tp = calltape.open(path, trust=True)
    assert len(tp.sessions()) == 2
    fns = [f for f in tp.functions() if f.qualname == "shared"]
    assert len(fns) == 1, "the same function got two rows"
    assert fns[0].calls == 200
    assert _function_row(path, "shared")["calls"] == 200
    assert len(tp.calls(function="shared")) == 200


def test_large_value_stored_once_in_blobs(tape):
    big = os.urandom(100 * 1024)
    other = os.urandom(100 * 1024)

    @calltape.record(max_value_bytes=10 * 1024 * 1024)
    def consume(data, i):
        return i

    for i in range(50):
        consume(big, i)
    calls = read_calls(tape)
    assert len(calls) == 50
    assert all(c.args["data"] == big for c in calls)
    con = ro_connect(tape)
    try:
        assert con.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1
    finally:
        con.close()
    size = sum(os.path.getsize(str(tape) + s) for s in ("", "-wal")
               if os.path.exists(str(tape) + s))
    assert size < 20 * 100 * 1024, f"tape is {size} bytes: the value was not deduplicated"

    for i in range(10):
        consume(other, i)
    calls = read_calls(tape)
    assert [c.args["data"] == other for c in calls[50:]] == [True] * 10
    con = ro_connect(tape)
    try:
        assert con.execute("SELECT count(*) FROM blobs").fetchone()[0] == 2
    finally:
        con.close()


def test_blob_shared_between_processes(tmp_path):
    path = tmp_path / "b.db"
    src = """
        import calltape
        @calltape.record(max_value_bytes=1 << 24)
        def consume(data):
            return len(data)
        consume(bytes(range(256)) * 800)
    """
    run_python(tmp_path, src, tape=path)
    run_python(tmp_path, src, tape=path)
    calls = calltape.open(path, trust=True).calls()
    assert len(calls) == 2
    assert all(c.args["data"] == bytes(range(256)) * 800 for c in calls)
    con = ro_connect(path)
    try:
        assert con.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1
    finally:
        con.close()


def test_reader_does_not_modify_the_tape(tmp_path):
    path = tmp_path / "r.db"
    run_python(tmp_path, "import calltape\ncalltape.record(lambda x: x)(1)\n", tape=path)
    files = {s: path.parent / (path.name + s) for s in ("", "-wal", "-shm", "-journal")}
    before = {s: p.read_bytes() for s, p in files.items() if p.exists()}
    tp = calltape.open(path, trust=True)
    tp.sessions()
    tp.functions()
    assert len(tp.calls()) == 1
    assert path.read_bytes() == before[""]
    assert _mode(path) == 0o600
    for s in ("-wal", "-journal"):
        if s in before:
            assert files[s].read_bytes() == before[s]


def test_older_tape_is_read_as_it_is_and_migrated_by_the_next_recording(tmp_path):
    """A tape of format 1 (without the index on start_max, nor the sessions'
    folders, nor self time and the per-session totals) is read without being
    modified, and upgraded in place by the next process that records onto it,
    keeping its calls; what it did not keep (self time, the old session's total)
    reads None."""
    path = tmp_path / "old.db"
    code = ("import calltape\nf = calltape.record(lambda x: x)\n"
            "[f(i) for i in range(3)]\ncalltape.flush()\n")
    env = dict(os.environ, CALLTAPE_TAPE=str(path))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    with sqlite3.connect(path) as con:
        con.execute("DROP INDEX segments_by_start_max")
        con.execute("ALTER TABLE sessions DROP COLUMN sys_path0")
        con.execute("ALTER TABLE sessions DROP COLUMN cwd")
        con.execute("ALTER TABLE functions DROP COLUMN self_ns")
        con.execute("DROP TABLE function_sessions")
        con.execute("DELETE FROM meta WHERE key = 'children_from'")
        con.commit()
        con.execute("DROP TABLE children")
        con.execute("DROP TABLE contexts")
        con.execute("PRAGMA user_version = 1")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = path.read_bytes()
    old = calltape.open(path)
    assert [c.args["x"] for c in old.search()] == [2, 1, 0]           # newest first
    assert [c.args["x"] for c in old.search(order="oldest", limit=2)] == [0, 1]
    assert [(s.sys_path0, s.cwd) for s in old.sessions()] == [(None, None)]
    [fn] = old.functions()
    assert fn.calls == 3 and fn.total > 0 and fn.self_time is None
    [fn] = old.functions(session=old.last_run())  # from the segments' zone maps
    assert fn.calls == 3 and fn.max > 0 and fn.total is None and fn.self_time is None
    assert fn.mean is None and "mean -" in repr(fn)
    old.close()
    assert path.read_bytes() == before
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60, cwd=tmp_path)
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 6
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "segments_by_start_max" in names
    assert len(calltape.open(path).search()) == 6
    # the children index covers the new segments; the old ones are found by time
    old_session, new_session = sorted(s.id for s in calltape.open(path).sessions())
    for sid in (old_session, new_session):
        assert calltape.open(path).children(session=sid).count() == 3
    # python -c: sys.path[0] is "", the working folder
    newest, oldest = calltape.open(path).sessions()
    assert (newest.sys_path0, newest.cwd) == (str(tmp_path), str(tmp_path))
    assert (oldest.sys_path0, oldest.cwd) == (None, None)
    tape = calltape.open(path)
    [fn] = tape.functions()
    assert fn.calls == 6 and fn.self_time is None  # the old calls' self time is unknown
    [fn] = tape.functions(session=newest.id)
    assert fn.calls == 3 and fn.total > 0 and fn.self_time == fn.total  # no recorded children
    [fn] = tape.functions(session=oldest.id)
    assert fn.calls == 3 and fn.total is None and fn.max > 0
    [fn] = tape.functions(session=[oldest.id, newest.id])
    assert fn.calls == 6 and fn.total is None
