"""The ``calltape`` command: argument parsing and printing only.

    calltape functions [TAPE] [--last | --session ID] [--sort self] [--limit 20]
    calltape search [TAPE] --function price --since 2h --min-duration 0.01 --last  (exit 1: no match)
    calltape search [TAPE] --test tests/test_cart.py::test_total   (the calls a pytest test made)
    calltape show [TAPE] CALL_ID          (every field the tape holds for the call)
    calltape sessions [TAPE]
    calltape replay [TAPE] [CALL_ID ...] --function price --trust [-v]  (exit 5: nothing replayed)
    calltape make-tests [TAPE] --function price --out tests/test_recorded_price.py [--all]
    calltape tree [TAPE] [CALL_ID | --session ID | --last] [--depth N] [--min-duration T]
    calltape prune [TAPE] --older-than 7d   (sessions that ended before then go, with their calls)
    calltape run [--tape PATH] [--fresh] [--include PKG] ... (script.py | -m module) [args ...]
    calltape --version

TAPE defaults to $CALLTAPE_TAPE, then ./calltape.db.  A tape keeps every run:
functions, search, replay and make-tests read one with --session ID, or the
newest with --last (that session and its child processes' sessions), and
all of them without either.  --function NAME takes a qualname, a
module.qualname, a glob, or a bare name (no dot) naming the last part of
qualnames (`take` finds Inventory.take).  --json prints JSON for scripts.
Every error a user can cause, a damaged tape included (TapeError, on every
command), prints one sentence and exits 2.

Output scales with the tape: search prints at most --limit calls and says how
many more matched; replay lists the calls that changed or failed (-v: all)
and a summary line; make-tests writes one test per distinct function and
arguments.  Table cells are escaped (one value, one line) and cut with "…";
diffs and reasons wrap between words.  Each subcommand's --help ends with
examples (EXAMPLES).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta

from . import ExceptionInfo, RefusedGlobal, ReplayRefused, Tape, TapeError, __version__, _native
from . import open as open_tape

TYPE_CHECKING = False  # typing is not loaded: every command pays its import
if TYPE_CHECKING:
    from typing import Any

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
    from ._replay import recorded_imports

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


_SORTS: dict[str, Any] = {  # pstats' sort_stats: the largest first, names A to Z
    "calls": lambda f: -f.calls,
    "total": lambda f: -(f.total or 0.0),
    "self": lambda f: -(f.self_time if f.self_time is not None else -1.0),
    "mean": lambda f: -(f.mean or 0.0),
    "max": lambda f: -(f.max or 0.0),
    "name": lambda f: (f.module, f.qualname),
}


def cmd_functions(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    sessions = selected_sessions(tape, args)
    fns = tape.functions() if sessions is None else tape.functions(session=sessions)
    fns.sort(key=lambda f: (_SORTS[args.sort](f), f.module, f.qualname))
    shown = fns if args.limit is None else fns[:max(args.limit, 0)]
    if args.json:
        print(json.dumps([{"id": f.id, "module": f.module, "qualname": f.qualname,
                           "file": f.file, "line": f.line, "parameters": f.parameters,
                           "calls": f.calls, "raised": f.raised, "total": f.total,
                           "self": f.self_time, "mean": f.mean,
                           "min": f.min, "max": f.max} for f in shown], indent=2))
        return
    if sessions is None:
        n = len(tape.sessions())
        if n > 1:
            print(f"{n} sessions summed; pick one run with --last (the newest) or"
                  " --session ID (see: calltape sessions)")
    elif args.last and len(sessions) > 1:
        print(f"the last run: session {sessions[0]} and {len(sessions) - 1} child process"
              f"{'es' if len(sessions) > 2 else ''} ({', '.join(map(str, sessions[1:]))})")
    rows = [[f"{f.module}.{f.qualname}", f"{f.calls:,}", f"{f.raised:,}",
             format_duration(f.total), format_duration(f.self_time), format_duration(f.mean),
             format_duration(f.max), _where(f.file, f.line)] for f in shown]
    print(_table(rows, ["function", "calls", "raised", "total", "self", "mean", "max", "where"],
                 {1, 2, 3, 4, 5, 6}, color))
    if len(shown) < len(fns):
        more = len(fns) - len(shown)
        print(f"{more:,} more function{'' if more == 1 else 's'}; use --limit")


def cmd_search(tape: Tape, args: argparse.Namespace, color: bool) -> int:
    limit = args.limit
    filters: dict[str, Any] = {
        "function": args.function, "file": args.file,
        "since": parse_time(args.since) if args.since else None,
        "until": parse_time(args.until) if args.until else None,
        "min_duration": args.min_duration, "max_duration": args.max_duration,
        "outcome": args.outcome, "session": selected_sessions(tape, args), "thread": args.thread,
        "energy": parse_energy(args.energy), "captured": args.captured, "test": args.test}
    unfiltered = all(v is None for v in filters.values())
    # the calls past the limit: every call of the tape's function totals when
    # nothing filters, else counted up to _MORE_COUNTED by the search itself
    calls = tape.search(**filters, order=args.order,
                        limit=None if limit is None else limit + (1 if unfiltered
                                                                  else _MORE_COUNTED + 1))
    found, more = _take(calls, limit)
    if more and unfiltered:
        more = sum(f.calls for f in tape.functions()) - len(found)
    if not found:
        if args.json:
            print("[]")
        if args.test is not None and not tape.tests(args.test):
            print(f"calltape: no test {args.test} on {tape.path} (the calls of a test are"
                  " tagged with it under pytest --calltape)", file=sys.stderr)
        else:
            print(f"calltape: no recorded call matches in {tape.path}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([_call_json(c) for c in found], indent=2))
    else:
        rows = [[str(c.id), _local(c.start), format_duration(c.duration), _outcome_text(c),
                 _cell(f"{c.qualname}({c.preview})", 100)] for c in found]
        print(_table(rows, ["id", "start", "duration", "outcome", "call"], {0, 2}, color))
    if more:
        counted = unfiltered or more <= _MORE_COUNTED
        many = f"{more:,}" if counted else f"over {_MORE_COUNTED:,}"
        print(f"calltape: {many} more call{'s' if more > 1 else ''}; use --limit"
              f" {len(found) + more if counted else 'N'} to see more", file=sys.stderr)
    return 0


_MORE_COUNTED = 100  # a filtered search counts this many calls past its limit, at most


def _take(calls: Any, limit: int | None) -> tuple[list[Any], int]:
    """The first `limit` calls of a search, and how many more it found."""
    found, more = [], 0
    for c in calls:
        if limit is None or len(found) < limit:
            found.append(c)
        else:
            more += 1
    return found, more


def _outcome_text(c: Any) -> str:
    """`returned`, `closed`, or `raised KeyError('bad')`."""
    if c.outcome != "raised":
        return c.outcome
    try:
        exc = c.exception
    except Exception:  # noqa: BLE001 - a damaged value: the outcome alone
        return c.outcome
    return _cell(f"raised {exc!r}", 40) if isinstance(exc, ExceptionInfo) else c.outcome


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


def cmd_show(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    try:
        c = tape.call(args.call_id)
    except KeyError:
        raise UsageError(f"there is no call with id {args.call_id} in {tape.path}") from None
    readable = _readable(tape, c)
    sys.set_int_max_str_digits(0)  # a recorded int of any size is shown in full
    slots = _readable_slots(tape, c)
    family = _family(tape, c)
    if args.json:
        print(json.dumps(_show_json(c, readable, slots, family), indent=2))
        return
    values, defaults, outcome = readable
    bold = (lambda s: f"\033[1m{s}\033[0m") if color else (lambda s: s)
    print(bold(f"call {c.id}: {c.module}.{c.qualname}") + f"  ({c.file}:{c.line})")
    for label, text in _show_fields(c, family, outcome):
        print(f"  {label:<9} {text}")
    for name, value in values.items():
        marker = "  (default)" if name in defaults else ""
        print(f"  {name} = {_value_text(value)}{marker}")
    if c.outcome != "raised":
        print(f"  -> {_value_text(outcome)}")
    elif outcome is None:  # calltape.monitor on 3.11: its profile hook does not see it
        print("  raised:   the exception was not recorded (on Python 3.11 calltape run sees"
              " that a call raised, not what)")
    else:
        text = outcome.traceback if isinstance(outcome, ExceptionInfo) else _repr(outcome)
        print("  raised:\n" + "\n".join("    " + ln for ln in text.splitlines()))
    for slot, held in slots.items():
        if held is None:
            continue
        print(f"  {slot}:" + ("  (none)" if not held else ""))
        items = held.items() if isinstance(held, dict) else enumerate(held)
        for name, value in items:
            print(f"    {name} = {_value_text(value)}" if isinstance(held, dict)
                  else f"    [{name}] {_value_text(value)}")
    missing = _not_recorded(c, slots)
    if missing:
        print(f"  not recorded: {', '.join(missing)}")


def _type_name(value: Any) -> str:
    """The value's class as a person writes it: int, datetime.date, app.core.Item."""
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _value_text(value: Any) -> str:
    """A value's repr and type for `show` (an Unreadable says its own type and
    reason; a marker of a value not recorded says what it is); the lines of a
    repr that spans several are indented under the first."""
    from ._markers import Redacted, Truncated, Unencodable, Unreadable

    if isinstance(value, (Unreadable, Redacted, Truncated, Unencodable)):
        text = _repr(value)
    else:
        text = f"{_repr(value)}  ({_type_name(value)})"
    return _escape(text, keep_newlines=True).replace("\n", "\n      ")


def _readable_slots(tape: Tape, c: Any) -> dict[str, Any]:
    """The call's locals, globals and yielded values (None when not recorded),
    each entry rebuilt on its own as the arguments are."""
    from ._replay import recorded_imports

    with recorded_imports(tape, [c.session]):
        return {slot: c.readable_slot(slot) for slot in ("locals", "globals", "yielded")}


def _family(tape: Tape, c: Any) -> dict[str, Any]:
    """The call's parent and children: ids and function names (the children
    from the engine's search of the call's session, thread and time span)."""
    parent = None
    if c.parent is not None:
        try:
            p = tape.call(c.parent)
            parent = {"id": p.id, "function": f"{p.module}.{p.qualname}"}
        except KeyError:  # recorded by a sampled or dropped call
            parent = {"id": c.parent, "function": None}
    children = [{"id": k.id, "function": f"{k.module}.{k.qualname}"} for k in c.children()]
    return {"parent": parent, "children": children}


_CHILDREN_SHOWN = 20


_CAPTURED_BY = {"decorator": "@calltape.record", "monitor": "the monitor (calltape.monitor)",
                "flat": "calltape.flat_profile", "probe": "a probe", "timer": "calltape.timer"}


def _show_fields(c: Any, family: dict[str, Any], outcome: Any) -> list[tuple[str, str]]:
    """The labelled lines of `show` before the values: times, where it ran,
    its parent and children, and the measurements recorded."""
    thread = f"{c.thread}" + (f" ({c.thread_name})" if c.thread_name else "")
    parent = family["parent"]
    kids = family["children"]
    shown = ", ".join(f"{k['id']} {k['function']}" for k in kids[:_CHILDREN_SHOWN])
    if len(kids) > _CHILDREN_SHOWN:
        shown += f", … {len(kids) - _CHILDREN_SHOWN:,} more (show --json lists them all)"
    ended = f"raised {outcome!r}" if isinstance(outcome, ExceptionInfo) else c.outcome
    rows = [("start", f"{_local(c.start)}   duration {format_duration(c.duration)}   {ended}"),
            ("session", f"{c.session}   thread {thread}   depth {c.depth}"
             + (f"   captured by {_CAPTURED_BY[c.captured]}" if c.captured else "")),
            *([("test", c.test)] if c.test is not None else []),
            ("parent", "none (a top-level call)" if parent is None
             else f"{parent['id']} {parent['function'] or '(not on the tape)'}"),
            ("children", f"{len(kids)}: {shown}" if kids else "none")]
    if c.cpu_time is not None:
        rows.append(("cpu", format_duration(c.cpu_time)))
    if c.memory is not None:
        m = c.memory
        rss = (f"rss {_bytes(m['rss_before'])} before, {_bytes(m['rss_after'])} after,"
               f" peak {_bytes(m['peak'])}")
        rows.append(("memory", rss))
    if c.energy is not None:
        rows.append(("energy", ", ".join(f"{k} {v:.1f} uJ" for k, v in c.energy.items())))
    return rows


def _bytes(n: int) -> str:
    """A byte count as a person reads it: 512 B, 18.5 MiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _not_recorded(c: Any, slots: dict[str, Any]) -> list[str]:
    """What the call was recorded without, with the option that records it."""
    missing = []
    if c.cpu_time is None:
        missing.append("cpu (--cpu)")
    if c.memory is None:
        missing.append("memory (--memory)")
    if c.energy is None:
        missing.append("energy (--energy)")
    if slots["locals"] is None:
        missing.append("locals (--locals)")
    if slots["globals"] is None:
        missing.append("globals (--globals)")
    return missing


def _value_json(value: Any, default: bool = False) -> dict[str, Any]:
    """A value for `show --json`: its repr and type, and when it cannot be
    rebuilt here, the preview the tape gives and the reason."""
    from ._markers import Unreadable

    if isinstance(value, Unreadable):
        return {"repr": value.preview, "type": value.type, "rebuilt": False,
                "reason": value.reason, "default": default}
    return {"repr": _repr(value), "type": _type_name(value), "rebuilt": True, "reason": None,
            "default": default}


def _show_json(c: Any, readable: tuple[dict[str, Any], frozenset[str], Any],
               slots: dict[str, Any], family: dict[str, Any]) -> dict[str, Any]:
    """Every field `show` prints, for scripts."""
    out = _call_json(c, readable)
    values, defaults, outcome = readable
    out["thread_name"] = c.thread_name
    out["parent_function"] = family["parent"]["function"] if family["parent"] else None
    out["children"] = family["children"]
    out["defaults"] = sorted(defaults)
    out["values"] = {"args": {k: _value_json(v, k in defaults) for k, v in values.items()},
                     "result": None if c.outcome == "raised" else _value_json(outcome)}
    for slot, held in slots.items():
        out["values"][slot] = (None if held is None
                               else {str(k): _value_json(v) for k, v in held.items()}
                               if isinstance(held, dict) else [_value_json(v) for v in held])
    return out


def _argv_text(argv: Any) -> str:
    """The recorded argv as one line, whatever its items are (str or not)."""
    if isinstance(argv, str):
        return argv
    if not isinstance(argv, (list, tuple)):
        return _repr(argv)
    return " ".join(a if isinstance(a, str) else _repr(a) for a in argv)


def cut_middle(text: str, width: int = 60) -> str:
    """``text`` at most ``width`` characters long, its middle cut out:
    ``head ... tail`` (the program and its last arguments both stay)."""
    if len(text) <= width:
        return text
    keep = width - 5
    return f"{text[:(keep + 1) // 2]} ... {text[len(text) - keep // 2:]}"


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
             cut_middle(_argv_text(s.argv)), str(s.counters["dropped"])] for s in sessions]
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


def _tree_selection(tape: Tape, args: argparse.Namespace) -> tuple[list[Any], str | None]:
    """What `calltape tree` shows: [a Call] for CALL_ID, else the sessions whose
    roots it shows (--session ID; --last, or neither: the last run, as
    selected_sessions() reads it), and the note to say when it picked among
    several runs."""
    if args.call_id is not None:
        if args.session is not None or args.last:
            raise UsageError("give a CALL_ID or --session/--last, not both")
        try:
            return [tape.call(args.call_id)], None
        except KeyError:
            raise UsageError(f"there is no call with id {args.call_id} in {tape.path}") from None
    sessions = tape.sessions()  # newest first
    ids = selected_sessions(tape, args) or tape.last_run()
    by_id = {s.id: s for s in sessions}
    family = [by_id[i] for i in ids if i in by_id]
    runs = sum(1 for s in sessions if s.parent not in by_id)  # a run's first process
    note = None
    if args.session is None and not args.last and runs > 1 and family:
        note = (f"showing session {family[0].id}, the last of {runs} runs"
                + (f" (with its {len(family) - 1} child process"
                   f"{'es' if len(family) > 2 else ''})" if len(family) > 1 else "")
                + "; pick one with --session ID or --last")
    return family, note


def cmd_tree(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    from ._tree import level, line, print_children, subtree, to_json, utf

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
    glyphs = (("\u251c\u2500 ", "\u2514\u2500 ", "\u2502  ", "   ") if utf()
              else ("|- ", "`- ", "|  ", "   "))
    bold = (lambda s: f"\033[1m{s}\033[0m") if color else (lambda s: s)
    for s, node in trees:
        if s is None:
            print(bold(line(node.call, 80)))
            print_children(node, "", glyphs, color, args.min_duration)
            continue
        print(bold(f"session {s.id}: {cut_middle(_argv_text(s.argv))} (pid {s.pid})"))
        if not node.children and not node.more and not node.short:
            print("no calls recorded")
        for root in node.children:  # the roots at the left margin, their calls below
            print(line(root.call, 80))
            print_children(root, "", glyphs, color, args.min_duration)
        node.children = []
        print_children(node, "", ("", "", "", ""), color, args.min_duration)


class _Unbuilt:
    """Stands for the options of a subcommand this run does not use: argparse
    spends a formatter on every option it adds, and each command pays that."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass

    def add_mutually_exclusive_group(self) -> _Unbuilt:
        return self


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``calltape`` parser; with `only`, the options of that subcommand
    alone are built (the others are listed, with their help line)."""
    parser = argparse.ArgumentParser(
        prog="calltape", description="Read a calltape tape: the calls a program recorded.",
        epilog="TAPE defaults to $CALLTAPE_TAPE, then ./calltape.db.")
    parser.add_argument("--version", action="version", version=f"calltape {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> Any:
        p = sub.add_parser(name, help=help, description=help)
        if only is not None and name != only:
            return _Unbuilt()
        p.add_argument("tape", nargs="?", metavar="TAPE", help="the tape file")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.add_argument("--trust", action="store_true",
                       help="rebuild any pickled value (only for tapes you made yourself)")
        p.add_argument("--allow", action="append", default=[], metavar="MODULE",
                       help="also rebuild pickled values of this module (repeatable)")
        return p

    p = add("functions", "each recorded function: calls, total, self, mean and max duration")
    add_selection(p)
    p.add_argument("--sort", choices=sorted(_SORTS), default="total",
                   help="the order, largest first (name: A to Z; default total); self is"
                        " total minus the recorded calls it made")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N functions")
    p = add("search", "find recorded calls, newest first")
    p.add_argument("--function", help="qualname, module.qualname or a glob such as 'shop.*'")
    p.add_argument("--file", help="glob or part of the source file path")
    p.add_argument("--since", help="ISO date/time or relative time (10m, 2h, 3d)")
    p.add_argument("--until", help="ISO date/time or relative time")
    p.add_argument("--min-duration", type=float, metavar="SECONDS")
    p.add_argument("--max-duration", type=float, metavar="SECONDS")
    p.add_argument("--outcome", choices=["returned", "raised", "closed"])
    p.add_argument("--captured", choices=["decorator", "monitor", "flat", "probe", "timer"],
                   help="only the calls captured this way")
    add_selection(p)
    p.add_argument("--thread", type=int, metavar="IDENT", help="a thread ident")
    p.add_argument("--test", metavar="NODEID",
                   help="the calls of a pytest test (pytest --calltape): its node id, a node"
                        " above tests (a file, a class) or a glob")
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
    add_selection(p)
    p.add_argument("--rel", type=float, default=0.0, metavar="X",
                   help="relative tolerance for floats (default 0: exact)")
    p.add_argument("--abs", type=float, default=0.0, metavar="X",
                   help="absolute tolerance for floats (default 0: exact)")
    p.add_argument("--globals", choices=["recorded"],
                   help="run with the recorded module globals patched in (globals=True recordings)")
    p.add_argument("--record", action="store_true",
                   help="record the replayed calls onto the tape as a new session")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list every call (default: those that changed or failed)")
    p = add("make-tests", "write recorded calls out as a pytest module of regression tests")
    p.add_argument("--function", required=True,
                   help="qualname, module.qualname or a glob such as 'shop.*'")
    p.add_argument("--out", required=True, metavar="PATH", help="the test module to write (.py)")
    p.add_argument("--limit", type=int, help="at most this many calls, oldest first")
    p.add_argument("--all", action="store_true",
                   help="one test per call (default: one per distinct function and arguments)")
    add_selection(p)
    p = add("tree", "the recorded calls as a tree: each call's duration, function and"
                    " arguments, the calls it made below it, oldest first")
    p.add_argument("call_id", nargs="?", type=int, metavar="CALL_ID",
                   help="show this call and the calls below it")
    add_selection(p)
    p.add_argument("--depth", type=int, metavar="N", help="show N levels (default: all)")
    p.add_argument("--min-duration", type=float, metavar="SECONDS",
                   help="fold the calls shorter than this into one line per parent")
    p.add_argument("--limit", type=int, default=25, metavar="N",
                   help="show at most N calls under each parent, oldest first (default 25)")
    p = add("export", "write the calls out for other tools: a Chrome trace (Perfetto,"
                      " chrome://tracing), JSON lines or CSV")
    p.add_argument("--format", choices=["chrome", "jsonl", "csv"], default="chrome",
                   help="chrome: a trace event file (default); jsonl: one object per call;"
                        " csv: one row per call")
    p.add_argument("--out", metavar="FILE", help="the file to write (default: stdout)")
    add_selection(p)
    p.add_argument("--since", help="ISO date/time or relative time (10m, 2h, 3d)")
    p.add_argument("--until", help="ISO date/time or relative time")
    p = add("report", "a report of a run: results.csv, results_aggregate.csv, figures and an"
                      " index.html to open in a browser (the newest run by default)")
    p.add_argument("--out", metavar="DIR", default="calltape-report",
                   help="the folder to write (default: calltape-report)")
    p.add_argument("--title", help="the title of the page and figures")
    p.add_argument("--format", default="png,html", metavar="LIST",
                   help="comma-separated: png, svg, html (default: png,html)")
    add_selection(p)
    p.add_argument("--since", help="ISO date/time or relative time (10m, 2h, 3d): every"
                                   " session's calls from then, unless --session/--last")
    p.add_argument("--until", help="ISO date/time or relative time")
    p = add("prune", "delete the sessions that ended before a time, and their calls")
    p.add_argument("--older-than", required=True, metavar="AGE",
                   help="a relative time (12h, 7d) or an ISO date: sessions ended before it go")
    p = sub.add_parser("completion", help="print the shell completion of calltape"
                                          ' (eval "$(calltape completion bash)")')
    p.add_argument("shell", choices=["bash"], help="bash (zsh loads it after bashcompinit)")
    sub.add_parser("run", help="run a Python program, recording its calls"
                               " (see: calltape run --help)", add_help=False)
    _add_examples(sub)
    return parser


EXAMPLES = {
    "functions": "calltape functions\ncalltape functions app.db --json",
    "search": "calltape search --function price --since 2h --min-duration 0.01\n"
              "calltape search app.db --outcome raised --limit 100\n"
              "calltape search --test tests/test_cart.py::test_total --last",
    "show": "calltape show 1234\ncalltape show app.db 1234 --json",
    "sessions": "calltape sessions\ncalltape sessions app.db --json",
    "replay": "calltape replay --function 'shop.*' --trust\n"
              "calltape replay app.db 12 13 --allow shop -v",
    "make-tests": "calltape make-tests --function price --out tests/test_recorded_price.py"
                  " --allow shop",
    "tree": "calltape tree 1234 --depth 3\ncalltape tree --last --min-duration 0.001",
    "export": "calltape export --format chrome --out trace.json   (open it in ui.perfetto.dev)\n"
              "calltape export app.db --last --format jsonl --out calls.jsonl",
    "report": "calltape report            (the newest run, into calltape-report/index.html)\n"
              "calltape report app.db --session 3 --out report --format svg,html",
    "prune": "calltape prune --older-than 7d\ncalltape prune postgresql:///calls --older-than 12h",
    "completion": "calltape completion bash > ~/.local/share/bash-completion/completions/calltape\n"
                  'eval "$(calltape completion bash)"   # or this line in ~/.bashrc',
}


def _add_examples(sub: Any) -> None:
    """Each subcommand's --help ends with examples (EXAMPLES, printed as written)."""
    for name, p in sub.choices.items():
        if name in EXAMPLES:
            p.formatter_class = argparse.RawDescriptionHelpFormatter
            lines = "\n".join("  " + ln for ln in EXAMPLES[name].splitlines())
            p.epilog = f"example{'s' if chr(10) in EXAMPLES[name] else ''}:\n{lines}"


_COMMANDS = ("functions", "search", "show", "sessions", "replay", "make-tests", "tree",
             "export", "report", "prune")

_RUN_VALUED = {"--tape", "--include", "--exclude", "--max-depth", "--sample",
               "--max-value-bytes", "--max-value-depth"}


def build_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calltape run",
        usage="calltape run [options] (script.py | -m module) [args for the program ...]",
        description="Run a Python program as `python` would, recording the calls of its own"
                    " code (the script's directory, or the package of -m) onto a tape. At exit"
                    " one summary line goes to stderr; `calltape functions` shows the rest.",
        epilog="Options go before the program; everything after it is the program's own.\n\n"
               "examples:\n  calltape run --cpu --locals app.py --port 8080\n"
               "  calltape run --tape /tmp/t.db --include mylib -m app.main",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tape", metavar="PATH",
                   help="the tape file (default: $CALLTAPE_TAPE, then ./calltape.db)")
    p.add_argument("--fresh", action="store_true",
                   help="start a new tape instead of adding this run to it (the old tape"
                        " and its -wal and -shm files are removed)")
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
                   summary=not args.quiet, fresh=args.fresh)
    except (RunError, TapeError) as exc:
        print(f"calltape: {exc}", file=sys.stderr)
        return 2


def cmd_export(tape: Tape, args: argparse.Namespace, color: bool) -> None:
    """The calls of the selection written to --out (or stdout) by calltape.export."""
    from ._export import export

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
    from ._report import report

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
    """Retention: the sessions that ended before --older-than go, with their calls."""
    when = parse_time(args.older_than)
    if when.tzinfo is None:
        when = when.astimezone()
    sessions, calls = _native.prune(args.path, int(when.timestamp() * 1e9))
    if args.json:
        print(json.dumps({"sessions": sessions, "calls": calls}))
    else:
        print(f"calltape: pruned {sessions:,} session{'s' if sessions != 1 else ''}"
              f" ({calls:,} call{'s' if calls != 1 else ''}) from {tape.path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``calltape`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return run_main(argv[1:])
    if argv[:1] == ["completion"]:
        build_parser("completion").parse_args(argv)  # its usage errors and --help
        from ._completion import completion_script

        print(completion_script(build_parser(), build_run_parser()), end="")
        return 0
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in _COMMANDS else None)
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
                "make-tests": cmd_make_tests, "tree": cmd_tree, "export": cmd_export,
                "report": cmd_report, "prune": cmd_prune}
    args.path = path
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
