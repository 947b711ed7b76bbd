"""calltape.flat_profile: time every call made directly inside one function.

>>> @calltape.flat_profile(limit=0.5)
... def handle(request):
...     user = load_user(request.user_id)
...     return render(db.query(user))

Each call of ``handle`` measures its total time and, for each call made
directly inside it (callee and call site), the count, total and maximum time;
calls deeper down count inside the direct call that made them.  At or over
``limit`` seconds the ``above`` callback runs (default: a WARNING on the
``calltape.flat`` logger with the breakdown, slowest first), below it the
``below`` callback (default: a DEBUG record).  The timing is done in C
(``calltape._native.FlatProfile``), from ``sys.monitoring`` CALL events set
on the profiled function's code object alone; on 3.11, a plain function whose
source is in its file runs as a rewrite in which each direct call goes
through ``_native.flat_site_call`` (calltape/_sites.py), anything else under
a profile hook set while it runs.  ``.mechanism`` says which.  This module holds the
names, the result object and the default log texts.
"""

from __future__ import annotations

import inspect
import linecache
import logging
import os
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

from . import _native, _sites

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("calltape.flat")
# Whether a plain function in a file runs as its call-site rewrite: on 3.11,
# where it is 1.4-2.4x cheaper than the profile hook; not from 3.12, where a
# call made from C costs more than a sys.monitoring event (bench flat compares
# the two; the tests run both everywhere)
_CALL_SITES = sys.version_info < (3, 12)
_KIND = {"function": 0, "classmethod": 1, "staticmethod": 2}


class InnerCall(NamedTuple):
    """One call site's calls inside a profiled call (times in seconds).

    ``callee`` is what was called; on CPython 3.11 a Python callee is known
    by its code object (``.name`` is then its qualified name, without module).
    """

    callee: Any
    line: int
    count: int
    total: float
    max: float

    @property
    def name(self) -> str:
        """The callee's qualified name (``module.qualname`` where it has both)."""
        return _name_of(self.callee)


class FlatResult:
    """What a profiled call took: handed to the ``above`` and ``below`` callbacks.

    >>> def above(result):
    ...     print(result.total, result.limit, [(c.name, c.total) for c in result.calls])
    """

    __slots__ = ("calls", "function", "limit", "total")

    def __init__(self, function: Callable[..., Any], total: float, limit: float | None,
                 calls: list[tuple[Any, int, int, float, float]]) -> None:
        self.function = function
        self.total = total
        self.limit = limit
        self.calls = [InnerCall(*c) for c in calls]

    @property
    def name(self) -> str:
        """The profiled function's qualified name."""
        return getattr(self.function, "__qualname__", repr(self.function))

    def source(self, call: InnerCall) -> str:
        """The source text of ``call``'s line (stripped), or ``""``."""
        code = getattr(self.function, "__code__", None)
        return linecache.getline(code.co_filename, call.line).strip() if code else ""

    def text(self) -> str:
        """The breakdown as the default log record writes it."""
        head = f"{self.name} took {self.total:.6f}s"
        if self.limit is not None:
            head += f" (limit {self.limit:g}s)"
        lines = [head]
        for c in self.calls:
            lines.append(f"  {c.total:.6f}s  {c.count:>6}x  max {c.max:.6f}s  {c.name}"
                         f"  line {c.line}: {self.source(c)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<FlatResult {self.name} total={self.total:.6f}s calls={len(self.calls)}>"


def _name_of(callee: Any) -> str:
    if isinstance(callee, types.CodeType):  # 3.11 knows a Python callee by its code
        return callee.co_qualname
    qual = getattr(callee, "__qualname__", None) or getattr(callee, "__name__", None)
    if qual is None:
        return repr(callee)
    mod = getattr(callee, "__module__", None)
    if mod is None:
        owner = getattr(callee, "__objclass__", None)  # list.append and friends
        mod = getattr(owner, "__module__", None)
    return f"{mod}.{qual}" if mod and mod != "builtins" else qual


def _log_above(result: FlatResult) -> None:
    logger.warning("%s", result.text())


def _log_below(result: FlatResult) -> None:
    logger.debug("%s", result.text())


def _names(items: Iterable[Any] | None, what: str) -> list[Any] | None:
    if items is None:
        return None
    if isinstance(items, (str, bytes)):
        raise TypeError(f"flat_profile: {what}= takes a list of names or callables, not {items!r}")
    return list(items)


def _decorator(limit: float | None, below: Callable[[FlatResult], Any] | None,
               above: Callable[[FlatResult], Any] | None, gate: logging.Logger | None,
               below_level: int, above_level: int, keep: list[Any] | None,
               drop: list[Any] | None, ignore_builtins: bool, record: bool,
               name: str = "flat_profile") -> Callable[[F], F]:
    """The decorator of flat_profile and of the Recompyle facade: ``below`` and
    ``above`` are called as given (None: nothing); a non-zero level skips
    its callback while ``gate`` is not enabled for it."""

    def decorate(f: F) -> F:
        kind = "function"
        if isinstance(f, classmethod):
            kind, f = "classmethod", f.__func__
        elif isinstance(f, staticmethod):
            kind, f = "staticmethod", f.__func__
        if not callable(f):
            raise TypeError(f"{name}: cannot profile {f!r}, which is not callable")
        if inspect.isasyncgenfunction(f):
            raise TypeError(f"{name}: {f.__qualname__} is an async generator function,"
                            " which flat_profile does not profile")
        prof = _native.FlatProfile(
            f, FlatResult, limit=limit, below=below, above=above, logger=gate,
            below_level=below_level, above_level=above_level,
            only=keep, ignore=drop, ignore_builtins=ignore_builtins,
            kind=_KIND[kind] if not record else 0,
            run=_sites.call_sites(f) if _CALL_SITES else None)
        if not record:
            return prof
        method = {"classmethod": classmethod, "staticmethod": staticmethod}.get(kind)
        return _native.Recorder(method(f) if method else f, flat=prof)

    return decorate


def flat_profile(func: Any = None, /, *, limit: float | None = None,
                 below: Callable[[FlatResult], Any] | None = None,
                 above: Callable[[FlatResult], Any] | None = None,
                 ignore_builtins: bool = False, only: Iterable[Any] | None = None,
                 ignore: Iterable[Any] | None = None, record: bool | None = None) -> Any:
    """Time every call made directly inside ``func``, at each of its calls.

    ``limit`` (seconds, or None for no limit) splits calls between the
    ``above`` and ``below`` callbacks; each gets a :class:`FlatResult`.
    ``only`` / ``ignore`` keep or leave out callees, given as callables,
    qualified names (``"Cart.total"``) or ``"module.qualname"``;
    ``ignore_builtins`` leaves out functions written in C and builtins.
    ``record=True`` (the default when a tape is configured: ``CALLTAPE_TAPE``
    set, as ``calltape.configure(tape=...)`` and ``calltape run`` do) also
    records each call onto the tape, with its inner calls as its children
    (``Call.children()``), all ``captured="flat"``.

    >>> @calltape.flat_profile(limit=0.1, above=lambda r: print(r.text()))
    ... def handle(req): ...
    """
    if limit is not None and (not isinstance(limit, (int, float)) or isinstance(limit, bool)):
        raise TypeError(f"flat_profile: limit must be a number of seconds or None, not {limit!r}")
    for name, cb in (("below", below), ("above", above)):
        if cb is not None and not callable(cb):
            raise TypeError(f"flat_profile: {name}= must be callable, not {cb!r}")
    keep, drop = _names(only, "only"), _names(ignore, "ignore")
    if record is None:
        record = bool(os.environ.get("CALLTAPE_TAPE"))

    decorate = _decorator(limit, _log_below if below is None else below,
                          _log_above if above is None else above, logger,
                          logging.DEBUG if below is None else 0,
                          logging.WARNING if above is None else 0,
                          keep, drop, ignore_builtins, record)
    return decorate if func is None else decorate(func)
