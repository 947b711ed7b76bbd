"""Value markers and errors that the C engine returns or raises.

These are plain data types: the engine decides when to produce them.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field


class RecordingWarning(RuntimeWarning):
    """Recording had trouble (an unwritable tape, say); the program runs on unchanged."""


class TapeError(Exception):
    """A tape cannot be read: missing, not a tape, newer, or damaged."""


class ReplayRefused(PermissionError):
    """Replaying was refused: it runs the recorded function's code, and the tape
    was opened without ``trust=True`` or an ``allow=`` list covering its module."""


class RefusedGlobal(pickle.UnpicklingError):
    """A recorded value names a global that is not allowed; the message says how to allow it."""


@dataclass(frozen=True)
class Redacted:
    """A value that was not recorded because its parameter name looks secret."""

    def __repr__(self) -> str:
        return "<redacted>"


@dataclass(frozen=True)
class Truncated:
    """A value over ``max_value_bytes``: its type name and encoded size in bytes.

    ``size`` is how far encoding got before it stopped (the bytes encoded
    when it saw the value would not fit), or 0 when the value was not encoded at all: the last values of its class
    were over the budget, so calltape skipped encoding some of the next ones.
    """

    type: str
    size: int


@dataclass(frozen=True)
class Unencodable:
    """A value that could not be encoded: its type name and the reason."""

    type: str
    reason: str


@dataclass(frozen=True)
class Unreadable:
    """A recorded value that cannot be rebuilt here (``Call.readable()``): the type
    it names, the preview the tape gives and the reason, in one sentence."""

    type: str
    preview: str
    reason: str

    def __repr__(self) -> str:
        return f"{self.preview}  ({self.type}, not rebuilt: {self.reason})"


@dataclass(frozen=True)
class ExceptionInfo:
    """An exception raised by a recorded call.

    >>> info.type, info.message   # ('builtins.ValueError', 'bad input')
    """

    type: str
    message: str
    frames: list = field(default_factory=list, compare=False)

    def __repr__(self) -> str:
        """As Python's repr of the exception: ``KeyError('bad')``, ``ValueError('no')``
        (the class's own name; the message is ``str(exc)``, for a KeyError the
        repr of its key already)."""
        name = self.type.rpartition(".")[2]
        if self.type == "builtins.KeyError" and self.message.isprintable():
            return f"{name}({self.message})"
        return f"{name}({self.message!r})" if self.message else f"{name}()"

    @property
    def traceback(self) -> str:
        """The traceback as Python prints it, outermost frame first (the type
        without ``builtins.`` or ``__main__.``, as Python writes it)."""
        lines = ["Traceback (most recent call last):"]
        for file, line, func in self.frames:
            lines.append(f'  File "{file}", line {line}, in {func}')
        module, _, name = self.type.rpartition(".")
        shown = name if module in ("builtins", "__main__", "") else self.type
        lines.append(f"{shown}: {self.message}" if self.message else shown)
        return "\n".join(lines)
