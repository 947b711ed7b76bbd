"""Replay: recorded calls run again with today's code and compared (Call.replay, Tape.replay)."""

import importlib
import os
import subprocess
import sys
import textwrap
import threading

import _replay_subjects as subjects
import pytest
from _util import open_tape, run_python

import calltape

KINDS = {
    "Cart.total": 5.1749999999999998,
    "Cart.empty_total": "0 EUR (Cart)",
    "Cart.named": ["a", "b"],
    "Cart.tax": 0.7,
    "plain": {"sum": 20, "extra": ["flag"]},
    "countdown": "liftoff",
    "fetch": "ABC",
    "ticks": None,
    "fails": None,
}


def record_workload(tape):
    subjects.workload()
    return open_tape(tape)


def test_every_kind_of_callable_replays_and_passes(tape):
    t = record_workload(tape)
    before = len(t.search())
    report = calltape.open(tape, allow=["_replay_subjects"]).replay(function="_replay_subjects.*")
    by_name = {o.function.split(".", 1)[1]: o for o in report}
    for name, result in KINDS.items():
        o = by_name[name]
        assert o.status == "passed", o
        assert o.ok
        if name != "fails":
            assert o.result == pytest.approx(result) if isinstance(result, float) else o.result == result
        assert o.duration is not None and o.duration >= 0
    assert by_name["countdown"].yielded == [3, 2, 1]
    assert by_name["ticks"].yielded == [0, 1, 2]
    fails = by_name["fails"]
    assert isinstance(fails.exception, ValueError) and str(fails.exception) == "bad value 7"
    assert fails.expected.type == "builtins.ValueError"
    nested = by_name["make_nested.<locals>.inner"]
    assert nested.status == "skipped" and "<locals>" in nested.reason
    assert report.counts == {"passed": 9, "changed": 0, "failed": 0, "skipped": 1}
    assert report.ok
    # replaying ran decorated functions (the originals, not the recorders): nothing new on the tape
    assert len(open_tape(tape).search()) == before


def test_method_is_called_on_the_rebuilt_instance(tape):
    cart = subjects.Cart([subjects.Item("a", 2.0)])
    cart.total(0.5)
    t = open_tape(tape)
    call = t.search(function="Cart.total")[0]
    assert isinstance(call.args["self"], subjects.Cart)
    outcome = call.replay()
    assert outcome.status == "passed" and outcome.result == 1.0 == outcome.expected


def test_refused_without_trust_or_allow(tape):
    subjects.plain(1)
    calltape.flush()
    strict = calltape.open(tape)
    call = strict.search(function="plain")[0]
    with pytest.raises(calltape.ReplayRefused, match=r"module _replay_subjects.*trust=True.*allow="):
        call.replay()
    with pytest.raises(calltape.ReplayRefused):
        strict.replay()
    with pytest.raises(calltape.ReplayRefused):
        calltape.open(tape, allow=["_replay"]).replay()  # a prefix of the name, not a package
    assert calltape.open(tape, allow=["_replay_subjects"]).replay().counts["passed"] == 1


def test_refusal_happens_before_any_call_runs(tape, tmp_path, monkeypatch):
    ran = tmp_path / "ran.txt"
    src = tmp_path / "side_a.py"
    src.write_text(textwrap.dedent(f"""
        import calltape
        @calltape.record
        def touch(x):
            open({str(ran)!r}, "a").write("x")
            return x
    """))
    (tmp_path / "side_b.py").write_text("import calltape\n@calltape.record\ndef g(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import side_a
    import side_b
    side_a.touch(1)
    side_b.g(1)
    ran.unlink()
    calltape.flush()
    with pytest.raises(calltape.ReplayRefused, match="side_b"):
        calltape.open(tape, allow=["side_a"]).replay()
    assert not ran.exists()


def write_module(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def shop(tmp_path, monkeypatch):
    """A module `shop_v` in tmp_path whose source the test can change."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    path = write_module(tmp_path, "shop_v", """
        import calltape
        @calltape.record
        def price(qty, unit, discount=0.0, *, note=""):
            return {"items": [qty, unit], "total": qty * unit * (1 - discount)}
    """)
    mod = importlib.import_module("shop_v")
    yield path, mod
    sys.modules.pop("shop_v", None)


def change(path, source):
    sys.modules.pop("shop_v", None)
    path.write_text(textwrap.dedent(source))
    importlib.invalidate_caches()


def test_changed_result_has_a_diff_naming_the_place(tape, shop):
    path, mod = shop
    mod.price(3, 9.5)
    change(path, """
        def price(qty, unit, discount=0.0, *, note=""):
            return {"items": [qty, unit + 0.25], "total": qty * unit}
    """)
    calltape.flush()
    t = calltape.open(tape, trust=True)
    o = t.search(function="price")[0].replay()
    assert o.status == "changed" and not o.ok
    assert o.diff == "result['items'][1]: 9.5 != 9.75"
    assert o.expected == {"items": [3, 9.5], "total": 28.5}
    assert o.result == {"items": [3, 9.75], "total": 28.5}


def test_float_tolerance(tape, shop):
    path, mod = shop
    mod.price(3, 0.1)
    change(path, """
        def price(qty, unit, discount=0.0, *, note=""):
            return {"items": [qty, unit], "total": sum([unit] * qty) * (1 - discount) + 1e-12}
    """)
    calltape.flush()
    call = calltape.open(tape, trust=True).search(function="price")[0]
    exact = call.replay()
    assert exact.status == "changed" and exact.diff.startswith("result['total']: ")
    assert call.replay(rel=1e-9).status == "passed"
    assert call.replay(abs=1e-9).status == "passed"
    assert call.replay(abs=1e-14).status == "changed"
    with pytest.raises(ValueError, match="rel and abs"):
        call.replay(rel=-1)


def test_exception_now_is_failed_and_exception_compares_type_and_message(tape, shop):
    path, mod = shop
    mod.price(1, 2.0)
    with pytest.raises(TypeError):
        mod.price("x", "y")
    change(path, """
        def price(qty, unit, discount=0.0, *, note=""):
            if isinstance(qty, str):
                raise TypeError("quantity must be a number")
            raise ValueError("closed")
    """)
    calltape.flush()
    t = calltape.open(tape, trust=True)
    returned, raised = t.replay(order="oldest")
    assert returned.status == "failed"
    assert returned.diff == "raised builtins.ValueError: closed, recorded a result"
    assert raised.status == "failed"  # same type, another message
    assert "recorded builtins.TypeError: can't multiply sequence" in raised.diff
    assert "raised now builtins.TypeError: quantity must be a number" in raised.diff
    change(path, """
        def price(qty, unit, discount=0.0, *, note=""):
            if isinstance(qty, str):
                raise TypeError("can't multiply sequence by non-int of type 'str'")
            return 5
    """)
    again = t.replay(order="oldest")
    assert [o.status for o in again] == ["changed", "passed"]
    assert again[0].diff == "result: {'items': [1, 2.0], 'total': 2.0} != 5 (dict != int)"
    change(path, "def price(qty, unit, discount=0.0, *, note=''):\n    return 5\n")
    now = t.replay(order="oldest")[1]
    assert now.status == "changed"
    assert now.diff == "result: recorded a raise of builtins.TypeError, returned 5 now"


def test_skips_moved_renamed_unimportable_and_signature(tape, shop):
    path, mod = shop
    mod.price(2, 3.0, discount=0.5, note="n")
    calltape.flush()
    t = calltape.open(tape, trust=True)
    call = t.search(function="price")[0]
    change(path, "def cost(qty, unit, discount=0.0):\n    return 0\n")
    o = call.replay()
    assert o.status == "skipped" and "shop_v.price was not found" in o.reason
    assert "moved or was renamed" in o.reason and o.duration is None
    change(path, "def price(qty, unit, discount):\n    return 0\n")
    o = call.replay()
    assert o.status == "skipped"
    assert o.reason == ("the signature no longer binds the recorded arguments:"
                        " it has no parameter 'note' any more")
    change(path, "def price(qty, unit, discount, vat, *, note):\n    return 0\n")
    assert "the required parameter 'vat' was not recorded" in call.replay().reason
    change(path, "def price(qty, unit, *, note):\n    return 0\n")
    assert "takes 2 positional arguments, 3 were recorded" in call.replay().reason
    change(path, "def price(qty, unit, discount, *, note, vat):\n    return 0\n")
    assert "the required parameter 'vat' was not recorded" in call.replay().reason
    change(path, "def price(*args, **kwargs):\n    return 0\n")
    assert call.replay().status == "changed"
    change(path, "raise ImportError('no shop today')\n")
    o = call.replay()
    assert o.status == "skipped"
    assert o.reason == "cannot import module shop_v: ImportError: no shop today"
    change(path, "price = 42\n")
    assert call.replay().reason == "shop_v.price is no longer callable (it is a int)"


def test_a_replayed_call_that_replays_calls_of_the_same_tape(tape, tmp_path, monkeypatch):
    """Replaying one call at a time reuses the Tape's Replayer; a replayed
    call that itself replays calls of that Tape (an audit helper, say) gets
    one of its own, and both replays see what they resolved."""
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "audit_v", """
        import calltape
        TAPE = None
        @calltape.record
        def double(x):
            return 2 * x
        @calltape.record
        def audit(name):
            return [(c.replay().status, c.replay().result)
                    for c in TAPE.search(function=name, order="oldest")]
    """)
    mod = importlib.import_module("audit_v")
    try:
        mod.double(2), mod.double(5)
        calltape.flush()
        t = calltape.open(tape, allow=["audit_v"])
        mod.TAPE = t
        assert mod.audit("double") == [("passed", 4), ("passed", 10)]
        calltape.flush()
        audit = t.search(function="audit")[0]
        for _ in range(2):
            o = audit.replay()
            assert o.status == "passed" and o.result == [("passed", 4), ("passed", 10)]
        assert [o.result for o in t.replay(function="double")] == [4, 10]
        assert t.replay(function="audit").counts["passed"] == 1
        assert [c.replay().result for c in t.search(function="double", order="oldest")] == [4, 10]
    finally:
        mod.TAPE = None
        sys.modules.pop("audit_v", None)


class Opaque:
    """No __eq__ of its own: replay compares its encoded form."""

    def __init__(self, v):
        self.v = v


def test_objects_without_eq_compare_by_encoded_form():
    assert calltape.compare(Opaque([1, 2]), Opaque([1, 2])) is None
    assert calltape.compare(Opaque([1, 2]), Opaque([1, 3])) == "value.v[1]: 2 != 3"


def test_comparison_rules():
    cmp = calltape.compare
    assert cmp(1, 1.0) is None
    assert cmp(float("nan"), float("nan")) is None
    assert cmp([1, (2, 3)], [1, (2, 4)]) == "value[1][1]: 3 != 4"
    assert cmp({"a": 1}, {"a": 1, "b": 2}) == "value['b']: new now, not recorded"
    assert cmp({"a": 1, "b": 2}, {"a": 1}) == "value['b']: recorded, missing now"
    assert cmp([1, 2], [1, 2, 3]) == "value: 2 items != 3 items"
    assert cmp({1, 2}, {2, 3}) == "value: only recorded {1}, only now {3}"
    assert cmp("1", 1) == "value: '1' != 1 (str != int)"
    assert cmp(subjects.Item("a", 9.5), subjects.Item("a", 9.75)) == "value.price: 9.5 != 9.75"
    assert cmp(1.0, 1.001, rel=1e-2) is None and cmp(1.0, 1.001, abs=1e-2) is None
    assert cmp(1.0, 1.001) == "value: 1.0 != 1.001"


def test_numpy_arrays_compare_by_dtype_shape_and_elements():
    np = pytest.importorskip("numpy")
    a = np.arange(6.0).reshape(2, 3)
    assert calltape.compare(a, a.copy()) is None
    assert calltape.compare(a, a.astype(np.float32)) == "value: dtype float64 != dtype float32"
    assert calltape.compare(a, a.reshape(3, 2)) == "value: shape (2, 3) != shape (3, 2)"
    b = a.copy()
    b[1, 2] = 7.5
    assert calltape.compare(a, b).startswith("value[1, 2]: ")
    assert "(1 of 6 elements differ)" in calltape.compare(a, b)
    c = a + 1e-12
    assert calltape.compare(a, c) is not None
    assert calltape.compare(a, c, abs=1e-9) is None
    n = np.array([np.nan, 1.0])
    assert calltape.compare(n, n.copy()) is None
    assert calltape.compare(np.array([1, 2]), np.array([1, 3])).startswith("value[1]: ")


def test_numpy_result_replays(tape, tmp_path, monkeypatch):
    pytest.importorskip("numpy")
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "arrays_v", """
        import calltape, numpy as np
        @calltape.record
        def scale(a, k):
            return a * k
    """)
    import arrays_v
    import numpy as np
    arrays_v.scale(np.arange(4.0), 2)
    calltape.flush()
    o = calltape.open(tape, allow=["arrays_v"]).replay()[0]
    assert o.status == "passed"
    assert (o.result == np.arange(4.0) * 2).all()


def test_skips_unrecorded_and_marker_arguments(tape, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "markers_v", """
        import calltape
        @calltape.record
        def login(user, password):
            return len(password)
        @calltape.record(max_value_bytes=64)
        def size(blob):
            return len(blob)
        @calltape.record
        def locked(lock):
            return 1
        @calltape.record(args=False)
        def hidden(x):
            return x
        @calltape.record
        def gives_lock():
            import threading
            return threading.Lock()
    """)
    import markers_v
    markers_v.login("ann", "secret")
    markers_v.size(b"x" * 1000)
    markers_v.locked(threading.Lock())
    markers_v.hidden(5)
    markers_v.gives_lock()
    calltape.flush()
    report = calltape.open(tape, allow=["markers_v"]).replay(order="oldest")
    reasons = [o.reason for o in report]
    assert all(o.status == "skipped" for o in report), report
    assert reasons[0] == "the argument password was not recorded (<redacted>)"
    assert reasons[1].startswith("the argument blob was not recorded (Truncated(type='bytes'")
    assert reasons[2].startswith("the argument lock was not recorded (Unencodable(type=")
    assert reasons[3] == "the arguments were not recorded (recorded with args=False)"
    assert reasons[4].startswith("the recorded result is Unencodable(")
    assert "4 skipped" not in repr(report) and "5 skipped" in repr(report)


def test_argument_refused_by_the_unpickler_is_a_skip(tape, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "first_v", """
        import calltape
        @calltape.record
        def show(thing):
            return repr(thing)
    """)
    write_module(tmp_path, "second_v", "class Thing:\n    pass\n")
    import first_v
    import second_v
    first_v.show(second_v.Thing())
    calltape.flush()
    o = calltape.open(tape, allow=["first_v"]).replay()[0]
    assert o.status == "skipped"
    assert o.reason.startswith("the recorded arguments cannot be rebuilt: ")
    assert "second_v.Thing" in o.reason and "allow=['second_v.Thing']" in o.reason


def test_record_true_records_the_replayed_calls_as_a_session(tmp_path):
    tape = tmp_path / "other.db"
    run_python(tmp_path, """
        import _replay_subjects as s
        s.plain(5)
        s.plain(6)
    """, tape=tape)
    t = calltape.open(tape, allow=["_replay_subjects"])
    recorded_session = t.search(function="plain")[0].session
    report = t.replay(function="plain", record=True)
    assert report.counts["passed"] == 2
    assert report.session is not None and report.session != recorded_session
    again = calltape.open(tape, trust=True)
    replayed = again.search(function="plain", session=report.session, order="oldest")
    assert [c.args["a"] for c in replayed] == [5, 6]
    assert [c.result["sum"] for c in replayed] == [7, 8]


def test_call_ids_and_filters(tape):
    for i in range(4):
        subjects.plain(i)
    calltape.flush()
    t = calltape.open(tape, allow=["_replay_subjects"])
    ids = [c.id for c in t.search(function="plain", order="oldest")]
    assert [o.call_id for o in t.replay(ids[2], ids[0])] == [ids[2], ids[0]]
    assert len(t.replay(function="plain", limit=3)) == 3
    with pytest.raises(ValueError, match="not both"):
        t.replay(ids[0], function="plain")
    with pytest.raises(KeyError, match=f"no call with id {ids[-1] + 100}"):
        t.replay(ids[-1] + 100)
    with pytest.raises(ValueError, match="globals must be None or 'recorded'"):
        t.replay(globals="now")


def test_globals_recorded_needs_recorded_globals(tape):
    subjects.plain(3)
    calltape.flush()
    o = calltape.open(tape, allow=["_replay_subjects"]).replay(globals="recorded")[0]
    assert o.status == "skipped"
    assert o.reason.startswith("the globals it read were not recorded (record it with globals=True")


def test_an_old_call_is_judged_by_its_own_function_row(tape, tmp_path, monkeypatch):
    """A tape with two versions of f: the call of the older f() had no
    parameters, so its empty arguments were recorded, not left out; the
    newer row f(a, b) must not make it look recorded with args=False."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    write_module(tmp_path, "twice_v", """
        import calltape
        @calltape.record
        def f():
            return 1
    """)
    import twice_v
    twice_v.f()
    sys.modules.pop("twice_v")
    write_module(tmp_path, "twice_v", """
        import calltape
        @calltape.record
        def f(a, b):
            return a + b
    """)
    importlib.invalidate_caches()
    importlib.import_module("twice_v").f(1, 2)
    calltape.flush()
    t = calltape.open(tape, trust=True)
    rows = [fn for fn in t.functions() if fn.qualname == "f" and fn.module == "twice_v"]
    assert sorted(len(fn.parameters) for fn in rows) == [0, 2]
    old, new = t.replay(function="twice_v.f", order="oldest")
    assert old.status == "skipped"
    assert old.reason == ("the signature no longer binds the recorded arguments: the"
                          " required parameter 'a' was not recorded")
    assert new.status == "passed" and new.result == 3
    sys.modules.pop("twice_v", None)


def test_replaying_leaks_no_python_objects(tape, tmp_path, monkeypatch):
    """Every path of one replay (passed, changed, failed, skipped for the
    recording, for the signature, for a value that does not rebuild) returns
    what it took: replaying the same calls again allocates nothing lasting."""
    import gc
    import tracemalloc

    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "leak_v", """
        import threading
        import calltape
        @calltape.record
        def ok(a, b=2):
            return {"sum": a + b, "items": [a, b]}
        @calltape.record
        def boom(a):
            raise ValueError(f"bad {a}")
        @calltape.record
        def gen(n):
            yield from range(n)
            return n
        @calltape.record
        def locked(lock):
            return 1
        for i in range(30):
            ok(i)
            try:
                boom(i)
            except ValueError:
                pass
            list(gen(3))
            locked(threading.Lock())
    """)
    import leak_v  # its calls are recorded at import
    calltape.flush()
    t = calltape.open(tape, trust=True)
    calls = list(t.search(function="leak_v.*"))
    leak_v.boom = lambda a: a  # now returns: changed
    leak_v.ok.__wrapped__.__defaults__ = (3,)  # another result: changed

    def run(rounds):
        for _ in range(rounds):
            report = t.replay(*[c.id for c in calls])
            assert len(report) == len(calls)
        gc.collect()

    run(5)
    tracemalloc.start()
    try:
        run(2)  # the caches tracemalloc's own start disturbs settle again
        base = tracemalloc.get_traced_memory()[0]
        run(30)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # one object kept per replayed call would be 100 KB and more
    assert grown < 48 * 1024, f"replaying {30 * len(calls)} calls kept {grown} bytes"
    sys.modules.pop("leak_v", None)


def test_one_by_one_replay_finds_the_folders_of_a_session_recorded_since(tmp_path):
    """A Tape kept open while another program records onto it: Call.replay()
    of the new session's calls imports from that session's folder (the Tape
    keeps the sessions it has read and reads them again for one it lacks)."""
    tape = tmp_path / "t.db"
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / f"mod_{name}.py").write_text(
            "import calltape\n\n@calltape.record\ndef twice(x):\n    return 2 * x\n")
        (folder / "prog.py").write_text(
            f"import calltape, mod_{name}\nmod_{name}.twice(21)\ncalltape.flush()\n")
    env = dict(os.environ, CALLTAPE_TAPE=str(tape))
    subprocess.run([sys.executable, str(tmp_path / "one" / "prog.py")], check=True, env=env)
    with calltape.open(tape, allow=["mod_one", "mod_two"]) as t:
        first = t.search(function="mod_one.twice")[0]
        assert first.replay().status == "passed"
        subprocess.run([sys.executable, str(tmp_path / "two" / "prog.py")], check=True,
                       env=env)
        second = t.search(function="mod_two.twice")[0]
        assert str(tmp_path / "two") not in sys.path
        assert second.replay().status == "passed"
        assert first.replay().status == "passed"
    sys.modules.pop("mod_one", None)
    sys.modules.pop("mod_two", None)


def test_a_marker_in_slots_after_a_large_walk_skips_the_call(tape):
    """The marker search walks lists it makes on the way (a reduce's parts,
    the values of slots); one freed early must not make a later one at its
    address look walked already, or the marker behind it is missed and the
    call runs with it (toolz: curry._sigspec._parameters, after its partial)."""
    assert subjects.uses_sig(subjects.SigHolder()) == 1
    calltape.flush()
    with calltape.open(tape, trust=True) as t:
        o = t.search(function="uses_sig")[0].replay()
    assert o.status == "skipped" and "mappingproxy" in o.reason
