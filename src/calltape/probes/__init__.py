"""Probes at run time: instruments hung on a running function, without editing it.

>>> import calltape.probes as probes
>>> p = probes.attach_to("calltape.examples.shop.parse_line")
>>> p.instruments["n"] = probes.CountInstrument("lines", "1", event="call")
>>> p.instruments["h"] = probes.HistogramInstrument("qty", "result[0]", event="return")
>>> p.start(); ...; p.stop()

On CPython 3.12+ a started probe sets sys.monitoring LOCAL events on the
target's code object alone (tool id ``_native.probe_tool()``, 3; the monitor
and ``calltape run`` use PROFILER_ID, 2, so both run together): nothing is
patched, every reference to the function is instrumented however it was
imported, and a stopped probe (or one with no instruments left) costs nothing.
On CPython 3.11 (no sys.monitoring) start() patches every reference to the
function that gc.get_referrers finds or a frame holds (dict values and keys,
class dicts, lists, sets, closure cells, functools.partial objects, defaults,
the locals of running frames and suspended generators; copies of tuples,
frozensets, named tuples, bound methods, classmethod/staticmethod/property;
@calltape.record) with a C stand-in that hashes and compares as the function,
and stop() puts them back (probes/patch.c; the README says what it cannot
reach).  The events, the namespace and the count and histogram
instruments are C (src/calltape/_native/probes/); this module resolves targets
and names things.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import logging
import sys
import threading
import types
from typing import Any

from .. import _logq, _native  # noqa: F401 (_logq: the log thread's hand function set up)
from ._manager import InstrumentManager, MemoryStore, SpecStore, TapeStore

__all__ = [
    "CountInstrument", "HistogramInstrument", "Instrument", "InstrumentManager", "LogInstrument",
    "MemoryStore", "Probe", "SpecStore", "TapeStore", "active_probes", "attach_to", "manager", "resolve_code",
]

logger = logging.getLogger("calltape.probes")

_lock = threading.RLock()
active_probes: dict[str, Probe] = {}
"""The probes attached and not detached, by target."""


class Instrument(_native.Instrument):
    """Base of the instruments: subclasses define ``fire(value, namespace)``.

    ``Instrument(name, value="1", event="return", *, lifespan=None, expires=None,
    disable_on_error=False, custom=None)``: ``value`` is a Python expression,
    compiled once, evaluated at each event over the call's namespace (the
    arguments by name, ``args``, ``kwargs``, ``start``, ``now``, ``frame``; at
    return ``result``, ``end``, ``elapsed``; at error ``exception``; at end the
    function's locals too) and the manager's global namespace.  ``event`` is
    ``call``, ``return``, ``error`` or ``end`` (or several joined by ``|``).
    ``lifespan`` is in minutes.  An error never reaches the target: it is kept
    in ``errors`` and ``status``; ``disable_on_error`` stops the instrument at
    its first error."""

    _kind = 0
    _namespace_now = True  # fire() may read namespace["now"]; False: only when value names it

    def fire(self, value: Any, namespace: dict[str, Any] | None) -> None:
        raise NotImplementedError(f"{type(self).__name__} defines no fire()")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, value={self.value!r},"
                f" event={self.event!r}, expires={self.expires!r})")


class CountInstrument(Instrument):
    """Adds up its values (``"1"`` counts the events), in C: ``count``."""

    _kind = 1


class HistogramInstrument(Instrument):
    """Keeps the distribution of its values (ints and floats), in C: ``stats()``,
    ``count``, ``min``, ``max``, ``mean``, ``percentile(q)``, ``percentiles(qs)``."""

    _kind = 2

    def percentile(self, q: float) -> float | None:
        return self.percentiles([q])[0]

    def __getattr__(self, name: str) -> Any:
        if name in ("min", "max", "mean", "sum"):
            return self.stats()[name]
        raise AttributeError(name)

    @property
    def count(self) -> int:  # type: ignore[override]
        return self.stats()["count"]


class LogInstrument(Instrument):
    """Logs ``Probe (name) = value`` to the ``calltape.probes`` logger (INFO),
    the value's text cut to ``max_chars``; a None value is not logged.

    The line is made in C and handed to the logger by calltape's log thread
    (``calltape.flush_logs()`` waits for it); ``level`` and ``max_chars`` are
    read when the instrument is made.  A subclass that defines ``fire`` or
    ``emit`` runs them on the calling thread instead (unless it sets its own
    ``_kind``, as calltape.compat.diagnose's does)."""

    max_chars = 2000
    level = logging.INFO
    _kind = 4
    _log_target = (logger, "<probe>")
    _namespace_now = False

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if ("fire" in cls.__dict__ or "emit" in cls.__dict__) and "_kind" not in cls.__dict__:
            cls._kind = 0  # Python's fire(), on the calling thread

    def fire(self, value: Any, namespace: dict[str, Any] | None) -> None:
        if value is None:
            return
        text = str(value)
        if len(text) > self.max_chars:
            text = text[: self.max_chars - 3] + "..."
        self.emit(self.name, text)

    def emit(self, name: str, text: str) -> None:
        # the record is made here rather than by logger.log, whose caller
        # lookup (a walk of the stack) would cost more than the rest together
        if logger.isEnabledFor(self.level):
            logger.handle(logger.makeRecord(logger.name, self.level, "<probe>", 0,
                                            "Probe (%s) = %s", (name, text), None))


def _code_of(obj: Any) -> types.CodeType | None:
    """The code object a call of ``obj`` runs: decorators unwrapped."""
    seen = 0
    while seen < 100:
        seen += 1
        if isinstance(obj, types.CodeType):
            return obj
        if isinstance(obj, (classmethod, staticmethod)):
            obj = obj.__func__
        elif isinstance(obj, property):
            obj = obj.fget
        elif isinstance(obj, functools.partial):
            obj = obj.func
        elif isinstance(obj, types.MethodType):
            obj = obj.__func__
        elif getattr(obj, "__wrapped__", None) is not None:  # functools.wraps, @calltape.record
            obj = obj.__wrapped__
        elif isinstance(obj, types.FunctionType):
            return obj.__code__
        else:
            return None
    return None


def _inner_code(code: types.CodeType, name: str) -> types.CodeType | None:
    for c in code.co_consts:
        if isinstance(c, types.CodeType) and c.co_name == name:
            return c
    return None


def resolve_code(target: Any) -> types.CodeType:
    """The code object of ``target``: a dotted name (``pkg.mod.Class.method``,
    ``pkg.mod.outer.<locals>.inner``), a function, method, classmethod,
    staticmethod, property or decorated function, or ``(owner, "name")``.
    LookupError says what could not be found."""
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[1], str):
        owner, name = target
        obj = owner.__dict__[name] if isinstance(owner, type) and name in owner.__dict__ \
            else getattr(owner, name)
        code = _code_of(obj)
        if code is None:
            raise LookupError(f"{owner!r}.{name} is not a Python function")
        return code
    if not isinstance(target, str):
        code = _code_of(target)
        if code is None:
            raise LookupError(f"{target!r} is not a Python function")
        return code
    parts = target.split(".")
    obj: Any = None
    i = len(parts)
    while i > 0:
        modname = ".".join(parts[:i])
        try:
            obj = sys.modules.get(modname) or importlib.import_module(modname)
            break
        except ImportError:
            i -= 1
    if obj is None:
        raise LookupError(f"cannot import a module of probe target {target!r}")
    code = None
    rest = parts[i:]
    j = 0
    while j < len(rest):
        name = rest[j]
        if name == "<locals>" and j + 1 < len(rest):
            base = code or _code_of(obj)
            code = _inner_code(base, rest[j + 1]) if base else None
            if code is None:
                raise LookupError(f"no function {rest[j + 1]!r} inside {'.'.join(parts[:i + j])}"
                                  f" (probe target {target!r})")
            j += 2
            continue
        if code is not None:
            raise LookupError(f"probe target {target!r}: only <locals>.name after a local")
        d = getattr(obj, "__dict__", {})
        if isinstance(obj, type):
            found = next((k.__dict__[name] for k in obj.__mro__ if name in k.__dict__), None)
            if found is None:
                raise LookupError(f"{obj.__qualname__} has no attribute {name!r}"
                                  f" (probe target {target!r})")
            obj = found
        elif name in d:
            obj = d[name]
        else:
            try:
                obj = getattr(obj, name)
            except AttributeError:
                raise LookupError(f"{'.'.join(parts[:i + j])} has no attribute {name!r}"
                                  f" (probe target {target!r})") from None
        j += 1
    code = code or _code_of(obj)
    if code is None:
        raise LookupError(f"probe target {target!r} is {type(obj).__name__}, not a Python function")
    return code


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class _Instruments(dict):
    """A probe's instruments by key: each change reaches the C hook."""

    def __init__(self, probe: Probe) -> None:
        super().__init__()
        self._probe = probe

    def __setitem__(self, key: Any, inst: Instrument) -> None:
        if not isinstance(inst, _native.Instrument):
            raise TypeError(f"{inst!r} is not a calltape.probes Instrument")
        super().__setitem__(key, inst)
        self._probe._refresh()

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._probe._refresh()

    def pop(self, key: Any, *default: Any) -> Any:
        r = super().pop(key, *default)
        self._probe._refresh()
        return r

    def clear(self) -> None:
        super().clear()
        self._probe._refresh()

    def update(self, *a: Any, **k: Any) -> None:
        for key, inst in dict(*a, **k).items():
            self[key] = inst

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]


class Probe:
    """The instruments of one target.  ``instruments`` is a dict (key ->
    Instrument); ``start()`` makes them fire, ``stop()`` makes them stop and
    detaches the probe (``active_probes``)."""

    # slots, not a __dict__: on 3.11 start() patches the dicts that hold the
    # target function, and the probe's own reference is not one to count
    __slots__ = ("__weakref__", "_hook", "code", "instruments", "started", "target")

    def __init__(self, target: Any, code: types.CodeType) -> None:
        self.target = target
        self.code = code
        self.instruments: dict[Any, Instrument] = _Instruments(self)
        self.started = False
        self._hook = _native.ProbeHook(_native, code, manager.global_namespace, _now,
                                       self._expired)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Probe {self.target!r} {state}, {len(self.instruments)} instruments>"

    @property
    def running(self) -> bool:
        """Whether its events are on (started, with instruments left)."""
        return bool(self._hook.running)

    def _refresh(self) -> None:
        with _lock:
            self._hook.set(tuple(dict.values(self.instruments)))
            if self.started and self.instruments:
                self._hook.start()
            else:
                self._hook.stop()

    def _expired(self, inst: Instrument) -> None:
        for key, value in list(dict.items(self.instruments)):
            if value is inst:
                dict.pop(self.instruments, key, None)
        self._refresh()

    def start(self) -> None:
        with _lock:
            self.started = True
            active_probes.setdefault(_key(self.target), self)
            self._refresh()

    def stop(self) -> None:
        with _lock:
            self.started = False
            self._hook.stop()
            if active_probes.get(_key(self.target)) is self:
                del active_probes[_key(self.target)]


def _key(target: Any) -> str:
    if isinstance(target, str):
        return target
    if isinstance(target, tuple):
        return f"{getattr(target[0], '__qualname__', target[0])}.{target[1]}"
    return getattr(target, "__qualname__", repr(target))


def attach_to(target: Any) -> Probe:
    """The probe of ``target`` (see resolve_code): the active one of that
    target or code object when there is one, else a new, stopped probe."""
    code = resolve_code(target)
    with _lock:
        p = active_probes.get(_key(target))
        if p is not None:
            return p
        for p in active_probes.values():
            if p.code is code:
                return p
        return Probe(target, code)


manager = InstrumentManager()
"""The process's manager: configure ``instrument_classes`` and
``global_namespace``, put specs in ``specs``, call ``apply()``."""

from ._record import RecordInstrument

manager.instrument_classes.update({"log": LogInstrument, "count": CountInstrument,
                                   "incr": CountInstrument, "hist": HistogramInstrument,
                                   "record": RecordInstrument})
__all__ += ["RecordInstrument"]
