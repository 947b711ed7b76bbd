"""The spool: while the PostgreSQL server is stopped (pg_ctl stop, for real) a
recording goes on into a local SQLite file, named in one RecordingWarning, and
every call arrives on the server once it is started again (the spool sent there
and removed)."""

import os
import subprocess
import sys
import textwrap
import time

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


def test_a_program_that_ends_while_spooling_leaves_the_spool(pg_server, pg_url, tmp_path):
    """The spool stays when the program ends before the server is back; the warning's
    calltape copy line sends it."""
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
    spool = tmp_path / f"calltape-spool-{child.pid}.db"
    assert f"calltape copy {spool} postgresql://calltape:***@" in err
    with calltape.open(str(spool)) as tape:
        assert sorted(c.args["i"] for c in tape.calls()) == list(range(50))
    out = subprocess.run([sys.executable, "-m", "calltape", "copy", str(spool), pg_url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with calltape.open(pg_url) as tape:
        assert sorted(c.args["i"] for c in tape.calls()) == list(range(-1, 50))
