"""Each call tagged with the test that made it (pytest --calltape): real pytest
sessions in subprocesses over a small project, with and without xdist, read
back with Tape.search(test=), Call.test, Tape.tests() and the command line."""

import json
import os
import sqlite3
import subprocess
import sysconfig

import pytest

import calltape

CART = '''
def price(qty, unit):
    return qty * unit

def total(items):
    return sum(price(q, u) for q, u in items)

def setup_db():
    return "db"

def teardown_db():
    return None
'''

CATALOG = '''
def at_import():
    return 1

at_import()  # when the test module imports it: collecting, before any test
'''

CONFTEST = '''
import pytest
import cart

@pytest.fixture(scope="session")
def db():
    cart.setup_db()
    yield
    cart.teardown_db()

@pytest.fixture
def basket():
    cart.price(100, 1.0)
    yield
    cart.price(200, 1.0)
'''

TESTS = '''
import threading
import pytest
import cart
import catalog

def test_total(db, basket):
    assert cart.total([(3, 2.0), (1, 1.5)]) == 7.5

def test_other(db):
    assert cart.total([(5, 1.0)]) == 5
    t = threading.Thread(target=cart.price, args=(7, 1.0))
    t.start()
    t.join()

@pytest.mark.parametrize("q", [1, 2])
def test_param(q):
    cart.price(q, 10.0)

class TestCart:
    def test_method(self, calltape_tape):
        cart.price(9, 9.0)
        mine = calltape_tape.calls("price")
        assert [c.args["qty"] for c in mine] == [9]
        assert {c.test for c in calltape_tape.calls()} == {
            "tests/test_cart.py::TestCart::test_method"}
'''

TOTAL = "tests/test_cart.py::test_total"
OTHER = "tests/test_cart.py::test_other"
METHOD = "tests/test_cart.py::TestCart::test_method"
# the price() calls each test made, in order: its fixtures' setup and teardown
# and the threads it started included
PRICES = {TOTAL: [100, 3, 1, 200], OTHER: [5, 7],
          "tests/test_cart.py::test_param[1]": [1], "tests/test_cart.py::test_param[2]": [2],
          METHOD: [9]}


@pytest.fixture
def project(pytester):
    pytester.makepyfile(cart=CART, catalog=CATALOG, conftest=CONFTEST)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_cart.py").write_text(TESTS)
    pytester.makeini("[pytest]\npythonpath = .\n")
    return pytester


def run(pytester, *args):
    env_tape = os.environ.pop("CALLTAPE_TAPE", None)
    try:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)
    finally:
        if env_tape is not None:
            os.environ["CALLTAPE_TAPE"] = env_tape


def calltape_cmd(cwd, *args):
    exe = os.path.join(sysconfig.get_path("scripts"), "calltape")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def qtys(calls):
    return [c.args["qty"] for c in calls]


def check_tags(t):
    """What both runs (with and without xdist) must show."""
    for test, want in PRICES.items():
        found = list(t.search("price", test=test, order="oldest"))
        assert qtys(found) == want, test
        assert {c.test for c in found} == {test}
        assert len({c.session for c in found}) == 1  # one test, one process
        assert t.search("price", test=test).count() == len(want)
    # two tests calling the same functions: each has its own calls only
    assert [c.qualname for c in t.search(test=TOTAL, order="oldest")
            if c.qualname in ("price", "total")] == ["price", "total", "price", "price", "price"]
    assert qtys(t.search("price", test=OTHER)) == [7, 5]  # newest first
    # outside every test: the module's import, the session fixture's setup and teardown
    # (once per process: with xdist each worker imports and sets up its own)
    for name in ("at_import", "setup_db", "teardown_db"):
        calls = t.calls(name)
        assert calls and {c.test for c in calls} == {None}, name
    # every recorded price() call is one test's
    assert sorted(qtys(t.calls("price"))) == sorted(q for v in PRICES.values() for q in v)
    # a node above tests, a glob, and a name no test has
    assert qtys(t.search("price", test="tests/test_cart.py::test_param", order="oldest")) == [1, 2]
    assert qtys(t.search("price", test="tests/test_cart.py::TestCart")) == [9]
    assert qtys(t.search("price", test="*::test_method")) == [9]
    assert len(t.search("price", test="tests/test_cart.py")) == 9
    assert len(t.search("price", test="tests")) == 9
    assert len(t.search(test="tests/test_cart.py::test_tot")) == 0  # not a node above
    assert len(t.search(test="nope")) == 0
    # with other filters: the tests' time in its session, and the rest
    sid = t.search("price", test=TOTAL)[0].session
    assert qtys(t.search("price", test=TOTAL, session=sid, args={"qty": 3})) == [3]
    assert len(t.search(test=TOTAL, session=sid + 100)) == 0
    assert {r["test"] for r in t.tests()} == set(PRICES)
    [row] = t.tests(TOTAL)
    assert row["session"] == sid and row["start"] < row["end"]


def test_search_by_test_call_test_and_cli(project):
    tape = project.path / "run.db"
    result = run(project, f"--calltape={tape}", "-p", "no:xdist")
    result.assert_outcomes(passed=5)
    with calltape.open(tape) as t:
        check_tags(t)
        # the tests, by session and start, as pytest ran them
        assert [r["test"] for r in t.tests()] == [TOTAL, OTHER, *list(PRICES)[2:]]
        first = t.search("price", test=TOTAL, order="oldest")[0]
        ids = [c.id for c in t.search(test=TOTAL)]
    # the command line: --test, --json carries the test, show names it
    out = calltape_cmd(project.path, "search", str(tape), "--test", TOTAL, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["id"] for r in rows] == ids and {r["test"] for r in rows} == {TOTAL}
    out = calltape_cmd(project.path, "search", str(tape), "--function", "at_import", "--json")
    assert [r["test"] for r in json.loads(out.stdout)] == [None]
    out = calltape_cmd(project.path, "show", str(tape), str(first.id))
    assert f"  test      {TOTAL}" in out.stdout.splitlines(), out.stdout
    out = calltape_cmd(project.path, "search", str(tape), "--test", "tests/test_cart.py::nope")
    assert out.returncode == 1
    assert out.stderr.startswith(f"calltape: no test tests/test_cart.py::nope on {tape}")


def test_with_xdist_each_worker_tags_its_tests(project):
    pytest.importorskip("xdist")
    tape = project.path / "x.db"
    result = run(project, f"--calltape={tape}", "-n", "2")
    result.assert_outcomes(passed=5)
    with calltape.open(tape) as t:
        assert len(t.sessions()) == 2
        check_tags(t)
        sessions = {r["session"] for r in t.tests()}
        assert sessions == {s.id for s in t.sessions()}  # both workers ran tests
        tests = {c.id: c.test for c in t.calls()}
    # the exports carry each call's test, as Call.test gives it
    out = project.path / "calls.jsonl"
    assert calltape.export(tape, format="jsonl", out=out) == len(tests)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["id"]: r["test"] for r in rows} == tests
    assert set(tests.values()) == {None, *PRICES}
    trace = project.path / "trace.json"
    calltape.export(tape, format="chrome", out=trace)
    events = [e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]
    assert {e["args"]["call"]: e["args"].get("test") for e in events} == tests


def test_failure_section_command_lists_the_tests_calls(project):
    tape = project.path / "f.db"
    (project.path / "tests" / "test_fails.py").write_text(
        "import cart\n\ndef test_fails():\n    cart.price(4, 1.0)\n    assert False\n")
    result = run(project, f"--calltape={tape}", "-p", "no:xdist", "tests/test_fails.py")
    result.assert_outcomes(failed=1)
    [line] = [ln for ln in result.stdout.lines if ln.startswith("see all of them: ")]
    command = line.removeprefix("see all of them: ").split()
    assert command[:4] == ["calltape", "search", str(tape), "--test"]
    out = calltape_cmd(project.path, *command[1:], "--json")
    assert [(r["qualname"], r["test"]) for r in json.loads(out.stdout)] == [
        ("test_fails", "tests/test_fails.py::test_fails"),
        ("price", "tests/test_fails.py::test_fails")]


def test_marker_tags_its_test(project):
    (project.path / "tests" / "test_marked.py").write_text(
        "import pytest, cart\n\n@pytest.mark.calltape(include=['cart'])\n"
        "def test_marked():\n    cart.price(6, 1.0)\n")
    os.environ["CALLTAPE_TAPE"] = str(project.path / "marked.db")
    try:
        result = project.runpytest_subprocess("-p", "no:cacheprovider", "tests/test_marked.py")
    finally:
        del os.environ["CALLTAPE_TAPE"]
    result.assert_outcomes(passed=1)
    with calltape.open(project.path / "marked.db") as t:
        [c] = t.calls("price")
        assert c.test == "tests/test_marked.py::test_marked"


def test_a_tape_without_tests_still_reads_and_is_upgraded(project):
    tape = project.path / "old.db"
    run(project, f"--calltape={tape}", "-p", "no:xdist").assert_outcomes(passed=5)
    with sqlite3.connect(tape) as con:  # as a tape of format 4, before the tests
        con.execute("DROP TABLE contexts")
        con.execute("PRAGMA user_version = 4")
    with calltape.open(tape) as t:
        assert len(t.calls("price")) == 9
        assert {c.test for c in t.calls("price")} == {None}
        assert len(t.search(test=TOTAL)) == 0 and t.tests() == []
    out = calltape_cmd(project.path, "search", str(tape), "--test", TOTAL)
    assert out.returncode == 1 and "no test" in out.stderr
    # recording onto it again upgrades it: the new session's tests are tagged
    run(project, f"--calltape={tape}", "-p", "no:xdist").assert_outcomes(passed=5)
    with calltape.open(tape) as t:
        old, new = sorted(s.id for s in t.sessions())
        assert {c.session for c in t.search(test=TOTAL)} == {new}
        assert qtys(t.search("price", test=TOTAL, order="oldest")) == PRICES[TOTAL]
        assert {c.test for c in t.calls("price") if c.session == old} == {None}


def test_a_killed_run_keeps_the_test_it_died_in(project, tmp_path):
    """A process killed inside a test leaves its span open: the calls it made
    there still name the test."""
    (project.path / "tests" / "test_dies.py").write_text(
        "import os, calltape, cart\n\ndef test_dies():\n    cart.price(8, 1.0)\n"
        "    calltape.flush()\n    os._exit(3)\n")
    tape = tmp_path / "killed.db"
    result = run(project, f"--calltape={tape}", "-p", "no:xdist", "tests/test_dies.py")
    assert result.ret == 3
    with calltape.open(tape) as t:
        [c] = t.calls("price")
        assert c.test == "tests/test_dies.py::test_dies"
        [row] = t.tests()
        assert row["end"] is None
        assert qtys(t.search("price", test="tests/test_dies.py::test_dies")) == [8]
