"""Reading a tape: thin Python views over the C reader (``_native.RawTape``).

>>> tape = calltape.open("calltape.db")
>>> [c.args for c in tape.calls("price")]
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from . import _native, _replay

_OUTCOMES = ("returned", "raised", "closed")
_HAS_ARGS, _HAS_RESULT, _UNBOUND = 1 << 3, 1 << 4, 1 << 5


@dataclass(frozen=True)
class Function:
    """A recorded function with its aggregates (durations in seconds)."""

    id: int
    module: str
    qualname: str
    file: str
    line: int
    parameters: list[str]
    kinds: list[int]  # inspect.Parameter kinds, in parameter order
    defaults: dict[str, Any]
    calls: int
    raised: int
    total: float
    min: float | None
    max: float | None

    @property
    def mean(self) -> float | None:
        """Mean duration in seconds, None before any call."""
        return self.total / self.calls if self.calls else None


@dataclass(frozen=True)
class Session:
    """One recording process."""

    id: int
    pid: int
    ppid: int
    parent: int | None
    host: str
    argv: list[str]
    python: str
    version: str
    start: datetime
    counters: dict[str, int]


@dataclass(frozen=True)
class Bound:
    """Arguments ready for ``function(*bound.args, **bound.kwargs)``."""

    args: tuple
    kwargs: dict[str, Any]


class Call:
    """One recorded call; values are rebuilt on first access."""

    __slots__ = ("_args", "_defaults", "_fn", "_raw", "_result", "_tape")

    def __init__(self, tape: Tape, fn: Function, raw: tuple) -> None:
        self._tape, self._fn, self._raw = tape, fn, raw
        self._args: dict[str, Any] | None = None  # the others are set on first use

    id = property(lambda self: self._raw[0])
    session = property(lambda self: self._raw[1])
    parent = property(lambda self: self._raw[3])
    depth = property(lambda self: self._raw[4])
    start_ns = property(lambda self: self._raw[6])
    duration_ns = property(lambda self: self._raw[7])
    module = property(lambda self: self._fn.module)
    qualname = property(lambda self: self._fn.qualname)
    function = qualname
    file = property(lambda self: self._fn.file)
    line = property(lambda self: self._fn.line)

    @property
    def outcome(self) -> str:
        return _OUTCOMES[self._raw[8]]

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_ns / 1e9, tz=UTC)

    @property
    def duration(self) -> float:
        return self.duration_ns / 1e9

    @property
    def thread(self) -> int | None:
        return self._tape._thread(self.session, self._raw[5]).get("ident")

    @property
    def thread_name(self) -> str | None:
        return self._tape._thread(self.session, self._raw[5]).get("name")

    @property
    def cpu_time(self) -> float | None:
        return self._raw[10] / 1e9 if self._raw[9] & 1 else None

    @property
    def memory(self) -> dict[str, int] | None:
        if not self._raw[9] & 2:
            return None
        return {"rss_before": self._raw[11], "rss_after": self._raw[12], "peak": self._raw[13]}

    @property
    def args(self) -> dict[str, Any]:
        if self._args is None:
            self._args = {}
            self._defaults: set[str] = set()
            if self._raw[9] & _HAS_ARGS:
                values = self._tape._raw.rebuild(self._raw[14], True)
                names = (["args", "kwargs"] if self._raw[9] & _UNBOUND
                         else self._fn.parameters)
                for name, (value, was_default) in zip(names, values):
                    self._args[name] = value
                    if was_default:
                        self._defaults.add(name)
        return self._args

    @property
    def defaults(self) -> set[str]:
        _ = self.args  # rebuilding the arguments finds which took defaults
        return self._defaults

    def _outcome_value(self) -> Any:
        try:
            return self._result
        except AttributeError:  # not rebuilt yet
            self._result = (self._tape._raw.rebuild(self._raw[15])
                            if self._raw[9] & _HAS_RESULT else None)
            return self._result

    @property
    def result(self) -> Any:
        return None if self.outcome == "raised" else self._outcome_value()

    @property
    def exception(self) -> Any:
        return self._outcome_value() if self.outcome == "raised" else None

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp((self.start_ns + self.duration_ns) / 1e9, tz=UTC)

    @property
    def energy(self) -> dict[str, float] | None:
        """Energy in microjoules; None: this machine's counters were not recorded."""
        return None

    @property
    def locals(self) -> dict[str, Any] | None:
        """Locals at return; None unless recorded with locals=True."""
        return None

    @property
    def globals(self) -> dict[str, Any] | None:
        """Globals the function read; None unless recorded with globals=True."""
        return None

    @property
    def bound(self) -> Bound:
        """The arguments as ``args`` and ``kwargs`` to call the function again."""
        pos: list[Any] = []
        kw: dict[str, Any] = {}
        values = self.args
        if self._raw[9] & _UNBOUND:
            return Bound(tuple(values.get("args", ())), dict(values.get("kwargs", {})))
        for name, kind in zip(self._fn.parameters, self._fn.kinds):
            if name not in values:
                continue
            if kind in (0, 1):
                pos.append(values[name])
            elif kind == 2:
                pos.extend(values[name])
            elif kind == 3:
                kw[name] = values[name]
            else:
                kw.update(values[name])
        return Bound(tuple(pos), kw)

    def children(self) -> list[Call]:
        """The recorded calls this call made directly, oldest first."""
        found = self._tape.search(session=self.session, since=self.start_ns / 1e9,
                                  until=(self.start_ns + self.duration_ns) / 1e9,
                                  order="oldest")
        return [c for c in found if c.parent == self.id]

    @property
    def preview(self) -> str:
        return _native.preview(self._raw[14])

    def replay(self, *, rel: float = 0.0, abs: float = 0.0, globals: str | None = None,
               record: bool = False) -> _replay.Outcome:
        """Call the function again, today's code, with the recorded arguments, and
        compare with what was recorded; see :meth:`Tape.replay` for the options.

        >>> outcome = tape.call(42).replay(rel=1e-9)
        >>> outcome.ok, outcome.result, outcome.expected, outcome.diff
        """
        report = _replay.replay_calls(self._tape, [self], rel=rel, abs=abs, globals=globals,
                                      record=record)
        return report.outcomes[0]

    def __repr__(self) -> str:
        return (f"<Call {self.id} {self.qualname}({self.preview}) {self.outcome}"
                f" in {self.duration * 1e6:.1f} us>")


def _to_ns(value: datetime | float, name: str) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.astimezone()  # a naive time is local time, as datetime.now()
        return round(value.timestamp() * 1e9)
    if isinstance(value, int | float):
        return round(value * 1e9)
    raise TypeError(f"{name} must be a datetime or seconds since the epoch, not {value!r}")


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # e.g. arrays, whose == is element-wise
        return False


class Calls:
    """The calls a search found.  Iterating streams them from the tape (each
    iteration runs the search again, in bounded memory); indexing and len()
    read the search once and keep the result."""

    def __init__(self, tape: Tape, query: dict[str, Any], post: list, limit: int) -> None:
        self._tape, self._query, self._post, self._limit = tape, query, post, limit
        self._list: list[Call] | None = None

    def __iter__(self) -> Iterator[Call]:
        tape = self._tape
        fns = tape._functions()
        raw = tape._raw.search(**self._query)
        if not self._post:
            return (Call(tape, fns[r[2]], r) for r in raw)
        return self._filtered(raw, fns)

    def _filtered(self, raw: Iterator[tuple], fns: dict[int, Function]) -> Iterator[Call]:
        n = 0
        for r in raw:
            if 0 <= self._limit <= n:
                return
            call = Call(self._tape, fns[r[2]], r)
            if all(p(call) for p in self._post):
                n += 1
                yield call

    def _all(self) -> list[Call]:
        if self._list is None:
            self._list = list(iter(self))  # list(self) would ask len() first
        return self._list

    def __getitem__(self, index: int | slice) -> Any:
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        calls = self._all()
        shown = "".join(f"\n  {c!r}" for c in calls[:10])
        more = f"\n  ... {len(calls) - 10} more" if len(calls) > 10 else ""
        return f"<{len(calls)} calls>{shown}{more}"


class Tape:
    """A tape opened for reading.  ``trust=True`` unpickles any global."""

    def __init__(self, path: str | os.PathLike[str], *, trust: bool = False,
                 allow: list[str] | tuple[str, ...] = ()) -> None:
        self._raw = _native.RawTape(os.fspath(path), trust=trust, allow=tuple(allow))
        self.trust, self.allow = trust, tuple(allow)
        self.path = self._raw.path
        self._threads: dict[tuple[int, int], dict] | None = None
        self._fns: dict[int, Function] | None = None

    def _thread(self, session: int, idx: int) -> dict:
        if self._threads is None:
            self._threads = {(t["session"], t["idx"]): t for t in self._raw.threads()}
        return self._threads.get((session, idx), {})

    def _functions(self) -> dict[int, Function]:
        if self._fns is None:
            self._fns = {}
            for row in self._raw.functions():
                sig = self._raw.rebuild(row["signature"])
                self._fns[row["id"]] = Function(
                    row["id"], row["module"], row["qualname"], row["file"], row["line"],
                    [p[0] for p in sig], [p[1] for p in sig],
                    {p[0]: p[2] for p in sig if len(p) > 2}, row["calls"], row["raised"], row["total_ns"] / 1e9,
                    None if row["min_ns"] is None else row["min_ns"] / 1e9,
                    None if row["max_ns"] is None else row["max_ns"] / 1e9)
        return self._fns

    def functions(self) -> list[Function]:
        """Every recorded function, with call counts and durations."""
        return list(self._functions().values())

    def sessions(self) -> list[Session]:
        """The processes that recorded onto this tape, newest first."""
        out = []
        for r in self._raw.sessions():
            argv = self._raw.rebuild(r["argv"]) if r["argv"] else []
            counters = {k: r[k] for k in ("unencodable", "pickled", "redacted", "truncated",
                                          "dropped")}
            out.append(Session(r["id"], r["pid"], r["ppid"], r["parent"], r["host"], argv,
                               r["python"], r["calltape"],
                               datetime.fromtimestamp(r["start_ns"] / 1e9, tz=UTC),
                               counters))
        return out

    def _match_functions(self, function: Any, file: str | None) -> list[int] | None:
        """Tape ids of the functions a search names, or None for all."""
        if function is None and file is None:
            return None
        ids = []
        for f in self._functions().values():
            full = f"{f.module}.{f.qualname}"
            if function is None:
                ok = True
            elif callable(function):
                ok = bool(function(f))
            elif any(ch in function for ch in "*?["):
                ok = fnmatch.fnmatchcase(f.qualname, function) or fnmatch.fnmatchcase(full, function)
            else:
                ok = function in (f.qualname, full)
            if ok and file is not None:
                ok = (fnmatch.fnmatchcase(f.file, file) or fnmatch.fnmatchcase(f.file, "*/" + file)
                      or file in f.file)
            if ok:
                ids.append(f.id)
        return ids

    def search(self, function: str | Callable[[Function], bool] | None = None, *,
               file: str | None = None, since: datetime | float | None = None,
               until: datetime | float | None = None, min_duration: float | None = None,
               max_duration: float | None = None, outcome: str | None = None,
               session: int | None = None, thread: int | None = None,
               args: dict[str, Any] | None = None, order: str = "newest",
               limit: int | None = None) -> Calls:
        """Calls matching every filter given, streamed in start order.

        >>> tape.search(function="price", since=datetime(2026, 1, 1), limit=100)
        >>> tape.search(min_duration=0.01, outcome="raised")
        """
        if order not in ("newest", "oldest"):
            raise ValueError(f"order must be 'newest' or 'oldest', not {order!r}")
        codes = {"returned": 0, "raised": 1, "closed": 2}
        if outcome is not None and outcome not in codes:
            raise ValueError(f"outcome must be 'returned', 'raised' or 'closed', not {outcome!r}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, not {limit!r}")
        query: dict[str, Any] = {"newest": order == "newest",
                                 "limit": -1 if limit is None else limit,
                                 "outcome": -1 if outcome is None else codes[outcome]}
        ids = self._match_functions(function, file)
        if ids is not None:
            query["functions"] = ids
        for name, value in (("since", since), ("until", until)):
            if value is not None:
                query[name] = _to_ns(value, name)
        for name, value in (("min_duration", min_duration), ("max_duration", max_duration)):
            if value is not None:
                if value < 0:
                    raise ValueError(f"{name} must be >= 0 seconds, not {value!r}")
                query[name] = round(value * 1e9)
        if session is not None:
            query["session"] = session
        post: list[Callable[[Call], bool]] = []
        if thread is not None:
            idx = {(t["session"], t["idx"]) for t in self._raw.threads() if t["ident"] == thread}
            if len(idx) == 1 and session in (None, next(iter(idx))[0]):
                query["session"], query["thread"] = next(iter(idx))
            else:
                post.append(lambda c: (c.session, c._raw[5]) in idx)
        if args:
            post.append(lambda c: all(k in c.args and _same(c.args[k], v)
                                      for k, v in args.items()))
        if post:
            limit_after = query["limit"]
            query["limit"] = -1
            return Calls(self, query, post, limit_after)
        return Calls(self, query, [], -1)

    def call(self, call_id: int) -> Call:
        """The call with this id; KeyError names the id and the tape when there is none."""
        raw = self._raw.get(call_id)
        if raw is None:
            raise KeyError(f"no call with id {call_id} in {self.path}")
        return Call(self, self._functions()[raw[2]], raw)

    def replay(self, *call_ids: int, rel: float = 0.0, abs: float = 0.0,
               globals: str | None = None, record: bool = False,
               **filters: Any) -> _replay.Report:
        """Re-execute recorded calls with today's code and compare each with its recording.

        The calls are those with the ids given, or else those a
        :meth:`search` with ``filters`` finds (oldest first).  Replaying runs
        code: it is refused (ReplayRefused) unless the tape was opened with
        ``trust=True`` or ``allow=[...]`` covering each function's module.
        ``rel``/``abs``: float tolerance; ``globals="recorded"``: run with the
        module globals the call read (recorded with ``globals=True``) patched
        in; ``record=True``: record the replayed calls onto this tape as a new
        session (``report.session``).

        >>> report = tape.replay(function="price", since=datetime(2026, 11, 1))
        >>> report.counts, report.ok
        """
        if call_ids and filters:
            raise ValueError("give call ids or search filters, not both")
        if call_ids:
            calls: list[Call] | Calls = [self.call(i) for i in call_ids]
        else:
            filters.setdefault("order", "oldest")
            calls = self.search(**filters)
        return _replay.replay_calls(self, calls, rel=rel, abs=abs, globals=globals,
                                    record=record)

    def calls(self, function: str | None = None) -> list[Call]:
        """Recorded calls in id order; ``function`` is a qualname or module.qualname."""
        named = None if function is None else (
            lambda f: function in (f.qualname, f"{f.module}.{f.qualname}"))
        return sorted(self.search(named, order="oldest"), key=lambda c: c.id)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        fns = self._functions()
        return (f"<calltape.Tape {self.path!r}: {sum(f.calls for f in fns.values())} calls"
                f" of {len(fns)} functions>")
