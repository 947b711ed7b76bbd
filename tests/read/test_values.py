"""The value codec: every built-in kind round-trips, pickled objects, numpy,
register_codec, unencodable values, TRUNCATED, and refusal of untrusted pickles."""

import collections
import dataclasses
import datetime
import decimal
import enum
import fractions
import math
import os
import pathlib
import threading
import uuid
import warnings

import pytest
from _util import last_json, only_call, read_calls, run_python, same_value

import calltape
from calltape import _native


@calltape.record
def ident(v):
    return v


@dataclasses.dataclass
class Point:
    x: int
    y: float
    tags: list = dataclasses.field(default_factory=list)


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


class Name(str):
    pass


class Bag(dict):
    pass


Pair = collections.namedtuple("Pair", "left right")


BUILTIN_VALUES = [
    ("none", None),
    ("true", True),
    ("false", False),
    ("zero", 0),
    ("small", 7),
    ("negative", -12345),
    ("int64_max", 2**63 - 1),
    ("int64_min", -(2**63)),
    ("just_over_int64", 2**63),
    ("uint64_over", 2**64 + 1),
    ("huge", 2**200),
    ("huge_negative", -(2**100)),
    ("huge_negative_odd", -(2**200) + 12345),
    ("float", 1.5),
    ("float_negative", -2.25),
    ("float_tiny", 5e-324),
    ("float_big", 1.7976931348623157e308),
    ("inf", float("inf")),
    ("minus_inf", float("-inf")),
    ("minus_zero", -0.0),
    ("str_empty", ""),
    ("str_ascii", "hello"),
    ("str_unicode", "héllo wörld ✓ 𝄞 中文 \u200b"),
    ("str_nul", "a\x00b"),
    ("str_lone_surrogate", "\ud800"),
    ("str_surrogates_mixed", "x\udfffy\ud83d"),
    ("bytes_empty", b""),
    ("bytes", bytes(range(256))),
    ("list_empty", []),
    ("tuple_empty", ()),
    ("dict_empty", {}),
    ("set_empty", set()),
    ("frozenset_empty", frozenset()),
    ("nested", [1, [2, [3, (4, 5.5, None)]], {"a": {1, 2}, "b": frozenset({"x"})}, (True, False)]),
    ("tuple_mixed", (1, "two", 3.0, None, (True,), [b"b"])),
    ("dict_nested", {"k": [1, 2], "n": {"m": (1, frozenset({3})), "e": {}}}),
    ("dict_non_str_keys", {1: "int", (2, 3): "tuple", None: "none", 1.5: "float",
                            b"b": "bytes", frozenset({1}): "fs", -(2**70): "big"}),
    ("set_mixed", {1, "a", (2, 3), None, 2.5}),
    ("frozenset_mixed", frozenset({"x", 1, (1, 2)})),
    ("list_of_many", list(range(1000))),
]


@pytest.mark.parametrize("name,value", BUILTIN_VALUES, ids=[n for n, _ in BUILTIN_VALUES])
def test_builtin_value_round_trips(tape, name, value):
    assert ident(value) is value
    c = only_call(tape)
    assert same_value(value, c.args["v"]), (value, c.args["v"])
    assert same_value(value, c.result), (value, c.result)


def test_nan_round_trips(tape):
    ident(float("nan"))
    c = only_call(tape)
    assert isinstance(c.args["v"], float) and math.isnan(c.args["v"])
    assert isinstance(c.result, float) and math.isnan(c.result)


def test_minus_zero_keeps_its_sign(tape):
    ident(-0.0)
    c = only_call(tape)
    assert math.copysign(1.0, c.args["v"]) == -1.0


def test_bool_stays_bool_inside_containers(tape):
    ident([True, 1, False, 0, {True: 1}])
    v = only_call(tape).args["v"]
    assert [type(x) for x in v[:4]] == [bool, int, bool, int]
    assert type(next(iter(v[4]))) is bool


PICKLED_VALUES = [
    ("datetime", datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC)),
    ("naive_datetime", datetime.datetime(1999, 12, 31, 23, 59, 59)),
    ("date", datetime.date(2020, 2, 29)),
    ("timedelta", datetime.timedelta(days=1, microseconds=5)),
    ("decimal", decimal.Decimal("1.10")),
    ("fraction", fractions.Fraction(22, 7)),
    ("complex", complex(1.5, -2)),
    ("bytearray", bytearray(b"\x00ab")),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("path", pathlib.PurePosixPath("/etc/hosts")),
    ("dataclass", Point(1, 2.5, ["a"])),
    ("int_enum", Color.GREEN),
    ("str_subclass", Name("alice")),
    ("dict_subclass", Bag(a=1)),
    ("ordered_dict", collections.OrderedDict([("b", 1), ("a", 2)])),
    ("defaultdict", collections.defaultdict(list, {"k": [1]})),
    ("counter", collections.Counter("hello")),
    ("namedtuple", Pair(1, "r")),
    ("nested_objects", [Point(0, 0.0),
                        {"when": datetime.date(2001, 1, 1), "d": decimal.Decimal(3)}]),
]


@pytest.mark.parametrize("name,value", PICKLED_VALUES, ids=[n for n, _ in PICKLED_VALUES])
def test_pickled_value_round_trips_with_its_type(tape, name, value):
    ident(value)
    c = only_call(tape)
    got = c.args["v"]
    assert type(got) is type(value), (type(got), type(value))
    assert got == value
    if isinstance(value, collections.defaultdict):
        assert got.default_factory is list
    if isinstance(value, list):
        assert [type(x) for x in got] == [type(x) for x in value]


def test_pickling_only_when_opted_in_and_counted(tape, stats_delta):
    ident(decimal.Decimal("2.5"))
    ident(Point(1, 2.0))
    assert stats_delta("pickled") == 0
    calltape.configure(pickle=[Point])
    try:
        ident(Point(3, 4.0))
    finally:
        calltape.configure(pickle=[])
    ident(3)
    assert stats_delta("pickled") == 2  # the argument and the result
    calls = read_calls(tape)
    assert len(calls) == 4
    assert calls[2].args["v"] == Point(3, 4.0) and calls[1].args["v"] == Point(1, 2.0)


def test_untrusted_tape_never_runs_pickled_globals(tape, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ident(Evil())
    assert calltape.flush(timeout=30)
    try:
        for c in calltape.open(tape).calls():   # trust=False: the default
            c.args
            c.result
    except Exception:
        pass
    assert not marker.exists(), "an untrusted tape executed a pickled global"


# ---------------------------------------------------------------- numpy ----

def _numpy_arrays(np):
    return [
        ("float64_2d", np.arange(12, dtype=np.float64).reshape(3, 4) / 7),
        ("int32", np.array([1, -2, 3, 2**31 - 1], dtype=np.int32)),
        ("bool", np.array([True, False, True])),
        ("fortran", np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))),
        ("empty_2d", np.zeros((0, 3), dtype=np.float32)),
        ("zero_dim", np.array(5.25)),
        ("uint8_3d", np.arange(24, dtype=np.uint8).reshape(2, 3, 4)),
        ("big_endian", np.arange(5, dtype=">i4")),
        # last: a view without a contiguous buffer (may take another path)
        ("strided_view", np.arange(40, dtype=np.int64)[::3]),
    ]


def test_numpy_arrays_round_trip_with_dtype_and_shape(tape, stats_delta):
    np = pytest.importorskip("numpy")
    arrays = _numpy_arrays(np)
    for _, a in arrays[:-1]:
        ident(a)
    # the built-in codec writes .npy bytes: contiguous arrays do not go through pickle
    assert stats_delta("pickled") == 0
    ident(arrays[-1][1])
    calls = read_calls(tape)
    assert len(calls) == len(arrays)
    for (name, a), c in zip(arrays, calls):
        got = c.args["v"]
        assert isinstance(got, np.ndarray), name
        assert got.dtype == a.dtype, name
        assert got.shape == a.shape, name
        assert np.array_equal(got, a), name
        assert isinstance(c.result, np.ndarray) and np.array_equal(c.result, a), name
    fortran = calls[3].args["v"]
    assert fortran.flags.f_contiguous


def test_numpy_array_captured_at_call_time(tape):
    np = pytest.importorskip("numpy")

    @calltape.record
    def scale(a):
        a *= 2
        return a.sum()

    a = np.ones(4)
    scale(a)
    c = only_call(tape)
    assert np.array_equal(c.args["a"], np.ones(4))
    assert c.result == 8.0


def test_numpy_large_array_truncated_by_default(tape):
    np = pytest.importorskip("numpy")
    ident(np.zeros(10000))   # 80 000 bytes > 64 KiB
    v = only_call(tape).args["v"]
    assert isinstance(v, calltape.Truncated)
    assert "ndarray" in v.type
    assert v.size >= 80000


def test_numpy_not_imported_without_ndarray(tmp_path):
    pytest.importorskip("numpy")
    path = tmp_path / "np.db"
    proc = run_python(tmp_path, """
        import json, decimal, datetime, calltape
        @calltape.record
        def f(*args, **kw):
            return args
        f(1, 2.0, "s", b"b", [1], (2,), {3: 4}, {5}, frozenset(), None, True,
          decimal.Decimal(1), datetime.date.today(), 2**100, x=object())
        assert calltape.flush(timeout=30)
        t = calltape.open(os.environ["CALLTAPE_TAPE"], trust=True)
        n = len(t.calls())
        print(json.dumps({"numpy": "numpy" in sys.modules, "calls": n}))
    """, tape=path)
    out = last_json(proc)
    assert out == {"numpy": False, "calls": 1}


# -------------------------------------------------------------- codecs ----

def test_register_codec_uses_nearest_registered_base(tape):
    class Base:
        def __init__(self, v):
            self.v = v

    class Mid(Base):
        pass

    class Leaf(Mid):
        pass

    class Other(Base):
        pass

    seen = []
    tag = uuid.uuid4().hex

    def enc_base(o):
        seen.append(("base", type(o).__name__))
        return b"B" + str(o.v).encode()

    def enc_mid(o):
        seen.append(("mid", type(o).__name__))
        return b"M" + str(o.v).encode()

    calltape.register_codec(Base, f"test.base.{tag}", enc_base, lambda b: ("base", b))
    calltape.register_codec(Mid, f"test.mid.{tag}", enc_mid, lambda b: ("mid", b))

    @calltape.record
    def f(a, b, c, d):
        return d

    f(Base(1), Leaf(2), Other(3), Mid(4))
    c = only_call(tape)
    assert c.args == {"a": ("base", b"B1"), "b": ("mid", b"M2"), "c": ("base", b"B3"),
                      "d": ("mid", b"M4")}
    assert c.result == ("mid", b"M4")
    assert ("mid", "Leaf") in seen and ("base", "Other") in seen


def test_register_codec_beats_builtin_fast_path_for_subclasses(tape):
    class Tagged(dict):
        pass

    calltape.register_codec(Tagged, f"test.tagged.{uuid.uuid4().hex}",
                            lambda o: repr(sorted(o.items())).encode(),
                            lambda b: ("tagged", b.decode()))
    ident(Tagged(a=1))
    assert only_call(tape).args["v"] == ("tagged", "[('a', 1)]")


def test_unregister_codec_captures_the_type_as_before(tape):
    """_native.unregister_codec(type): the next values of the type are
    captured as they were before (an object, a numpy array's own codec), and
    the values the codec encoded still decode."""
    class Point:
        def __init__(self, x):
            self.x = x

    name = f"test.point.{uuid.uuid4().hex}"
    calltape.register_codec(Point, name, lambda p: str(p.x).encode(), lambda b: ("pt", b))
    ident(Point(1))
    assert _native.unregister_codec(Point) is True
    assert _native.unregister_codec(Point) is False
    ident(Point(2))
    first, second = read_calls(tape)
    assert first.args["v"] == ("pt", b"1")
    assert second.stored("args")["v"]["attributes"]["x"]["preview"] == "2"
    with pytest.raises(TypeError, match="unregister_codec needs a type, not 3"):
        _native.unregister_codec(3)


def test_codec_that_raises_records_unencodable_and_warns_at_most_once(tape, stats_delta):
    class Fragile:
        pass

    def bad_encode(o):
        raise RuntimeError("codec exploded")

    calltape.register_codec(Fragile, f"test.fragile.{uuid.uuid4().hex}", bad_encode,
                            lambda b: None)

    @calltape.record
    def f(x):
        return "ok"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [f(Fragile()) for _ in range(5)]
    assert results == ["ok"] * 5
    rw = [w for w in caught if issubclass(w.category, calltape.RecordingWarning)]
    assert len(rw) <= 1
    calls = read_calls(tape)
    assert len(calls) == 5
    for c in calls:
        assert isinstance(c.args["x"], calltape.Unencodable)
        assert "Fragile" in c.args["x"].type
        assert c.result == "ok"
    assert stats_delta("unencodable") >= 5


def test_codec_returning_non_bytes_records_unencodable(tape):
    class Odd:
        pass

    calltape.register_codec(Odd, f"test.odd.{uuid.uuid4().hex}", lambda o: 12345,
                            lambda b: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ident(o := Odd()) is o
    v = only_call(tape).args["v"]
    assert isinstance(v, calltape.Unencodable)
    assert "Odd" in v.type


# --------------------------------------------------------- unencodable ----


def test_reduce_and_repr_that_raise_are_never_called(tape):
    """Values are read structurally: a __reduce__ or __repr__ that raises does not matter."""
    a, b = BadReduce(), BadEverything()
    a.n, b.n = 1, 2
    ident(a)
    ident(b)
    calls = read_calls(tape)
    assert type(calls[0].args["v"]) is BadReduce and calls[0].args["v"].n == 1
    assert type(calls[1].args["v"]) is BadEverything and calls[1].args["v"].n == 2

class BadReduce:
    def __reduce__(self):
        raise TypeError("no pickling for you")


class BadEverything:
    def __reduce_ex__(self, protocol):
        raise ValueError("nope")

    def __repr__(self):
        raise RuntimeError("repr exploded")


def _gen():
    yield 1


UNENCODABLE = [
    ("lock", lambda: threading.Lock(), "lock"),
    ("rlock", lambda: threading.RLock(), "RLock"),
    ("generator", lambda: _gen(), "generator"),
    ("lambda", lambda: (lambda: 1), "function"),
    ("file", lambda: open(__file__), "TextIOWrapper"),
]


@pytest.mark.parametrize("name,factory,type_part", UNENCODABLE, ids=[u[0] for u in UNENCODABLE])
def test_unencodable_argument_is_marked_and_call_returns(tape, stats_delta, name, factory,
                                                         type_part):
    obj = factory()

    @calltape.record
    def f(x, y=1):
        return ("returned", y)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert f(obj, y=2) == ("returned", 2)
        assert ident(obj) is obj
    if hasattr(obj, "close"):
        obj.close()
    calls = read_calls(tape)
    assert len(calls) == 2
    v = calls[0].args["x"]
    assert isinstance(v, calltape.Unencodable)
    assert type_part.lower() in v.type.lower()
    assert isinstance(v.reason, str)
    assert calls[0].args["y"] == 2
    assert calls[0].result == ("returned", 2)
    # the same object as a result is marked as well
    assert isinstance(calls[1].result, calltape.Unencodable)
    assert stats_delta("unencodable") >= 3


def test_unencodable_inside_a_container(tape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ident([1, threading.Lock(), "x"])
    v = only_call(tape).args["v"]
    # either the whole list or just the lock is marked; never an exception, never None
    if isinstance(v, list):
        assert v[0] == 1 and v[2] == "x"
        assert isinstance(v[1], calltape.Unencodable)
    else:
        assert isinstance(v, calltape.Unencodable)


def test_self_referencing_and_deep_values_do_not_break_the_call(tape):
    loop = [1]
    loop.append(loop)
    deep = current = []
    for _ in range(500):
        nxt = []
        current.append(nxt)
        current = nxt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ident(loop) is loop
        assert ident(deep) is deep
    calls = read_calls(tape)
    assert len(calls) == 2
    for c in calls:
        assert c.args["v"] is not None
        assert c.outcome == "returned"


# ----------------------------------------------------------- truncated ----

def test_default_limit_is_64_kib(tape, stats_delta):
    ident(b"x" * 60000)
    ident(b"y" * 70000)
    ident("z" * 70000)
    ident(list(range(100000, 130000)))
    calls = read_calls(tape)
    assert calls[0].args["v"] == b"x" * 60000
    for c, tname, minsize in zip(calls[1:], ("bytes", "str", "list"), (70000, 70000, 65536)):
        v = c.args["v"]
        assert isinstance(v, calltape.Truncated), (tname, v)
        assert tname in v.type
        assert v.size >= minsize
        assert isinstance(c.result, calltape.Truncated)
    assert stats_delta("truncated") >= 3


def test_per_function_max_value_bytes(tape):
    @calltape.record(max_value_bytes=1000)
    def small(v):
        return v * 2

    @calltape.record(max_value_bytes=1 << 20)
    def large(v):
        return len(v)

    small("a" * 400)        # 400 fits, the 800-char result fits
    small("b" * 2000)
    large(b"c" * 200_000)
    calls = read_calls(tape)
    assert calls[0].args["v"] == "a" * 400 and calls[0].result == "a" * 800
    assert isinstance(calls[1].args["v"], calltape.Truncated)
    assert calls[1].args["v"].type.endswith("str")
    assert isinstance(calls[1].result, calltape.Truncated)
    assert calls[1].result.size >= 4000
    assert calls[2].args["v"] == b"c" * 200_000
    assert calls[2].result == 200_000


class _Grove:
    """Instances as large as asked: a class whose values are over a small budget."""

    def __init__(self, n):
        self.items = list(range(n))


def test_a_class_over_the_budget_is_not_encoded_every_time(tape):
    """Encoding a value over the budget costs the budget before it is dropped;
    after a few in a row of one class, the next are not encoded (Truncated with
    size 0) until a try fits again."""

    @calltape.record(max_value_bytes=256)
    def plant(grove):
        return len(grove.items)

    for _ in range(40):
        plant(_Grove(1000))
    for _ in range(40):
        plant(_Grove(2))
    calls = [c for c in read_calls(tape) if c.qualname.endswith(".plant")]
    assert len(calls) == 80
    big = [c.args["grove"] for c in calls[:40]]
    assert all(isinstance(v, calltape.Truncated) and v.type == "_Grove" for v in big)
    measured = [v.size for v in big if v.size]
    assert [v.size > 0 for v in big[:4]] == [True] * 4  # the first ones are always encoded
    assert 5 <= len(measured) < 20                  # then fewer and fewer
    small = [c.args["grove"] for c in calls[40:]]
    fits = [i for i, v in enumerate(small) if not isinstance(v, calltape.Truncated)]
    assert fits and fits[0] < 40
    assert fits == list(range(fits[0], 40))         # once one fits, every one is encoded
    assert all(small[i].items == [0, 1] for i in fits)
    assert all(v.size == 0 for v in small[:fits[0]])


@pytest.mark.parametrize("value", [
    0.1, 2.0, -0.0, 1e15, 1e16, 1.5e-05, 0.00015, 123456789.125, 1 / 3,
    "a\rb\x85\ud800\t\u00e9", b"\x00\xff\r\n", [1.0, ("x",), {2: b"y"}],
])
def test_previews_and_literals_write_floats_and_text_as_repr_does(value):
    # one float repr and one quoting routine serve both (no single quote
    # inside: Python would switch to double quotes, the tape's text does not)
    wire = calltape._native.encode(value)
    assert calltape._native.preview(wire) == repr(value)
    assert calltape._native.literal(value) == repr(value)


def test_markers_behave_as_frozen_records():
    import pickle

    from calltape import ExceptionInfo, Redacted, Truncated, Unencodable

    t = Truncated("bytearray", 65536)
    assert t == Truncated(type="bytearray", size=65536) and hash(t) == hash(Truncated("bytearray", 65536))
    assert t != Truncated("bytearray", 1) and t != Unencodable("bytearray", "65536")
    assert repr(t) == "Truncated(type='bytearray', size=65536)"
    assert repr(Redacted()) == "<redacted>" and Redacted() == Redacted()
    with pytest.raises(AttributeError):
        t.size = 1
    with pytest.raises(TypeError):
        Unencodable("x")
    e = ExceptionInfo("builtins.KeyError", "'bad'", [("f.py", 3, "g")])
    assert e == ExceptionInfo("builtins.KeyError", "'bad'") and e.frames == [("f.py", 3, "g")]
    assert ExceptionInfo("builtins.ValueError", "no").frames == []
    assert pickle.loads(pickle.dumps(t)) == t and pickle.loads(pickle.dumps(e)).frames == e.frames


def test_the_command_line_starts_without_typing_or_dataclasses():
    """What every `calltape` command pays before it opens the tape (issue 13's 100 ms)."""
    import subprocess
    import sys

    code = "import sys, calltape.cli; print(sorted(m for m in ('typing', 'dataclasses', 'inspect') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
