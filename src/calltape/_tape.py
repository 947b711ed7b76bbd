"""Reading a tape: thin Python views over the C reader (``_native.RawTape``).

>>> tape = calltape.open("calltape.db")
>>> [c.args for c in tape.calls("price")]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from . import _native

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
    calls: int
    raised: int
    total: float
    min: float | None
    max: float | None


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


class Call:
    """One recorded call; values are rebuilt on first access."""

    __slots__ = ("_args", "_defaults", "_fn", "_raw", "_result", "_tape")

    def __init__(self, tape: Tape, fn: Function, raw: tuple) -> None:
        self._tape, self._fn, self._raw = tape, fn, raw
        self._args: dict[str, Any] | None = None
        self._defaults: set[str] = set()
        self._result: Any = _native

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
        if self._result is _native:
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
    def preview(self) -> str:
        return _native.preview(self._raw[14])

    def __repr__(self) -> str:
        return (f"<Call {self.id} {self.qualname}({self.preview}) {self.outcome}"
                f" in {self.duration * 1e6:.1f} us>")


class Tape:
    """A tape opened for reading.  ``trust=True`` unpickles any global."""

    def __init__(self, path: str | os.PathLike[str], *, trust: bool = False,
                 allow: list[str] | tuple[str, ...] = ()) -> None:
        self._raw = _native.RawTape(os.fspath(path), trust=trust, allow=tuple(allow))
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
                    [p[0] for p in sig], row["calls"], row["raised"], row["total_ns"] / 1e9,
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

    def calls(self, function: str | None = None) -> list[Call]:
        """Recorded calls in id order; ``function`` is a qualname or module.qualname."""
        fns = self._functions()
        ids = [None]
        if function is not None:
            ids = [f.id for f in fns.values()
                   if function in (f.qualname, f"{f.module}.{f.qualname}")]
        calls = [Call(self, fns[raw[2]], raw) for fid in ids for raw in self._raw.calls(fid)]
        calls.sort(key=lambda c: c.id)
        return calls

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
