"""``calltape export``, ``report`` and ``prune``: what writes files or changes
the tape."""

from __future__ import annotations

import argparse
import json
import sys

from .. import Tape, _native
from .common import UsageError, parse_time, selected_sessions

TYPE_CHECKING = False  # typing is not loaded: every command pays its import


def cmd_export(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    """The calls of the selection written to --out (or stdout) by calltape.export."""
    from .._export import export

    try:
        n = export(tape, args.format, args.out, session=selected_sessions(tape, args),
                   since=parse_time(args.since) if args.since else None,
                   until=parse_time(args.until) if args.until else None)
    except BrokenPipeError:
        raise
    except OSError as exc:
        if not args.out:
            raise UsageError(f"cannot write the export to stdout: {exc.strerror or exc}") from None
        raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    if args.out:
        print(f"calltape: wrote {n:,} call{'s' if n != 1 else ''} to {args.out}"
              f" ({args.format})", file=sys.stderr)


def cmd_report(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    """The report of the selection (the newest run by default) written by calltape.report."""
    from .._report import report

    try:
        r = report(tape, args.out, session=selected_sessions(tape, args),
                   since=parse_time(args.since) if args.since else None,
                   until=parse_time(args.until) if args.until else None,
                   title=args.title, formats=args.format)
    except OSError as exc:
        raise UsageError(f"cannot write the report into {args.out}:"
                         f" {exc.strerror or exc}") from None
    where = r.index or r.directory
    print(f"calltape: reported {r.calls:,} call{'s' if r.calls != 1 else ''} in {where}",
          file=sys.stderr)


def cmd_prune(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    """Retention: the sessions that ended before --older-than, those older than the
    --keep-sessions newest, and the oldest while the tape is over --max-size go with
    their calls (any rule alone, or several)."""
    if args.older_than is None and args.keep_sessions is None and args.max_size is None:
        raise UsageError("calltape prune needs --older-than AGE, --keep-sessions N or"
                         " --max-size SIZE (say which sessions go)")
    if args.keep_sessions is not None and args.keep_sessions < 0:
        raise UsageError(f"--keep-sessions {args.keep_sessions} is negative"
                         " (give how many of the newest sessions stay)")
    max_bytes = -1
    if args.max_size is not None:
        try:
            max_bytes = _native.parse_size(args.max_size)
        except ValueError as exc:
            raise UsageError(f"--max-size: {exc}") from None
    before = -(2**63)
    if args.older_than is not None:
        when = parse_time(args.older_than)
        if when.tzinfo is None:
            when = when.astimezone()
        before = int(when.timestamp() * 1e9)
    keep = -1 if args.keep_sessions is None else args.keep_sessions
    tape.close()  # a file's reader would keep its pages from going back
    sessions, calls, size = _native.prune(args.path, before, keep, max_bytes)
    if args.json:
        print(json.dumps({"sessions": sessions, "calls": calls, "size": size}))
    else:
        print(f"calltape: pruned {sessions:,} session{'s' if sessions != 1 else ''}"
              f" ({calls:,} call{'s' if calls != 1 else ''}) from {tape.path};"
              f" it holds {_size(size)} now")


def _size(n: int) -> str:
    """Bytes as a person reads them: 812 bytes, 4.2 MB, 1.93 GB (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:,} byte{'s' if n != 1 else ''}"
