"""@calltape.record(locals=True, globals=True): call.locals, call.globals, and
replay(globals="recorded") patching the recorded globals in and out."""

import importlib
import sys
import textwrap

import pytest
from _util import only_call, open_tape, read_calls

import calltape

RATE = 0.25
LIMITS = {"max": 100}
SECRET_TOKEN = "hunter2"


def helper(x):
    return x


@calltape.record(locals=True, globals=True)
def price(qty, unit, api_key="k"):
    total = qty * unit * (1 + RATE)
    if total > LIMITS["max"]:
        raise ValueError(f"{total} is over the limit")
    lines = [helper(total)]  # noqa: F841 - kept for call.locals
    return round(total, 2)


@calltape.record(locals=True)
def fact(n):
    r = 1 if n <= 1 else n * fact(n - 1)
    return r


@calltape.record
def plain(x):
    y = x + 1
    return y


def test_locals_at_return_and_globals_at_entry(tape):
    price(2, 4.0)
    c = only_call(tape, "price")
    assert c.locals == {"qty": 2, "unit": 4.0, "api_key": calltape.Redacted(),
                        "total": 10.0, "lines": [10.0]}
    # data globals it reads; not the module, the function helper, nor builtins (round)
    assert c.globals == {"RATE": 0.25, "LIMITS": {"max": 100}}


def test_locals_at_raise(tape):
    with pytest.raises(ValueError):
        price(100, 2.0)
    c = only_call(tape, "price")
    assert c.outcome == "raised"
    assert c.locals == {"qty": 100, "unit": 2.0, "api_key": calltape.Redacted(), "total": 250.0}


def test_globals_are_captured_at_entry(tape):
    global RATE
    old = RATE
    try:
        price(1, 1.0)
        RATE = 0.5
        price(1, 1.0)
    finally:
        RATE = old
    first, second = read_calls(tape, "price")
    assert first.globals["RATE"] == 0.25 and second.globals["RATE"] == 0.5
    assert first.result == 1.25 and second.result == 1.5


def test_recursion_keeps_each_frame(tape):
    fact(4)
    calls = read_calls(tape, "fact")
    assert sorted((c.args["n"], c.locals["r"]) for c in calls) == [(1, 1), (2, 2), (3, 6), (4, 24)]


def test_not_recorded_means_none(tape):
    plain(1)
    c = only_call(tape, "plain")
    assert c.locals is None and c.globals is None


def test_secret_named_globals_are_redacted(tape, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "secret_mod.py").write_text(textwrap.dedent("""
        import calltape
        TOKEN = "s3cr3t"
        PLAIN = 1
        @calltape.record(globals=True)
        def use():
            return len(TOKEN) + PLAIN
    """))
    import secret_mod
    secret_mod.use()
    c = only_call(tape, "use")
    assert c.globals == {"TOKEN": calltape.Redacted(), "PLAIN": 1}


def test_generators_and_builtins_are_refused():
    def gen():
        yield 1

    with pytest.raises(TypeError, match="plain Python functions"):
        calltape.record(gen, locals=True)
    with pytest.raises(TypeError, match="plain Python functions"):
        calltape.record(len, globals=True)


def test_existing_profiler_keeps_working(tape):
    seen = []

    def prof(frame, event, arg):
        if event == "return" and frame.f_code.co_name == "price":
            seen.append(arg)

    sys.setprofile(prof)
    try:
        price(1, 2.0)
    finally:
        sys.setprofile(None)
    assert seen == [2.5]
    assert only_call(tape, "price").locals["total"] == 2.5


@pytest.fixture
def moody(tmp_path, monkeypatch, tape):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (tmp_path / "moody_v.py").write_text(textwrap.dedent("""
        import calltape
        FACTOR = 2
        MODE = {"strict": False}
        @calltape.record(globals=True)
        def scale(x):
            if MODE["strict"] and x < 0:
                raise ValueError("negative")
            return x * FACTOR
    """))
    mod = importlib.import_module("moody_v")
    yield mod
    sys.modules.pop("moody_v", None)


def test_replay_with_recorded_globals_patches_and_restores(moody, tape):
    moody.scale(5)
    moody.FACTOR = 3  # the module changed since the recording
    t = open_tape(tape)
    call = t.search(function="scale")[0]
    assert call.globals == {"FACTOR": 2, "MODE": {"strict": False}}
    now = call.replay()
    assert now.status == "changed" and now.diff == "result: 10 != 15"
    then = call.replay(globals="recorded")
    assert then.status == "passed" and then.result == 10
    assert moody.FACTOR == 3 and moody.MODE == {"strict": False}  # restored


def test_recorded_globals_missing_now_are_added_and_removed(moody, tape):
    moody.scale(-1)  # recorded with MODE strict False: returns -2
    moody.MODE = {"strict": True}
    moody.FACTOR = 7
    call = open_tape(tape).search(function="scale")[0]
    assert call.replay().status == "failed"  # strict now: raises
    assert call.replay(globals="recorded").status == "passed"
    assert moody.MODE == {"strict": True} and moody.FACTOR == 7
    del moody.FACTOR  # missing now: added for the call, removed after
    assert call.replay(globals="recorded").status == "passed"
    assert not hasattr(moody, "FACTOR")


def test_restored_when_the_replayed_call_raises(tape, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (tmp_path / "boom_v.py").write_text(textwrap.dedent("""
        import calltape
        LIMIT = 10
        @calltape.record(globals=True)
        def check(x):
            if x > LIMIT:
                raise ValueError("over")
            return x
    """))
    boom_v = importlib.import_module("boom_v")
    with pytest.raises(ValueError):
        boom_v.check(11)
    t = open_tape(tape)
    call = t.search(function="check")[0]
    boom_v.LIMIT = 100  # now it would pass; the recorded LIMIT=10 makes it raise again
    o = call.replay(globals="recorded")
    assert o.status == "passed" and isinstance(o.exception, ValueError)
    assert boom_v.LIMIT == 100
    sys.modules.pop("boom_v", None)


def test_no_reference_leaks_with_locals_and_globals(tape):
    import gc

    payload = [1, 2, 3]
    before = None
    for round_ in range(2):
        for _ in range(500):
            price(1, 2.0, api_key=payload)
            with pytest.raises(ValueError):
                price(1000, 2.0, api_key=payload)
        gc.collect()
        if round_ == 0:
            before = sys.getrefcount(payload), sys.getrefcount(LIMITS)
    assert (sys.getrefcount(payload), sys.getrefcount(LIMITS)) == before


def test_search_passing_over_calls_skips_their_locals_and_globals(tape):
    import time

    for qty in (1, 2, 3):
        price(qty, 4.0)
        time.sleep(0.002)
    calls = read_calls(tape, "price")
    last = max(calls, key=lambda c: c.start_ns)
    t = open_tape(tape)
    # the time filter decodes only the last call and passes over the others
    found = list(t.search(function="price", since=last.start))
    assert [(c.args["qty"], c.result, c.locals["total"], c.globals["RATE"]) for c in found] == [
        (3, 15.0, 15.0, 0.25)]
