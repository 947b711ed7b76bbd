"""Faults while recording: SIGKILL while producers outrun the writer, the
default tape switched while threads record (and during a first record),
the tape deleted under a running program, calls after calltape's exit hook,
threads with forks and signals.  Every child runs under a timeout, so a hang fails."""

import signal
import sqlite3
import subprocess
import sys
import threading
import time

from _util import child_env, last_json, run_python, write_script

import calltape


def test_sigkill_while_producers_outrun_the_writer(tmp_path):
    """Three threads record as fast as they can (faster than the writer
    stores): a SIGKILL loses only about the last flush interval, and the
    tape opens and is whole."""
    tape = tmp_path / "k.db"
    script = write_script(tmp_path, """
        import threading, time, calltape
        @calltape.record
        def f(t, i):
            return i
        out = threading.Lock()
        def spin(t):
            i = 0
            while True:
                f(t, i)
                i += 1
                if i % 20000 == 0:
                    with out:
                        print(f"{t} {i}", flush=True)
        for t in range(3):
            threading.Thread(target=spin, args=(t,), daemon=True).start()
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, str(script)], env=child_env(tape),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []

    def read():
        for line in proc.stdout:
            t, i = map(int, line.split())
            seen.append((time.monotonic(), t, i))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(seen) < 30 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(seen) >= 30, proc.stderr.read() if proc.poll() is not None else "slow"
        time.sleep(1.0)
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    reader.join(10)
    assert proc.returncode == -signal.SIGKILL
    con = sqlite3.connect(tape)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    by_thread = {}
    for c in calltape.open(tape).calls():
        by_thread.setdefault(c.args["t"], []).append(c.args["i"])
    for t, xs in by_thread.items():
        xs.sort()
        assert xs == list(range(len(xs))), f"thread {t}: the tape holds a gap"
    # every call a thread had made half a second before the kill is on the tape
    for t in range(3):
        older = [i for ts, tt, i in seen if tt == t and ts <= killed_at - 0.5]
        if older:
            assert len(by_thread.get(t, ())) >= max(older), (t, max(older))


def test_switching_the_tape_while_threads_record(tmp_path):
    """configure(tape=...) back and forth while three threads record: every
    call lands on one of the two tapes, none is dropped."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    proc = run_python(tmp_path, f"""
        import json, threading, time, calltape
        tapes = [{str(a)!r}, {str(b)!r}]
        calltape.configure(tape=tapes[0])
        @calltape.record
        def f(i):
            return i
        stop = threading.Event()
        made = []
        def work():
            n = 0
            while not stop.is_set():
                f(n)
                n += 1
            made.append(n)
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for k in range(20):
            time.sleep(0.05)
            calltape.configure(tape=tapes[(k + 1) % 2])
        stop.set()
        for t in threads:
            t.join()
        flushed = calltape.flush(timeout=60)
        st = calltape.stats()
        print(json.dumps({{"made": sum(made), "flushed": flushed, "dropped": st["dropped"],
                          "written": st["written"]}}))
    """, timeout=300)
    out = last_json(proc)
    on_tapes = sum(len(calltape.open(p).calls()) for p in (a, b))
    assert out["flushed"] is True
    assert out["dropped"] == 0
    assert on_tapes == out["made"] == out["written"]


def test_the_tape_switched_during_another_threads_first_record(tmp_path):
    """Opening the first tape runs Python code (the path made absolute),
    where another thread may take the GIL and configure another tape: the
    call that was opening the old one still goes there, and every later
    call goes to the tape configured last.  The other thread is played
    deterministically by os.path.abspath itself."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    run_python(tmp_path, f"""
        import os.path, calltape
        calltape.configure(tape={str(a)!r})
        real_abspath = os.path.abspath
        switched = []
        def abspath(p):
            if not switched and str(p).endswith("a.db"):
                switched.append(p)  # as another thread would, while the GIL is let go
                calltape.configure(tape={str(b)!r})
            return real_abspath(p)
        os.path.abspath = abspath
        @calltape.record
        def f(i):
            return i
        for i in range(5):
            f(i)
        os.path.abspath = real_abspath
        assert switched and calltape.flush(timeout=60)
    """, timeout=120)
    assert [c.args["i"] for c in calltape.open(a).calls()] == [0]
    assert [c.args["i"] for c in calltape.open(b).calls()] == [1, 2, 3, 4]

def test_tape_deleted_while_recording(tmp_path):
    tape = tmp_path / "t.db"
    proc = run_python(tmp_path, f"""
        import json, glob, warnings, calltape
        @calltape.record
        def f(x):
            return x
        for i in range(1000):
            f(i)
        first = calltape.flush(timeout=30)
        for p in glob.glob({str(tape)!r} + "*"):
            os.remove(p)                        # rm calltape.db*
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(1000, 1500):
                f(i)
            second = calltape.flush(timeout=30)
        for i in range(1500, 1700):
            f(i)
        third = calltape.flush(timeout=30)
        st = calltape.stats()
        print(json.dumps({{"flushes": [first, second, third], "dropped": st["dropped"],
                          "written": st["written"],
                          "warnings": [str(w.message) for w in caught]}}))
    """, tape=tape)
    out = last_json(proc)
    assert out["flushes"] == [True, False, True]
    assert out["dropped"] == 1000                       # the calls that were on it
    assert len(out["warnings"]) == 1 and "deleted" in out["warnings"][0]
    xs = sorted(c.args["x"] for c in calltape.open(tape).calls())
    assert xs == list(range(1000, 1700))               # recreated, recording went on
    assert out["written"] == 700


# {setup} imports calltape (or not, under `calltape run`, which imported it
# first): the handler registered above it runs after calltape's own hook.
LATE_PROGRAM = """
import atexit
def at_exit():
    for i in range(100):
        f(i)
atexit.register(at_exit)
{setup}
def f(x):
    return x
class Late:
    def __del__(self):
        for i in range(100, 110):
            f(i)
late = Late()
f(-1)
"""


def test_calls_after_calltapes_exit_hook_are_recorded(tmp_path):
    """An exit handler registered before calltape was imported runs after
    calltape's own, and an object freed at exit runs its __del__ even later:
    their calls are on the tape."""
    tape = tmp_path / "t.db"
    run_python(tmp_path, LATE_PROGRAM.format(setup="import calltape\n@calltape.record"),
               tape=tape)
    xs = sorted(c.args["x"] for c in calltape.open(tape).calls())
    assert xs == list(range(-1, 110))


def test_monitored_calls_after_calltapes_exit_hook_are_recorded(tmp_path):
    """A monitor the program never stops keeps recording after calltape's
    exit hook: an exit handler registered before calltape was imported and
    a __del__ at teardown are on the tape."""
    tape = tmp_path / "t.db"
    run_python(tmp_path, LATE_PROGRAM.format(
        setup="import calltape\ncalltape.monitor(include=['__main__']).start()"), tape=tape)
    xs = sorted(c.args["x"] for c in calltape.open(tape).calls(function="f"))
    assert xs == list(range(-1, 110))


def test_calltape_run_records_calls_after_its_exit_line(tmp_path):
    """Under `calltape run`, the program's exit handler (which runs before
    the exit line) and a __del__ at teardown (after it) are on the tape."""
    tape = tmp_path / "t.db"
    script = tmp_path / "prog.py"
    script.write_text(LATE_PROGRAM.format(setup=""))
    proc = subprocess.run([sys.executable, "-m", "calltape", "run", "--tape", str(tape),
                           str(script)], env=child_env(), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "calltape: recorded" in proc.stderr
    xs = sorted(c.args["x"] for c in calltape.open(tape).calls(function="f"))
    assert xs == list(range(-1, 110))


def test_threads_with_forks_and_signals(tmp_path):
    """Threads record while the main thread forks children that record, and
    signals whose handlers record arrive throughout: nothing hangs, every
    process's calls are on the tape, each as its own session."""
    tape = tmp_path / "t.db"
    proc = run_python(tmp_path, """
        import json, signal, threading, warnings, calltape
        warnings.simplefilter("ignore", DeprecationWarning)   # fork with threads
        @calltape.record
        def in_thread(t, i):
            return i
        @calltape.record
        def in_child(k, i):
            return i
        @calltape.record
        def on_signal(n):
            return n
        handled = []
        def handler(signum, frame):
            handled.append(on_signal(len(handled)))
        signal.signal(signal.SIGUSR1, handler)
        stop = threading.Event()
        made = {}
        def work(t):
            i = 0
            while not stop.is_set():
                in_thread(t, i)
                i += 1
            made[t] = i
        threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
        for t in threads:
            t.start()
        children = []
        for k in range(6):
            os.kill(os.getpid(), signal.SIGUSR1)
            pid = os.fork()
            if pid == 0:
                for i in range(500):
                    in_child(k, i)
                    if i % 100 == 0:
                        os.kill(os.getpid(), signal.SIGUSR1)
                calltape.flush(timeout=30)
                os._exit(0)
            children.append(pid)
        for pid in children:
            assert os.waitpid(pid, 0)[1] == 0
        stop.set()
        for t in threads:
            t.join()
        calltape.flush(timeout=60)
        print(json.dumps({"made": made, "handled": len(handled), "pid": os.getpid(),
                          "children": children}))
    """, tape=tape, timeout=180)
    out = last_json(proc)
    tp = calltape.open(tape)
    sessions = {s.pid: s for s in tp.sessions()}
    assert set(out["children"]) <= set(sessions)
    in_thread = {}
    for c in tp.calls("in_thread"):
        in_thread[c.args["t"]] = in_thread.get(c.args["t"], 0) + 1
    assert in_thread == {int(t): n for t, n in out["made"].items()}
    in_child = {}
    for c in tp.calls("in_child"):
        in_child.setdefault(c.args["k"], []).append(c.args["i"])
    assert {k: sorted(v) for k, v in in_child.items()} == {k: list(range(500)) for k in range(6)}
    on_signal = tp.calls("on_signal")
    parent = [c for c in on_signal if c.session == sessions[out["pid"]].id]
    assert len(parent) == out["handled"] == 6
    in_children = [c for c in on_signal if c.session != sessions[out["pid"]].id]
    assert len(in_children) == 6 * 5                          # five in each child
    assert {c.session for c in in_children} == {sessions[pid].id for pid in out["children"]}
