"""PyMonitor's reanimator (``monitoringpy.reanimator``) over a calltape tape.

>>> from calltape.compat import reanimator
>>> db = reanimator.load_pydb("monitoring.db")
>>> calls = db.search(function_filter="calculate_fibonacci", limit=5)
>>> db.get_call_details(calls[0]["id"])["locals"]["n"]
{'type': 'int', 'preview': '10'}
>>> db.execute_reanimated(calls[0]["id"])
55

The recording side is here too: ``init_monitoring(db_path)`` and the
``@pymonitor`` decorator record arguments, locals and the globals a function
reads onto the tape. Unlike the original, methods keep ``self`` (so they can
be re-executed), keyword-only, ``*args`` and ``**kwargs`` are captured, nested
values keep their depth and types, classes are found by module and qualname
and only rebuilt from modules the reader allows (``allow=`` or ``trust=``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any, TypeVar

import calltape

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["PyDBReanimator", "init_monitoring", "load_pydb", "pymonitor"]


def init_monitoring(db_path: str = "monitoring.db", pyrapl_enabled: bool = False) -> None:
    """Records onto the tape `db_path`; `pyrapl_enabled` records energy too."""
    calltape.configure(tape=db_path, energy=bool(pyrapl_enabled))


def pymonitor(func: F) -> F:
    """Records every call of `func`: arguments, result, locals at return and the
    module globals it reads (PyMonitor's ``@pymonitor``)."""
    return calltape.record(func, locals=True, globals=True)


def load_pydb(db_path: str | os.PathLike[str], *, trust: bool = False,
              allow: list[str] | tuple[str, ...] = ()) -> PyDBReanimator:
    """The reanimator of the tape at `db_path`."""
    return PyDBReanimator(db_path, trust=trust, allow=allow)


class PyDBReanimator:
    """Searches, shows and brings back the calls recorded on one tape."""

    def __init__(self, db_path: str | os.PathLike[str], *, trust: bool = False,
                 allow: list[str] | tuple[str, ...] = ()) -> None:
        if not os.path.exists(db_path):
            raise FileNotFoundError(f"no PyMonitor database (calltape tape) at {db_path}")
        self.db_path = os.fspath(db_path)
        self._trust, self._allow = trust, tuple(allow)
        self._tape = calltape.open(db_path, trust=trust, allow=allow)
        self._runnable: dict[str, Any] = {}

    def search(self, function_filter: str | Callable[..., Any] | None = None,
               file_filter: str | None = None,
               time_range: tuple[datetime.datetime | None, datetime.datetime | None] | None = None,
               perf_filter: dict[str, float] | None = None, limit: int = 100
               ) -> list[dict[str, Any]]:
        """The calls matching every filter given, newest first, as dicts with
        ``id, function, file, line, start_time, end_time, perf_pkg, perf_dram``."""
        since, until = time_range if time_range else (None, None)
        calls = self._tape.search(_function_filter(function_filter), file=file_filter,
                                  since=since, until=until, energy=perf_filter or None,
                                  limit=limit)
        return [_summary(c) for c in calls]

    def get_call_details(self, call_id: int | str) -> dict[str, Any]:
        """The call's summary with ``locals``, ``globals`` and ``return_value`` as
        the tape stores them: ``{'type', 'preview'}`` with their parts to any depth."""
        c = self._call(call_id)
        out = _summary(c)
        out["locals"] = _stored_locals(c)
        out["globals"] = c.stored("globals") or {}
        out["return_value"] = c.stored("result")
        return out

    def reanimate(self, call_id: int | str) -> dict[str, Any]:
        """The call's values as stored (metadata), PyMonitor's keys."""
        d = self.get_call_details(call_id)
        return {"call_id": d["id"], "function_name": d["function"], "file_path": d["file"],
                "locals": d["locals"], "globals": d["globals"],
                "return_value": d["return_value"]}

    def reanimate_objects(self, call_id: int | str) -> dict[str, Any]:
        """The call's values rebuilt as Python objects of their recorded types."""
        c = self._call(call_id)
        values = dict(c.args)
        values.update({k: v for k, v in (c.locals or {}).items() if k not in values})
        return {"call_id": c.id, "function_name": c.qualname, "file_path": c.file,
                "locals": values, "globals": dict(c.globals or {}),
                "return_value": None if c.outcome == "raised" else c.result}

    def execute_reanimated(self, call_id: int | str) -> Any:
        """Calls the recorded function again (found by module and qualname, a
        method with its recorded ``self``) with the recorded arguments and
        returns what it returns now; raises what it raises now."""
        c = self._call(call_id)
        # naming the call is the consent to run its function: its module is
        # allowed for this call, any other class still as the reader allows
        if c.module not in self._runnable:
            self._runnable[c.module] = calltape.open(self.db_path, trust=self._trust,
                                                     allow=(*self._allow, c.module))
        outcome = self._runnable[c.module].call(c.id).replay()
        if outcome.status == "skipped":
            raise RuntimeError(f"call {call_id} cannot be executed again: {outcome.reason}")
        if outcome.exception is not None and isinstance(outcome.exception, BaseException):
            raise outcome.exception
        return outcome.result

    def close(self) -> None:
        """Closes the tape."""
        self._tape.close()
        for tape in self._runnable.values():
            tape.close()
        self._runnable.clear()

    def _call(self, call_id: int | str) -> Any:
        try:
            return self._tape.call(int(call_id))
        except (KeyError, LookupError, ValueError, TypeError):
            raise ValueError(f"no call {call_id!r} on {self.db_path}") from None

    def __repr__(self) -> str:
        return f"<PyDBReanimator {self.db_path}>"


def _function_filter(f: str | Callable[..., Any] | None) -> Any:
    """A function object names itself; any other callable is a predicate
    given each calltape.Function."""
    if f is None or isinstance(f, str):
        return f
    code = getattr(f, "__code__", None)
    qualname = getattr(f, "__qualname__", "")
    if code is not None and getattr(f, "__name__", "") != "<lambda>":
        module, name = getattr(f, "__module__", None), qualname
        return lambda fn: fn.qualname == name and fn.module == module
    return f


def _summary(c: Any) -> dict[str, Any]:
    energy = c.energy or {}
    return {"id": c.id, "function": c.qualname, "file": c.file, "line": c.line,
            "start_time": c.start, "end_time": c.end, "perf_pkg": energy.get("pkg"),
            "perf_dram": energy.get("dram")}


def _stored_locals(c: Any) -> dict[str, Any]:
    values = dict(c.stored("args") or {})
    values.update({k: v for k, v in (c.stored("locals") or {}).items() if k not in values})
    return values
