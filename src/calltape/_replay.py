"""Replay: re-execute recorded calls and compare (the work is in C, ``_native.Replayer``).

This module holds only what the C code needs from Python, handed to it at
import (``Replayer.bind``): the Outcome and Report shapes, and running
coroutines and async generators on a fresh event loop.

>>> tape = calltape.open("calltape.db", trust=True)
>>> outcome = tape.search(function="price", limit=1)[0].replay()
>>> outcome.status, outcome.diff
('changed', 'result: 9.5 != 9.75')
>>> report = tape.replay(function="price")
>>> report.counts
{'passed': 41, 'changed': 1, 'failed': 0, 'skipped': 0}
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import _native

if TYPE_CHECKING:
    from ._native import Call, Tape

STATUSES = ("passed", "changed", "failed", "skipped")


class Outcome:
    """What replaying one recorded call did.

    ``status`` is ``passed`` (same result, or same exception type and message),
    ``changed`` (returns something else now), ``failed`` (raises where the
    recording did not, or raises another exception) or ``skipped`` (not run;
    ``reason`` says why).  ``result`` is what the call returned now (for a
    generator: its return value; ``yielded`` holds what it yielded),
    ``exception`` what it raised now, ``expected`` the recorded result (an
    :class:`calltape.ExceptionInfo` when the recorded call raised),
    ``duration`` the seconds the replay took, ``diff`` where the values differ.
    """

    __slots__ = ("call_id", "diff", "duration", "exception", "expected", "function", "reason",
                 "result", "status", "yielded")

    def __init__(self, call_id: int, function: str, status: str, result: Any, expected: Any,
                 exception: BaseException | None, duration: float | None, diff: str | None,
                 reason: str | None, yielded: list[Any] | None) -> None:
        self.call_id, self.function, self.status = call_id, function, status
        self.result, self.expected, self.exception = result, expected, exception
        self.duration, self.diff, self.reason, self.yielded = duration, diff, reason, yielded

    @property
    def ok(self) -> bool:
        """True when the call did today what it did when recorded."""
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (values as their repr)."""
        exc = self.exception
        return {"call_id": self.call_id, "function": self.function, "status": self.status,
                "duration": self.duration, "diff": self.diff, "reason": self.reason,
                "result": None if self.status == "skipped" or exc is not None
                else repr(self.result),
                "expected": None if self.expected is None else repr(self.expected),
                "exception": None if exc is None else f"{type(exc).__name__}: {exc}"}

    def __repr__(self) -> str:
        detail = self.reason or self.diff
        return (f"<Outcome call {self.call_id} {self.function}: {self.status}"
                f"{': ' + detail if detail else ''}>")


class Report:
    """The outcomes of replaying many calls: counts by status, iterable.

    >>> report = tape.replay(function="shop.*")
    >>> report.ok, report.counts["changed"]
    >>> [o.diff for o in report if o.status == "changed"]
    """

    def __init__(self, outcomes: list[Outcome], session: int | None = None) -> None:
        self.outcomes = outcomes
        self.session = session  # the session the replayed calls were recorded in (record=True)
        self.counts = dict.fromkeys(STATUSES, 0)
        for o in outcomes:
            self.counts[o.status] += 1

    @property
    def ok(self) -> bool:
        """True when no replayed call changed or failed (skipped ones do not count)."""
        return self.counts["changed"] == 0 and self.counts["failed"] == 0

    def __iter__(self) -> Iterator[Outcome]:
        return iter(self.outcomes)

    def __len__(self) -> int:
        return len(self.outcomes)

    def __getitem__(self, index: int) -> Outcome:
        return self.outcomes[index]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: counts, session and every outcome."""
        return {"counts": self.counts, "ok": self.ok, "session": self.session,
                "outcomes": [o.to_dict() for o in self.outcomes]}

    def __repr__(self) -> str:
        head = ", ".join(f"{n} {s}" for s, n in self.counts.items())
        notable = [o for o in self.outcomes if o.status != "passed"]
        lines = [f"<Report of {len(self.outcomes)} calls: {head}>"]
        lines += [f"  {o.status} call {o.call_id} {o.function}: {o.diff or o.reason}"
                  for o in notable[:20]]
        if len(notable) > 20:
            lines.append(f"  ... {len(notable) - 20} more not passed")
        return "\n".join(lines)


def _run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def _collect(agen: AsyncIterator[Any]) -> list[Any]:
    return [value async for value in agen]


def _run_asyncgen(agen: AsyncIterator[Any]) -> list[Any]:
    return _run_coroutine(_collect(agen))


@contextmanager
def recorded_imports(tape: Tape, sessions: Iterable[int] | None = None) -> Iterator[list[str]]:
    """Within the block, modules are imported as the recorded program imported
    them: the sys.path[0] and working folder of the given sessions of ``tape``
    (default: all), oldest first, then the current folder, are put in front
    of sys.path where they are missing, and taken out again afterwards."""
    wanted = None if sessions is None else set(sessions)
    rows = [s for s in reversed(tape.sessions()) if wanted is None or s.id in wanted]
    added = _native.push_import_path(_native.recorded_folders(rows))
    try:
        yield added
    finally:
        _native.pop_import_path(added)


def replay_calls(tape: Tape, calls: Collection[Call], *, rel: float = 0.0, abs: float = 0.0,
                 globals: str | None = None, record: bool = False) -> Report:
    """Replay `calls` of `tape` (refusing before running any when one is not allowed).

    `calls` is iterated twice: a list, or a search (which streams twice).  The
    loop, the checks and the comparison are the Replayer's (replay.c)."""
    return _native.Replayer(tape, rel=rel, abs=abs, globals=globals, record=record).run(calls)


_native.Replayer.bind(Outcome, Report, _run_coroutine, _run_asyncgen)
