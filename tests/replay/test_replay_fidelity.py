"""Replay keeps what programs rely on: sentinel defaults, identity between
arguments, the recorded function behind wrappers, private and property names,
structural comparison, and markers at any depth."""

import decimal
import importlib
import sys
import textwrap

import pytest

import calltape

SUBJECT = '''
import contextlib
import functools

_NO = object()


def first(xs, default=_NO, *, strict=False):
    if default is _NO:
        return xs[0]
    return default


def same(a, b):
    return a is b


class UnsetClass:
    """A module-level sentinel instance, as dateutil's UnsetTz."""


UNSET = UnsetClass()


def current(value=None):
    return UNSET if value is None else value


def is_unset(v):
    return v is UNSET


class Tree:
    def __init__(self):
        self.children = []


def adopt(parent, child):
    if child in parent.children:
        raise ValueError("twice")
    parent.children.append(child)
    child.owner = parent
    return child.owner is parent


class curry:
    """A class wrapper like toolz.curry: the module attribute is not the function."""

    def __init__(self, func):
        self.func = func
        functools.update_wrapper(self, func)

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)


@curry
def scale(x, factor=2):
    return x * factor


@contextlib.contextmanager
def opened(name):
    yield name.upper()
    return None


def use_opened():
    with opened("file") as f:
        return f


class Rule:
    def __init__(self, n):
        self.n = n

    def __distance(self, k):
        return abs(self.n - k)

    def check(self, k):
        return self.__distance(k) < 3

    @property
    def double(self):
        return self.n * 2

    @functools.cached_property
    def triple(self):
        return self.n * 3


class Opaque:
    def __init__(self, v):
        self.v = v


def make(v):
    return Opaque(v)


class Loader:
    pass


class Spec:
    """As importlib's ModuleSpec: == compares the loader, which has no ==, by identity."""

    def __init__(self, name, loader):
        self.name, self.loader = name, loader

    def __eq__(self, other):
        return self.name == other.name and self.loader == other.loader


def find_spec(loader, name):
    return Spec(name, loader)


COUNTER = [0]


def numbered(loader):
    COUNTER[0] += 1
    return Spec(f"n{COUNTER[0]}", loader)


def deep(value):
    return 1


def run():
    first([1])
    first([], 5)
    first([2], strict=True)
    x = [3]
    same(x, x)
    same([1], [1])
    is_unset(current())
    t = Tree()
    adopt(t, Tree())
    scale(4)
    use_opened()
    r = Rule(5)
    r.check(4)
    r.double
    r.triple
    make([1, 2])
    find_spec(Loader(), "pkg.mod")
    numbered(Loader())
'''


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    (tmp_path / "fidelity_subject.py").write_text(SUBJECT)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fidelity_subject", None)
    mod = importlib.import_module("fidelity_subject")
    tape = tmp_path / "t.db"
    with calltape.monitor(include=["fidelity_subject"], tape=tape):
        mod.run()
    assert calltape.flush(timeout=30)
    yield calltape.open(tape, allow=["fidelity_subject"]), mod
    sys.modules.pop("fidelity_subject", None)


def outcomes(tape, function):
    return [o for o in tape.replay(function=function)]


def test_sentinel_defaults_are_left_to_the_function(recorded):
    tape, _ = recorded
    calls = tape.calls("first")
    assert calls[0].defaults == {"default", "strict"}
    assert calls[0].bound.args == ([1],) and calls[0].bound.kwargs == {}
    assert calls[2].bound.kwargs == {"strict": True}
    assert [o.status for o in outcomes(tape, "first")] == ["passed"] * 3


def test_identity_between_arguments_survives_replay(recorded):
    tape, _ = recorded
    assert [o.status for o in outcomes(tape, "same")] == ["passed", "passed"]
    assert [o.status for o in outcomes(tape, "adopt")] == ["passed"]


def test_module_level_sentinels_come_back_as_themselves(recorded):
    tape, mod = recorded
    assert tape.calls("current")[0].result is mod.UNSET
    assert tape.calls("is_unset")[0].args["v"] is mod.UNSET
    assert [o.status for o in outcomes(tape, "current")] == ["passed"]
    assert [o.status for o in outcomes(tape, "is_unset")] == ["passed"]


def test_aware_datetimes_compare_by_fields_and_zone():
    import datetime

    class Zone(datetime.tzinfo):
        def __init__(self, hours):
            self.hours = hours

        def utcoffset(self, dt):
            return datetime.timedelta(hours=self.hours)

    def at(zone, minute=30):
        return datetime.datetime(2015, 11, 1, 1, minute, fold=1, tzinfo=zone)

    assert calltape.compare(at(Zone(1)), at(Zone(1))) is None
    assert calltape.compare(at(Zone(1)), at(Zone(2))) == "value.tzinfo.hours: 1 != 2"
    assert calltape.compare(at(Zone(1)), at(Zone(1), minute=31)) is not None


def test_the_recorded_function_behind_wrappers(recorded):
    tape, _ = recorded
    assert [o.status for o in outcomes(tape, "scale")] == ["passed"]
    assert [o.status for o in outcomes(tape, "opened")] == ["passed"]


def test_private_methods_and_properties(recorded):
    tape, _ = recorded
    names = {c.qualname for c in tape.calls()}
    assert {"Rule._Rule__distance", "Rule.__distance"} & names
    for fn in ("Rule.check", "Rule.*distance", "Rule.double", "Rule.triple"):
        got = outcomes(tape, fn)
        assert got and all(o.status == "passed" for o in got), (fn, got)


def test_objects_without_eq_compare_structurally(recorded):
    tape, _ = recorded
    assert [o.status for o in outcomes(tape, "make")] == ["passed"]
    # an own == that compares a part by identity: the same state is equal...
    assert [o.status for o in outcomes(tape, "find_spec")] == ["passed"]
    # ...and a different state is still a change, said where
    (changed,) = outcomes(tape, "numbered")
    assert changed.status == "changed" and "name" in changed.diff, changed
    assert calltape.compare(decimal.Decimal("NaN"), decimal.Decimal("NaN")) is None
    assert calltape.compare(decimal.Decimal("NaN"), decimal.Decimal(1)) is not None


def test_resolving_to_other_code_is_a_skip(recorded, tmp_path):
    tape, _mod = recorded
    source = (tmp_path / "fidelity_subject.py").read_text()
    (tmp_path / "fidelity_subject.py").write_text(
        source + "\nfrom json import dumps as same\n")
    sys.modules.pop("fidelity_subject", None)
    o = outcomes(tape, "same")[0]
    assert o.status == "skipped" and "not the recorded code" in o.reason


def test_a_marker_in_slots_is_a_skip(tmp_path, monkeypatch):
    import threading

    (tmp_path / "slot_subject.py").write_text(textwrap.dedent("""
        class Holder:
            __slots__ = ("lock", "n")

        def use(h):
            return h.n
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("slot_subject", None)
    mod = importlib.import_module("slot_subject")
    h = mod.Holder()
    h.lock, h.n = threading.Lock(), 3
    tape = tmp_path / "s.db"
    with calltape.monitor(include=["slot_subject"], tape=tape):
        mod.use(h)
    assert calltape.flush(timeout=30)
    o = calltape.open(tape, allow=["slot_subject"]).replay()[0]
    assert o.status == "skipped" and "was not recorded" in o.reason


def test_a_marker_at_any_depth_is_a_skip(tmp_path, monkeypatch):
    import threading

    (tmp_path / "deep_subject.py").write_text(textwrap.dedent("""
        def deep(value):
            return 1
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("deep_subject", None)
    mod = importlib.import_module("deep_subject")
    nested = inner = []
    for _ in range(50):
        inner.append([])
        inner = inner[0]
    inner.append(threading.Lock())
    tape = tmp_path / "d.db"
    with calltape.monitor(include=["deep_subject"], tape=tape):
        mod.deep(nested)
    assert calltape.flush(timeout=30)
    o = calltape.open(tape, allow=["deep_subject"]).replay()[0]
    assert o.status == "skipped" and "was not recorded" in o.reason


def test_a_marker_inside_a_partial_or_a_deque_is_a_skip(tmp_path, monkeypatch):
    """toolz' curry holds a functools.partial: a lambda among its keywords is not recorded."""
    import collections
    import functools

    (tmp_path / "partial_subject.py").write_text(textwrap.dedent("""
        def apply(p, x):
            return p(x)

        def total(d):
            return sum(f() for f in d)

        def add(x, f):
            return f(x)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("partial_subject", None)
    mod = importlib.import_module("partial_subject")
    tape = tmp_path / "p.db"
    with calltape.monitor(include=["partial_subject"], tape=tape):
        mod.apply(functools.partial(mod.add, f=lambda v: v + 1), 3)
        mod.total(collections.deque([lambda: 1, lambda: 2]))
        mod.apply(functools.partial(mod.add, f=abs), -3)
    assert calltape.flush(timeout=30)
    t = calltape.open(tape, allow=["partial_subject"])
    apply_a, apply_b = t.replay(function="apply")
    (total,) = t.replay(function="total")
    assert apply_b.status == "passed", apply_b
    for o in (apply_a, total):
        assert o.status == "skipped", o
        assert "was not recorded" in o.reason and "lambda" in o.reason, o.reason
