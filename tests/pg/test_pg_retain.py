"""Retention by size on both stores (``calltape prune --max-size``): the oldest
sessions go while the tape is larger, never the newest; an SQLite file gives the
freed pages back; sizes read as one parser (retain.c) reads them.  The SQLite
cases need no server."""

import json
import os
import sqlite3

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
