"""Reading a tape: search filters alone and combined, Call objects, the
command line, and every bad input a user can cause."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

import calltape


@calltape.record
def price(qty, unit, currency="EUR", *, discount=0.0):
    if qty < 0:
        raise ValueError(f"negative quantity {qty}")
    return qty * unit * (1 - discount)


@calltape.record
def slow(seconds):
    time.sleep(seconds)
    return seconds


@calltape.record
def outer(n):
    return [price(i, 1.0) for i in range(n)]


@pytest.fixture
def shop(tape):
    """A tape of 307 calls: 300 price calls (100 in USD), 2 slow ones, 1 price
    that raises, 1 outer making 3 price calls."""
    for i in range(300):
        price(i % 5, 2.0, "USD" if i % 3 == 0 else "EUR")
    mid = datetime.now(UTC)
    time.sleep(0.01)
    slow(0.02)
    slow(0.08)
    with pytest.raises(ValueError):
        price(-1, 1.0)
    outer(3)
    assert calltape.flush()
    return tape, mid


def cli(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "calltape", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_search_by_function_and_module_qualified_name_and_glob(shop):
    tape, _ = shop
    t = calltape.open(tape)
    assert len(t.search(function="price")) == 304
    assert len(t.search(function=f"{__name__}.price")) == 304
    assert len(t.search(function="s*")) == 2
    assert len(t.search(function=lambda f: f.qualname == "outer")) == 1
    assert len(t.search(function="nothing")) == 0


def test_search_by_file(shop):
    tape, _ = shop
    t = calltape.open(tape)
    assert len(t.search(file="*test_reading.py")) == 307
    assert len(t.search(file="test_reading")) == 307
    assert len(t.search(file="elsewhere.py")) == 0


def test_search_by_time_range(shop):
    tape, mid = shop
    t = calltape.open(tape)
    after = t.search(since=mid)
    assert {c.qualname for c in after} == {"slow", "price", "outer"}
    assert len(after) == 2 + 1 + 1 + 3
    before = t.search(until=mid)
    assert len(before) == 300
    assert all(c.start <= mid for c in before)
    assert len(t.search(since=mid + timedelta(days=1))) == 0


def test_search_by_duration_and_outcome(shop):
    tape, _ = shop
    t = calltape.open(tape)
    slow_calls = t.search(min_duration=0.015)
    assert sorted(c.args["seconds"] for c in slow_calls) == [0.02, 0.08]
    assert all(c.duration < 0.015 for c in t.search(max_duration=0.015))
    raised = t.search(outcome="raised")
    assert len(raised) == 1
    assert raised[0].exception.type == "builtins.ValueError"
    assert raised[0].exception.message == "negative quantity -1"
    assert len(t.search(outcome="returned")) == 306


def test_search_by_session_thread_and_args(shop):
    tape, _ = shop
    t = calltape.open(tape)
    session = t.sessions()[0].id
    assert len(t.search(session=session)) == 307
    assert len(t.search(session=session + 100)) == 0
    me = t.search(limit=1)[0].thread
    assert len(t.search(thread=me)) == 307
    assert len(t.search(thread=12345)) == 0
    usd = t.search(function="price", args={"currency": "USD"})
    assert len(usd) == 100
    assert all(c.args["currency"] == "USD" for c in usd)


def test_filters_combine(shop):
    tape, mid = shop
    t = calltape.open(tape)
    found = t.search(function="price", until=mid, args={"currency": "EUR"}, outcome="returned",
                     limit=7, order="oldest")
    assert len(found) == 7
    assert all(c.args["currency"] == "EUR" and c.start <= mid for c in found)
    assert len(t.search(function="slow", min_duration=0.05)) == 1


def test_order_and_limit_and_streaming(shop):
    tape, _ = shop
    t = calltape.open(tape)
    newest = [c.start_ns for c in t.search()]
    assert newest == sorted(newest, reverse=True)
    oldest = [c.start_ns for c in t.search(order="oldest")]
    assert oldest == sorted(oldest)
    assert len(t.search(limit=5)) == 5
    assert len(t.search(limit=0)) == 0
    it = iter(t.search(limit=None))
    assert next(it).qualname == "price"       # the last call made is outer's last price
    with pytest.raises(ValueError, match="order"):
        t.search(order="sideways")


def test_call_objects(shop):
    tape, _ = shop
    t = calltape.open(tape)
    o = t.search(function="outer")[0]
    assert o.function == o.qualname == "outer"
    assert o.module == __name__
    assert o.file.endswith("test_reading.py") and o.line > 0
    assert o.end >= o.start and o.duration > 0
    kids = o.children()
    assert [k.args["qty"] for k in kids] == [0, 1, 2]
    assert all(k.parent == o.id and k.depth == 1 for k in kids)
    c = t.search(function="price", args={"currency": "USD"}, limit=1)[0]
    assert c.bound.args == (c.args["qty"], 2.0, "USD")
    assert c.bound.kwargs == {}  # discount took its default: left to the function
    assert c.defaults == {"discount"}
    assert price(*c.bound.args, **c.bound.kwargs) == c.result
    assert "price(" in repr(c) and "USD" in c.preview
    assert t.call(c.id).args == c.args
    with pytest.raises(KeyError, match="no call with id 999999"):
        t.call(999999)
    fn = {f.qualname: f for f in t.functions()}["price"]
    assert fn.calls == 304 and fn.raised == 1
    assert fn.mean == pytest.approx(fn.total / 304)
    assert fn.parameters == ["qty", "unit", "currency", "discount"]
    assert fn.defaults == {"currency": "EUR", "discount": 0.0}
    assert "307 calls of 3 functions" in repr(t)


class Secret:
    def __init__(self, v):
        self.v = v

    def __eq__(self, other):
        return isinstance(other, Secret) and other.v == self.v


def test_refusal_and_allow_of_custom_classes(tape):
    keep = calltape.record(lambda x: x)
    keep(Secret(7))
    calltape.flush()
    c = calltape.open(tape).search(limit=1)[0]
    with pytest.raises(calltape.RefusedGlobal, match=f"{__name__}.Secret.*allow="):
        c.args
    top = __name__.split(".")[0]
    assert calltape.open(tape, allow=[top]).search(limit=1)[0].args == {"x": Secret(7)}
    assert calltape.open(tape, trust=True).search(limit=1)[0].args == {"x": Secret(7)}


def test_opening_never_modifies_and_reads_while_recording(tmp_path):
    path = tmp_path / "live.db"
    script = tmp_path / "rec.py"
    script.write_text(
        "import calltape, time\n"
        "f = calltape.record(lambda x: x)\n"
        "for i in range(40):\n"
        "    [f(i) for _ in range(1000)]\n"
        "    calltape.flush()\n"
        "    time.sleep(0.02)\n")
    env = dict(os.environ, CALLTAPE_TAPE=str(path))
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    counts = []
    try:
        while proc.poll() is None:
            if path.exists():
                try:
                    counts.append(len(calltape.open(path).search()))
                except calltape.TapeError:
                    pass  # the file exists but its schema is not written yet
            time.sleep(0.05)
    finally:
        proc.wait(30)
    assert proc.returncode == 0
    assert counts and counts == sorted(counts)
    assert len(calltape.open(path).search()) == 40000
    # the tape is the database and its write-ahead log; SQLite's -shm file is
    # a shared-memory index that every reader of a WAL database updates
    files = [p for p in tmp_path.glob("live.db*") if not p.name.endswith("-shm")]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    t = calltape.open(path)
    t.functions(), t.sessions(), list(t.search(limit=10))
    t.close()
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before


# ------------------------------------------------------------ bad input ----

def _err(proc):
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("calltape: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.db"
    with pytest.raises(calltape.TapeError, match="no tape at"):
        calltape.open(path)
    assert str(path) in _err(cli("functions", path, check=False))


def test_not_a_tape(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 100)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t(x)")
    for path in (text, other):
        with pytest.raises(calltape.TapeError, match="not a calltape tape"):
            calltape.open(path)
        assert str(path) in _err(cli("sessions", path, check=False))


def test_newer_tape(shop):
    tape, _ = shop
    calltape.flush()
    with sqlite3.connect(tape) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(calltape.TapeError, match="newer calltape"):
        calltape.open(tape)
    assert "newer calltape" in _err(cli("functions", tape, check=False))


def test_truncated_tape(shop, tmp_path):
    tape, _ = shop
    calltape.flush()
    with sqlite3.connect(tape) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damaged = tmp_path / "damaged.db"
    data = tape.read_bytes()
    damaged.write_bytes(data[: len(data) // 3])
    proc = cli("search", damaged, "--limit", "1000", check=False)
    assert "damaged.db" in _err(proc)


def test_a_damaged_id_index_hides_no_call(shop, tmp_path):
    """The id index pointing at another index's pages (a swapped root page):
    call(id) still finds every call the table holds, and an absent id is
    still a KeyError naming the id."""
    tape, _ = shop
    calltape.flush()
    damaged = tmp_path / "swapped.db"
    with sqlite3.connect(tape) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    damaged.write_bytes(tape.read_bytes())
    db = sqlite3.connect(damaged)
    roots = dict(db.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'index'"))
    db.execute("PRAGMA writable_schema = ON")
    for name, other in (("segments_by_id", "segments_by_start"),
                        ("segments_by_start", "segments_by_id")):
        db.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = ?", (roots[other], name))
    db.commit()
    db.close()
    with calltape.open(tape) as good, calltape.open(damaged) as bad:
        ids = [c.id for c in good.calls()]
        assert len(ids) == 307
        assert [bad.call(i).args for i in ids] == [good.call(i).args for i in ids]
        with pytest.raises(KeyError, match="no call with id 999999"):
            bad.call(999999)


def test_unknown_call_id_and_malformed_time(shop):
    tape, _ = shop
    assert "no call with id 999999" in _err(cli("show", tape, 999999, check=False))
    assert "cannot read the time 'yesterday'" in _err(
        cli("search", tape, "--since", "yesterday", check=False))


# ---------------------------------------------------------- command line ----

def test_cli_tables_and_json(shop):
    tape, _ = shop
    out = cli("functions", tape).stdout
    assert out.splitlines()[0].split()[:3] == ["function", "calls", "raised"]
    assert "price" in out and "304" in out and "\033[" not in out
    rows = json.loads(cli("functions", tape, "--json").stdout)
    assert {r["qualname"]: r["calls"] for r in rows}["price"] == 304
    found = json.loads(cli("search", tape, "--function", "slow", "--json").stdout)
    assert [r["qualname"] for r in found] == ["slow", "slow"]
    assert found[0]["start"] > found[1]["start"]
    out = cli("search", tape, "--min-duration", "0.05", "--since", "1h").stdout
    assert len(out.strip().splitlines()) == 2 and "slow(0.08)" in out
    quick = json.loads(cli("search", tape, "--function", "slow", "--max-duration", "0.05",
                           "--json").stdout)
    assert [r["qualname"] for r in quick] == ["slow"] and quick[0]["duration"] < 0.05
    me = found[0]["thread"]
    assert len(json.loads(cli("search", tape, "--thread", me, "--limit", "1000",
                              "--json").stdout)) == 307
    nothing = cli("search", tape, "--thread", 1, "--json", check=False)
    assert nothing.returncode == 1 and json.loads(nothing.stdout) == []  # as grep: 1
    call_id = found[0]["id"]
    shown = cli("show", tape, call_id).stdout
    assert f"call {call_id}" in shown and "seconds = 0.08" in shown
    env = dict(os.environ, CALLTAPE_TAPE=str(tape))
    assert json.loads(cli("show", call_id, "--json", env=env).stdout)["id"] == call_id
    sessions = json.loads(cli("sessions", tape, "--json").stdout)
    assert sessions[0]["pid"] == os.getpid()
    assert "search" in cli("--help").stdout
