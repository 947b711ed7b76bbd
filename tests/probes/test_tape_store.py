"""The tape-backed spec store: `calltape probe add|list|remove` from one
process instruments another process recording onto the tape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from calltape import probes
from calltape.probes import InstrumentManager, TapeStore

TARGET = textwrap.dedent("""
    import logging, sys, time
    import calltape.probes as probes

    def work(x):
        return x * 2

    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    probes.manager.specs = probes.TapeStore(sys.argv[1])
    probes.manager.process = "target"
    probes.manager.apply_in_background(0.05)
    print("ready", flush=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        work(21)
        time.sleep(0.01)
""")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "calltape.cli", "probe", *args],
                          capture_output=True, text=True, timeout=60)


def wait_for(pred, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_probe_add_list_remove_drives_another_process(tmp_path: Path) -> None:
    tape = str(tmp_path / "t.db")
    script = tmp_path / "target.py"
    script.write_text(TARGET)
    proc = subprocess.Popen([sys.executable, str(script), tape], stdout=subprocess.PIPE,
                            text=True, cwd=str(tmp_path))
    lines: list[str] = []  # the target's output, read as a terminal would: all of it
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    try:
        assert proc.stdout is not None
        reader.start()
        # the background thread's first apply fails (no tape yet): its warning may come
        # first, or even between "ready" and its line end (two writes)
        assert wait_for(lambda: any("ready" in line for line in lines))
        r = cli("add", tape, "w", "__main__.work", "--type", "log", "--value", "result + 1")
        assert r.returncode == 0, r.stderr
        assert wait_for(lambda: any("43" in line for line in lines))  # it fired in the target
        assert wait_for(lambda: "target: applied" in cli("list", tape).stdout)
        listed = json.loads(cli("list", tape, "--json").stdout)
        assert listed["w"]["applied"]["target"]["error"] is None
        assert listed["w"]["applied"]["target"]["lastmodified"] == listed["w"]["lastmodified"]
        r = cli("add", tape, "z", "__main__.work", "--type", "count", "--value", "x / 0")
        assert r.returncode == 0, r.stderr

        def fire_error() -> bool:
            info = json.loads(cli("list", tape, "--json").stdout)["z"]["applied"]
            return bool(info.get("target", {}).get("errors"))

        # the error at fire time, written back to the tape
        assert wait_for(fire_error), "".join(lines[-30:])
        assert "ZeroDivisionError" in cli("list", tape).stdout
        r = cli("remove", tape, "z")
        assert r.returncode == 0, r.stderr
        r = cli("remove", tape, "w")
        assert r.returncode == 0, r.stderr
        assert json.loads(cli("list", tape, "--json").stdout) == {}
    finally:
        proc.kill()
        proc.wait()


def test_apply_error_is_reported_on_the_tape(tmp_path: Path) -> None:
    tape = str(tmp_path / "t.db")
    store = TapeStore(tape)
    store["bad"] = {"target": "no_such_module_xyz.f",
                    "instrument": {"type": "log", "value": "result", "event": "return"}}
    m = InstrumentManager(store, process="me")
    m.instrument_classes.update(probes.manager.instrument_classes)
    m.apply()
    info = store["bad"]["applied"]["me"]
    assert info["error"] and "no_such_module_xyz" in info["error"]
    assert "me: error:" in cli("list", tape).stdout
    m.remove_all()


def test_snapshot_reads_again_only_when_the_version_moves(tmp_path: Path) -> None:
    tape = str(tmp_path / "t.db")
    store = TapeStore(tape)
    store["a"] = {"target": "os.getcwd", "instrument": {"type": "count", "value": "1"}}
    first = store.snapshot()
    assert list(first) == ["a"]
    store.mark("a", "p", {"error": None})  # a report does not move the version
    v = store._version
    store.snapshot()
    assert store._version == v
    store["b"] = {"target": "os.getcwd", "instrument": {"type": "count", "value": "1"}}
    assert sorted(store.snapshot()) == ["a", "b"] and store._version > v


def test_user_errors_are_one_sentence(tmp_path: Path) -> None:
    tape = str(tmp_path / "t.db")
    for args, word in ((("remove", tape, "nope"), "no probe spec 'nope'"),
                       (("add", tape, "x", "not a target"), "not a dotted target"),
                       (("add", tape, "x", "m.f", "--value", "1 +"), "not valid Python")):
        r = cli(*args)
        assert r.returncode == 2
        assert word in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "nowhere")


def test_an_older_tape_reads_as_no_specs_and_a_writer_upgrades_it(tmp_path: Path) -> None:
    import sqlite3

    tape = str(tmp_path / "t.db")
    TapeStore(tape)["a"] = {"target": "os.getcwd", "instrument": {"type": "count"}}
    with sqlite3.connect(tape) as con:  # back to tape format 5
        con.executescript("DROP TABLE specs; DROP TABLE spec_applied;"
                          " DELETE FROM meta WHERE key = 'spec_changes'; PRAGMA user_version = 5")
    store = TapeStore(tape)
    assert store.snapshot() == {} and store._version == 0  # read as it is
    store["b"] = {"target": "os.getcwd", "instrument": {"type": "count"}}
    assert list(store.snapshot()) == ["b"]
    with sqlite3.connect(tape) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 6


def _count_spec(target: str = "probe_subjects.Cart.add") -> dict:
    return {"target": target, "instrument": {"type": "count", "value": "1", "event": "call"}}


def test_one_read_connection_and_one_query_per_apply(tmp_path: Path) -> None:
    store = TapeStore(str(tmp_path / "t.db"))
    assert store.snapshot() == {} and store.reader.opens == 0  # no tape yet: no specs
    store["a"] = _count_spec()
    m = InstrumentManager(store, process="me")
    m.instrument_classes.update(probes.manager.instrument_classes)
    m.apply()
    queries = store.reader.queries
    for _ in range(5):
        m.apply()
    assert store.reader.opens == 1  # the same connection every time
    assert store.reader.queries == queries + 5  # nothing changed: the version alone
    store["b"] = _count_spec("probe_subjects.Cart.total")
    m.apply()
    assert store.reader.queries == queries + 7  # the version, then one read of every spec
    assert sorted(m) == ["a", "b"] and store.reader.opens == 1
    m.remove_all()


FORKER = textwrap.dedent("""
    import os, sys
    from calltape.probes import TapeStore

    spec = {"target": "os.getcwd", "instrument": {"type": "count", "value": "1"}}
    store = TapeStore(sys.argv[1])
    store["a"] = spec
    assert sorted(store.snapshot()) == ["a"] and store.reader.opens == 1
    pid = os.fork()
    if pid == 0:  # the child: the parent's connection is not used, nor closed
        store["b"] = spec
        ok = sorted(store.snapshot()) == ["a", "b"] and store.reader.opens == 2
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert sorted(store.snapshot()) == ["a", "b"] and store.reader.opens == 1
    print("ok")
""")


def test_a_forked_child_reads_over_a_connection_of_its_own(tmp_path: Path) -> None:
    # in a process of its own: this one has threads, and fork() wants none
    script = tmp_path / "forker.py"
    script.write_text(FORKER)
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "t.db")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
