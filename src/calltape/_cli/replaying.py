"""``calltape replay`` and ``make-tests``: recorded calls run again, and
written out as a pytest module."""

from __future__ import annotations

import argparse
import json
import sys

from .. import RefusedGlobal, Tape
from .common import (
    UsageError,
    _cell,
    _table,
    _terminal_width,
    _width,
    _wrap,
    format_duration,
    parse_time,
    selected_sessions,
)

TYPE_CHECKING = False  # typing is not loaded: every command pays its import
if TYPE_CHECKING:
    from typing import Any


NOTHING_REPLAYED = 5  # as pytest's "no tests ran": a CI gate must not pass on nothing


def cmd_replay(tape: Tape, args: argparse.Namespace, color: bool) -> int:
    filters: dict[str, Any] = {}
    if args.function:
        filters["function"] = args.function
    if args.since:
        filters["since"] = parse_time(args.since)
    if args.until:
        filters["until"] = parse_time(args.until)
    if args.limit is not None:
        filters["limit"] = args.limit
    sessions = selected_sessions(tape, args)
    if sessions is not None:
        filters["session"] = sessions
    if args.call_ids and filters:
        raise UsageError("give call ids or --function/--since/--until/--limit/--session/--last,"
                         " not both")
    try:
        report = tape.replay(*args.call_ids, rel=args.rel, abs=args.abs,
                             globals=args.globals, record=args.record, **filters)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    status = (0 if report.ok else 1) if _replayed(report) else NOTHING_REPLAYED
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_replay(report, args.verbose, color)
    if status == NOTHING_REPLAYED:
        print(f"calltape: {_nothing_replayed(report)}", file=sys.stderr)
    return status


def _print_replay(report: Any, verbose: bool, color: bool) -> None:
    """The calls that changed or failed (every call when `verbose`), each with
    its diff or reason wrapped at word boundaries under its line, then the
    summary line."""
    marks = {"passed": "32", "changed": "33", "failed": "31", "skipped": "2"}
    shown = [o for o in report if verbose or o.status in ("changed", "failed")]
    if shown:
        rows = [[o.status, str(o.call_id), _cell(o.function, 60), format_duration(o.duration)]
                for o in shown]
        table = _table(rows, ["status", "id", "function", "took"], {1, 3}, False).splitlines()
        at = max(_width(ln) for ln in table) + 2  # the detail column
        room = _terminal_width() - at
        if room < 30:  # a narrow terminal: the detail goes under the call, indented
            at, room = 6, _terminal_width() - 6
        head = table[0].ljust(at) + "detail"
        print(f"\033[1m{head}\033[0m" if color else head)
        for o, plain in zip(shown, table[1:]):
            line = (f"\033[{marks[o.status]}m{o.status}\033[0m" + plain[len(o.status):]
                    if color else plain)
            detail = _wrap(o.diff or o.reason or "", room)
            first = detail.pop(0) if detail and at > 6 else ""
            print((line + " " * (at - _width(plain)) + first).rstrip())
            for text in detail:
                print(" " * at + text)
    hidden = len(report) - len(shown)
    print(", ".join(f"{n} {s}" for s, n in report.counts.items())
          + (f"; recorded as session {report.session}" if report.session else "")
          + (f" (-v lists the {hidden:,} other calls)" if hidden and shown else ""))


def _replayed(report: Any) -> int:
    """How many calls of the report were run (passed, changed or failed)."""
    return sum(n for s, n in report.counts.items() if s != "skipped")


def _nothing_replayed(report: Any) -> str:
    """The sentence for a replay that ran no call."""
    if not len(report):
        return "no recorded call matches, so nothing was replayed"
    reasons: dict[str, int] = {}
    for o in report:
        reasons[o.reason] = reasons.get(o.reason, 0) + 1
    reason, n = max(reasons.items(), key=lambda item: item[1])
    more = f" ({n} of them: {reason})" if len(reasons) > 1 else f": {reason}"
    if len(report) == 1:
        return f"nothing was replayed: the one selected call was skipped: {reason}"
    return f"nothing was replayed: all {len(report)} selected calls were skipped" + more


def cmd_make_tests(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    from .._maketests import write_tests

    try:
        w = write_tests(tape, args.function, args.out, limit=args.limit,
                        command=args.command_line, every=args.all,
                        session=selected_sessions(tape, args))
    except RefusedGlobal as exc:
        raise UsageError(f"{exc} (on the command line: --trust or --allow MODULE)") from None
    if args.json:
        print(json.dumps({"module": w.module, "data": w.data, "tests": w.tests,
                          "skipped": [{"call_id": i, "reason": r} for i, r in w.skipped],
                          "duplicates": w.duplicates}, indent=2))
        return
    print(f"wrote {len(w.tests)} tests to {w.module}"
          + (f" (values in {w.data})" if w.data else ""))
    if w.duplicates:
        n = len(w.duplicates)
        print(f"  {n:,} call{'s' if n > 1 else ''} with the same function and arguments as"
              " a test left out (--all writes every call)")
    by_reason: dict[str, list[int]] = {}
    for i, reason in w.skipped:
        by_reason.setdefault(reason, []).append(i)
    for reason, ids in by_reason.items():  # one line per reason, however many calls
        shown = ", ".join(map(str, ids[:5])) + (f", … {ids[-1]}" if len(ids) > 5 else "")
        print(f"  call {shown} skipped: {reason}" if len(ids) == 1
              else f"  {len(ids):,} calls skipped ({shown}): {reason}")
