"""calltape.compat.reanimator: PyMonitor's reanimator examples with only the
import changed, on a tape recorded through the facade's own @pymonitor, and
the original's defects (the seeds' README) shown fixed."""

import datetime
import sys

import pytest
from _util import UTC, run_python

import calltape
from calltape.compat import reanimator

MATH_UTILS = '''
import calltape.compat.reanimator as pm

SCALE = 2

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

class Grid:
    def __init__(self, size):
        self.size = size

    @pm.pymonitor
    def area(self, *, border=0):
        return (self.size + border) ** 2

@pm.pymonitor
def calculate_fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

@pm.pymonitor
def scaled(points, *extra, factor=1, **options):
    return [[p.x * factor * SCALE, p.y] for p in points]

@pm.pymonitor
def fails(x):
    raise ValueError(f"bad {x}")
'''


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pm")
    (folder / "math_utils.py").write_text(MATH_UTILS)
    run_python(folder, """
        import sys
        sys.path.insert(0, ".")
        import calltape.compat.reanimator as pm
        pm.init_monitoring(db_path="monitoring.db")
        import math_utils as m
        for n in (5, 10, 20):
            m.calculate_fibonacci(n)
        m.scaled([m.Point(1, 2), m.Point(3, [4, [5, {"deep": (6,)}]])], "x", factor=3, mode="z")
        m.Grid(4).area(border=1)
        try:
            m.fails(1)
        except ValueError:
            pass
        try:
            m.fails(2)
        except ValueError:
            pass
        import calltape; calltape.flush()
    """)
    sys.path.insert(0, str(folder))
    yield folder / "monitoring.db"
    sys.path.remove(str(folder))


def test_the_seeds_complete_example(db_path, capsys):
    db = reanimator.load_pydb(str(db_path))
    calls = db.search(function_filter="calculate_fibonacci", limit=5)
    print(f"Found {len(calls)} function calls")
    if calls:
        call_id = calls[0]['id']
        details = db.get_call_details(call_id)
        print(f"Function: {details['function']}")
        print("Raw arguments:")
        for name, value in details['locals'].items():
            print(f"  {name}: {value}")
        reanimated = db.reanimate_objects(call_id)
        print("Reconstructed arguments:")
        for name, value in reanimated['locals'].items():
            print(f"  {name}: {value} (type: {type(value)})")
        result = db.execute_reanimated(call_id)
        print(f"Re-execution result: {result}")
        print(f"Original result: {reanimated['return_value']}")
        print(f"Results match: {result == reanimated['return_value']}")
    out = capsys.readouterr().out
    assert "Found 3 function calls" in out
    assert "Function: calculate_fibonacci" in out
    assert "  n: {'type': 'int', 'preview': '20'}" in out  # newest first
    assert "  n: 20 (type: <class 'int'>)" in out
    assert "Re-execution result: 6765" in out and "Original result: 6765" in out
    assert "Results match: True" in out


def test_search_filters(db_path):
    db = reanimator.load_pydb(db_path)
    assert [r["function"] for r in db.search(function_filter="calculate_fibonacci")] == [
        "calculate_fibonacci"] * 3
    r = db.search(function_filter="calculate_fibonacci")[0]
    assert set(r) == {"id", "function", "file", "line", "start_time", "end_time", "perf_pkg",
                      "perf_dram"}
    assert r["file"].endswith("math_utils.py") and r["start_time"] <= r["end_time"]
    assert len(db.search(file_filter="math_utils.py")) == 7
    assert db.search(file_filter="nothing_here.py") == []
    import math_utils
    assert len(db.search(function_filter=math_utils.calculate_fibonacci)) == 3
    assert len(db.search(function_filter=lambda fn: fn.qualname.startswith("Grid."))) == 1
    now = datetime.datetime.now(UTC)
    assert len(db.search(time_range=(now - datetime.timedelta(hours=1), None))) == 7
    assert db.search(time_range=(None, now - datetime.timedelta(hours=1))) == []
    assert len(db.search(limit=2)) == 2
    assert db.search(perf_filter={"pkg": 100.0}) == []  # recorded without energy


def test_nested_values_keep_their_depth_and_types(db_path):
    db = reanimator.load_pydb(db_path)
    (r,) = db.search(function_filter="scaled")
    raw = db.get_call_details(r["id"])["locals"]
    deep = raw["points"]["items"][1]["attributes"]["y"]["items"][1]["items"][1]
    assert deep["type"] == "dict" and deep["preview"] == "{'deep': (6,)}"
    assert deep["items"][0][1]["items"][0] == {"type": "int", "preview": "6"}
    assert raw["extra"]["items"] == [{"type": "str", "preview": "'x'"}]
    assert raw["factor"] == {"type": "int", "preview": "3"}
    assert raw["options"]["items"][0][0]["preview"] == "'mode'"
    objs = reanimator.load_pydb(db_path, allow=["math_utils"]).reanimate_objects(r["id"])
    points = objs["locals"]["points"]
    assert type(points[1]).__name__ == "Point" and points[1].y == [4, [5, {"deep": (6,)}]]
    assert isinstance(points[1].y[1], list)  # not a string, as the original gave
    assert objs["locals"]["extra"] == ("x",) and objs["locals"]["options"] == {"mode": "z"}
    assert objs["return_value"] == [[6 * 1, 2], [18, [4, [5, {"deep": (6,)}]]]]
    assert objs["globals"] == {"SCALE": 2}


def test_methods_keep_self_and_run_again(db_path):
    db = reanimator.load_pydb(db_path, allow=["math_utils"])
    (r,) = db.search(function_filter="Grid.area")
    meta = db.reanimate(r["id"])
    assert meta["function_name"] == "Grid.area" and meta["call_id"] == r["id"]
    assert meta["locals"]["self"]["attributes"]["size"]["preview"] == "4"
    assert meta["locals"]["border"]["preview"] == "1"
    assert meta["return_value"]["preview"] == "25"
    assert db.execute_reanimated(r["id"]) == 25


def test_exceptions_leave_the_stack_balanced(db_path):
    db = reanimator.load_pydb(db_path)
    failed = db.search(function_filter="fails")
    assert len(failed) == 2
    # each raised call is one record of its own, with no caller invented
    assert [db.get_call_details(r["id"])["return_value"]["type"] for r in failed] == [
        "builtins.ValueError", "builtins.ValueError"]
    with pytest.raises(ValueError, match="bad 2"):
        db.execute_reanimated(failed[0]["id"])
    (fib,) = db.search(function_filter="calculate_fibonacci", limit=1)
    assert calltape.open(db_path).call(fib["id"]).parent is None


def test_classes_are_not_found_by_bare_name(db_path, tmp_path):
    """A class is rebuilt from its own module, and only when the reader allows it:
    nothing of the tape's naming runs by default."""
    db = reanimator.load_pydb(db_path)
    (r,) = db.search(function_filter="scaled")
    with pytest.raises(calltape.RefusedGlobal, match="math_utils.Point"):
        db.reanimate_objects(r["id"])


def test_errors_are_one_sentence(db_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="no PyMonitor database"):
        reanimator.load_pydb(tmp_path / "missing.db")
    (tmp_path / "junk.db").write_text("not a tape" * 100)
    with pytest.raises(calltape.TapeError, match="is not a calltape tape"):
        reanimator.PyDBReanimator(tmp_path / "junk.db")
    with pytest.raises(ValueError, match="no call 999999"):
        reanimator.load_pydb(db_path).get_call_details(999999)
