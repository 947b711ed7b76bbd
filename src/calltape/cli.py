"""The ``calltape`` command: argument parsing and printing only.

    calltape functions [TAPE]
    calltape search [TAPE] --function price --since 2h --min-duration 0.01
    calltape show [TAPE] CALL_ID
    calltape sessions [TAPE]
    calltape replay [TAPE] [CALL_ID ...] --function price --trust   (exit 5: nothing replayed)
    calltape make-tests [TAPE] --function price --out tests/test_recorded_price.py
    calltape tree [TAPE] [CALL_ID | --session ID | --last] [--depth N] [--min-duration T]
    calltape run [--tape PATH] [--include PKG] ... (script.py | -m module) [args ...]

TAPE defaults to $CALLTAPE_TAPE, then ./calltape.db.  --json prints JSON for
scripts.  Every error a user can cause, a damaged tape included (TapeError,
on every command), prints one sentence and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from . import ExceptionInfo, RefusedGlobal, ReplayRefused, Tape, TapeError, _native
from . import open as open_tape

NOTHING_REPLAYED = 5  # as pytest's "no tests ran": a CI gate must not pass on nothing
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
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
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
    from ._replay import recorded_imports

    with recorded_imports(tape, [c.session]):
        return c.readable()


def _call_json(c: Any, readable: tuple[dict[str, Any], frozenset[str], Any] | None = None
               ) -> dict[str, Any]:
    out = {"id": c.id, "session": c.session, "thread": c.thread, "parent": c.parent,
           "depth": c.depth, "module": c.module, "qualname": c.qualname, "file": c.file,
           "line": c.line, "start": c.start.isoformat(), "duration": c.duration,
           "outcome": c.outcome, "preview": c.preview, "cpu_time": c.cpu_time,
           "memory": c.memory, "energy": c.energy}
    if readable is not None:
        values, _, outcome = readable
        out["args"] = {k: _repr(v) for k, v in values.items()}
        out["result"] = None if c.outcome == "raised" else _repr(outcome)
        out["exception"] = None
        if c.outcome == "raised":
            out["exception"] = ({"type": outcome.type, "message": outcome.message,
                                 "traceback": outcome.traceback}
                                if isinstance(outcome, ExceptionInfo) else _repr(outcome))
    return out


def cmd_functions(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    fns = sorted(tape.functions(), key=lambda f: f.total, reverse=True)
    if args.json:
        print(json.dumps([{"id": f.id, "module": f.module, "qualname": f.qualname,
                           "file": f.file, "line": f.line, "parameters": f.parameters,
                           "calls": f.calls, "raised": f.raised, "total": f.total,
                           "mean": f.mean,
                           "min": f.min, "max": f.max} for f in fns], indent=2))
        return
    rows = [[f"{f.module}.{f.qualname}", f"{f.calls:,}", f"{f.raised:,}",
             format_duration(f.total), format_duration(f.mean),
             format_duration(f.max), f"{os.path.basename(f.file)}:{f.line}"] for f in fns]
    print(_table(rows, ["function", "calls", "raised", "total", "mean", "max", "where"],
                 {1, 2, 3, 4, 5}, color))


def cmd_search(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    calls = tape.search(function=args.function, file=args.file,
                        since=parse_time(args.since) if args.since else None,
                        until=parse_time(args.until) if args.until else None,
                        min_duration=args.min_duration, max_duration=args.max_duration,
                        outcome=args.outcome, session=args.session, thread=args.thread,
                        energy=parse_energy(args.energy), order=args.order, limit=args.limit)
    if args.json:
        print(json.dumps([_call_json(c) for c in calls], indent=2))
        return
    rows = [[str(c.id), _local(c.start), format_duration(c.duration), c.outcome,
             f"{c.qualname}({c.preview})"[:120]] for c in calls]
    print(_table(rows, ["id", "start", "duration", "outcome", "call"], {0, 2}, color))


def cmd_show(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    try:
        c = tape.call(args.call_id)
    except KeyError:
        raise UsageError(f"there is no call with id {args.call_id} in {tape.path}") from None
    readable = _readable(tape, c)
    sys.set_int_max_str_digits(0)  # a recorded int of any size is shown in full
    if args.json:
        print(json.dumps(_call_json(c, readable), indent=2))
        return
    values, defaults, outcome = readable
    bold = (lambda s: f"\033[1m{s}\033[0m") if color else (lambda s: s)
    print(bold(f"call {c.id}: {c.module}.{c.qualname}") + f"  ({c.file}:{c.line})")
    print(f"  start     {_local(c.start)}   duration {format_duration(c.duration)}"
          f"   {c.outcome}")
    print(f"  session   {c.session}   thread {c.thread}   parent {c.parent}   depth {c.depth}")
    if c.cpu_time is not None:
        print(f"  cpu       {format_duration(c.cpu_time)}")
    if c.energy is not None:
        print("  energy    " + ", ".join(f"{k} {v:.1f} uJ" for k, v in c.energy.items()))
    for name, value in values.items():
        marker = "  (default)" if name in defaults else ""
        print(f"  {name} = {_repr(value)}{marker}")
    if c.outcome != "raised":
        print(f"  -> {_repr(outcome)}")
        return
    text = outcome.traceback if isinstance(outcome, ExceptionInfo) else _repr(outcome)
    print("  raised:\n" + "\n".join("    " + ln for ln in text.splitlines()))


def _argv_text(argv: Any) -> str:
    """The recorded argv as one line, whatever its items are (str or not)."""
    if isinstance(argv, str):
        return argv
    if not isinstance(argv, (list, tuple)):
        return _repr(argv)
    return " ".join(a if isinstance(a, str) else _repr(a) for a in argv)


def cmd_sessions(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    sessions = tape.sessions()
    if args.json:
        print(json.dumps([{"id": s.id, "pid": s.pid, "ppid": s.ppid, "parent": s.parent,
                           "host": s.host, "argv": s.argv, "python": s.python,
                           "calltape": s.version, "start": s.start.isoformat(),
                           "sys_path0": s.sys_path0, "cwd": s.cwd,
                           "counters": s.counters} for s in sessions],
                         indent=2, default=_repr))
        return
    rows = [[str(s.id), _local(s.start), str(s.pid), str(s.parent or "-"), s.host,
             _argv_text(s.argv)[:60], str(s.counters["dropped"])] for s in sessions]
    print(_table(rows, ["session", "start", "pid", "parent", "host", "argv", "dropped"],
                 {0, 2, 6}, color))


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
    if args.call_ids and filters:
        raise UsageError("give call ids or --function/--since/--until/--limit, not both")
    try:
        report = tape.replay(*args.call_ids, rel=args.rel, abs=args.abs,
                             globals=args.globals, record=args.record, **filters)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    status = (0 if report.ok else 1) if _replayed(report) else NOTHING_REPLAYED
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        marks = {"passed": "32", "changed": "33", "failed": "31", "skipped": "2"}
        paint = ((lambda s, st: f"\033[{marks[st]}m{s}\033[0m") if color
                 else (lambda s, st: s))
        rows = [[paint(o.status.ljust(7), o.status), str(o.call_id), o.function,
                 format_duration(o.duration), (o.diff or o.reason or "")[:160]]
                for o in report]
        if rows:
            print(_table(rows, ["status", "id", "function", "took", "detail"], {1, 3}, color))
        print(", ".join(f"{n} {s}" for s, n in report.counts.items())
              + (f"; recorded as session {report.session}" if report.session else ""))
    if status == NOTHING_REPLAYED:
        print(f"calltape: {_nothing_replayed(report)}", file=sys.stderr)
    return status


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
    from ._maketests import write_tests

    try:
        w = write_tests(tape, args.function, args.out, limit=args.limit,
                        command=args.command_line)
    except RefusedGlobal as exc:
        raise UsageError(f"{exc} (on the command line: --trust or --allow MODULE)") from None
    if args.json:
        print(json.dumps({"module": w.module, "data": w.data, "tests": w.tests,
                          "skipped": [{"call_id": i, "reason": r} for i, r in w.skipped]},
                         indent=2))
        return
    print(f"wrote {len(w.tests)} tests to {w.module}"
          + (f" (values in {w.data})" if w.data else ""))
    for i, reason in w.skipped:
        print(f"  call {i} skipped: {reason}")


def _tree_selection(tape: Tape, args: argparse.Namespace) -> tuple[list[Any], str | None]:
    """What `calltape tree` shows: [a Call] for CALL_ID, else the sessions whose
    roots it shows (--session ID; --last, or neither: the last run, i.e. the
    newest session without a parent on the tape and the sessions of its child
    processes), and the note to say when it picked among several runs."""
    if args.call_id is not None:
        if args.session is not None or args.last:
            raise UsageError("give a CALL_ID or --session/--last, not both")
        try:
            return [tape.call(args.call_id)], None
        except KeyError:
            raise UsageError(f"there is no call with id {args.call_id} in {tape.path}") from None
    sessions = tape.sessions()  # newest first
    if args.session is not None:
        chosen = [s for s in sessions if s.id == args.session]
        if not chosen:
            raise UsageError(f"there is no session {args.session} in {tape.path}"
                             " (calltape sessions lists them)")
        return chosen, None
    ids = {s.id for s in sessions}
    runs = [s for s in sessions if s.parent not in ids]  # a run's first process
    if not runs:
        return [], None
    family, mine = [runs[0]], {runs[0].id}
    for s in reversed(sessions):  # oldest first: a child's parent comes before it
        if s.parent in mine and s.id not in mine:
            family.append(s)
            mine.add(s.id)
    note = None
    if not args.last and len(runs) > 1:
        note = (f"showing session {runs[0].id}, the last of {len(runs)} runs"
                + (f" (with its {len(family) - 1} child process"
                   f"{'es' if len(family) > 2 else ''})" if len(family) > 1 else "")
                + "; pick one with --session ID or --last")
    return family, note


def _tree_utf() -> bool:
    """Whether stdout takes the tree's box-drawing characters and the ellipsis."""
    return (sys.stdout.encoding or "").lower().replace("-", "").replace("_", "") == "utf8"


def _tree_ellipsis() -> str:
    return "\u2026" if _tree_utf() else "..."


def _tree_middle(text: str, width: int) -> str:
    """`text` cut in the middle to `width` characters: both ends stay readable."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + _tree_ellipsis() + text[len(text) - (width - 1 - head):]


def _tree_line(c: Any, width: int) -> str:
    """One call of the tree: duration, function, arguments (cut to `width`), outcome."""
    name = f"{c.module}.{c.qualname}" if c.module else c.qualname
    preview = c.preview
    if len(preview) > width:
        preview = preview[:width - 1] + _tree_ellipsis()
    mark = {"raised": "  [raised]", "closed": "  [closed]"}.get(c.outcome, "")
    return f"{format_duration(c.duration)}  {name}({preview}){mark}"


def _tree_print(node: Any, prefix: str, glyphs: tuple[str, str, str, str], color: bool,
                min_duration: float | None) -> None:
    """Prints the children of `node` below `prefix`, then its folded lines;
    with no glyphs (a session's roots), each at the left margin."""
    tee, last, bar, blank = glyphs
    folded = []
    if node.more:
        folded.append(f"{_tree_ellipsis()} {node.more:,} more call{'s' if node.more != 1 else ''}")
    if node.short:
        folded.append(f"{node.short:,} call{'s' if node.short != 1 else ''}"
                      f" under {format_duration(min_duration)}")
    dim = (lambda s: f"\033[2m{s}\033[0m") if color else (lambda s: s)
    for i, child in enumerate(node.children):
        end = i == len(node.children) - 1 and not folded
        print(prefix + (last if end else tee) + _tree_line(child.call, 80))
        _tree_print(child, prefix + (blank if end else bar), glyphs, color, min_duration)
    for i, text in enumerate(folded):
        print(prefix + (last if i == len(folded) - 1 else tee) + dim(text))


def cmd_tree(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    from ._tree import level, subtree, to_json

    if args.depth is not None and args.depth < 1:
        raise UsageError(f"--depth must be at least 1, not {args.depth}")
    if args.limit < 1:
        raise UsageError(f"--limit must be at least 1, not {args.limit}")
    chosen, note = _tree_selection(tape, args)
    if note:
        print(f"calltape: {note}", file=sys.stderr)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))  # deep recursion, recorded
    opts = {"depth": args.depth, "min_duration": args.min_duration, "limit": args.limit}
    if args.call_id is not None:
        trees = [(None, subtree(tape, chosen[0], **opts))]
    else:
        trees = [(s, level(tape, session=s.id, **opts)) for s in chosen]
    if args.json:
        print(json.dumps([{"session": s.id if s else node.call.session, "argv": _argv_text(s.argv)
                           if s else None, **to_json(node)} for s, node in trees], indent=2))
        return
    glyphs = (("\u251c\u2500 ", "\u2514\u2500 ", "\u2502  ", "   ") if _tree_utf()
              else ("|- ", "`- ", "|  ", "   "))
    bold = (lambda s: f"\033[1m{s}\033[0m") if color else (lambda s: s)
    for s, node in trees:
        if s is None:
            print(bold(_tree_line(node.call, 80)))
            _tree_print(node, "", glyphs, color, args.min_duration)
            continue
        print(bold(f"session {s.id}: {_tree_middle(_argv_text(s.argv), 60)} (pid {s.pid})"))
        if not node.children and not node.more and not node.short:
            print("no calls recorded")
        for root in node.children:  # the roots at the left margin, their calls below
            print(_tree_line(root.call, 80))
            _tree_print(root, "", glyphs, color, args.min_duration)
        node.children = []
        _tree_print(node, "", ("", "", "", ""), color, args.min_duration)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calltape", description="Read a calltape tape: the calls a program recorded.",
        epilog="TAPE defaults to $CALLTAPE_TAPE, then ./calltape.db.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("tape", nargs="?", metavar="TAPE", help="the tape file")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.add_argument("--trust", action="store_true",
                       help="rebuild any pickled value (only for tapes you made yourself)")
        p.add_argument("--allow", action="append", default=[], metavar="MODULE",
                       help="also rebuild pickled values of this module (repeatable)")
        return p

    add("functions", "each recorded function: calls, total, mean and max duration")
    p = add("search", "find recorded calls, newest first")
    p.add_argument("--function", help="qualname, module.qualname or a glob such as 'shop.*'")
    p.add_argument("--file", help="glob or part of the source file path")
    p.add_argument("--since", help="ISO date/time or relative time (10m, 2h, 3d)")
    p.add_argument("--until", help="ISO date/time or relative time")
    p.add_argument("--min-duration", type=float, metavar="SECONDS")
    p.add_argument("--max-duration", type=float, metavar="SECONDS")
    p.add_argument("--outcome", choices=["returned", "raised", "closed"])
    p.add_argument("--session", type=int)
    p.add_argument("--thread", type=int, metavar="IDENT", help="a thread ident")
    p.add_argument("--energy", action="append", metavar="DOMAIN=UJ",
                   help="at most this energy in microjoules: pkg=100 or dram=50 (repeatable);"
                        " calls recorded without energy never match")
    p.add_argument("--order", choices=["newest", "oldest"], default="newest")
    p.add_argument("--limit", type=int, default=20, help="how many calls (default 20)")
    p = add("show", "one call in full: arguments, result or exception")
    p.add_argument("call_id", type=int, metavar="CALL_ID")
    add("sessions", "the processes that recorded onto the tape, newest first")
    p = add("replay", "run recorded calls again with today's code and compare the outcomes"
                      " (exit status 1 when any changed or failed)")
    p.add_argument("call_ids", nargs="*", type=int, metavar="CALL_ID",
                   help="the calls to replay (default: every call the filters find)")
    p.add_argument("--function", help="qualname, module.qualname or a glob such as 'shop.*'")
    p.add_argument("--since", help="ISO date/time or relative time (10m, 2h, 3d)")
    p.add_argument("--until", help="ISO date/time or relative time")
    p.add_argument("--limit", type=int, help="at most this many calls, oldest first")
    p.add_argument("--rel", type=float, default=0.0, metavar="X",
                   help="relative tolerance for floats (default 0: exact)")
    p.add_argument("--abs", type=float, default=0.0, metavar="X",
                   help="absolute tolerance for floats (default 0: exact)")
    p.add_argument("--globals", choices=["recorded"],
                   help="run with the recorded module globals patched in (globals=True recordings)")
    p.add_argument("--record", action="store_true",
                   help="record the replayed calls onto the tape as a new session")
    p = add("make-tests", "write recorded calls out as a pytest module of regression tests")
    p.add_argument("--function", required=True,
                   help="qualname, module.qualname or a glob such as 'shop.*'")
    p.add_argument("--out", required=True, metavar="PATH", help="the test module to write (.py)")
    p.add_argument("--limit", type=int, help="at most this many calls, oldest first")
    p = add("tree", "the recorded calls as a tree: each call's duration, function and"
                    " arguments, the calls it made below it, oldest first")
    p.add_argument("call_id", nargs="?", type=int, metavar="CALL_ID",
                   help="show this call and the calls below it")
    p.add_argument("--session", type=int, metavar="ID", help="show the roots of this session")
    p.add_argument("--last", action="store_true",
                   help="show the newest session and those of its child processes")
    p.add_argument("--depth", type=int, metavar="N", help="show N levels (default: all)")
    p.add_argument("--min-duration", type=float, metavar="SECONDS",
                   help="fold the calls shorter than this into one line per parent")
    p.add_argument("--limit", type=int, default=25, metavar="N",
                   help="show at most N calls under each parent, oldest first (default 25)")
    sub.add_parser("run", help="run a Python program, recording its calls"
                               " (see: calltape run --help)", add_help=False)
    return parser


_RUN_VALUED = {"--tape", "--include", "--exclude", "--max-depth", "--sample",
               "--max-value-bytes", "--max-value-depth"}


def build_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calltape run",
        usage="calltape run [options] (script.py | -m module) [args for the program ...]",
        description="Run a Python program as `python` would, recording the calls of its own"
                    " code (the script's directory, or the package of -m) onto a tape. At exit"
                    " one summary line goes to stderr; `calltape functions` shows the rest.",
        epilog="Options go before the program; everything after it is the program's own.")
    p.add_argument("--tape", metavar="PATH",
                   help="the tape file (default: $CALLTAPE_TAPE, then ./calltape.db)")
    p.add_argument("--include", action="append", default=[], metavar="PKG",
                   help="also record this package or module (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="do not record this module, or module.qualname glob (repeatable)")
    p.add_argument("--no-args", action="store_true", help="do not record arguments")
    p.add_argument("--no-result", action="store_true", help="do not record return values")
    p.add_argument("--cpu", action="store_true", help="record the thread CPU time of calls")
    p.add_argument("--memory", action="store_true", help="record RSS before and after calls")
    p.add_argument("--energy", action="store_true",
                   help="record RAPL package and DRAM energy (Linux powercap) of calls")
    p.add_argument("--locals", action="store_true",
                   help="record each call's local variables at its return or raise")
    p.add_argument("--globals", action="store_true",
                   help="record the module globals each function reads, at its start")
    p.add_argument("--max-depth", type=int, default=0, metavar="N",
                   help="record no call nested deeper than N recorded calls (0: no limit)")
    p.add_argument("--sample", type=int, default=1, metavar="N",
                   help="record one call in N of each function (default 1: all)")
    p.add_argument("--max-value-bytes", type=int, default=4096, metavar="N",
                   help="record a value larger than N bytes once encoded as Truncated, and stop"
                        " encoding it there (default 4096)")
    p.add_argument("--max-value-depth", type=int, default=20, metavar="N",
                   help="record what a value holds N levels down as Unencodable (nested too"
                        " deeply), and stop there (default 20)")
    p.add_argument("--quiet", action="store_true", help="no summary line at exit")
    return p


def split_run_argv(argv: list[str]) -> tuple[list[str], str | None, bool, list[str]]:
    """Splits ``calltape run`` arguments into (options, target, is_module, program args)."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-m":
            if i + 1 == len(argv):
                raise UsageError("-m needs a module name, as in: calltape run -m package.main")
            rest = argv[i + 2:]
            return argv[:i], argv[i + 1], True, rest[1:] if rest[:1] == ["--"] else rest
        if a == "--":
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        i += 2 if a in _RUN_VALUED else 1
    if i >= len(argv):
        return argv, None, False, []
    rest = argv[i + 1:]
    return [a for a in argv[:i] if a != "--"], argv[i], False, rest[1:] if rest[:1] == ["--"] else rest


def run_main(argv: list[str]) -> int:
    """``calltape run``: the program's own exit status, 2 for our usage errors."""
    from ._run import RunError, run

    parser = build_run_parser()
    try:
        options, target, is_module, program_args = split_run_argv(argv)
    except UsageError as exc:
        parser.error(str(exc))
    args = parser.parse_args(options)
    if target is None:
        parser.error("name a script or -m module to run")
    try:  # the same check, and message, as monitor() and @calltape.record
        _native.check_options(tape=args.tape, max_depth=args.max_depth, sample=args.sample,
                              max_value_bytes=args.max_value_bytes)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if args.max_value_depth < 1:
        parser.error(f"--max-value-depth must be at least 1, not {args.max_value_depth}")
    try:
        return run(target, module=is_module, argv=program_args, tape=args.tape,
                   include=args.include, exclude=args.exclude, args=not args.no_args,
                   result=not args.no_result, cpu=args.cpu, memory=args.memory,
                   energy=args.energy, locals=args.locals, globals=args.globals,
                   max_depth=args.max_depth, sample=args.sample,
                   max_value_bytes=args.max_value_bytes, max_value_depth=args.max_value_depth,
                   summary=not args.quiet)
    except (RunError, TapeError) as exc:
        print(f"calltape: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``calltape`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return run_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "calltape " + " ".join(sys.argv[1:] if argv is None else argv)
    if (args.command == "replay" and args.tape and args.tape.isdigit()
            and not os.path.exists(args.tape)):
        args.call_ids.insert(0, int(args.tape))  # `calltape replay 12 13`: ids, default tape
        args.tape = None
    if (args.command == "tree" and args.tape and args.tape.isdigit() and args.call_id is None
            and not os.path.exists(args.tape)):
        args.call_id, args.tape = int(args.tape), None  # `calltape tree 12`: an id, default tape
    path = args.tape or _native.default_tape()
    color = sys.stdout.isatty() and not args.json and "NO_COLOR" not in os.environ
    commands = {"functions": cmd_functions, "search": cmd_search, "show": cmd_show,
                "sessions": cmd_sessions, "replay": cmd_replay,
                "make-tests": cmd_make_tests, "tree": cmd_tree}
    try:
        with open_tape(path, trust=args.trust, allow=args.allow) as tape:
            status = commands[args.command](tape, args, color)
    except (TapeError, UsageError, ValueError, ReplayRefused) as exc:
        # one line, whatever a damaged tape put into the names it quotes
        print("calltape: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
