"""Value markers and errors that the C engine returns or raises.

These are plain data types: the engine decides when to produce them.  They
behave as frozen dataclasses (positional or keyword fields, a repr of the
fields, equality and hash by the compared fields, no assignment), without
importing dataclasses and inspect: every ``calltape`` command imports this.
"""

from __future__ import annotations

import pickle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class _Frozen:
    """A frozen record of ``_fields`` (``_compared`` of them in == and hash)."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _compared: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__}() takes {len(self._fields)} arguments,"
                            f" not {len(args)}")
        values = dict(zip(self._fields, args))
        for name, value in kwargs.items():
            if name not in self._fields or name in values:
                raise TypeError(f"{type(self).__name__}() got an unexpected or repeated"
                                f" argument {name!r}")
            values[name] = value
        for name in self._fields:
            if name not in values:
                values[name] = self._default(name)
            object.__setattr__(self, name, values[name])

    def _default(self, name: str) -> Any:
        raise TypeError(f"{type(self).__name__}() is missing the argument {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is frozen")

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self._compared)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__qualname__}({inner})"

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), tuple(getattr(self, n) for n in self._fields)


class RecordingWarning(RuntimeWarning):
    """Recording had trouble (an unwritable tape, say); the program runs on unchanged."""


class TapeError(Exception):
    """A tape cannot be read: missing, not a tape, newer, or damaged."""


class ReplayRefused(PermissionError):
    """Replaying was refused: it runs the recorded function's code, and the tape
    was opened without ``trust=True`` or an ``allow=`` list covering its module."""


class RefusedGlobal(pickle.UnpicklingError):
    """A recorded value names a global that is not allowed; the message says how to allow it."""


class Redacted(_Frozen):
    """A value that was not recorded because its parameter name looks secret."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<redacted>"


class Truncated(_Frozen):
    """A value over ``max_value_bytes``: its type name and encoded size in bytes.

    ``size`` is how far encoding got before it stopped (the bytes encoded
    when it saw the value would not fit), or 0 when the value was not encoded at all: the last values of its class
    were over the budget, so calltape skipped encoding some of the next ones.
    """

    __slots__ = ("size", "type")
    _fields = _compared = ("type", "size")
    type: str
    size: int


class Unencodable(_Frozen):
    """A value that could not be encoded: its type name and the reason."""

    __slots__ = ("reason", "type")
    _fields = _compared = ("type", "reason")
    type: str
    reason: str


class Unreadable(_Frozen):
    """A recorded value that cannot be rebuilt here (``Call.readable()``): the type
    it names, the preview the tape gives and the reason, in one sentence."""

    __slots__ = ("preview", "reason", "type")
    _fields = _compared = ("type", "preview", "reason")
    type: str
    preview: str
    reason: str

    def __repr__(self) -> str:
        return f"{self.preview}  ({self.type}, not rebuilt: {self.reason})"


class ExceptionInfo(_Frozen):
    """An exception raised by a recorded call.

    >>> info.type, info.message   # ('builtins.ValueError', 'bad input')
    """

    __slots__ = ("frames", "message", "type")
    _fields = ("type", "message", "frames")
    _compared = ("type", "message")  # frames: where it was raised, not what
    type: str
    message: str
    frames: list

    def _default(self, name: str) -> Any:
        return [] if name == "frames" else super()._default(name)

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
