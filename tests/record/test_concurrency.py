"""Threads, os.fork, multiprocessing (fork and spawn) and several processes
recording onto one tape at once."""

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings

import _workers
from _util import child_env, last_json, open_tape, read_calls, run_python, write_script

import calltape


@contextlib.contextmanager
def forking():
    """os.fork in a process with threads warns on 3.12+; that is expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def wait_ok(pid, timeout_msg="child"):
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, f"{timeout_msg} exited with {code}"


def _parent_session_with_pending_calls(n_flushed=2, n_pending=3):
    """Records n_flushed calls and commits them, then n_pending calls that are
    still buffered.  Returns this process's session id."""
    for i in range(n_flushed):
        _workers.square(-1 - i)
    assert calltape.flush(timeout=30)
    session = calltape.stats()["session"]
    assert session > 0
    for i in range(n_pending):
        _workers.square(-10 - i)
    return session


# -------------------------------------------------------------- threads ----

def test_threads_record_in_parallel_without_loss(tape):
    @calltape.record
    def work(tid, i):
        return tid * 10000 + i

    n_threads, n_calls = 8, 1000
    barrier = threading.Barrier(n_threads)
    idents = {}
    errors = []

    def run(tid):
        try:
            idents[tid] = threading.get_ident()
            barrier.wait()
            for i in range(n_calls):
                if work(tid, i) != tid * 10000 + i:
                    errors.append((tid, i))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,), name=f"rec-{t}") for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    calls = read_calls(tape)
    assert len(calls) == n_threads * n_calls
    assert len({c.thread for c in calls}) == n_threads
    assert {c.thread for c in calls} == set(idents.values())
    seen = set()
    for c in calls:
        tid, i = c.args["tid"], c.args["i"]
        assert c.thread == idents[tid]
        assert c.thread_name == f"rec-{tid}"
        assert c.result == tid * 10000 + i
        assert (c.parent, c.depth) == (None, 0)
        seen.add((tid, i))
    assert seen == {(t, i) for t in range(n_threads) for i in range(n_calls)}
    # per thread, calls are stored in the order they were made
    for tid in range(n_threads):
        mine = [c.args["i"] for c in calls if c.args["tid"] == tid]
        assert mine == list(range(n_calls))
    assert len({c.id for c in calls}) == len(calls)


def test_threads_first_recording_onto_a_tape_at_once_share_one_session(tmp_path):
    """Threads that make their first records onto a tape at the same moment
    (each round onto a new tape) give the process one session on it, which
    holds every call."""
    proc = run_python(tmp_path, """
        import json, threading, calltape
        sys.setswitchinterval(1e-6)      # threads switch as often as they can
        @calltape.record
        def f(t, i):
            return i
        n = 8
        barrier = threading.Barrier(n)
        def run(t):
            for k in range(10):
                if t == 0:
                    calltape.configure(tape=f"t{k}.db")
                barrier.wait()
                for i in range(50):
                    f(t, i)
                barrier.wait()
        threads = [threading.Thread(target=run, args=(t,)) for t in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps({"pid": os.getpid()}))
    """, cwd=tmp_path)
    pid = last_json(proc)["pid"]
    for k in range(10):
        tp = calltape.open(tmp_path / f"t{k}.db", trust=True)
        sessions = tp.sessions()
        assert [s.pid for s in sessions] == [pid], f"t{k}.db: {len(sessions)} sessions"
        calls = tp.calls("f")
        assert {c.session for c in calls} == {sessions[0].id}
        assert sorted((c.args["t"], c.args["i"]) for c in calls) == [
            (t, i) for t in range(8) for i in range(50)]


# ---------------------------------------------------------------- fork ----

def test_os_fork_child_gets_its_own_session(tape):
    parent_session = _parent_session_with_pending_calls()
    with forking():
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for i in range(5):
                _workers.square(100 + i)
            code = 0 if calltape.flush(timeout=30) else 2
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    wait_ok(pid)
    assert calltape.flush(timeout=30)

    tp = open_tape(tape)
    sessions = {s.id: s for s in tp.sessions()}
    assert len(sessions) == 2
    child = [s for s in sessions.values() if s.pid == pid]
    assert len(child) == 1
    child = child[0]
    assert child.id != parent_session
    assert child.parent == parent_session
    assert child.ppid == os.getpid()
    assert sessions[parent_session].pid == os.getpid()

    calls = tp.calls()
    in_parent = sorted(c.args["x"] for c in calls if c.session == parent_session)
    in_child = sorted(c.args["x"] for c in calls if c.session == child.id)
    assert in_parent == sorted([-1, -2, -10, -11, -12])
    assert in_child == [100, 101, 102, 103, 104], "parent calls leaked into the child session"
    assert len(calls) == 10
    assert len({c.id for c in calls}) == 10


def test_fork_grandchild_session_chain(tape):
    parent_session = _parent_session_with_pending_calls(1, 0)
    with forking():
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _workers.square(1)
            calltape.flush(timeout=30)
            gpid = os.fork()
            if gpid == 0:
                c2 = 1
                try:
                    _workers.square(2)
                    c2 = 0 if calltape.flush(timeout=30) else 2
                finally:
                    os._exit(c2)
            _, st = os.waitpid(gpid, 0)
            ok = os.waitstatus_to_exitcode(st) == 0 and calltape.flush(timeout=30)
            code = 0 if ok else 4
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    wait_ok(pid)
    tp = open_tape(tape)
    sessions = {s.id: s for s in tp.sessions()}
    assert len(sessions) == 3
    by_x = {c.args["x"]: c for c in tp.calls()}
    assert set(by_x) == {-1, 1, 2}
    s0, s1, s2 = (sessions[by_x[x].session] for x in (-1, 1, 2))
    assert s0.id == parent_session and s0.parent is None
    assert s1.parent == s0.id and s1.pid == pid
    assert s2.parent == s1.id and s2.ppid == pid


def test_fork_while_another_thread_records(tape):
    stop, recording = threading.Event(), threading.Event()

    def hammer():
        i = 0
        while not stop.is_set():
            _workers.square(i)
            recording.set()
            i += 1

    t = threading.Thread(target=hammer)
    t.start()
    # Fork while the other thread records, not while it makes the process's
    # first record (which creates the engine and runs Python code): under
    # the ASan stage of .ci/run, whose allocator (GCC 12) has no fork
    # handlers, a child forked then inherited the allocator's lock held in
    # about 1 run in 8, and the child's writer hung in malloc.
    assert recording.wait(30)
    pids = []
    try:
        for k in range(5):
            with forking():
                pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    signal.alarm(20)     # a deadlocked child dies instead of hanging the suite
                    _workers.square_with_pid(k)
                    code = 0 if calltape.flush(timeout=15) else 2
                except BaseException:
                    code = 3
                finally:
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            wait_ok(pid, "forked child (deadlock after fork?)")
    finally:
        stop.set()
        t.join()
    tp = open_tape(tape)
    mine = tp.calls(function="square_with_pid")
    assert sorted(c.args["x"] for c in mine) == [0, 1, 2, 3, 4]
    sessions = {s.id: s for s in tp.sessions()}
    assert sorted(sessions[c.session].pid for c in mine) == sorted(pids)


# ------------------------------------------------------ multiprocessing ----

def test_multiprocessing_fork_process(tape):
    parent_session = _parent_session_with_pending_calls()
    ctx = multiprocessing.get_context("fork")
    with forking():
        p = ctx.Process(target=_workers.run_squares, args=(1000, 300))
        p.start()
    p.join(60)
    assert p.exitcode == 0
    tp = open_tape(tape)
    sessions = {s.id: s for s in tp.sessions()}
    child = [s for s in sessions.values() if s.pid == p.pid]
    assert len(child) == 1
    assert child[0].parent == parent_session
    xs = sorted(c.args["x"] for c in tp.calls() if c.session == child[0].id)
    assert xs == list(range(1000, 1300)), "the child lost calls at exit or copied the parent's"
    assert sorted(c.args["x"] for c in tp.calls() if c.session == parent_session) == sorted(
        [-1, -2, -10, -11, -12])


def test_multiprocessing_fork_pool(tape):
    parent_session = _parent_session_with_pending_calls()
    ctx = multiprocessing.get_context("fork")
    with forking():
        pool = ctx.Pool(2)
    try:
        results = pool.map(_workers.square_with_pid, range(100), chunksize=5)
    finally:
        pool.close()
        pool.join()
    worker_pids = {pid for _, pid in results}
    assert os.getpid() not in worker_pids
    tp = open_tape(tape)
    sessions = {s.id: s for s in tp.sessions()}
    calls = tp.calls(function="square_with_pid")
    assert sorted(c.args["x"] for c in calls) == list(range(100))
    for c in calls:
        s = sessions[c.session]
        assert s.pid == c.result[1]
        assert s.parent == parent_session
        assert c.result[0] == c.args["x"] ** 2
    assert {sessions[c.session].pid for c in calls} == worker_pids


def test_multiprocessing_spawn_process(tape):
    assert os.environ["CALLTAPE_TAPE"] == str(tape)   # what the spawned child relies on
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_workers.run_squares, args=(0, 200))
    p.start()
    p.join(120)
    assert p.exitcode == 0
    tp = open_tape(tape)
    sessions = [s for s in tp.sessions() if s.pid == p.pid]
    assert len(sessions) == 1
    assert sessions[0].ppid == os.getpid()
    xs = sorted(c.args["x"] for c in tp.calls() if c.session == sessions[0].id)
    assert xs == list(range(200))


def test_multiprocessing_spawn_pool(tape):
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(2)
    try:
        results = pool.map(_workers.square_with_pid, range(60), chunksize=3)
    finally:
        pool.close()
        pool.join()
    assert [r for r, _ in results] == [x * x for x in range(60)]
    tp = open_tape(tape)
    sessions = {s.id: s for s in tp.sessions()}
    calls = tp.calls(function="square_with_pid")
    assert sorted(c.args["x"] for c in calls) == list(range(60))
    for c in calls:
        assert sessions[c.session].pid == c.result[1] != os.getpid()
        assert sessions[c.session].ppid == os.getpid()


# ------------------------------------------- several processes, one tape ----

START_TOGETHER = """
        import time

        def wait_for_start():        # every child starts recording at the same moment
            print("ready", flush=True)
            while not os.path.exists(sys.argv[1]):
                pass
"""


def _start_together(tmp_path, path, n, body, name):
    script = write_script(tmp_path, textwrap.dedent(START_TOGETHER) + textwrap.dedent(body),
                          name=name)
    go = tmp_path / f"go-{path.name}"
    procs = [subprocess.Popen([sys.executable, str(script), str(go)], env=child_env(path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
    finally:
        go.touch()
    pids = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        pids.append(int(out.split()[-1]))
    return pids


def test_four_processes_record_onto_one_tape(tmp_path):
    path = tmp_path / "shared.db"
    pids = _start_together(tmp_path, path, 4, """
        import calltape
        @calltape.record
        def f(i):
            return i
        wait_for_start()
        for i in range(2000):
            f(i)
        print(os.getpid())
    """, "four.py")
    tp = calltape.open(path, trust=True)
    sessions = tp.sessions()
    assert sorted(s.pid for s in sessions) == sorted(pids)
    calls = tp.calls()
    assert len(calls) == 8000
    assert len({c.id for c in calls}) == 8000
    for s in sessions:
        xs = sorted(c.args["i"] for c in calls if c.session == s.id)
        assert xs == list(range(2000)), f"session of pid {s.pid} lost calls"
    fns = tp.functions()
    assert len(fns) == 1 and fns[0].calls == 8000


def test_processes_creating_a_new_tape_at_once_lose_nothing(tmp_path):
    for round_ in range(10):
        path = tmp_path / f"new-{round_}.db"
        pids = _start_together(tmp_path, path, 2, """
            import json, calltape
            @calltape.record
            def f(i):
                return i
            wait_for_start()
            for i in range(20):
                f(i)
            assert calltape.flush(timeout=30), calltape.stats()
            print(os.getpid())
        """, "create.py")
        tp = calltape.open(path, trust=True)
        by_pid = {}
        sessions = {s.id: s.pid for s in tp.sessions()}
        for c in tp.calls():
            by_pid[sessions[c.session]] = by_pid.get(sessions[c.session], 0) + 1
        assert by_pid == {pid: 20 for pid in pids}, f"round {round_}"
