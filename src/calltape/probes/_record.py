"""RecordInstrument: each event becomes a call record on the tape (captured "probe")."""

from __future__ import annotations

from typing import Any

from . import Instrument


class RecordInstrument(Instrument):
    """placeholder"""

    _kind = 3

    def __init__(self, name: str, value: str = "1", event: str = "return", **kw: Any) -> None:
        super().__init__(name, value, event, **kw)
