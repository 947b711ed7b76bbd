"""Child processes, written the way users write them: ``with Pool() as
pool: pool.map(...)`` with no ``close()``/``join()``, ProcessPoolExecutor,
a plain ``os.fork()``, Python subprocesses, each under ``@calltape.record``
and under the ``calltape`` console script, for every start method.

Every program is a real script in a real interpreter, with a timeout so
that a hang fails the test instead of stalling the run."""

import os
import signal
import subprocess
import sys
import sysconfig
import textwrap

import pytest

import calltape

METHODS = ["fork", "spawn", "forkserver"]
CALLTAPE = os.path.join(sysconfig.get_path("scripts"), "calltape")
TIMEOUT = 120


def user_env(**extra):
    """A user's shell: no PYTHONPATH, no calltape settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CALLTAPE_"))}
    env.update(extra)
    return env


def write(folder, files):
    for name, source in files.items():
        (folder / name).write_text(textwrap.dedent(source))


def run(folder, argv, rc=0, **extra):
    proc = subprocess.run([str(a) for a in argv], cwd=str(folder), env=user_env(**extra),
                          capture_output=True, text=True, timeout=TIMEOUT)
    if rc is not None:
        assert proc.returncode == rc, (f"exit {proc.returncode}, expected {rc}\n--- stdout ---\n"
                                       f"{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    return proc


def recorded(folder, prog, *args, rc=0):
    """``python prog.py`` with @calltape.record onto folder/t.db."""
    return run(folder, [sys.executable, prog, *args], rc=rc, CALLTAPE_TAPE=str(folder / "t.db"))


def calltape_run(folder, prog, *args, rc=0):
    """``calltape run --tape t.db prog.py`` from the console script."""
    return run(folder, [CALLTAPE, "run", "--tape", folder / "t.db", prog, *args], rc=rc)


def tape_of(folder):
    return calltape.open(folder / "t.db")


def main_session(tape, pid):
    (session,) = [s for s in tape.sessions() if s.pid == pid]
    return session


POOL_RECORDED = """
    import multiprocessing, os, sys
    import calltape

    @calltape.record
    def square(x):
        return x * x

    if __name__ == "__main__":
        multiprocessing.set_start_method(sys.argv[1])
        square(100)  # the program records before it starts its workers
        with multiprocessing.Pool(2) as pool:
            print(sum(pool.map(square, range(6))), os.getpid())
"""

POOL_PLAIN = """
    import multiprocessing, os, sys

    def square(x):
        return x * x

    if __name__ == "__main__":
        multiprocessing.set_start_method(sys.argv[1])
        with multiprocessing.Pool(2) as pool:
            print(sum(pool.map(square, range(6))), os.getpid())
"""


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("how", ["record", "run"])
def test_pool_in_a_with_block_keeps_every_worker_call(tmp_path, how, method):
    # the with block ends with terminate(): SIGTERM to the workers
    write(tmp_path, {"prog.py": POOL_RECORDED if how == "record" else POOL_PLAIN})
    proc = (recorded if how == "record" else calltape_run)(tmp_path, "prog.py", method)
    total, pid = proc.stdout.split()
    assert total == "55"
    tape = tape_of(tmp_path)
    workers = [c for c in tape.calls("square") if c.session != main_session(tape, int(pid)).id]
    assert sorted(c.args["x"] for c in workers) == list(range(6))
    # the workers' calls are counted as recorded by calltape run's exit line
    if how == "run":
        assert "recorded 6 calls" in proc.stderr, proc.stderr


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("how", ["record", "run"])
def test_worker_sessions_have_the_program_as_parent(tmp_path, how, method):
    write(tmp_path, {"prog.py": POOL_RECORDED if how == "record" else POOL_PLAIN})
    proc = (recorded if how == "record" else calltape_run)(tmp_path, "prog.py", method)
    pid = int(proc.stdout.split()[1])
    tape = tape_of(tmp_path)
    parent = main_session(tape, pid)
    assert parent.parent is None
    children = [s for s in tape.sessions() if s.id != parent.id]
    assert children and all(s.parent == parent.id for s in children), (
        [(s.id, s.pid, s.ppid, s.parent) for s in tape.sessions()], parent.id)
    # a spawned worker imports the script as __mp_main__: recorded under
    # the name the parent used
    assert {(f.module, f.qualname) for f in tape.functions()} == {("__main__", "square")}


@pytest.mark.parametrize("method", METHODS)
def test_process_pool_executor_after_the_parent_called_the_function(tmp_path, method):
    write(tmp_path, {"prog.py": """
        import multiprocessing, sys
        from concurrent.futures import ProcessPoolExecutor
        import calltape

        @calltape.record
        def work(n):
            return n + 1

        if __name__ == "__main__":
            work(-1)
            ctx = multiprocessing.get_context(sys.argv[1])
            with ProcessPoolExecutor(2, mp_context=ctx) as ex:
                print(sum(ex.map(work, range(2000), chunksize=50)))
    """})
    proc = recorded(tmp_path, "prog.py", method)
    assert proc.stdout.split() == [str(sum(range(1, 2001)))]
    tape = tape_of(tmp_path)
    assert sorted(c.args["n"] for c in tape.calls("work")) == list(range(-1, 2000))
    assert all(s.counters["dropped"] == 0 for s in tape.sessions())


def test_forkserver_process_without_flush_keeps_its_calls(tmp_path):
    write(tmp_path, {"prog.py": """
        import multiprocessing
        import calltape

        @calltape.record
        def f(x):
            return x * 2

        def work(n):
            for i in range(n):
                f(i)

        if __name__ == "__main__":
            multiprocessing.set_start_method("forkserver")
            p = multiprocessing.Process(target=work, args=(300,))
            p.start()
            p.join()
            print(p.exitcode)
    """})
    assert recorded(tmp_path, "prog.py").stdout.split() == ["0"]
    assert sorted(c.args["x"] for c in tape_of(tmp_path).calls("f")) == list(range(300))


def test_fork_soon_after_the_first_calls_keeps_the_childs_calls(tmp_path):
    write(tmp_path, {"prog.py": """
        import os
        import calltape

        @calltape.record
        def job(n):
            return n

        job(10)
        pid = os.fork()
        if pid == 0:
            for i in range(1000):
                job(i)
        else:
            os.waitpid(pid, 0)
            print(os.getpid())
    """})
    pid = int(recorded(tmp_path, "prog.py").stdout)
    tape = tape_of(tmp_path)
    parent = main_session(tape, pid)
    (child,) = [s for s in tape.sessions() if s.id != parent.id]
    assert child.parent == parent.id
    assert child.counters["dropped"] == 0
    by_session = {}
    for c in tape.calls("job"):
        by_session.setdefault(c.session, []).append(c.args["n"])
    assert by_session == {parent.id: [10], child.id: list(range(1000))}


def test_a_forked_child_under_calltape_run_prints_no_exit_line_of_its_own(tmp_path):
    """A plain os.fork() child that ends normally runs the exit handlers it
    inherited: its calls are counted by the parent's one exit line."""
    write(tmp_path, {"prog.py": """
        import os

        def job(n):
            return n

        def main():
            job(-1)
            pid = os.fork()
            for i in range(5):
                job(i)
            if pid:
                os.waitpid(pid, 0)

        main()
    """})
    proc = calltape_run(tmp_path, "prog.py")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("calltape:")]
    assert len(lines) == 1, proc.stderr
    assert "recorded 13 calls" in lines[0] and "1 child process" in lines[0]
    assert sorted(c.args["n"] for c in tape_of(tmp_path).calls("job")) == sorted(
        [-1, *range(5), *range(5)])


def test_fork_after_the_writer_started_does_not_warn(tmp_path):
    # CPython 3.12+ warns when a multi-threaded process forks: calltape's
    # writer must not be a thread at that moment
    write(tmp_path, {"prog.py": """
        import os
        import calltape

        @calltape.record
        def job(n):
            return n

        for i in range(20):
            job(i)
            assert calltape.flush()  # the writer thread has run
            pid = os.fork()
            job(100 + i if pid else 200 + i)  # both sides record again after the fork
            if pid:
                _, status = os.waitpid(pid, 0)
                print(os.waitstatus_to_exitcode(status))
            else:
                os._exit(0 if calltape.flush() else 1)
    """})
    # -W error raises the warning inside os.fork(), where CPython drops it
    # (3.12, 3.13): "always" shows each one, as pytest does
    for flag in ("always::DeprecationWarning", "error::DeprecationWarning"):
        proc = run(tmp_path, [sys.executable, "-W", flag, "prog.py"],
                   CALLTAPE_TAPE=str(tmp_path / "t.db"))
        assert proc.stderr == ""
        assert proc.stdout.split() == ["0"] * 20
    calls = sorted(c.args["n"] for c in tape_of(tmp_path).calls("job"))
    assert calls == sorted([*range(20), *range(100, 120), *range(200, 220)] * 2)


SIGTERM_PROG = """
    import os, signal, sys, time
    {before}
    import calltape

    @calltape.record
    def step(i):
        return i

    for i in range(50):
        step(i)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
"""


def start_and_terminate(tmp_path, before=""):
    write(tmp_path, {"prog.py": SIGTERM_PROG.format(before=before)})
    proc = subprocess.Popen([sys.executable, "prog.py"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=user_env(CALLTAPE_TAPE=str(tmp_path / "t.db")))
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    return proc.returncode, out, err


def test_sigterm_writes_the_pending_calls_then_kills_as_before(tmp_path):
    rc, _, err = start_and_terminate(tmp_path)
    assert rc == -signal.SIGTERM, err
    assert err == ""
    assert sorted(c.args["i"] for c in tape_of(tmp_path).calls("step")) == list(range(50))


def test_sigterm_chains_to_the_programs_own_handler(tmp_path):
    before = "signal.signal(signal.SIGTERM, lambda s, f: (os.write(1, b'bye\\n'), os._exit(3)))"
    rc, out, _ = start_and_terminate(tmp_path, before)
    assert (rc, out) == (3, "bye\n")
    assert len(tape_of(tmp_path).calls("step")) == 50


def test_sigterm_kills_a_process_whose_main_thread_waits_in_c(tmp_path):
    # the signal lands in another thread while the main thread waits on a
    # lock: a Python-level handler would only note it (it runs when the main
    # thread next runs bytecode) and the process would live on forever, as a
    # Pool worker did when terminate()'s SIGTERM came just before it waited
    # on its queue's lock
    write(tmp_path, {"prog.py": """
        import os, signal, threading, time
        import calltape

        @calltape.record
        def step(i):
            return i

        for i in range(50):
            step(i)

        def send():
            time.sleep(0.2)  # the main thread is waiting by then
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

        threading.Thread(target=send).start()
        threading.Event().wait()
    """})
    proc = subprocess.run([sys.executable, "prog.py"], cwd=tmp_path, capture_output=True, text=True,
                          env=user_env(CALLTAPE_TAPE=str(tmp_path / "t.db")), timeout=60)
    assert (proc.returncode, proc.stderr) == (-signal.SIGTERM, "")
    assert sorted(c.args["i"] for c in tape_of(tmp_path).calls("step")) == list(range(50))


def test_sigterm_before_anything_was_recorded_kills_at_once(tmp_path):
    # no writer runs: the handler itself ends the process
    write(tmp_path, {"prog.py": """
        import os, signal
        import calltape
        os.kill(os.getpid(), signal.SIGTERM)
        print("survived")
    """})
    proc = recorded(tmp_path, "prog.py", rc=-signal.SIGTERM)
    assert proc.stdout == ""


@pytest.mark.parametrize("method", METHODS)
def test_pool_with_block_never_hangs_on_terminate(tmp_path, method):
    # terminate()'s SIGTERM can reach a worker at any point of its loop,
    # including just before it blocks on the task queue: run the program
    # several times, each with a timeout, so that a lost SIGTERM fails here
    write(tmp_path, {"prog.py": POOL_RECORDED})
    for _ in range(8):
        proc = subprocess.run([sys.executable, "prog.py", method], cwd=tmp_path, capture_output=True,
                              text=True, env=user_env(CALLTAPE_TAPE=str(tmp_path / "t.db")), timeout=30)
        assert (proc.returncode, proc.stdout.split()[0]) == (0, "55"), proc.stderr
    assert len(tape_of(tmp_path).calls("square")) == 8 * 7


def test_an_ignored_sigterm_stays_ignored(tmp_path):
    write(tmp_path, {"prog.py": """
        import os, signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        import calltape
        os.kill(os.getpid(), signal.SIGTERM)
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)
    """})
    assert recorded(tmp_path, "prog.py").stdout == "True\n"


CHILDREN = {
    "child.py": """
        import sys
        sys.stderr.write("child wrote this\\n")
        print("out", flush=True)
    """,
    "childmod.py": """
        import sys
        sys.stderr.write("child wrote this\\n")
        print("out", flush=True)
    """,
    "prog.py": """
        import multiprocessing, os, subprocess, sys, tempfile

        def worker(i):
            sys.stderr.write(f"worker {i}\\n")
            sys.stderr.flush()
            return i

        def child_stderr(argv):
            done = subprocess.run([sys.executable, *argv], capture_output=True)
            assert done.stdout == b"out\\n", done
            return done.stderr

        def worker_stderr(method):
            # the workers write on the parent's stderr: fd 2, sent to a file
            with tempfile.TemporaryFile() as f:
                saved = os.dup(2)
                os.dup2(f.fileno(), 2)
                try:
                    ctx = multiprocessing.get_context(method)
                    with ctx.Pool(1) as pool:
                        pool.map(worker, range(2))
                finally:
                    os.dup2(saved, 2)
                    os.close(saved)
                f.seek(0)
                return f.read()

        if __name__ == "__main__":
            kind = sys.argv[1]
            if kind == "-c":
                got = child_stderr(["-c", "import sys; sys.stderr.write('child wrote this\\\\n');"
                                          " print('out')"])
            elif kind == "script":
                got = child_stderr(["child.py"])
            elif kind == "-m":
                got = child_stderr(["-m", "childmod"])
            else:
                got = worker_stderr(kind)
            print(repr(got))
    """,
}


@pytest.mark.parametrize("kind", ["-c", "script", "-m", "spawn", "forkserver"])
def test_a_childs_stderr_is_exactly_what_the_program_wrote(tmp_path, kind):
    write(tmp_path, CHILDREN)
    proc = calltape_run(tmp_path, "prog.py", kind)
    want = b"worker 0\nworker 1\n" if kind in ("spawn", "forkserver") else b"child wrote this\n"
    assert proc.stdout == repr(want) + "\n", proc.stderr
    (line,) = proc.stderr.splitlines()  # calltape's exit line, nothing else
    assert line.startswith("calltape: recorded ")


def test_the_programs_own_sitecustomize_still_runs_in_children(tmp_path):
    write(tmp_path, CHILDREN)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.stderr.write('own site\\n')\n")
    proc = run(tmp_path, [CALLTAPE, "run", "--tape", tmp_path / "t.db", "prog.py", "script"],
               PYTHONPATH=str(site))
    assert proc.stdout == repr(b"own site\nchild wrote this\n") + "\n", proc.stderr
    assert proc.stderr.splitlines()[0] == "own site"
