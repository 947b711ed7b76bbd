"""The PostgreSQL store against a real server (conftest.py starts one).

Recording from several processes at once into one database, reading back
through the API and the CLI exactly as from an SQLite file (the same
program recorded onto both stores gives the same answers), sessions
carrying the host name, and the messages of a refused login, a missing
database and a URL's password (never shown).
"""

import datetime
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import PASSWORD, _server_env

import calltape

PROGRAM = textwrap.dedent("""
    import calltape, sys

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
    assert calltape.flush(timeout=30)
""")


def record(tape, tmp_path, n=50, procs=1):
    """Runs PROGRAM in `procs` processes at once onto `tape`."""
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    env = dict(os.environ, CALLTAPE_TAPE=str(tape))
    children = [subprocess.Popen([sys.executable, str(script), str(n)], env=env,
                                 stderr=subprocess.PIPE, text=True) for _ in range(procs)]
    for c in children:
        _, err = c.communicate(timeout=60)
        assert c.returncode == 0, err
        assert "Warning" not in err, err


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "calltape", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def summary(tape):
    """What the reader API answers, in a store-independent form."""
    fns = {f.qualname: (f.calls, f.raised) for f in tape.functions()}
    roots = list(tape.children(session=tape.sessions()[0].id))
    main = roots[0]
    kids = [(c.function, c.args) for c in main.children()]
    raised = sorted(c.args["i"] for c in tape.search("leaf", outcome="raised", order="oldest"))
    newest = [c.args for c in tape.search("middle", limit=3)]
    one = tape.call(main.id)
    big = tape.search("big")[0]
    return {"functions": fns, "roots": [r.function for r in roots], "kids": kids,
            "raised": raised, "newest": newest, "main": (one.args, one.result),
            "big": len(big.args["data"]), "threads": len(tape.threads()),
            "sessions": len(tape.sessions()),
            "session_fns": len(tape.functions(session=tape.last_run()))}


def test_both_stores_answer_alike(pg_url, tmp_path):
    file = tmp_path / "t.db"
    record(file, tmp_path)
    record(pg_url, tmp_path)
    with calltape.open(str(file), trust=True) as a, calltape.open(pg_url, trust=True) as b:
        expected = summary(a)
        assert summary(b) == expected
        assert expected["raised"] and expected["big"] == 50_000
    for args in (["functions"], ["search", "--function", "leaf", "--limit", "3"],
                 ["tree", "--last", "--depth", "2"]):
        on_file, on_pg = cli(args[0], str(file), *args[1:]), cli(args[0], pg_url, *args[1:])
        assert on_pg.returncode == on_file.returncode == 0, on_pg.stderr
        # times differ between the two recordings; the shape does not
        assert len(on_pg.stdout.splitlines()) == len(on_file.stdout.splitlines())
        assert PASSWORD not in on_pg.stdout + on_pg.stderr


def test_concurrent_writers_unique_ids_and_host(pg_url, tmp_path):
    record(pg_url, tmp_path, n=200, procs=4)
    with calltape.open(pg_url) as tape:
        sessions = tape.sessions()
        assert len(sessions) == 4
        assert {s.host for s in sessions} == {socket.gethostname()}
        calls = tape.calls()
        per_process = 1 + 1 + 200 + 600  # main, big, middle, leaf
        assert len(calls) == 4 * per_process
        assert len({c.id for c in calls}) == len(calls)
        assert {f.qualname: f.calls for f in tape.functions()}["leaf"] == 4 * 600
        shown = cli("show", pg_url, str(calls[0].id))
        assert shown.returncode == 0, shown.stderr
        assert calls[0].function in shown.stdout
        assert PASSWORD not in shown.stdout + shown.stderr
        assert PASSWORD not in tape.path and "***" in tape.path and PASSWORD not in repr(tape)


def test_socket_form_and_pgpassword(pg_server, tmp_path):
    db = f"sock{os.getpid()}"
    pg_server.createdb(db)
    record(pg_server.socket_url(db), tmp_path, n=5)
    with calltape.open(pg_server.socket_url(db)) as tape:
        assert len(tape.calls("leaf")) == 15
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    refused = cli("sessions", pg_server.url(db, password=False), env=env)
    assert refused.returncode == 2 and "refused the login" in refused.stderr
    out = cli("sessions", pg_server.url(db, password=False), env=dict(env, PGPASSWORD=PASSWORD))
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    assert PASSWORD not in out.stdout + out.stderr


def test_run_command_onto_a_server(pg_url, tmp_path):
    script = tmp_path / "app.py"
    script.write_text("def work(x):\n    return x + 1\n\nfor i in range(5):\n    work(i)\n")
    out = cli("run", "--tape", pg_url, str(script))
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    with calltape.open(pg_url) as tape:
        assert len(tape.calls("work")) == 5
    fresh = cli("run", "--fresh", "--tape", pg_url, str(script))
    assert fresh.returncode != 0 and "a PostgreSQL tape is kept" in fresh.stderr


def test_refused_login_missing_database_and_redaction(pg_server):
    wrong = f"postgresql://calltape:wrong-{PASSWORD}@127.0.0.1:{pg_server.port}/postgres"
    with pytest.raises(calltape.TapeError) as info:
        calltape.open(wrong)
    msg = str(info.value)
    assert "the server refused the login of user calltape" in msg
    assert PASSWORD not in msg and "postgresql://calltape:***@127.0.0.1" in msg
    with pytest.raises(calltape.TapeError, match="the database nosuchdb does not exist"):
        calltape.open(pg_server.url("nosuchdb"))
    out = cli("functions", pg_server.url("nosuchdb"))
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert PASSWORD not in out.stderr
    with pytest.raises(calltape.TapeError, match="holds no calltape tables"):
        calltape.open(pg_server.url("postgres"))


RESTARTED = textwrap.dedent("""
    import calltape, os, sys, time

    @calltape.record
    def step(i):
        return i

    for i in range(100):
        step(i)
    assert calltape.flush(timeout=30)
    open(sys.argv[1] + ".1", "w").close()
    while not os.path.exists(sys.argv[1] + ".2"):
        time.sleep(0.05)
    for i in range(100, 200):
        step(i)
    calltape.flush(timeout=30)  # False when a round failed during the restart
""")


def test_server_restart_while_recording(pg_server, pg_url, tmp_path):
    script = tmp_path / "restarted.py"
    script.write_text(RESTARTED)
    mark = str(tmp_path / "mark")
    env = dict(os.environ, CALLTAPE_TAPE=pg_url)
    child = subprocess.Popen([sys.executable, str(script), mark], env=env,
                             stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if os.path.exists(mark + ".1") or child.poll() is not None:
                break
            subprocess.run(["sleep", "0.05"])
        pg_server.restart()  # the child's connection is gone
        open(mark + ".2", "w").close()
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert PASSWORD not in err
    with calltape.open(pg_url) as tape:
        assert sorted(c.args["i"] for c in tape.calls("step")) == list(range(200))


FORKED = textwrap.dedent("""
    import calltape, multiprocessing as mp

    @calltape.record
    def work(i):
        return i

    def child(k):
        for i in range(50):
            work(k * 1000 + i)

    work(-1)
    assert calltape.flush(timeout=30)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=child, args=(k,)) for k in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    work(-2)
    assert calltape.flush(timeout=30)
""")


def test_forked_children_record_onto_the_server(pg_url, tmp_path):
    script = tmp_path / "forked.py"
    script.write_text(FORKED)
    out = subprocess.run([sys.executable, str(script)], env=dict(os.environ, CALLTAPE_TAPE=pg_url),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with calltape.open(pg_url) as tape:
        assert len(tape.sessions()) == 3
        got = sorted(c.args["i"] for c in tape.calls("work"))
        assert got == [-2, -1, *range(1000, 1050), *range(2000, 2050)]


def test_without_libpq_one_sentence(tmp_path):
    env = dict(os.environ, CALLTAPE_LIBPQ=str(tmp_path / "libpq.so.5"))
    out = cli("functions", f"postgresql://bob:{PASSWORD}@127.0.0.1/calls", env=env)
    assert out.returncode == 2
    assert "libpq, PostgreSQL's client library, is not installed" in out.stderr
    assert "apt-get install libpq5" in out.stderr and PASSWORD not in out.stderr


@pytest.mark.parametrize("store", ["sqlite", "pg"])
def test_prune_older_sessions(store, pg_url, tmp_path):
    tape_name = str(tmp_path / "t.db") if store == "sqlite" else pg_url
    record(tape_name, tmp_path, n=10)
    record(tape_name, tmp_path, n=20)
    with calltape.open(tape_name) as tape:
        old, new = sorted(tape.sessions(), key=lambda s: s.id)
        kept = len(tape.calls()) - (1 + 1 + 10 + 30)
    # after the first run ended, before the second started
    cutoff = (old.end + datetime.timedelta(milliseconds=1)).astimezone().isoformat()
    out = cli("prune", tape_name, "--older-than", cutoff)
    assert out.returncode == 0, out.stderr
    assert "pruned 1 session (42 calls)" in out.stdout and PASSWORD not in out.stdout
    with calltape.open(tape_name) as tape:
        assert [s.id for s in tape.sessions()] == [new.id]
        calls = tape.calls()
        assert len(calls) == kept == 1 + 1 + 20 + 60
        fns = {f.qualname: f.calls for f in tape.functions()}
        assert fns["leaf"] == 60 and fns["middle"] == 20
        raised = sum(1 for i in range(20) for j in range(3) if (i + j) % 7 == 3)
        assert len(tape.search("leaf", outcome="raised")) == raised
    assert cli("functions", tape_name).returncode == 0



@pytest.mark.parametrize("store", ["sqlite", "pg"])
def test_prune_keep_sessions(store, pg_url, tmp_path):
    tape_name = str(tmp_path / "t.db") if store == "sqlite" else pg_url
    for n in (10, 20, 5):
        record(tape_name, tmp_path, n=n)
    with calltape.open(tape_name) as tape:
        ids = sorted(s.id for s in tape.sessions())
    out = cli("prune", tape_name, "--keep-sessions", "2")
    assert out.returncode == 0, out.stderr
    assert "pruned 1 session (42 calls)" in out.stdout
    with calltape.open(tape_name) as tape:
        assert sorted(s.id for s in tape.sessions()) == ids[1:]
        fns = {f.qualname: f.calls for f in tape.functions()}
        assert fns["leaf"] == 60 + 15 and fns["middle"] == 20 + 5
    out = cli("prune", tape_name, "--keep-sessions", "2")
    assert out.returncode == 0 and "pruned 0 sessions (0 calls)" in out.stdout
    out = cli("prune", tape_name)
    assert out.returncode == 2
    assert "calltape prune needs --older-than AGE, --keep-sessions N or --max-size" in out.stderr
    assert "Traceback" not in out.stderr


TESTS_PROGRAM = textwrap.dedent("""
    import calltape
    from calltape import _native

    @calltape.record
    def price(q):
        return q

    price(0)
    with _native.Context("t.py::one"):
        price(1)
    with _native.Context("t.py::two"):
        price(2)
    _native.Context("t.py::three").begin()  # never ended: as a process killed in a test
    price(3)
    assert calltape.flush(timeout=30)
""")


def test_tests_on_the_server_and_an_older_schema(pg_server, pg_url, tmp_path):
    """The spans of tests (the pytest plugin's contexts) on PostgreSQL: search(test=),
    Call.test, Tape.tests(); a database of schema 1 (before them) still reads, and
    the next recording upgrades it."""
    script = tmp_path / "tests_prog.py"
    script.write_text(TESTS_PROGRAM)
    env = dict(os.environ, CALLTAPE_TAPE=pg_url)
    subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=60)
    with calltape.open(pg_url) as tape:
        assert [(c.args["q"], c.test) for c in tape.search(order="oldest")] == [
            (0, None), (1, "t.py::one"), (2, "t.py::two"), (3, "t.py::three")]
        assert [c.args["q"] for c in tape.search(test="t.py::two")] == [2]
        assert [c.args["q"] for c in tape.search(test="t.py", order="oldest")] == [1, 2, 3]
        assert [r["end"] is None for r in tape.tests()] == [False, False, True]
    db = pg_url.rsplit("/", 1)[1]
    subprocess.run([os.path.join(pg_server.bindir, "psql"), "-h", pg_server.folder, "-p",
                    str(pg_server.port), "-U", "calltape", "-d", db, "-c",
                    ("DROP TABLE contexts, spec_applied, specs, spec_meta, children,"
                     " calltape_meta; UPDATE calltape_version SET version = 1")],
                   check=True, capture_output=True, env=_server_env(), timeout=60)
    with calltape.open(pg_url) as tape:
        assert len(tape.calls()) == 4 and {c.test for c in tape.calls()} == {None}
        assert tape.tests() == [] and len(tape.search(test="t.py::two")) == 0
    subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=60)
    with calltape.open(pg_url) as tape:
        new = max(s.id for s in tape.sessions())
        assert [(r["test"], r["session"]) for r in tape.tests()] == [
            ("t.py::one", new), ("t.py::two", new), ("t.py::three", new)]


def kids_by_walking(tape):
    """Each parent's children (and each session's roots) from every call's parent."""
    kids = {}
    for c in tape.calls():
        key = c.parent if c.parent is not None else ("roots", c.session)
        kids.setdefault(key, set()).add(c.id)
    return kids


def children_answer(tape, kids):
    """What children() answers for every key of `kids`."""
    return {k: {c.id for c in (tape.children(session=k[1]) if isinstance(k, tuple)
                               else tape.children(k))} for k in kids}


def test_children_come_from_the_index_and_from_before_it(pg_server, pg_url, tmp_path):
    """children() and the roots of a session on a server tape: from the children index
    (schema 4, one row per range of a segment's parents), and for segments written before
    a tape was upgraded to it, by the parent's time window, the same answer either way."""
    record(pg_url, tmp_path, n=120)
    db = pg_url.rsplit("/", 1)[1]
    rows = int(pg_server.sql(db, "SELECT count(*) FROM children"))
    assert rows > 0  # the index, written with the segments
    with calltape.open(pg_url) as tape:
        kids = kids_by_walking(tape)
        assert children_answer(tape, kids) == kids
        assert len(kids) > 100  # main, the middles with leaves, the roots
        main = tape.search("main")[0]
        assert len(main.children()) == 1 + 120
    # the same tape as schema 3 wrote it (no index), upgraded by the next recording
    pg_server.sql(db, "DROP TABLE children, calltape_meta;"
                      " UPDATE calltape_version SET version = 3")
    record(pg_url, tmp_path, n=30)
    assert int(pg_server.sql(db, "SELECT count(*) FROM children")) > 0
    first_indexed = int(pg_server.sql(db, "SELECT value FROM calltape_meta"))
    assert first_indexed > int(pg_server.sql(db, "SELECT min(id) FROM segments"))
    with calltape.open(pg_url) as tape:
        kids = kids_by_walking(tape)
        assert len({c.session for c in tape.calls()}) == 2
        assert children_answer(tape, kids) == kids


def test_probe_specs_on_a_server(pg_url):
    """The tape-backed probe spec store works on PostgreSQL (schema 3) as on a file."""
    from calltape.probes import TapeStore

    store = TapeStore(pg_url)
    store["a"] = {"target": "os.getcwd", "instrument": {"type": "count", "value": "1"}}
    assert list(store.snapshot()) == ["a"]
    v = store._version
    assert v > 0
    store.mark("a", "host:1", {"error": None, "lastmodified": "x"})
    assert store["a"]["applied"] == {"host:1": {"error": None, "lastmodified": "x"}}
    store.snapshot()
    assert store._version == v  # a report does not move the version
    store["a"] = {"target": "os.getpid", "instrument": {"type": "count", "value": "1"}}
    assert store["a"]["applied"] == {} and store["a"]["target"] == "os.getpid"
    del store["a"]
    assert store.snapshot() == {}
    with pytest.raises(KeyError):
        del store["a"]


def test_a_program_whose_server_cannot_be_upgraded_spools_and_exits_cleanly(
        pg_server, pg_url, tmp_path):
    """A server tape the writer cannot migrate (here: a table in the way of schema 4) is
    a server away: the program runs on, its calls go to the spool, named in one warning,
    and it ends normally (no connection is tried once the exit handlers run: libpq's TLS
    library may be gone by then)."""
    record(pg_url, tmp_path, n=5)
    db = pg_url.rsplit("/", 1)[1]
    pg_server.sql(db, "DROP TABLE calltape_meta; UPDATE calltape_version SET version = 3")
    script = tmp_path / "tests_prog.py"
    script.write_text(TESTS_PROGRAM)
    out = subprocess.run([sys.executable, str(script)], env=dict(os.environ, CALLTAPE_TAPE=pg_url),
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("RecordingWarning") == 1 and "spool" in out.stderr, out.stderr
    spools = list(tmp_path.glob("calltape-spool-*.db"))
    assert len(spools) == 1
    with calltape.open(str(spools[0])) as tape:
        assert sorted(c.args["q"] for c in tape.calls()) == [0, 1, 2, 3]
