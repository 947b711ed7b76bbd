"""The spool: while the PostgreSQL server is stopped (pg_ctl stop, for real) a
recording goes on into a local SQLite file, named in one RecordingWarning, and
every call arrives on the server once it is started again (the spool sent there
and removed)."""

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing

import calltape

PROGRAM = textwrap.dedent("""
    import calltape, os, sys, time

    calltape.configure(flush_interval=0.02)

    @calltape.record
    def step(i):
        return i

    mark = sys.argv[1]

    def wait(name):
        while not os.path.exists(mark + name):
            time.sleep(0.01)

    for i in range(100):
        step(i)
    assert calltape.flush(timeout=30)
    open(mark + ".1", "w").close()
    wait(".2")  # the server is stopped
    for i in range(100, 200):
        step(i)
        time.sleep(0.002)
    assert calltape.flush(timeout=30)  # onto the spool: nothing lost
    print(calltape.stats()["dropped"], flush=True)
    open(mark + ".3", "w").close()
    wait(".4")  # the server is back
    for i in range(200, 300):
        step(i)
        time.sleep(0.002)
    assert calltape.flush(timeout=30)
""")


def wait_for(path, child):
    for _ in range(1200):
        if os.path.exists(path) or child.poll() is not None:
            return
        time.sleep(0.05)


def test_outage_spools_and_every_call_arrives(pg_server, pg_url, tmp_path):
    script = tmp_path / "outage.py"
    script.write_text(PROGRAM)
    mark = str(tmp_path / "mark")
    env = dict(os.environ, CALLTAPE_TAPE=pg_url)
    child = subprocess.Popen([sys.executable, str(script), mark], env=env, cwd=str(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(mark + ".1", child)
        pg_server.stop()
        try:
            open(mark + ".2", "w").close()
            wait_for(mark + ".3", child)
            spools = [p for p in os.listdir(tmp_path) if p.startswith("calltape-spool-")]
            assert any(p.endswith(".db") for p in spools), os.listdir(tmp_path)
        finally:
            pg_server.start()
        open(mark + ".4", "w").close()
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert out.strip() == "0"  # no call dropped while the server was away
    assert err.count("RecordingWarning") == 1, err
    assert "cannot be reached: recording goes on into the spool" in err
    assert f"{tmp_path}/calltape-spool-{child.pid}.db" in err
    assert "s3cret-pw" not in err
    assert not [p for p in os.listdir(tmp_path) if p.startswith("calltape-spool-")]
    with calltape.open(pg_url) as tape:
        assert sorted(c.args["i"] for c in tape.calls("step")) == list(range(300))
        ids = [c.id for c in tape.calls()]
        assert len(set(ids)) == len(ids) == 300
        assert len(tape.sessions()) == 3  # before, the spool's, after


ENDS_AWAY = textwrap.dedent("""
    import calltape, sys

    calltape.configure(flush_interval=0.02)

    @calltape.record
    def step(i):
        return i

    step(-1)
    assert calltape.flush(timeout=30)
    open(sys.argv[1], "w").close()
    input()  # the server is stopped
    for i in range(50):
        step(i)
""")


def ends_while_away(pg_server, pg_url, tmp_path):
    """Runs ENDS_AWAY: it records, the server stops, and it ends while spooling (the
    server is started again after).  Returns the child, its stderr and its spool's path."""
    script = tmp_path / "away.py"
    script.write_text(ENDS_AWAY)
    mark = str(tmp_path / "mark")
    env = dict(os.environ, CALLTAPE_TAPE=pg_url)
    child = subprocess.Popen([sys.executable, str(script), mark], env=env, cwd=str(tmp_path),
                             stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(mark, child)
        pg_server.stop()
        try:
            _, err = child.communicate("\n", timeout=60)
        finally:
            pg_server.start()
    finally:
        child.kill()
    assert child.returncode == 0, err
    return child, err, tmp_path / f"calltape-spool-{child.pid}.db"


NEXT_RUN = textwrap.dedent("""
    import calltape, sys

    @calltape.record
    def later(i):
        return i

    for i in range(10):
        later(i)
    assert calltape.flush(timeout=60)
""")


def test_a_program_that_ends_while_spooling_leaves_the_spool(pg_server, pg_url, tmp_path):
    """The spool stays when the program ends before the server is back; the warning's
    calltape copy line sends it."""
    _, err, spool = ends_while_away(pg_server, pg_url, tmp_path)
    env = dict(os.environ, CALLTAPE_TAPE=pg_url)
    assert f"calltape copy {spool} postgresql://calltape:***@" in err
    with calltape.open(str(spool)) as tape:
        assert sorted(c.args["i"] for c in tape.calls()) == list(range(50))
    out = subprocess.run([sys.executable, "-m", "calltape", "copy", str(spool), pg_url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with calltape.open(pg_url) as tape:
        assert sorted(c.args["i"] for c in tape.calls()) == list(range(-1, 50))
    # the spool, sent, is still there (as if its sender had been killed before it removed
    # it): the next recording from this folder sees its sessions on the server and removes
    # it without sending it again
    (tmp_path / "later.py").write_text(NEXT_RUN)
    out = subprocess.run([sys.executable, str(tmp_path / "later.py")], env=env,
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not spool.exists()
    with calltape.open(pg_url) as tape:
        assert sorted(c.args["i"] for c in tape.calls("step")) == list(range(-1, 50))
        assert len(tape.sessions()) == 3


UNDER_LOAD = textwrap.dedent("""
    import calltape, os, sys

    calltape.configure(flush_interval=0.05)

    @calltape.record
    def inner(i, value):
        return len(value)

    @calltape.record
    def outer(i):
        # every 500th call holds a value large enough for the blob store
        return inner(i, b"v%d" % i * (1000 if i % 500 == 0 else 1))

    done = sys.argv[1]
    made = 0
    open(done + ".running", "w").close()
    while not os.path.exists(done):
        outer(made)
        made += 1
    assert calltape.flush(timeout=120)
    print(made, calltape.stats()["dropped"], flush=True)
""")


def test_a_server_killed_under_load_loses_no_call(pg_server, pg_url, tmp_path):
    """The server crashes (pg_ctl stop -m immediate) twice while a program records as fast
    as it can: the rounds it broke in the middle go to the spool, and every call the
    program made is on the server tape once, ids unique, none dropped."""
    db = pg_url.rsplit("/", 1)[1]
    pg_server.sql(db, f"ALTER DATABASE {db} SET synchronous_commit = on")  # commits survive
    script = tmp_path / "load.py"
    script.write_text(UNDER_LOAD)
    done = str(tmp_path / "done")
    env = dict(os.environ, CALLTAPE_TAPE=pg_url)
    child = subprocess.Popen([sys.executable, str(script), done], env=env, cwd=str(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(done + ".running", child)
        for away in (0.4, 1.5):
            time.sleep(0.6)
            pg_server.kill()
            time.sleep(away)
            pg_server.start()
        time.sleep(0.6)
        open(done, "w").close()
        out, err = child.communicate(timeout=180)
    finally:
        child.kill()
    assert child.returncode == 0, err
    made, dropped = map(int, out.split())
    assert made > 1000 and dropped == 0, (made, dropped, err)
    assert "cannot be reached: recording goes on into the spool" in err
    assert not [p for p in os.listdir(tmp_path) if p.startswith("calltape-spool-")]
    with calltape.open(pg_url) as tape:
        outer = sorted(c.args["i"] for c in tape.calls("outer"))
        inner = sorted(c.args["i"] for c in tape.calls("inner"))
        assert outer == inner == list(range(made))
        ids = [c.id for c in tape.calls()]
        assert len(set(ids)) == len(ids) == 2 * made
        big = next(c for c in tape.calls("inner") if c.args["i"] == 500)
        assert big.args["value"] == b"v500" * 1000


def own_start_time() -> str:
    """This process's start time as /proc/PID/stat's 22nd field gives it."""
    with open(f"/proc/{os.getpid()}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def test_a_spool_left_behind_is_sent_by_the_next_recording(pg_server, pg_url, tmp_path):
    """A program ends while the server is away: its spool stays, saying which tape it
    belongs to (never the password) and who made it.  Three programs that record onto the
    same tape from the same folder start at once once the server is back: one of them
    sends the spool, so every call arrives once; a spool whose owner still runs stays."""
    child, err, spool = ends_while_away(pg_server, pg_url, tmp_path)
    env = dict(os.environ, CALLTAPE_TAPE=pg_url)
    with closing(sqlite3.connect(spool)) as db:
        notes = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'note:%'"))
    assert notes["note:tape"] == pg_url.replace("s3cret-pw", "***")
    assert notes["note:pid"] == str(child.pid)
    assert not any("s3cret-pw" in str(v) for v in notes.values())
    # the same spool, as if this test's own (running) process had made it
    alive = tmp_path / f"calltape-spool-{os.getpid()}.db"
    shutil.copy(spool, alive)
    with closing(sqlite3.connect(alive)) as db, db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'note:pid'", (str(os.getpid()),))
        db.execute("UPDATE meta SET value = ? WHERE key = 'note:pid_start'",
                   (own_start_time(),))
    (tmp_path / "later.py").write_text(NEXT_RUN)
    runs = [subprocess.Popen([sys.executable, str(tmp_path / "later.py")], env=env,
                             cwd=str(tmp_path), stderr=subprocess.PIPE, text=True)
            for _ in range(3)]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert "cannot send" not in err
    assert not spool.exists()
    assert alive.exists()  # its owner runs: not touched
    with calltape.open(pg_url) as tape:
        assert sorted(c.args["i"] for c in tape.calls("step")) == list(range(-1, 50))
        assert sorted(c.args["i"] for c in tape.calls("later")) == sorted(list(range(10)) * 3)
        ids = [c.id for c in tape.calls()]
        assert len(set(ids)) == len(ids) == 81


COMMIT_FAILS = textwrap.dedent("""
    import calltape, sys

    calltape.configure(flush_interval=0.02)

    @calltape.record
    def step(i):
        return i

    for i in range(100):
        step(i)
    assert calltape.flush(timeout=30)
    print("ready", flush=True)
    input()  # the test makes the server refuse the next commit
    for i in range(100, 200):
        step(i)
    assert calltape.flush(timeout=30)  # the refused round onto the spool
    assert calltape.flush(timeout=30)  # a flush tries the server at once: the spool sent
    print(calltape.stats()["dropped"], flush=True)
""")

FAIL_ONE_COMMIT = """
CREATE SEQUENCE fail_once;
CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('fail_once') = 1 THEN
        RAISE EXCEPTION 'the test refuses this commit';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON segments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_commit();
"""


def test_a_commit_the_server_refuses_goes_to_the_spool_once(pg_server, pg_url, tmp_path):
    """The server refuses a round at COMMIT (a deferred trigger raises, once): the writer
    cannot tell that from a commit cut off after the server made it, so the round goes into
    a spool session of its own that the spool's notes name; the server's session row shows
    it was not committed, so sending the spool keeps it: every call arrives once."""
    script = tmp_path / "commit.py"
    script.write_text(COMMIT_FAILS)
    env = dict(os.environ, CALLTAPE_TAPE=pg_url)
    child = subprocess.Popen([sys.executable, str(script)], env=env, cwd=str(tmp_path),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        db = pg_url.rsplit("/", 1)[1]
        pg_server.sql(db, FAIL_ONE_COMMIT)
        out, err = child.communicate("\n", timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert out.strip() == "0", err
    assert "recording goes on into the spool" in err
    assert pg_server.sql(db, "SELECT last_value FROM fail_once") != "0"
    assert not [p for p in os.listdir(tmp_path) if p.startswith("calltape-spool-")]
    with calltape.open(pg_url) as tape:
        assert sorted(c.args["i"] for c in tape.calls("step")) == list(range(200))
        ids = [c.id for c in tape.calls()]
        assert len(set(ids)) == len(ids) == 200
        # before, the refused round alone, the rest of the spool, after
        assert len(tape.sessions()) == 4


def dead_pid() -> int:
    """The PID of a process that has ended."""
    done = subprocess.run(["true"], check=True)
    assert done.returncode == 0
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_sending_leaves_out_a_round_the_server_committed(pg_server, pg_url, tmp_path):
    """A spool session that its notes name as a round of unknown outcome is sent only when
    the server's session row does not show that round's end: two copies of one spool, one
    naming the end the server shows (committed: left out), one a later end (sent)."""
    _, _, spool = ends_while_away(pg_server, pg_url, tmp_path)
    env = dict(os.environ, CALLTAPE_TAPE=pg_url)
    db = pg_url.rsplit("/", 1)[1]
    server, end = pg_server.sql(db, "SELECT id, end_ns FROM sessions").split("|")
    with closing(sqlite3.connect(spool)) as conn:
        (session,) = conn.execute("SELECT id FROM sessions").fetchone()
    for pid, shown_end in ((dead_pid(), int(end)), (dead_pid(), int(end) + 1)):
        copy = tmp_path / f"calltape-spool-{pid}.db"
        shutil.copy(spool, copy)
        with closing(sqlite3.connect(copy)) as conn, conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'note:pid'", (str(pid),))
            conn.execute("INSERT INTO meta VALUES ('note:uncertain', ?)",
                         (f"{server} {shown_end} {session}",))
    spool.unlink()
    (tmp_path / "later.py").write_text(NEXT_RUN)
    out = subprocess.run([sys.executable, str(tmp_path / "later.py")], env=env,
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not [p for p in os.listdir(tmp_path) if p.startswith("calltape-spool-")]
    with calltape.open(pg_url) as tape:
        assert sorted(c.args["i"] for c in tape.calls("step")) == list(range(-1, 50))
        assert len(tape.sessions()) == 3  # the first, the spool sent once, the later run
