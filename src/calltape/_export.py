"""Export a tape's calls for other tools: a Chrome trace, JSON lines or CSV.

The writing is C (``Tape._export``, src/calltape/_native/export/): the calls
stream from the tape's search into a buffered file writer with the GIL
released, in bounded memory.  This module picks the sessions, names the
processes and opens the file.

Usage::

    import calltape
    n = calltape.export("calltape.db", format="chrome", out="trace.json")
    calltape.export(tape, format="jsonl", out="calls.jsonl", session=[3])

Open a Chrome trace in https://ui.perfetto.dev (Open trace file) or
chrome://tracing (Load).
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from . import Tape, TapeError
from . import open as open_tape

FORMATS = ("chrome", "jsonl", "csv")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _label(s: Any) -> str:
    """The process name a trace shows for a session: its argv, host and session id."""
    argv = " ".join(str(a) for a in (s.argv or [])) or "?"
    return f"{argv} (session {s.id}, {s.host})"


def export(tape: Tape | str | os.PathLike[str], format: str = "chrome",
           out: str | os.PathLike[str] | None = None, *,
           session: int | list[int] | tuple[int, ...] | None = None,
           since: datetime | float | None = None,
           until: datetime | float | None = None) -> int:
    """Write the tape's calls (of `session`, an id or ids, started within
    [since, until]) to `out` (stdout when None) as ``format``: "chrome" (a
    Chrome trace event file for Perfetto and chrome://tracing), "jsonl" or
    "csv".  Returns the number of calls written.

    >>> calltape.export("calltape.db", format="chrome", out="trace.json")
    12345

    Raises ValueError for an unknown format, TapeError for a tape that
    cannot be read and OSError for a file that cannot be written.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be 'chrome', 'jsonl' or 'csv', not {format!r}")
    if not isinstance(tape, Tape):
        with open_tape(tape) as opened:
            return export(opened, format, out, session=session, since=since, until=until)
    ids = [session] if isinstance(session, int) else list(session) if session is not None else None
    sessions = [s for s in tape.sessions() if ids is None or s.id in ids]
    procs = [(s.id, s.pid, _label(s)) for s in sorted(sessions, key=lambda s: s.id)]
    # ts 0 of the trace: just before the earliest session started (exact in ns)
    base = min(((s.start - _EPOCH) // timedelta(microseconds=1) * 1000 for s in sessions),
               default=0)
    # since/until: a datetime or seconds since the epoch, read by the C search
    if out is None:
        sys.stdout.flush()
        return tape._export(format, sys.stdout.fileno(), procs, session=ids, since=since,
                            until=until, base_ns=base)
    with open(out, "wb") as f:
        return tape._export(format, f.fileno(), procs, session=ids, since=since, until=until,
                            base_ns=base)


__all__ = ["FORMATS", "TapeError", "export"]
