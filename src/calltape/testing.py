"""Helpers for the regression tests that ``calltape make-tests`` writes.

>>> from calltape.testing import add_import_path, assert_same, call, resolve
>>> add_import_path(__file__, "..")             # the project's folder, as the program had it
>>> price = resolve("shop", "price")          # the original, without @calltape.record
>>> assert_same(call(price, 3, 9.5), 28.5)    # AssertionError says where values differ
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from . import _native

# Replay's rules, asked rather than repeated: how a call is run to its end
# and how an exception is named (a Replayer of no tape replays nothing).
_REPLAYER = _native.Replayer()

__all__ = ["add_import_path", "assert_raised", "assert_same", "call", "load_values", "resolve"]

resolve: Callable[..., Callable[..., Any]] = _native.resolve


def add_import_path(test_file: str, *folders: str) -> list[str]:
    """Put ``folders`` (relative to the folder of ``test_file``, or absolute) in
    front of sys.path where they are missing, so that the test imports the
    project's modules as the recorded program did, under plain ``pytest`` as
    under ``python -m pytest``.  Returns the folders it added."""
    here = os.path.dirname(os.path.abspath(test_file))
    return _native.push_import_path([os.path.normpath(os.path.join(here, f)) for f in folders])


def call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` as replay does: a generator runs to its end and gives its return
    value, a coroutine runs on a fresh event loop, an async generator is exhausted."""
    return _REPLAYER.call(fn, *args, **kwargs)


def assert_same(actual: Any, expected: Any, *, rel: float = 0.0, abs: float = 0.0) -> None:
    """Fail unless ``actual`` is what was recorded (calltape.compare's rules)."""
    diff = _native.compare(expected, actual, rel=rel, abs=abs)
    if diff is not None:
        raise AssertionError(diff.replace("value", "result", 1) + "  (recorded != now)")


def assert_raised(thunk: Callable[[], Any], type: str, message: str) -> None:
    """Fail unless ``thunk()`` raises an exception of the recorded type
    (``module.Qualname``) with the recorded message."""
    try:
        result = thunk()
    except Exception as exc:
        kind, now = _REPLAYER.raised(exc)  # as the recorder wrote the recorded one
        if (kind, now) != (type, message):
            raise AssertionError(f"recorded {type}: {message}, raised now {kind}: {now}") from exc
        return
    raise AssertionError(f"recorded {type}: {message}, returned {result!r} now")


def load_values(test_file: str, *, trust: bool = False, allow: tuple[str, ...] = ()) -> list[Any]:
    """The values stored next to a generated test module (``<stem>.calltape``),
    rebuilt by calltape's restricted unpickler (modules in ``allow`` permitted)."""
    path = os.path.splitext(test_file)[0] + ".calltape"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise FileNotFoundError(f"the values of {test_file} are missing: {path}: {exc.strerror}")
    return _native.decode(data, trust=trust, allow=allow)
