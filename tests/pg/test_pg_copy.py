"""``calltape copy SRC DST`` and ``calltape.copy``: a tape copied between
stores (file to server, server to file, file to file) answers every reading
as the original does, into an empty tape or one holding other recordings
(call ids stay unique there), and its errors are one sentence each.

The file-to-file tests need no server; the others use conftest.py's."""

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import PASSWORD

import calltape
from calltape.probes import TapeStore

PROGRAM = textwrap.dedent("""
    import calltape, sys, threading
    from calltape import _native

    @calltape.record
    def leaf(i):
        if i % 7 == 3:
            raise ValueError(i)
        return i * 2

    @calltape.record
    def middle(i):
        total = 0
        for j in range(3):
            try:
                total += leaf(i + j)
            except ValueError:
                pass
        return total

    @calltape.record
    def big(data):
        return len(data)

    @calltape.record
    def main(n):
        big(b"x" * 50_000)
        return sum(middle(i) for i in range(n))

    main(int(sys.argv[1]))
    with _native.Context("t.py::one"):
        t = threading.Thread(target=main, args=(3,), name="worker")
        t.start()
        t.join()
    assert calltape.flush(timeout=30)
""")


def record(tape, tmp_path, n):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    env = dict(os.environ, CALLTAPE_TAPE=str(tape))
    out = subprocess.run([sys.executable, str(script), str(n)], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "Warning" not in out.stderr, out.stderr


def cli(*args):
    return subprocess.run([sys.executable, "-m", "calltape", *args], capture_output=True,
                          text=True, timeout=120)


def dump(tape, sessions=None):
    """Everything the reader answers about `sessions` (default: all), without
    the tape's own ids: sessions by start, calls with their parents by
    content, functions' aggregates, threads and tests' spans."""
    rows = sorted((s for s in tape.sessions() if sessions is None or s.id in sessions),
                  key=lambda s: (s.start, s.pid))
    index = {s.id: i for i, s in enumerate(rows)}
    calls = [c for c in tape.calls() if c.session in index]
    by_id = {c.id: c for c in calls}
    assert len(by_id) == len(calls)

    def key(c):
        return (c.qualname, c.start_ns, c.duration_ns, c.thread)

    out_calls = sorted(
        (index[c.session], *key(c), c.depth, c.outcome, c.thread_name, c.test, repr(c.args),
         repr(c.result), repr(c.exception), key(by_id[c.parent]) if c.parent else None,
         sorted(key(k) for k in c.children()))
        for c in calls)
    ids = list(index)
    fns = sorted((f.qualname, f.calls, f.raised, f.total, f.self_time, f.min, f.max)
                 for f in tape.functions(session=ids)) if ids else []
    return {
        "sessions": [(s.pid, s.ppid, s.host, s.argv, s.python, s.version, s.start, s.end,
                      s.counters, s.cwd, s.sys_path0, s.mpi_rank) for s in rows],
        "calls": out_calls,
        "functions": fns,
        "threads": sorted((index[t["session"]], t["name"]) for t in tape.threads()
                          if t["session"] in index),
        "tests": [(r["test"], index[r["session"]], r["start"], r["end"])
                  for r in tape.tests(session=ids)] if ids else [],
    }


def check_lookups(tape):
    """Every call is found by its id, and its children by their parent."""
    for c in tape.calls():
        assert tape.call(c.id).start_ns == c.start_ns


def test_copy_file_to_server_and_back(pg_url, tmp_path):
    src, back = tmp_path / "src.db", tmp_path / "back.db"
    record(src, tmp_path, 30)
    record(src, tmp_path, 5)
    TapeStore(str(src))["cart"] = {"target": "os.getcwd",
                                   "instrument": {"type": "count", "value": "1"}}
    TapeStore(str(src)).mark("cart", "host:1", {"error": None})
    out = cli("copy", str(src), pg_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("calltape: copied 2 sessions (")
    assert PASSWORD not in out.stdout + out.stderr and ":***@" in out.stdout
    out = cli("copy", pg_url, str(back))
    assert out.returncode == 0, out.stderr
    with calltape.open(str(src), trust=True) as a:
        expected = dump(a)
        n = len(a.calls())
    assert f"({n:,} calls)" in out.stdout
    assert expected["calls"] and expected["tests"] and len(expected["threads"]) == 4
    for copy in (pg_url, str(back)):
        with calltape.open(copy, trust=True) as b:
            assert dump(b) == expected
            check_lookups(b)
        assert TapeStore(copy)["cart"]["applied"] == {"host:1": {"error": None}}
    for args in (["functions"], ["functions", "--sort", "self"],
                 ["search", "--function", "leaf", "--outcome", "raised", "--limit", "500"],
                 ["search", "--test", "t.py::one", "--limit", "500"]):
        first = cli(args[0], str(src), *args[1:])
        for copy in (pg_url, str(back)):
            again = cli(args[0], copy, *args[1:])
            assert again.returncode == first.returncode == 0, again.stderr
            if args[0] == "functions":
                assert again.stdout == first.stdout
            else:  # the call ids differ; the lines do not otherwise
                assert len(again.stdout.splitlines()) == len(first.stdout.splitlines())


@pytest.mark.parametrize("store", ["sqlite", "pg"])
def test_copy_into_a_tape_holding_other_calls(store, pg_url, tmp_path):
    src = tmp_path / "src.db"
    dst = str(tmp_path / "dst.db") if store == "sqlite" else pg_url
    record(src, tmp_path, 20)
    record(dst, tmp_path, 8)
    with calltape.open(dst, trust=True) as d:
        before = dump(d)
        own = {s.id for s in d.sessions()}
        own_ids = {c.id for c in d.calls()}
    sessions, calls = calltape.copy(src, dst)
    sessions2, calls2 = calltape.copy(src, dst)  # twice: two more sessions
    assert sessions == sessions2 == 1 and calls == calls2 > 0
    with calltape.open(str(src), trust=True) as a:
        expected = dump(a)
    with calltape.open(dst, trust=True) as d:
        every = d.calls()
        ids = [c.id for c in every]
        assert len(set(ids)) == len(ids) == len(own_ids) + 2 * calls
        assert own_ids <= set(ids)
        assert dump(d, own) == before
        new = sorted(s.id for s in d.sessions() if s.id not in own)
        assert len(new) == 2
        for s in new:
            assert dump(d, {s}) == expected
        check_lookups(d)
        leaf = next(f for f in d.functions() if f.qualname == "leaf")
        assert leaf.calls == 3 * (8 + 3) + 2 * 3 * (20 + 3)


def test_copy_file_to_file_and_errors(tmp_path):
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    record(src, tmp_path, 4)
    out = cli("copy", str(src), str(dst), "--json")
    assert out.returncode == 0, out.stderr
    with calltape.open(str(src), trust=True) as a, calltape.open(str(dst), trust=True) as b:
        assert dump(a) == dump(b)
        assert f'{{"sessions": 1, "calls": {len(a.calls())}}}' == out.stdout.strip()
    cases = [
        ((str(tmp_path / "missing.db"), str(dst)), "no tape at"),
        ((str(src), str(src)), "the source and the destination are the same tape"),
        ((str(src), str(tmp_path / "." / "src.db")), "the same tape"),
        ((str(src), f"postgresql://bob:{PASSWORD}@127.0.0.1:1/calls"),
         "cannot connect to the PostgreSQL tape postgresql://bob:***@127.0.0.1:1/calls"),
        ((str(src), str(tmp_path / "no" / "such" / "dir.db")), str(tmp_path / "no")),
    ]
    for (a, b), said in cases:
        out = cli("copy", a, b)
        assert out.returncode == 2, out.stdout
        assert said in out.stderr and "Traceback" not in out.stderr
        assert PASSWORD not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(calltape.TapeError, match="same tape"):
        calltape.copy(src, src)
    out = cli("copy", str(src))
    assert out.returncode == 2 and "DST" in out.stderr
