"""The pytest plugin (pytest_calltape), run as users run it: real pytest
sessions in subprocesses (pytester) over a small project, recording onto real
tapes that are then read with calltape.open, and replaying them."""

import os
import sysconfig
import xml.etree.ElementTree as ET

import pytest

import calltape

SHOP = '''
import threading

def price(qty, unit):
    if qty < 0:
        raise ValueError("negative qty")
    return qty * unit

def total(items):
    n = 0
    for q, u in items:
        n += price(q, u)
    return n

def in_thread():
    def work():
        price(7, 1.0)

    t = threading.Thread(target=work)
    t.start()
    t.join()
'''

TESTS = '''
import shop

def test_total():
    assert shop.total([(3, 2.0), (1, 1.5)]) == 7.5

def test_thread(calltape_tape):
    shop.in_thread()
    assert calltape_tape.calls("price")[0].args["qty"] == 7

def test_fail():
    try:
        shop.price(-1, 2.0)
    except ValueError:
        pass
    assert shop.price(2, 2.0) == 5
'''


@pytest.fixture
def project(pytester):
    pytester.makepyfile(shop=SHOP, test_shop=TESTS)
    pytester.makeini("[pytest]\npythonpath = .\n")
    return pytester


def run(pytester, *args):
    env_tape = os.environ.pop("CALLTAPE_TAPE", None)
    try:
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)
    finally:
        if env_tape is not None:
            os.environ["CALLTAPE_TAPE"] = env_tape


def test_no_flag_loads_no_engine_and_changes_nothing(project):
    project.makeconftest(
        "import sys\n"
        "def pytest_unconfigure(config):\n"
        "    print('engine loaded:', 'calltape._native' in sys.modules, file=sys.stderr)\n")
    result = run(project, "-k", "not thread")
    result.assert_outcomes(passed=1, failed=1)
    result.stderr.fnmatch_lines(["engine loaded: False"])
    assert "calltape" not in result.stdout.str().replace("plugins: calltape", "")
    assert not (project.path / "calltape.db").exists()


def test_calltape_run_of_pytest_is_not_disturbed_by_the_plugin(project):
    """Under `calltape run -m pytest` calltape is imported before pytest looks at
    the plugin's distribution: no assertion-rewrite warning (fatal under
    filterwarnings = error), and the run records as without the plugin."""
    project.makeini("[pytest]\npythonpath = .\nfilterwarnings =\n    error\n")
    calltape_cmd = os.path.join(sysconfig.get_path("scripts"), "calltape")
    env_tape = os.environ.pop("CALLTAPE_TAPE", None)
    try:
        result = project.run(calltape_cmd, "run", "--tape", "run.db", "-m", "pytest",
                             "-p", "no:cacheprovider", "-k", "not thread", timeout=120)
    finally:
        if env_tape is not None:
            os.environ["CALLTAPE_TAPE"] = env_tape
    out = result.stdout.str() + result.stderr.str()
    assert "PytestAssertRewriteWarning" not in out, out
    result.stdout.fnmatch_lines(["*1 failed, 1 passed*"])
    with calltape.open(project.path / "run.db") as tape:
        assert {c.qualname for c in tape.search()} >= {"price", "total", "test_total"}


def test_records_each_test_with_fixture_and_failure_section(project):
    tape = project.path / "run.db"
    # -p no:xdist: as where pytest-xdist is not installed (its hooks are unknown)
    result = run(project, f"--calltape={tape}", "--calltape-exclude", "test_shop",
                 "-p", "no:xdist")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    # the failed test's section: its recorded calls that raised, and the command for the rest
    result.stdout.fnmatch_lines([
        "*calltape: calls that raised*",
        "call * price(qty=-1, unit=2.0) raised *",  # on 3.11 the exception is not kept
        f"see all of them: calltape search {tape} --test test_shop.py::test_fail --session *",
    ])
    assert f"calltape: recorded 8 calls of 4 functions onto {tape}" in out
    with calltape.open(tape) as t:
        names = sorted(c.qualname for c in t.search(limit=None))
        assert names == ["in_thread", "in_thread.<locals>.work", *["price"] * 5, "total"]
        assert [c.args for c in t.calls("price") if c.outcome == "raised"] == [
            {"qty": -1, "unit": 2.0}]


def test_marker_without_flag(project):
    # no flag: the marker records its test alone, the fixture sees its calls
    project.makepyfile(test_marked='''
import pytest, shop

@pytest.mark.calltape(include=["shop"])
def test_marked(calltape_tape):
    shop.total([(3, 1.0)])
    assert calltape_tape.calls("price")[0].args["qty"] == 3

def test_unmarked():
    shop.total([(5, 1.0)])
''')
    os.environ["CALLTAPE_TAPE"] = str(project.path / "marked.db")
    try:
        result = project.runpytest_subprocess("-p", "no:cacheprovider", "test_marked.py")
    finally:
        del os.environ["CALLTAPE_TAPE"]
    result.assert_outcomes(passed=2)
    with calltape.open(project.path / "marked.db") as t:
        assert [c.args["qty"] for c in t.calls("price")] == [3]


def test_xdist_workers_record_as_sessions_timing_only(project):
    pytest.importorskip("xdist")
    tape = project.path / "x.db"
    project.makepyfile(test_shop=TESTS.replace('.args["qty"] == 7', '.args == {}'))
    result = run(project, f"--calltape={tape}", "--calltape-exclude", "test_shop", "-n", "2",
                 "--calltape-no-args")
    result.assert_outcomes(passed=2, failed=1)
    lines = [ln for ln in result.stdout.lines if ln.startswith("calltape: recorded")]
    assert lines == [(f"calltape: recorded 8 calls of 4 functions onto {tape} in 2 worker"
                      f" sessions (see: calltape functions --last {tape})")]
    with calltape.open(tape) as t:
        assert len(t.sessions()) == 2
        calls = t.calls("price")
        assert len(calls) == 5 and all(c.args == {} for c in calls)


def test_replay_items_gate_and_junit(project):
    tape = project.path / "rec.db"
    run(project, f"--calltape={tape}", "--calltape-exclude", "test_shop", "-k", "not fail")
    # replay runs code: refused without --calltape-trust or --calltape-allow
    refused = run(project, "--calltape-replay", str(tape))
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*--calltape-trust or --calltape-allow MODULE*"])
    # the code changes: price(7, 1.0) now returns 8.0
    project.makepyfile(shop=SHOP.replace("return qty * unit", "return qty * unit + (qty == 7)"))
    xml = project.path / "junit.xml"
    result = run(project, "--calltape-replay", str(tape), "--calltape-trust",
                 f"--junitxml={xml}", "-v", "-rs")
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    result.stdout.fnmatch_lines([
        "rec.db::shop.total[[]*[]] PASSED*",
        "rec.db::shop.price[[]*[]] FAILED*",
    ])
    out = result.stdout.str()
    assert "changed: result: 7.0 != 8.0" in out
    result.stdout.fnmatch_lines(["SKIPPED * shop.in_thread.<locals>.work is defined inside*"])
    cases = ET.parse(xml).getroot().iter("testcase")
    kinds = sorted((c.get("classname"), [e.tag for e in c]) for c in cases)
    assert [k for _, k in kinds].count(["failure"]) == 1
    assert [k for _, k in kinds].count(["skipped"]) == 1
    assert {cls for cls, _ in kinds} == {"rec.db"}
    only = run(project, "--calltape-replay", str(tape), "--calltape-allow", "shop",
               "--calltape-function", "total", "--calltape-since", "1h")
    only.assert_outcomes(passed=1)
