"""Exit paths (normal exit, uncaught exception, SIGKILL) and failures that must
never break the user's program (unwritable, read-only, locked tapes; warning
filters set to error)."""

import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from _util import DROP_DAC, child_env, last_json, run_python, write_script

import calltape

RECORD_1000 = """
import calltape
@calltape.record
def f(x):
    return x + 1
for i in range(1000):
    assert f(i) == i + 1
"""


def _xs(path):
    return sorted(c.args["x"] for c in calltape.open(path, trust=True).calls())


# ----------------------------------------------------------- exit paths ----

def test_normal_exit_without_flush_loses_nothing(tmp_path):
    path = tmp_path / "e.db"
    run_python(tmp_path, RECORD_1000, tape=path)
    assert _xs(path) == list(range(1000))


def test_uncaught_exception_at_exit_loses_nothing(tmp_path):
    path = tmp_path / "e.db"
    proc = run_python(tmp_path, RECORD_1000 + "\nraise RuntimeError('boom at the end')\n",
                      tape=path, rc=1)
    assert "boom at the end" in proc.stderr
    assert _xs(path) == list(range(1000))


def test_sys_exit_with_code_loses_nothing(tmp_path):
    path = tmp_path / "e.db"
    run_python(tmp_path, RECORD_1000 + "\nsys.exit(3)\n", tape=path, rc=3)
    assert _xs(path) == list(range(1000))


def test_exit_with_daemon_thread_still_recording(tmp_path):
    path = tmp_path / "e.db"
    proc = run_python(tmp_path, textwrap.dedent("""
        import threading, calltape
        @calltape.record
        def g(x):
            return x
        def loop():
            i = 0
            while True:
                g(i)
                i += 1
        threading.Thread(target=loop, daemon=True).start()
    """) + RECORD_1000 + "\nprint('main done')\n", tape=path)
    assert "main done" in proc.stdout
    assert "Fatal Python error" not in proc.stderr
    tp = calltape.open(path, trust=True)
    assert sorted(c.args["x"] for c in tp.calls(function="f")) == list(range(1000))


def test_sigkill_leaves_an_openable_tape(tmp_path):
    path = tmp_path / "k.db"
    script = write_script(tmp_path, """
        import time, calltape
        @calltape.record
        def f(i):
            return i
        for i in range(100):
            f(i)
        assert calltape.flush(timeout=30)
        print("ready", flush=True)
        i = 100
        while True:
            f(i)
            i += 1
            if i % 50 == 0:
                print(i, flush=True)
            time.sleep(0.0005)
    """)
    proc = subprocess.Popen([sys.executable, str(script)], env=child_env(path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    ready = threading.Event()

    def reader():
        for line in proc.stdout:
            lines.append((time.monotonic(), line.strip()))
            if line.strip() == "ready":
                ready.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        assert ready.wait(60), proc.stderr.read() if proc.poll() is not None else "no ready"
        time.sleep(1.0)
        t_kill = time.monotonic()
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    t.join(10)
    assert proc.returncode == -signal.SIGKILL

    tp = calltape.open(path, trust=True)          # must not raise
    xs = sorted(c.args["i"] for c in tp.calls())
    assert len(xs) >= 100
    assert xs[:100] == list(range(100))
    assert len(set(xs)) == len(xs)
    # "loses at most the last flush interval": every call made more than
    # half a second before the kill is on the tape
    older = [int(s) for ts, s in lines if s.isdigit() and ts <= t_kill - 0.5]
    if older:
        assert len(xs) >= max(older)
    assert len(tp.sessions()) == 1
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()


# ------------------------------------------------------------ failures ----

# {setup} runs before calltape is imported: capabilities are per thread, so
# they must be dropped before calltape may start a thread.
FAILING_TAPE_SCRIPT = """
{setup}
import json, warnings, calltape
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    @calltape.record
    def f(x):
        return x * 2
    first = [f(i) for i in range(200)]
    ok = calltape.flush(timeout=5)
    second = [f(i) for i in range(200)]
    calltape.flush(timeout=5)
    third = [f(i) for i in range(20000)]
    calltape.flush(timeout=5)
st = calltape.stats()
rw = [w for w in caught if issubclass(w.category, calltape.RecordingWarning)]
print(json.dumps({{
    "values_ok": (first == second == [i * 2 for i in range(200)]
                  and third == [i * 2 for i in range(20000)]),
    "flush_ok": ok,
    "warnings": len(rw),
    "other_warnings": [str(w.message) for w in caught
                       if not issubclass(w.category, calltape.RecordingWarning)],
    "dropped": st["dropped"],
    "write_errors": st["write_errors"],
}}))
"""


def _check_failure_report(out):
    assert out["values_ok"] is True
    assert out["flush_ok"] is False
    assert 1 <= out["warnings"] <= 3, out
    assert out["dropped"] + out["write_errors"] > 0, out


def test_tape_path_under_a_regular_file(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("I am a file, not a directory")
    path = blocker / "t.db"
    proc = run_python(tmp_path, FAILING_TAPE_SCRIPT.format(setup=""), tape=path, timeout=120)
    _check_failure_report(last_json(proc))
    assert blocker.read_text() == "I am a file, not a directory"


def test_existing_non_tape_file_is_left_alone(tmp_path):
    path = tmp_path / "notes.db"
    content = b"my precious notes, not an sqlite file\n" * 50
    path.write_bytes(content)
    proc = run_python(tmp_path, FAILING_TAPE_SCRIPT.format(setup=""), tape=path, timeout=120)
    _check_failure_report(last_json(proc))
    assert path.read_bytes() == content


def _run_privileged_dropped(tmp_path, path):
    proc = run_python(tmp_path, FAILING_TAPE_SCRIPT.format(setup=DROP_DAC + """
try:
    with open(os.environ["CALLTAPE_TAPE"], "ab"):
        pass
    sys.exit(77)          # still writable: the test cannot make it read-only
except PermissionError:
    pass
"""), tape=path, rc=None, timeout=120)
    if proc.returncode == 77:
        pytest.skip("cannot make a file read-only for this user")
    assert proc.returncode == 0, proc.stderr
    return last_json(proc)


def test_read_only_tape_file(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    path = d / "t.db"
    run_python(tmp_path, "import calltape\ncalltape.record(lambda x: x)(1)\n", tape=path)
    assert len(calltape.open(path, trust=True).calls()) == 1
    for suffix in ("", "-wal", "-shm"):
        p = d / ("t.db" + suffix)
        if p.exists():
            os.chmod(p, 0o444)
    before = path.read_bytes()
    out = _run_privileged_dropped(tmp_path, path)
    _check_failure_report(out)
    assert path.read_bytes() == before
    assert len(calltape.open(path, trust=True).calls()) == 1


def test_tape_in_read_only_directory(tmp_path):
    d = tmp_path / "rodir"
    d.mkdir()
    os.chmod(d, 0o555)
    try:
        path = d / "t.db"
        out = _run_privileged_dropped(tmp_path, path)
        _check_failure_report(out)
        assert not path.exists()
    finally:
        os.chmod(d, 0o755)


WERROR_SCRIPT = """
import threading, calltape
class Boom:
    pass
def explode(o):
    raise RuntimeError("codec exploded")
calltape.register_codec(Boom, "werror.boom", explode, lambda b: None)
@calltape.record
def f(x, y=None):
    return x * 2
out = [f(i, threading.Lock()) for i in range(50)]
out += [f(i, Boom()) for i in range(50)]
calltape.flush(timeout=5)
out += [f(i) for i in range(50)]
calltape.flush(timeout=5)
expected = [i * 2 for i in range(50)] * 3
print("ok" if out == expected else "WRONG")
"""


def test_warnings_as_errors_never_reach_user_code(tmp_path):
    path = tmp_path / "w.db"
    proc = run_python(tmp_path, WERROR_SCRIPT, tape=path, flags=("-W", "error"))
    assert proc.stdout.split() == ["ok"]
    assert "Traceback" not in proc.stderr
    calls = calltape.open(path, trust=True).calls()
    assert len(calls) == 150
    assert isinstance(calls[0].args["y"], calltape.Unencodable)
    assert isinstance(calls[50].args["y"], calltape.Unencodable)


def test_warnings_as_errors_with_unwritable_tape(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    proc = run_python(tmp_path, WERROR_SCRIPT, tape=blocker / "t.db", flags=("-W", "error"))
    assert proc.stdout.split() == ["ok"]
    assert "Traceback" not in proc.stderr


class _Lines:
    """Reads a child's stdout lines in a thread, so that waiting can time out."""

    def __init__(self, proc):
        self.q = queue.Queue()
        self.t = threading.Thread(target=self._run, args=(proc.stdout,), daemon=True)
        self.t.start()

    def _run(self, stream):
        for line in stream:
            self.q.put(line)
        self.q.put(None)

    def next_json(self, timeout=60):
        line = self.q.get(timeout=timeout)
        assert line is not None, "child ended early"
        return json.loads(line)


def _locked(path):
    con = sqlite3.connect(path, isolation_level=None, timeout=0)
    con.execute("BEGIN EXCLUSIVE")
    return con


def test_locked_tape_does_not_block_calls(tmp_path):
    path = tmp_path / "lock.db"
    run_python(tmp_path, "import calltape\ncalltape.record(lambda x: x)(-1)\n", tape=path)
    con = _locked(path)
    script = write_script(tmp_path, """
        import json, time, calltape
        @calltape.record
        def f(x):
            return x
        t0 = time.perf_counter()
        out = [f(i) for i in range(2000)]
        elapsed = time.perf_counter() - t0
        print(json.dumps({"elapsed": elapsed, "ok": out == list(range(2000))}), flush=True)
        print(json.dumps({"flushed": calltape.flush(timeout=30)}), flush=True)
    """, name="locked.py")
    proc = subprocess.Popen([sys.executable, str(script)], env=child_env(path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _Lines(proc)
        first = lines.next_json()
        assert first["ok"] is True
        assert first["elapsed"] < 1.0, "recorded calls waited for the locked tape"
        time.sleep(1.0)
        con.execute("ROLLBACK")
        assert lines.next_json() == {"flushed": True}
        proc.wait(60)
    finally:
        if con.in_transaction:
            con.execute("ROLLBACK")
        con.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
    xs = sorted(c.args["x"] for c in calltape.open(path, trust=True).calls())
    assert xs == [-1] + list(range(2000))


def test_back_pressure_waits_without_the_gil(tmp_path):
    """A thread that waits for buffer space (on_full="wait", the writer locked
    out of the tape) waits with the GIL released: another Python thread runs
    on meanwhile, and once the tape is free again nothing was lost."""
    path = tmp_path / "full.db"
    run_python(tmp_path, "import calltape\ncalltape.record(lambda x: x)(-1)\n", tape=path)
    con = _locked(path)      # the writer cannot commit: the buffer fills up
    script = write_script(tmp_path, """
        import json, threading, time, warnings, calltape
        warnings.simplefilter("ignore")
        calltape.configure(buffer_bytes=4 << 20)
        N = 200000
        @calltape.record
        def f(x, pad):
            return x
        done = [0]
        def produce():
            pad = "p" * 300
            for i in range(N):
                f(i, pad)
                done[0] = i + 1
        t = threading.Thread(target=produce)
        t.start()
        t0 = last = time.monotonic()
        gap, seen = 0.0, []
        while last - t0 < 2.0:
            time.sleep(0.005)
            now = time.monotonic()
            gap, last = max(gap, now - last), now
            seen.append((now, done[0]))
        still = [n for at, n in seen if at > last - 0.5]
        print(json.dumps({"gap": gap, "stalled": len(set(still)) == 1 and still[0] < N}),
              flush=True)
        t.join()
        print(json.dumps({"flushed": calltape.flush(timeout=30),
                          "dropped": calltape.stats()["dropped"]}), flush=True)
    """, name="full.py")
    proc = subprocess.Popen([sys.executable, str(script)], env=child_env(path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _Lines(proc)
        first = lines.next_json()
        con.execute("ROLLBACK")
        assert first["stalled"] is True, "the producer never waited for the writer"
        assert first["gap"] < 1.0, "the other thread stopped while the producer waited"
        assert lines.next_json() == {"flushed": True, "dropped": 0}
        proc.wait(60)
    finally:
        if con.in_transaction:
            con.execute("ROLLBACK")
        con.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
    assert _xs(path) == [-1] + list(range(200000))


def test_on_full_drop_counts_instead_of_waiting(tmp_path):
    path = tmp_path / "drop.db"
    run_python(tmp_path, "import calltape\ncalltape.record(lambda x: x)(-1)\n", tape=path)
    con = _locked(path)      # the writer cannot commit: the buffer fills up
    script = write_script(tmp_path, """
        import json, time, warnings, calltape
        warnings.simplefilter("ignore")
        calltape.configure(on_full="drop", buffer_bytes=4 << 20)
        @calltape.record
        def f(x):
            return x
        t0 = time.perf_counter()
        ok = all(f(i) == i for i in range(1000000))
        elapsed = time.perf_counter() - t0
        st = calltape.stats()
        print(json.dumps({"ok": ok, "elapsed": elapsed, "dropped": st["dropped"],
                          "pid": os.getpid()}), flush=True)
    """, name="drop.py")
    proc = subprocess.Popen([sys.executable, str(script)], env=child_env(path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = _Lines(proc).next_json(timeout=90)
        con.execute("ROLLBACK")
        proc.wait(60)
    finally:
        if con.in_transaction:
            con.execute("ROLLBACK")
        con.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
    assert out["ok"] is True
    assert out["elapsed"] < 30
    assert out["dropped"] > 0
    tp = calltape.open(path, trust=True)
    fns = [fn for fn in tp.functions() if fn.qualname == "f"]
    assert len(fns) == 1
    # every call is either on the tape or counted as dropped ...
    assert fns[0].calls + out["dropped"] == 1000000
    # ... and the count is kept on the session row of the tape
    child = [s for s in tp.sessions() if s.pid == out["pid"]]
    assert len(child) == 1
    assert child[0].counters.get("dropped") == out["dropped"]


FULL_DISK_SCRIPT = """
import json, resource, signal, warnings, calltape
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    @calltape.record
    def f(x, pad):
        return x * 2
    ok = all(f(i, "p" * 300) == i * 2 for i in range(50000))
    flushed = calltape.flush(timeout=10)
st = calltape.stats()
print(json.dumps({"values_ok": ok, "flush_ok": flushed,
                  "warnings": sum(issubclass(w.category, calltape.RecordingWarning)
                                  for w in caught),
                  "dropped": st["dropped"], "write_errors": st["write_errors"]}))
"""


def test_full_disk_never_breaks_the_program(tmp_path):
    """A file-size limit stands in for a full disk: SQLite's writes fail with
    EFBIG once the tape would grow past it."""
    path = tmp_path / "t.db"
    run_python(tmp_path, RECORD_1000, tape=path)
    size = sum(os.path.getsize(p) for p in tmp_path.glob("t.db*"))
    proc = run_python(tmp_path, FULL_DISK_SCRIPT, tape=path, args=(str(size + 200_000),),
                      timeout=120)
    out = last_json(proc)
    assert out["values_ok"] is True
    assert out["flush_ok"] is False
    assert 1 <= out["warnings"] <= 3, out
    assert out["dropped"] > 0 and out["write_errors"] > 0, out
    assert "Traceback" not in proc.stderr
    # the tape still opens and keeps what was written before
    assert len(_xs(path)) >= 1000


# ------------------------------------------------ the .db file alone ----

def test_tape_file_alone_holds_everything_after_exit(tmp_path):
    """A program that records and still holds a calltape.open() tape at exit:
    the .db file, copied without its -wal, holds every call."""
    path = tmp_path / "t.db"
    run_python(tmp_path, """
        import calltape
        @calltape.record
        def f(x):
            return x + 1
        for i in range(5000):
            f(i)
        calltape.flush()
        tape = calltape.open()          # still open at exit
        print(len(tape.calls()))
        for i in range(5000, 6000):
            f(i)
    """, tape=path)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "t.db").write_bytes(path.read_bytes())     # the .db alone
    assert sorted(c.args["x"] for c in calltape.open(copy / "t.db").calls()) == list(range(6000))


def test_tape_file_alone_holds_everything_after_a_switch(tmp_path):
    """configure(tape=...) to another tape writes the first one out whole."""
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    run_python(tmp_path, f"""
        import shutil, calltape
        @calltape.record
        def f(x):
            return x
        for i in range(3000):
            f(i)
        calltape.flush()
        reader = calltape.open({str(first)!r})   # a reader of it stays open
        len(reader.calls())
        calltape.configure(tape={str(second)!r})
        shutil.copyfile({str(first)!r}, {str(tmp_path / "copy.db")!r})
    """, tape=first)
    assert len(calltape.open(tmp_path / "copy.db").calls()) == 3000
