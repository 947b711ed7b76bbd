"""The allow list: names rather than modules, dotted names by their full path only,
and each unpickler with its own list (no list leaks into another thread's load)."""

import sys
import threading

import pytest

import calltape
from calltape import _native


class Thing:
    """Pickled by reference as test_allow_lists.Thing (no codec, not a builtin)."""

    def __init__(self, n):
        self.n = n

    def __eq__(self, other):
        return type(other) is Thing and other.n == self.n

    class Inner:
        pass


MODULE = __name__


@pytest.fixture(autouse=True)
def _pickle_things():
    """Thing is pickled (opted in), so these tests exercise the unpickler."""
    calltape.configure(pickle=[Thing, Thing.Inner])
    yield
    calltape.configure(pickle=[])


def _pickled(value):
    data = _native.encode(value)
    assert data[0] == 0x10, "expected a pickled value"
    return data


def test_module_entry_allows_its_classes_and_nested_classes():
    assert _native.decode(_pickled(Thing(3)), allow=(MODULE,)) == Thing(3)
    inner = _native.decode(_pickled(Thing.Inner()), allow=(MODULE,))
    assert type(inner) is Thing.Inner


def test_name_entry_allows_that_name_only():
    assert _native.decode(_pickled(Thing(4)), allow=(f"{MODULE}.Thing",)) == Thing(4)
    with pytest.raises(calltape.RefusedGlobal, match=rf"{MODULE}\.Thing\.Inner"):
        _native.decode(_pickled(Thing.Inner()), allow=(f"{MODULE}.Thing",))
    with pytest.raises(calltape.RefusedGlobal, match=rf"allow=\['{MODULE}\.Thing'\]"):
        _native.decode(_pickled(Thing(5)))


def test_standard_data_types_need_no_allow():
    import collections
    import datetime
    import decimal
    import fractions
    import pathlib
    import uuid

    values = [datetime.datetime(2026, 12, 1, 8, 30), decimal.Decimal("1.25"),
              fractions.Fraction(1, 3), collections.OrderedDict(a=1), collections.deque([1]),
              uuid.UUID(int=7), pathlib.PurePosixPath("/a/b"), collections.Counter("aab")]
    for v in values:
        assert _native.decode(_native.encode(v)) == v


def test_a_function_imported_into_an_allowed_module_is_refused(tmp_path, monkeypatch):
    (tmp_path / "uses_os.py").write_text("from os import getcwd\nimport os\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # find_class("uses_os", "getcwd"): the module is allowed, the function is posix's
    payload = b"\x80\x04cuses_os\ngetcwd\n)R."
    data = b"\x10" + bytes([len(payload)]) + payload
    with pytest.raises(calltape.RefusedGlobal, match="defined in posix"):
        _native.decode(data, allow=("uses_os",))
    payload = b"\x80\x04cuses_os\nos.getcwd\n)R."
    data = b"\x10" + bytes([len(payload)]) + payload
    with pytest.raises(calltape.RefusedGlobal, match="does not go through classes"):
        _native.decode(data, allow=("uses_os",))
    assert "uses_os" in sys.modules  # allowed modules are imported; refused names are not


def test_refused_module_is_not_imported():
    payload = b"\x80\x04cthis_module_must_not_be_imported_xyz\nThing\n)R."
    data = b"\x10" + bytes([len(payload)]) + payload
    with pytest.raises(calltape.RefusedGlobal):
        _native.decode(data)
    assert "this_module_must_not_be_imported_xyz" not in sys.modules


def test_allowed_module_that_cannot_be_imported_says_so():
    payload = b"\x80\x04cgone_module_abc\nThing\n)R."
    data = b"\x10" + bytes([len(payload)]) + payload
    with pytest.raises(ModuleNotFoundError, match="gone_module_abc"):
        _native.decode(data, allow=("gone_module_abc",))


def test_two_threads_with_different_allow_lists():
    """Each unpickler carries its own list: with a tiny switch interval, a load
    with allow=() is never let through by another thread's allow list, and the
    other thread is never refused."""
    data = _pickled(Thing(1))
    rounds = 3000
    errors = {"let_through": 0, "wrongly_refused": 0, "other": []}
    start = threading.Barrier(2)

    def refused_reader():
        start.wait()
        for _ in range(rounds):
            try:
                _native.decode(data, allow=())
                errors["let_through"] += 1
            except calltape.RefusedGlobal:
                pass
            except Exception as exc:
                errors["other"].append(repr(exc))

    def allowed_reader():
        start.wait()
        for _ in range(rounds):
            try:
                _native.decode(data, allow=(MODULE,))
            except calltape.RefusedGlobal:
                errors["wrongly_refused"] += 1
            except Exception as exc:
                errors["other"].append(repr(exc))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=refused_reader), threading.Thread(target=allowed_reader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == {"let_through": 0, "wrongly_refused": 0, "other": []}
