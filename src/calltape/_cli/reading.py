"""``calltape functions``, ``search``, ``show`` and ``sessions``: printing what
the tape holds, as tables or JSON."""

from __future__ import annotations

import argparse
import json
import sys

from .. import ExceptionInfo, Tape
from .common import (
    UsageError,
    _argv_text,
    _call_json,
    _cell,
    _escape,
    _local,
    _readable,
    _repr,
    _table,
    _where,
    cut_middle,
    format_duration,
    parse_energy,
    parse_time,
    selected_sessions,
)

TYPE_CHECKING = False  # typing is not loaded: every command pays its import
if TYPE_CHECKING:
    from typing import Any


SORTS: dict[str, Any] = {  # pstats' sort_stats: the largest first, names A to Z
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
    fns.sort(key=lambda f: (SORTS[args.sort](f), f.module, f.qualname))
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
    from .._markers import Redacted, Truncated, Unencodable, Unreadable

    if isinstance(value, (Unreadable, Redacted, Truncated, Unencodable)):
        text = _repr(value)
    else:
        text = f"{_repr(value)}  ({_type_name(value)})"
    return _escape(text, keep_newlines=True).replace("\n", "\n      ")


def _readable_slots(tape: Tape, c: Any) -> dict[str, Any]:
    """The call's locals, globals and yielded values (None when not recorded),
    each entry rebuilt on its own as the arguments are."""
    from .._replay import recorded_imports

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
    from .._markers import Unreadable

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
