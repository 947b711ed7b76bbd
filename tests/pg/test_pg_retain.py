"""Retention by size on both stores (``calltape prune --max-size``): the oldest
sessions go while the tape is larger, never the newest; an SQLite file gives the
freed pages back; sizes read as one parser (retain.c) reads them.  The SQLite
cases need no server."""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from test_pg_store import cli, record

import calltape
from calltape import _native


@pytest.fixture(params=["sqlite", "pg"])
def tape_name(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "t.db")
    return request.getfixturevalue("pg_url")


def prune(tape_name, *args):
    out = cli("prune", tape_name, "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_prune_max_size(tape_name, tmp_path):
    for n in (600, 300, 900):
        record(tape_name, tmp_path, n=n)
    with calltape.open(tape_name) as tape:
        ids = sorted(s.id for s in tape.sessions())
    first = prune(tape_name, "--max-size", "1TB")
    assert first["sessions"] == 0 and first["size"] > 0
    size = first["size"]
    gone = prune(tape_name, "--max-size", str(size - 1))
    assert gone["sessions"] >= 1 and gone["size"] < size
    with calltape.open(tape_name) as tape:
        left = sorted(s.id for s in tape.sessions())
        assert left == ids[gone["sessions"]:]  # the oldest went first
        per = {f.qualname: 0 for f in tape.functions()}
        for s in left:
            for f in tape.functions(session=s):
                per[f.qualname] += f.calls
        assert {f.qualname: f.calls for f in tape.functions()} == per
        assert len(tape.calls()) == sum(per.values())
    last = prune(tape_name, "--max-size", "1")
    assert last["sessions"] == len(left) - 1
    with calltape.open(tape_name) as tape:
        assert [s.id for s in tape.sessions()] == [ids[-1]]  # the newest stays
        assert {f.qualname: f.calls for f in tape.functions()}["leaf"] == 3 * 900
    again = prune(tape_name, "--max-size", "1")
    assert again["sessions"] == 0 and again["size"] == last["size"]
    out = cli("prune", tape_name, "--max-size", "1")
    assert "pruned 0 sessions (0 calls) from" in out.stdout and "it holds" in out.stdout


def test_a_file_gives_the_freed_pages_back(tmp_path):
    tape_name = str(tmp_path / "t.db")
    for n in (3000, 3000, 100):
        record(tape_name, tmp_path, n=n)
    db = sqlite3.connect(tape_name)  # open meanwhile, as a reader would be
    assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
    before = os.path.getsize(tape_name)
    prune(tape_name, "--keep-sessions", "1")
    after = os.path.getsize(tape_name)
    db.close()
    assert after < before / 2
    assert cli("functions", tape_name).returncode == 0


def test_size_parsing_and_errors(tmp_path):
    sizes = {"2GB": 2 * 10**9, "500MiB": 500 * 2**20, "1.5 GiB": 3 * 2**29, "4096": 4096,
             "2gb": 2 * 10**9, "10kb": 10_000, "3KiB": 3072, "1TB": 10**12, "7B": 7}
    for text, n in sizes.items():
        assert _native.parse_size(text) == n, text
    for bad in ("5XB", "-1GB", "", "GB", "1.2.3MB", "1e99TB", "2 G B"):
        with pytest.raises(ValueError, match="cannot read the size"):
            _native.parse_size(bad)
    tape_name = str(tmp_path / "t.db")
    record(tape_name, tmp_path, n=3)
    out = cli("prune", tape_name, "--max-size", "lots")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--max-size: cannot read the size 'lots'" in out.stderr
    out = cli("prune", tape_name)
    assert out.returncode == 2
    assert "needs --older-than AGE, --keep-sessions N or --max-size SIZE" in out.stderr


LONG_RUN = textwrap.dedent("""
    import calltape, os, sys, time

    calltape.configure(flush_interval=0.02, retain={"keep_sessions": 1})

    @calltape.record
    def tick(i):
        return i

    tick(-1)
    assert calltape.flush(timeout=30)  # this run's session exists before the others start
    print("ready", flush=True)
    i = 0
    while not os.path.exists(sys.argv[1]):  # the other runs are done
        tick(i)
        i += 1
        time.sleep(0.001)
    deadline = time.time() + 2.5  # two retention rounds (every 50 flush intervals) at least
    while time.time() < deadline:
        tick(i)
        i += 1
        time.sleep(0.001)
    assert calltape.flush(timeout=30)
    print(i)
""")


def test_configure_retain_as_it_goes(tape_name, tmp_path):
    """A long run with retain={"keep_sessions": 1} deletes the runs that ended
    meanwhile at its next rounds, the newest of them kept, its own session spared
    (it is not the newest) and every one of its calls written."""
    record(tape_name, tmp_path, n=5)  # a run before
    (tmp_path / "long.py").write_text(LONG_RUN)
    flag = tmp_path / "done"
    env = dict(os.environ, CALLTAPE_TAPE=tape_name)
    env.pop("CALLTAPE_RETAIN", None)
    long = subprocess.Popen([sys.executable, str(tmp_path / "long.py"), str(flag)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert long.stdout.readline() == "ready\n"  # else a run of 7 could start first
        for n in (7, 9):
            record(tape_name, tmp_path, n=n)
    finally:
        flag.touch()
        out, err = long.communicate(timeout=60)
    assert long.returncode == 0 and "Warning" not in err, err
    with calltape.open(tape_name) as tape:
        sessions = sorted(tape.sessions(), key=lambda s: s.start)
        assert len(sessions) == 2
        assert [s.argv[-1] for s in sessions] == [str(flag), "9"]
        fns = {f.qualname: f.calls for f in tape.functions()}
        assert fns["tick"] == int(out) + 1 and fns["leaf"] == 3 * 9
        assert len(tape.search("tick", limit=None)) == int(out) + 1


def test_retain_from_the_environment_and_run(tape_name, tmp_path):
    for n in (5, 6):
        record(tape_name, tmp_path, n=n)
    script = tmp_path / "one.py"
    script.write_text("import calltape\n@calltape.record\ndef f(x):\n    return x\n"
                      "for i in range(10):\n    f(i)\nassert calltape.flush(timeout=30)\n")
    env = dict(os.environ, CALLTAPE_TAPE=tape_name, CALLTAPE_RETAIN="max_size=1")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "Warning" not in out.stderr, out.stderr
    with calltape.open(tape_name) as tape:  # by size: all but the newest (this run)
        assert [s.argv for s in tape.sessions()] == [[str(script)]]
        assert len(tape.calls()) == 10
    record(tape_name, tmp_path, n=4)
    out = cli("run", "--tape", tape_name, "--retain", "older_than=1w,keep_sessions=1",
              str(script))
    assert out.returncode == 0, out.stderr
    with calltape.open(tape_name) as tape:
        assert [s.argv for s in tape.sessions()] == [[str(script)]]
    out = cli("run", "--tape", tape_name, "--retain", "keep=3", str(script))
    assert out.returncode == 2 and "unknown retention rule keep" in out.stderr
    env["CALLTAPE_RETAIN"] = "max_size=lots"
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    assert "RecordingWarning: CALLTAPE_RETAIN is not applied" in out.stderr
    assert "cannot read the size lots of max_size" in out.stderr
