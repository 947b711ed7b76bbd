"""What the ``calltape`` commands share: the usage error, times and energy
bounds read from the command line, the session selection, and the text of
tables (cells escaped, one value one line, cut by the columns they take)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import UTC, datetime, timedelta

from .. import ExceptionInfo, Tape, _native

TYPE_CHECKING = False  # typing is not loaded: every command pays its import
if TYPE_CHECKING:
    from typing import Any


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UsageError(Exception):
    """A bad value on the command line: its message is the whole story."""


def parse_time(text: str) -> datetime:
    """An ISO date or time (local unless it says otherwise), or a relative
    time such as ``10m``, ``2h``, ``3d``: that long ago."""
    m = _RELATIVE.match(text.strip())
    if m:
        return datetime.now(UTC) - timedelta(seconds=float(m[1]) * _UNITS[m[2]])
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"cannot read the time {text!r}: use an ISO date such as 2026-11-21"
                         " or 2026-11-21T10:30, or a relative time such as 10m, 2h or 3d")


def parse_energy(items: list[str] | None) -> dict[str, float] | None:
    """``["pkg=100", "dram=50"]`` -> ``{"pkg": 100.0, "dram": 50.0}`` (microjoules)."""
    if not items:
        return None
    bounds = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            bounds[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"cannot read the energy bound {item!r}: use DOMAIN=MICROJOULES,"
                             " such as pkg=100 or dram=50") from None
    return bounds


def format_duration(seconds: float | None) -> str:
    """Seconds in the unit a person reads best: 850 ns, 12.50 us, 3.20 ms, 1.50 s.

    The views' formatter (Call and Function reprs), so both read alike."""
    return _native.format_duration(seconds)


def _table(rows: list[list[str]], header: list[str], right: set[int], color: bool) -> str:
    widths = [max(_width(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def pad(c: str, w: int, i: int) -> str:  # by the columns the text takes, not len()
        gap = " " * (w - _width(c))
        return gap + c if i in right else c + gap

    def line(cells: list[str]) -> str:
        return "  ".join(pad(str(c), w, i)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    head = line(header)
    if color:
        head = f"\033[1m{head}\033[0m"
    return "\n".join([head, *(line(r) for r in rows)])


def _local(dt: datetime) -> str:
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _repr(value: Any) -> str:
    """repr() for reading: a repr that raises is said in words, not a traceback."""
    try:
        return repr(value)
    except Exception as exc:  # noqa: BLE001 - the value's own code failed
        return f"<{type(value).__qualname__} whose repr() raised {type(exc).__name__}: {exc}>"


def _readable(tape: Tape, c: Any) -> tuple[dict[str, Any], frozenset[str], Any]:
    """The call's arguments and outcome rebuilt one by one, importing as the
    recorded program did; values that cannot be rebuilt are Unreadable."""
    from .._replay import recorded_imports

    with recorded_imports(tape, [c.session]):
        return c.readable()


def _call_json(c: Any, readable: tuple[dict[str, Any], frozenset[str], Any] | None = None
               ) -> dict[str, Any]:
    out = {"id": c.id, "session": c.session, "thread": c.thread, "parent": c.parent,
           "depth": c.depth, "module": c.module, "qualname": c.qualname, "file": c.file,
           "line": c.line, "start": c.start.isoformat(), "duration": c.duration,
           "outcome": c.outcome, "captured": c.captured, "test": c.test, "preview": c.preview,
           "cpu_time": c.cpu_time,
           "memory": c.memory, "energy": c.energy}
    if readable is not None:
        values, _, outcome = readable
        out["args"] = {k: _repr(v) for k, v in values.items()}
        out["result"] = None if c.outcome == "raised" else _repr(outcome)
        out["exception"] = None
        if c.outcome == "raised" and outcome is not None:  # None: not seen (3.11's monitor)
            out["exception"] = ({"type": outcome.type, "message": outcome.message,
                                 "traceback": outcome.traceback}
                                if isinstance(outcome, ExceptionInfo) else _repr(outcome))
    return out


def add_selection(p: argparse.ArgumentParser) -> None:
    """--session ID and --last: which run a command reads (every session without)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--session", type=int, metavar="ID",
                   help="only the calls of this session (see: calltape sessions)")
    g.add_argument("--last", action="store_true",
                   help="only the newest run: the newest session and its child processes'")


def selected_sessions(tape: Tape, args: argparse.Namespace) -> list[int] | None:
    """The session ids --session or --last name, None for every session."""
    if getattr(args, "last", False):
        return tape.last_run()
    if getattr(args, "session", None) is None:
        return None
    if args.session not in {s.id for s in tape.sessions()}:
        raise UsageError(f"there is no session {args.session} in {tape.path}"
                         " (see: calltape sessions)")
    return [args.session]


def _where(path: str, line: int) -> str:
    """``path:line``, the path relative to the working folder when under it."""
    cwd = os.getcwd()
    if path.startswith(cwd.rstrip(os.sep) + os.sep):
        path = os.path.relpath(path, cwd)
    return f"{path}:{line}"


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(text: str, keep_newlines: bool = False) -> str:
    """Control characters shown escaped (\\n, \\t, \\x1b), so that one value is
    one line and cannot move the terminal's cursor; newlines kept when asked."""
    return "".join(ch if ch.isprintable() or (keep_newlines and ch == "\n")
                   else _ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 256
                                             else f"\\u{ord(ch):04x}")
                   for ch in text)


def _width(text: str) -> int:
    """The columns `text` takes on a terminal (East Asian wide characters two,
    combining marks none)."""
    import unicodedata

    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _cell(text: str, width: int) -> str:
    """A table cell: escaped, and cut to `width` columns with "…"."""
    text = _escape(text)
    if _width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = _width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def cut_middle(text: str, width: int = 60) -> str:
    """``text`` at most ``width`` characters long, its middle cut out:
    ``head ... tail`` (the program and its last arguments both stay)."""
    if len(text) <= width:
        return text
    keep = width - 5
    return f"{text[:(keep + 1) // 2]} ... {text[len(text) - keep // 2:]}"


def _terminal_width() -> int:
    """The width to wrap to: the terminal's, or 100 when not a terminal."""
    return os.get_terminal_size().columns if sys.stdout.isatty() else 100


def _wrap(text: str, width: int, max_lines: int = 12) -> list[str]:
    """`text` in lines of at most `width` columns, broken between words (a
    word longer than a line stays whole on its own line), at most
    `max_lines` lines, the last ending in "…" when more was left out."""
    import textwrap

    lines: list[str] = []
    for paragraph in _escape(text, keep_newlines=True).splitlines() or [""]:
        lines += textwrap.wrap(paragraph, width, break_long_words=False,
                               break_on_hyphens=False) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += " …"
    return [ln for ln in lines if ln] if text else []

def _argv_text(argv: Any) -> str:
    """The recorded argv as one line, whatever its items are (str or not)."""
    if isinstance(argv, str):
        return argv
    if not isinstance(argv, (list, tuple)):
        return _repr(argv)
    return " ".join(a if isinstance(a, str) else _repr(a) for a in argv)

