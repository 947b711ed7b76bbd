"""``calltape tree``: the recorded calls as a tree, oldest first."""

from __future__ import annotations

import argparse
import json
import sys

from .. import Tape
from .common import UsageError, _argv_text, cut_middle, selected_sessions

TYPE_CHECKING = False  # typing is not loaded: every command pays its import
if TYPE_CHECKING:
    from typing import Any


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
    from .._tree import level, line, print_children, subtree, to_json, utf

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
