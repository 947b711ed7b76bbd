"""Diagnose's names over calltape's probes: ``import calltape.compat.diagnose as diagnose``.

The seed's examples run with only the import changed::

    p = diagnose.probes.attach_to("path.to.module.myclass.add13")
    p.instruments["foo"] = diagnose.LogInstrument("foo", "arg")
    p.start()                     # myclass().add13(arg=5) prints "Probe (foo) = 5"

Names and shapes only: the work is calltape.probes'.  Unlike the original,
an instrument's error at fire time shows in ``applied`` (with its time), a
histogram takes floats, ``applied`` is keyed by host:pid, and breakpoints
wait on a condition variable instead of polling.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from typing import Any

from .. import probes as _probes
from ..testing import Breakpoint as _Breakpoint

__all__ = ["Breakpoint", "HistogramInstrument", "IncrementInstrument", "Instrument",
           "LogInstrument", "ProbeTestInstrument", "instruments", "manager", "probes", "sensor"]

Instrument = _probes.Instrument
HistogramInstrument = _probes.HistogramInstrument
IncrementInstrument = _probes.CountInstrument


class LogInstrument(_probes.LogInstrument):
    """Prints ``Probe (name) = value`` on stdout, as Diagnose's LogInstrument does.

    The line is made in C and written with ``out.write`` on the calling thread
    (``out``: None is sys.stdout at the time of the event).  A subclass that
    defines ``emit(name, text)`` or ``fire`` has it called instead."""

    out: Any = None  # None: sys.stdout at the time of the event
    _kind = 5  # written from C (probes/instrument.c); a subclass's own emit or fire: 0

    def emit(self, name: str, text: str) -> None:
        (self.out or sys.stdout).write(f"Probe ({name}) = {text}\n")


class ProbeTestInstrument(_probes.Instrument):
    """Keeps its values in ``results`` (what ``sensor`` yields)."""

    def __init__(self, name: str, value: str = "result", event: str = "return",
                 **kw: Any) -> None:
        super().__init__(name, value, event, **kw)
        self.results: list[Any] = []

    def fire(self, value: Any, namespace: dict[str, Any] | None) -> None:
        self.results.append(value)


probes = types.SimpleNamespace(attach_to=_probes.attach_to, active_probes=_probes.active_probes)
instruments = types.SimpleNamespace(
    Instrument=Instrument, LogInstrument=LogInstrument, HistogramInstrument=HistogramInstrument,
    IncrementInstrument=IncrementInstrument, ProbeTestInstrument=ProbeTestInstrument)
manager = _probes.manager
manager.instrument_classes.setdefault("log", LogInstrument)


@contextlib.contextmanager
def sensor(target: Any, value: str = "result", name: str = "test_instrument",
           event: str = "return") -> Iterator[ProbeTestInstrument]:
    """A probe on ``target`` for the block, yielding an instrument whose
    ``results`` are the values seen."""
    probe = _probes.attach_to(target)
    probe.instruments[name] = inst = ProbeTestInstrument(name, value, event)
    probe.start()
    try:
        yield inst
    finally:
        probe.instruments.pop(name, None)
        if not probe.instruments:
            probe.stop()


class Breakpoint(_Breakpoint):
    """``Breakpoint(S3Archive, "unarchive")`` as in Diagnose (owner and
    attribute name), or calltape's ``Breakpoint(target, event=...)``."""

    def __init__(self, target: Any, name_or_event: str = "call", condition: Any = None,
                 timeout: float = 10.0, event: str | None = None) -> None:
        if name_or_event not in ("call", "return", "error") and not isinstance(target, str):
            target, ev = (target, name_or_event), event or "call"
        else:
            ev = event or name_or_event
        super().__init__(target, ev, condition, timeout)
