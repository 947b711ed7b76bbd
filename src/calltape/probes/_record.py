"""RecordInstrument: a call record on the tape for each call it fires on."""

from __future__ import annotations

from typing import Any

from . import Instrument


class RecordInstrument(Instrument):
    """Writes each call it fires on (``event`` "return", "error" or both,
    "return|error") as a call record onto the default tape, captured as
    "probe" (``Call.captured``): the arguments as they were at the call, the
    result or the exception, start and duration.  ``value`` is a condition:
    the call is recorded when it is true ("1", the default: every call)."""

    _kind = 3
    _namespace_now = False

    def __init__(self, name: str, value: str = "1", event: str = "return|error",
                 **kw: Any) -> None:
        super().__init__(name, value, event, **kw)
