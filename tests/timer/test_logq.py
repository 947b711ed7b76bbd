"""The log thread (record/logq.c, calltape._logq): the timer's and the probes' lines are
queued in C and handed to logging in queue order, at flush_logs() and at exit; a full
queue drops and says so once; a forked child writes only its own lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PY = sys.executable
needs_probes = pytest.mark.skipif(sys.version_info < (3, 12), reason="probes need 3.12+")


def run(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "CALLTAPE_TAPE": str(tmp_path / "t.db")}
    p = subprocess.run([PY, "-W", "always", str(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p


@needs_probes
def test_probe_lines_in_queue_order_from_threads_with_their_thread_and_level(
        tmp_path: Path) -> None:
    p = run(tmp_path, """
        import logging, sys, threading, calltape
        import calltape.probes as probes
        records = []
        class Keep(logging.Handler):
            def emit(self, r):
                records.append((r.getMessage(), r.threadName, r.levelno, r.created))
        log = logging.getLogger("calltape.probes")
        log.addHandler(Keep()); log.propagate = False; log.setLevel(logging.INFO)
        def work(who, i):
            return i
        p = probes.attach_to(work)
        p.instruments["l"] = probes.LogInstrument("v", "f'{who}-{i}'", event="call")
        p.start()
        def run(who):
            for i in range(300):
                work(who, i)
        ts = [threading.Thread(target=run, args=(w,), name=w) for w in ("a", "b")]
        for t in ts: t.start()
        for t in ts: t.join()
        assert calltape.flush_logs(30)
        n = len(records)
        log.setLevel(logging.WARNING)  # the logger's level is honoured when handed
        work("c", 0)
        calltape.flush_logs()
        assert len(records) == n
        for msg, thread, level, created in records:
            print(msg, thread, level, created)
    """)
    rows = [ln.split() for ln in p.stdout.splitlines()]
    assert len(rows) == 600
    for who in ("a", "b"):
        mine = [r for r in rows if r[3].startswith(who)]  # "Probe (v) = a-0 a 20 <created>"
        # each thread's lines in its order, named after it, INFO
        assert [r[3] for r in mine] == [f"{who}-{i}" for i in range(300)]
        assert {r[4] for r in mine} == {who} and {r[5] for r in mine} == {"20"}
    created = [float(r[6]) for r in rows]
    assert created == sorted(created)  # the queue's order is the order of queuing


@needs_probes
def test_full_queue_drops_and_warns_once(tmp_path: Path) -> None:
    p = run(tmp_path, """
        import logging, threading, warnings, calltape
        from calltape import _native
        import calltape.probes as probes
        gate, got = threading.Event(), []
        class Slow(logging.Handler):
            def emit(self, r):
                gate.wait()  # the log thread is held at its first line
                got.append(r.getMessage())
        log = logging.getLogger("calltape.probes")
        log.addHandler(Slow()); log.propagate = False; log.setLevel(logging.INFO)
        def work(i):
            return i
        p = probes.attach_to(work)
        p.instruments["l"] = probes.LogInstrument("i", "i", event="call")
        p.start()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            for i in range(70000):
                work(i)
            gate.set()
            calltape.flush_logs()
        s = _native.logq_stats()
        assert s["dropped"] > 0 and s["queued"] + s["dropped"] == 70000, s
        assert len(got) == s["queued"] and got[0] == "Probe (i) = 0"
        full = [x for x in w if "log queue was full" in str(x.message)]
        assert len(full) == 1 and full[0].category.__name__ == "RecordingWarning"
        print(s["dropped"])
    """)
    assert int(p.stdout.split()[-1]) >= 70000 - 65536 - 256


def test_timer_lines_after_fork_each_process_its_own(tmp_path: Path) -> None:
    run(tmp_path, """
        import os, calltape
        @calltape.timer(log_to_console=False, results=None)
        def f(x):
            return x
        for i in range(50):
            f(i)  # queued; maybe not yet written when fork() runs
        pid = os.fork()
        if pid == 0:
            for i in range(50, 80):
                f(i)
            raise SystemExit(0)  # atexit: the child's lines are handed before it goes
        os.waitpid(pid, 0)
        for i in range(80, 100):
            f(i)
    """)
    lines = [json.loads(x) for x in open(tmp_path / "logs" / "timing.log")]
    args = sorted(int(ln["arguments"]["args"][0]) for ln in lines)
    assert args == list(range(100))  # none lost, none written twice
    assert len({ln["pid"] for ln in lines}) == 2
