"""Hostile argument values at recording time (the fault suite's), beyond
tests/read/test_values.py's raising __reduce__/__repr__, unencodable C objects
and deep or cyclic values: objects whose every dunder raises or lies.  The
call runs and returns as without calltape, none of the object's code runs,
and the tape holds the call."""

import warnings

import pytest
from _util import read_calls

import calltape

RAN = []


class Trap(type):
    """A metaclass whose attribute lookups are traps."""

    def __getattr__(cls, name):
        RAN.append(f"meta.__getattr__({name})")
        raise RuntimeError("metaclass getattr")

    def __instancecheck__(cls, obj):
        RAN.append("meta.__instancecheck__")
        raise RuntimeError("instancecheck")


class Raises(metaclass=Trap):
    def __getattribute__(self, name):
        RAN.append(f"__getattribute__({name})")
        raise RuntimeError("no attributes")

    def __eq__(self, other):
        RAN.append("__eq__")
        raise RuntimeError("eq")

    def __hash__(self):
        RAN.append("__hash__")
        raise RuntimeError("hash")

    def __len__(self):
        RAN.append("__len__")
        raise RuntimeError("len")

    def __iter__(self):
        RAN.append("__iter__")
        raise RuntimeError("iter")

    def __bool__(self):
        RAN.append("__bool__")
        raise RuntimeError("bool")


class LiesAboutClass:
    @property
    def __class__(self):
        RAN.append("__class__")
        return int


class EndlessDict(dict):
    def items(self):
        RAN.append("items")
        i = 0
        while True:
            yield i, i
            i += 1

    def keys(self):
        RAN.append("keys")
        return iter(range(10**12))

    def __iter__(self):
        RAN.append("dict.__iter__")
        return iter(range(10**12))


class HugeLen(list):
    def __len__(self):
        RAN.append("list.__len__")
        return 2**62


class BadStr(str):
    def __str__(self):
        RAN.append("str.__str__")
        raise RuntimeError("str")

    def __hash__(self):
        RAN.append("str.__hash__")
        raise RuntimeError("hash")


class BadSlot:
    __slots__ = ("a", "b")


def _odd_dict():
    o = BadSlot.__new__(BadSlot)
    o.a = 1  # b left unset: reading it raises AttributeError
    return o


def _non_str_dict_keys():
    class Plain:
        pass

    p = Plain()
    p.__dict__[1] = "an int key in __dict__"
    p.__dict__["ok"] = 2
    return p


HOSTILE = [
    ("every dunder raises", Raises),
    ("lies about its class", LiesAboutClass),
    ("dict whose items never end", lambda: EndlessDict(a=1)),
    ("list with a huge __len__", lambda: HugeLen([1, 2])),
    ("str subclass whose __str__ and __hash__ raise", lambda: BadStr("text")),
    ("unset slot", _odd_dict),
    ("non-str key in __dict__", _non_str_dict_keys),
    ("a huge int", lambda: 7 ** 200_000),
]


@pytest.mark.parametrize("make", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_argument(tape, make):
    value = make()

    @calltape.record
    def f(x, y=0):
        return ("done", y)

    del RAN[:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # calltape's own warnings included
        assert f(value, y=3) == ("done", 3)
        assert f(x=value) == ("done", 0)
    assert RAN == []                        # none of the value's code ran
    calls = read_calls(tape)
    assert [c.outcome for c in calls] == ["returned", "returned"]
    assert [c.result for c in calls] == [("done", 3), ("done", 0)]
    # each value read back on its own (one that cannot be rebuilt here,
    # a local class, is an Unreadable): reading never raises
    args, _, outcome = calls[0].readable()
    assert args["y"] == 3 and outcome == ("done", 3) and "x" in args
