"""Outages of the tape: a full disk (a small tmpfs the test mounts), a
read-only folder, a missing folder, a tape locked by another process.  The
program runs unchanged; every call is either on the tape or counted as
dropped; a function first called during the outage is recorded once the
tape can be written again."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from _util import DROP_DAC, child_env, last_json, run_python, write_script

import calltape

# The child records during an outage, ends it (`{heal}`), then records
# until its calls reach the tape (the writer retries a failed tape about
# once a second), and reports what it made and what calltape counted.
OUTAGE_SCRIPT = """
{setup}
import json, time, warnings, calltape
warnings.simplefilter("ignore")
@calltape.record
def first_in_outage(x, pad):
    return x
made = {{"setup": calltape.stats()["recorded"], "first_in_outage": 0}}
for i in range(2000):                 # the tape cannot be written
    first_in_outage(i, "p" * 200)
    made["first_in_outage"] += 1
outage_flush = calltape.flush(timeout=10)
{heal}
deadline = time.monotonic() + 30
i = 2000
while time.monotonic() < deadline:
    for _ in range(100):
        first_in_outage(i, "")
        made["first_in_outage"] += 1
        i += 1
    healed = calltape.flush(timeout=10)
    if healed:
        break
    time.sleep(0.05)
st = calltape.stats()
print(json.dumps({{"made": made, "outage_flush": outage_flush, "healed": healed,
                  "recorded": st["recorded"], "written": st["written"],
                  "dropped": st["dropped"], "errors": st["errors"]}}))
"""


def _check(tape, out):
    assert out["outage_flush"] is False, out        # the loss was reported ...
    assert out["healed"] is True, out               # ... and recording came back
    tp = calltape.open(tape)
    on_tape = {fn.qualname: fn.calls for fn in tp.functions()}
    # the function whose definition was first sent during the outage is there
    assert on_tape.get("first_in_outage", 0) > 0, (on_tape, out)
    # every call is on the tape or counted
    made = sum(out["made"].values())
    assert out["recorded"] == made
    assert sum(on_tape.values()) == out["written"], (on_tape, out)
    assert out["written"] + out["dropped"] == made, out
    assert out["dropped"] >= 2000 - 1, out


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted for the test (root only)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip() or 'mount failed'}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_full_disk(tmp_path, small_disk):
    tape = small_disk / "t.db"
    filler = small_disk / "filler"
    heal = f"os.remove({str(filler)!r})"
    setup = textwrap.dedent(f"""
        import calltape as _c
        _c.configure(tape={str(tape)!r})
        _c.record(lambda: None)()          # the tape exists
        _c.flush(timeout=10)
        with open({str(filler)!r}, "wb", buffering=0) as _f:   # then the disk fills up
            try:
                while True:
                    _f.write(b"x" * 4096)
            except OSError:
                pass
    """)
    proc = run_python(tmp_path, OUTAGE_SCRIPT.format(setup=setup, heal=heal),
                      tape=tape, timeout=120)
    out = last_json(proc)
    _check(tape, out)
    assert any("full" in e for e in out["errors"]) or out["dropped"], out


def test_full_disk_while_recording(tmp_path, small_disk):
    """The disk fills while calls are being written: the calls lost are
    exactly those not on the tape."""
    tape = small_disk / "t.db"
    proc = run_python(tmp_path, """
        import json, os, warnings, calltape
        warnings.simplefilter("ignore")
        @calltape.record
        def f(x, pad):
            return x
        made = 0
        for i in range(40000):  # about 6 MB even compressed: the 1 MB disk fills
            f(i, os.urandom(150).hex())
            made += 1
        flushed = calltape.flush(timeout=30)
        st = calltape.stats()
        print(json.dumps({"made": made, "flushed": flushed, "recorded": st["recorded"],
                          "written": st["written"], "dropped": st["dropped"]}))
    """, tape=tape, timeout=120)
    out = last_json(proc)
    assert out["flushed"] is False
    assert out["dropped"] > 0
    on_tape = sum(fn.calls for fn in calltape.open(tape).functions())
    assert on_tape == out["written"]
    assert out["written"] + out["dropped"] == out["made"] == out["recorded"]


def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    tape = folder / "t.db"
    os.chmod(folder, 0o555)
    setup = DROP_DAC + textwrap.dedent("""
        try:
            open(os.path.join(os.path.dirname(os.environ["CALLTAPE_TAPE"]), "probe"), "w")
            sys.exit(77)      # still writable: root cannot be kept out here
        except PermissionError:
            pass
    """)
    heal = f"os.chmod({str(folder)!r}, 0o755)"   # the owner may, without capabilities
    try:
        proc = run_python(tmp_path, OUTAGE_SCRIPT.format(setup=setup, heal=heal),
                          tape=tape, rc=None, timeout=120)
    finally:
        os.chmod(folder, 0o755)
    if proc.returncode == 77:
        pytest.skip("cannot make a folder read-only for this user")
    assert proc.returncode == 0, proc.stderr
    _check(tape, last_json(proc))


def test_missing_folder(tmp_path):
    tape = tmp_path / "later" / "t.db"
    heal = f"os.mkdir({str(tape.parent)!r})"
    proc = run_python(tmp_path, OUTAGE_SCRIPT.format(setup="", heal=heal), tape=tape,
                      timeout=120)
    _check(tape, last_json(proc))


LOCKER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
con.execute("ROLLBACK")
print("released", flush=True)
"""


def test_tape_locked_by_another_process(tmp_path):
    """Another process holds the write lock: calls run at full speed, flush
    says the tape is not written yet, and once the lock is released every
    call reaches the tape, none dropped."""
    tape = tmp_path / "t.db"
    run_python(tmp_path, "import calltape\ncalltape.record(lambda x: x)(-1)\n", tape=tape)
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(tape)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        script = write_script(tmp_path, """
            import json, calltape
            @calltape.record
            def f(x):
                return x
            out = [f(i) for i in range(5000)]
            print(json.dumps({"ok": out == list(range(5000)),
                              "flushed": calltape.flush(timeout=0.5)}), flush=True)
            sys.stdin.readline()          # the lock is released now
            print(json.dumps({"flushed": calltape.flush(timeout=60),
                              "dropped": calltape.stats()["dropped"]}), flush=True)
        """, name="locked.py")
        child = subprocess.Popen([sys.executable, str(script)], env=child_env(tape),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            first = json.loads(child.stdout.readline())
            assert first == {"ok": True, "flushed": False}
            locker.stdin.write("go\n")
            locker.stdin.flush()
            assert locker.stdout.readline().strip() == "released"
            child.stdin.write("go\n")
            child.stdin.flush()
            second = json.loads(child.stdout.readline())
            assert child.wait(60) == 0, child.stderr.read()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(30)
    finally:
        if locker.poll() is None:
            locker.kill()
        locker.wait(30)
    assert second == {"flushed": True, "dropped": 0}
    xs = sorted(c.args["x"] for c in calltape.open(tape).calls())
    assert xs == [-1, *range(5000)]
