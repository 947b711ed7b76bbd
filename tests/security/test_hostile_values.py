"""Hostile values in calltape's own format (OBJECT, GLOBAL, REF): rebuilding one
never calls anything outside the allow list, never makes a half-built C object,
and a reference to nothing is a TapeError."""

import pytest

import calltape
from calltape import _native

NONE, STR, TUPLE, OBJECT, GLOBAL, REF = 0x00, 0x06, 0x09, 0x19, 0x1A, 0x1B
PLAIN, ENUM, REDUCE = 0, 11, 12


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def text(s):
    b = s.encode()
    return varint(len(b)) + b


def s(v):
    return bytes([STR]) + text(v)


def glob(module, name):
    return bytes([GLOBAL]) + text(module) + text(name)


def obj(module, qualname, kind, contents=b"", pairs=()):
    head = bytes([OBJECT]) + text(module) + text(qualname) + bytes([kind])
    return head + varint(len(pairs)) + varint(0) + contents + b"".join(k + v for k, v in pairs)


def tup(*items):
    return bytes([TUPLE]) + varint(len(items)) + b"".join(items)


def reduce_of(callable_, *args):
    none = bytes([NONE])
    return obj("builtins", "object", REDUCE, tup(callable_, tup(*args), none, none, none))


@pytest.mark.parametrize("data,allow", [
    (glob("posix", "system"), ()),
    (glob("builtins", "eval"), ()),
    (glob("builtins", "getattr"), ()),
    (glob("pathlib", "os.system"), ("pathlib",)),
    (reduce_of(glob("posix", "system"), s("touch /tmp/calltape-pwned")), ()),
    (reduce_of(glob("builtins", "exec"), s("open('/tmp/calltape-pwned', 'w')")), ()),
    # a function of an allowed module is a value, never a reduce to call
    (reduce_of(glob("tests_hostile_victim", "delete_all"), s("/")), ("tests_hostile_victim",)),
    # a C class made as a plain object would be half-built
    (obj("socket", "socket", PLAIN), ("socket",)),
    (obj("threading", "Lock", PLAIN), ("threading",)),
    # not an enum: calling it would run its constructor
    (obj("tests_hostile_victim", "Dangerous", ENUM, s("x")), ("tests_hostile_victim",)),
])
def test_refused(tmp_path, monkeypatch, data, allow):
    (tmp_path / "tests_hostile_victim.py").write_text(
        "import os\n"
        "def delete_all(path):\n    raise SystemExit('delete_all ran')\n"
        "class Dangerous:\n    def __init__(self, *a):\n        raise SystemExit('init ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(calltape.RefusedGlobal):
        _native.decode(data, allow=allow)


def test_allowed_classes_are_made_without_calling_them(tmp_path, monkeypatch):
    (tmp_path / "tests_hostile_victim2.py").write_text(
        "class Dangerous:\n    def __init__(self, *a):\n        raise SystemExit('init ran')\n"
        "    def __new__(cls, *a):\n        raise SystemExit('new ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    value = _native.decode(obj("tests_hostile_victim2", "Dangerous", PLAIN,
                               pairs=[(s("x"), s("y"))]), allow=("tests_hostile_victim2",))
    assert type(value).__name__ == "Dangerous" and value.x == "y"


@pytest.mark.parametrize("data", [
    bytes([REF]) + varint(1),
    tup(bytes([REF]) + varint(5)),
    bytes([OBJECT]) + text("builtins") + text("object") + bytes([99]) + varint(0) + varint(0),
    bytes([OBJECT]) + text("builtins") + text("object") + bytes([PLAIN]) + varint(10**6)
    + varint(0),
])
def test_malformed_is_a_tape_error(data):
    with pytest.raises(calltape.TapeError):
        _native.decode(data)
