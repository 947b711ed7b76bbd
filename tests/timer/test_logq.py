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


@needs_probes
def test_records_made_in_c_are_logging_s_own(tmp_path: Path) -> None:
    p = run(tmp_path, """
        import logging, threading, time, calltape
        import calltape.probes as probes
        got = []
        class Keep(logging.Handler):
            def emit(self, r):
                got.append(r)
        log = logging.getLogger("calltape.probes")
        keep = Keep()
        log.addHandler(keep); log.setLevel(logging.INFO)
        parent = logging.getLogger("calltape")  # propagation reaches its handler
        up = Keep(); parent.addHandler(up); parent.propagate = False
        def work(i):
            return i
        p = probes.attach_to(work)
        p.instruments["l"] = probes.LogInstrument("i", "i", event="call")
        p.start()
        before = time.time()
        threading.Thread(target=work, args=(1,), name="worker-1").start()
        time.sleep(0.2)
        calltape.flush_logs()
        after = time.time()
        assert len(got) == 2 and got[0] is got[1], got  # one record, both handlers
        r = got[0]
        ref = log.makeRecord(log.name, logging.INFO, "<probe>", 0, "Probe (i) = 1", None, None)
        assert sorted(vars(r)) == sorted(vars(ref)), (sorted(vars(r)), sorted(vars(ref)))
        for k in ("name", "levelno", "levelname", "pathname", "filename", "module", "lineno",
                  "funcName", "process", "processName", "args", "exc_info", "msg"):
            assert getattr(r, k) == getattr(ref, k), (k, getattr(r, k), getattr(ref, k))
        assert type(r) is logging.LogRecord and r.getMessage() == "Probe (i) = 1"
        assert r.threadName == "worker-1" and r.thread != threading.get_ident()
        assert before <= r.created <= after, (before, r.created, after)
        assert r.msecs == int((r.created % 1) * 1000) or abs(r.msecs - (r.created % 1) * 1000) < 1.01
        start = logging._startTime / 1e9 if logging._startTime > 1e12 else logging._startTime
        assert abs(r.relativeCreated - (r.created - start) * 1000) < 1
        line = logging.Formatter("%(asctime)s %(threadName)s %(message)s").format(r)
        assert line.endswith(" worker-1 Probe (i) = 1"), line

        # the handler's level, the logger's filters, propagate=False
        del got[:]
        up.setLevel(logging.WARNING)
        log.addFilter(lambda rec: rec.getMessage() != "Probe (i) = 2")
        for i in (2, 3):
            work(i)
        calltape.flush_logs()
        assert [x.getMessage() for x in got] == ["Probe (i) = 3"], got

        # a record factory of the user's own makes the records
        made = []
        base = logging.getLogRecordFactory()
        def factory(*a, **kw):
            rec = base(*a, **kw)
            rec.custom = "yes"
            made.append(rec)
            return rec
        logging.setLogRecordFactory(factory)
        del got[:]
        work(4)
        calltape.flush_logs()
        assert [x.custom for x in got] == ["yes"] and got[0] in made
        logging.setLogRecordFactory(base)

        # no handler anywhere: logging.lastResort has the line (WARNING and over)
        log.removeHandler(keep); parent.removeHandler(up); log.filters.clear()
        log.propagate = False
        class Err(probes.LogInstrument):
            level = logging.ERROR
        p.instruments["e"] = Err("bad", "i", event="call")
        del p.instruments["l"]
        work(5)
        calltape.flush_logs()
        print("done")
    """)
    assert p.stdout.strip() == "done"
    assert "Probe (bad) = 5" in p.stderr


@needs_probes
def test_a_record_no_handler_kept_is_never_seen_changed(tmp_path: Path) -> None:
    """The drainer makes a record nobody kept the next line's: a handler that
    changes or adds attributes, keeps a record or its __dict__ still sees
    each line's own record, with logging's own fields."""
    p = run(tmp_path, """
        import logging, calltape
        import calltape.probes as probes
        log = logging.getLogger("calltape.probes")
        log.setLevel(logging.INFO); log.propagate = False
        import weakref
        seen, kept, dicts, refs = [], [], [], []
        class Look(logging.Handler):  # keeps nothing, changes every third
            def emit(self, r):
                seen.append((r.getMessage(), r.levelname, getattr(r, "extra", None), id(r)))
                n = int(r.getMessage().split()[-1])
                if n % 3 == 0:
                    r.levelname = "CHANGED"
                if n % 5 == 0:
                    r.extra = "added"
                if n % 7 == 0:
                    kept.append(r)
                if n % 11 == 0:
                    dicts.append(r.__dict__)
                if n % 13 == 0:
                    refs.append((n, weakref.ref(r)))
        log.addHandler(Look())
        def work(i):
            return i
        p = probes.attach_to(work)
        p.instruments["l"] = probes.LogInstrument("i", "i", event="call")
        p.start()
        for i in range(1, 200):
            work(i)
        calltape.flush_logs()
        assert [m for m, *_ in seen] == [f"Probe (i) = {i}" for i in range(1, 200)], seen[:5]
        assert all(lv == "INFO" and extra is None for _, lv, extra, _ in seen), seen[:5]
        assert [r.getMessage() for r in kept] == [f"Probe (i) = {i}" for i in range(7, 200, 7)]
        assert [d["msg"] for d in dicts] == [f"Probe (i) = {i}" for i in range(11, 200, 11)]
        # a weak reference sees its record die, never become another line's
        assert all(ref() is None or ref().msg == f"Probe (i) = {n}" for n, ref in refs), refs
        assert all(r.levelname == ("CHANGED" if int(r.msg.split()[-1]) % 3 == 0 else "INFO")
                   for r in kept)
        # a formatting handler beside it (it adds `message` to each record)
        stream = logging.StreamHandler(open("lines.txt", "w"))
        stream.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        log.addHandler(stream)
        del seen[:]
        for i in range(1, 50):
            work(i)
        calltape.flush_logs()
        stream.flush()
        lines = open("lines.txt").read().splitlines()
        assert lines == [f"{'CHANGED' if i % 3 == 0 else 'INFO'} Probe (i) = {i}"
                         for i in range(1, 50)], lines[:5]
        assert all(lv == "INFO" for _, lv, _, _ in seen)
        print("done")
    """)
    assert p.stdout.strip() == "done", p.stdout + p.stderr


@needs_probes
def test_lines_of_every_length_arrive_whole_in_order(tmp_path: Path) -> None:
    # texts of 1 byte to 300 kB from three threads: the queue's ring of text
    # wraps many times, and a text too long for it is kept apart
    p = run(tmp_path, """
        import logging, threading, calltape
        import calltape.probes as probes
        got = []
        class Keep(logging.Handler):
            def emit(self, r):
                got.append((r.threadName, r.getMessage()))
        log = logging.getLogger("calltape.probes")
        log.addHandler(Keep()); log.propagate = False; log.setLevel(logging.INFO)
        class Long(probes.LogInstrument):
            max_chars = 10**6
        def work(s):
            return s
        p = probes.attach_to(work)
        p.instruments["l"] = Long("s", "s", event="call")
        p.start()
        def text(who, i):
            n = 300_000 if i % 997 == 5 else 1 + (i * 7919) % 3000
            return (who * n)[:n]
        def run(who):
            for i in range(4000):
                work(text(who, i))
        ts = [threading.Thread(target=run, args=(w,), name=w) for w in "abc"]
        for t in ts: t.start()
        for t in ts: t.join()
        assert calltape.flush_logs(60)
        assert calltape._native.logq_stats()["dropped"] == 0
        for who in "abc":
            mine = [m for t, m in got if t == who]
            assert mine == [f"Probe (s) = {text(who, i)}" for i in range(4000)], who
        print(len(got))
    """)
    assert p.stdout.split() == ["12000"]
