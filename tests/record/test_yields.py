"""@calltape.record(yields=True): what a generator yielded is recorded, and replay compares it."""

import importlib
import sys
import textwrap

import pytest
from _util import only_call, open_tape

import calltape


@pytest.fixture
def gens(tmp_path, monkeypatch, tape):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    path = tmp_path / "gens_v.py"
    path.write_text(textwrap.dedent("""
        import calltape
        @calltape.record(yields=True)
        def squares(n):
            for i in range(n):
                yield i * i
            return "done"
        @calltape.record(yields=True, max_value_bytes=16)
        def many(n):
            yield from range(n)
        @calltape.record
        def quiet(n):
            yield from range(n)
    """))
    yield path, importlib.import_module("gens_v")
    sys.modules.pop("gens_v", None)


def change(path, old, new):
    sys.modules.pop("gens_v", None)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    importlib.invalidate_caches()


def test_yields_are_recorded_and_replayed(gens, tape):
    path, mod = gens
    assert list(mod.squares(4)) == [0, 1, 4, 9]
    c = only_call(tape, "squares")
    assert c.yielded == [0, 1, 4, 9] and c.result == "done"
    o = c.replay()
    assert o.status == "passed" and o.yielded == [0, 1, 4, 9]
    change(path, "yield i * i", "yield i * i + (i == 2)")
    o = open_tape(tape).search(function="squares")[0].replay()
    assert o.status == "changed"
    assert o.diff == "yielded[2]: 4 != 5"
    assert o.result == "done" == o.expected


def test_without_yields_only_the_return_value_is_compared(gens, tape):
    path, mod = gens
    list(mod.quiet(3))
    c = only_call(tape, "quiet")
    assert c.yielded is None
    change(path, "def quiet(n):\n    yield from range(n)", "def quiet(n):\n    yield from range(n + 5)")
    assert c.replay().status == "passed"  # same return value (None); yields unknown


def test_yields_past_the_size_limit_end_in_a_marker(gens, tape):
    path, mod = gens
    assert sum(mod.many(50)) == sum(range(50))
    c = only_call(tape, "many")
    kept = c.yielded[:-1]
    assert kept == list(range(len(kept))) and 0 < len(kept) < 50
    assert c.yielded[-1] == calltape.Truncated("yields", 50 - len(kept))
    assert c.replay().status == "passed"  # the values kept are compared
    change(path, "yield from range(n)\n@calltape.record\n", "yield from range(1, n + 1)\n@calltape.record\n")
    o = open_tape(tape).search(function="many")[0].replay()
    assert o.status == "changed" and o.diff.startswith("yielded[0]: 0 != 1")


def test_yields_needs_a_generator_function():
    with pytest.raises(TypeError, match="yields=True is recorded for generator functions"):
        calltape.record(lambda: 1, yields=True)

    async def agen():
        yield 1

    with pytest.raises(TypeError, match="generator functions"):
        calltape.record(agen, yields=True)
