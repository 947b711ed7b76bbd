"""The call tree of a tape, as ``calltape tree`` prints it and ``--json`` holds it.

Each level is one ``Tape.children()`` search (the tape's children index
names the segments that hold a call's children, so a level costs what it
shows, not the size of the tape) and at most two ``Calls.count()`` for what
it does not show: the calls past the limit or below the depth (``more``)
and those shorter than the minimum duration (``short``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing nor dataclasses: the command's start is part of its time
if TYPE_CHECKING:
    from typing import Any


class Node:
    """One recorded call with the calls it made that are shown, and how many are not."""

    __slots__ = ("call", "children", "more", "short")

    def __init__(self, call: Any) -> None:
        self.call = call
        self.children: list[Node] = []
        self.more = 0   # calls it made directly, not shown: past the limit or below the depth
        self.short = 0  # calls it made directly, shorter than the minimum duration (folded)


def level(tape: Any, *, parent: Any = None, session: int | None = None,
          depth: int | None = None, min_duration: float | None = None,
          limit: int | None = None) -> Node:
    """The calls `parent` (a Call) made, or the roots of `session`, as the
    children of a Node (its ``call`` is `parent`, None for a session),
    `depth` levels down (None: all), at most `limit` per parent."""
    where: dict[str, Any] = {"parent": parent} if parent is not None else {"session": session}
    node = Node(parent)
    if depth is not None and depth <= 0:
        node.more = tape.children(**where).count()
        return node
    shown = list(tape.children(**where, min_duration=min_duration, limit=limit))
    if limit is not None and len(shown) == limit:
        node.more = tape.children(**where, min_duration=min_duration).count() - len(shown)
    if min_duration:
        node.short = tape.children(**where).count() - len(shown) - node.more
    below = None if depth is None else depth - 1
    node.children = [level(tape, parent=c, depth=below, min_duration=min_duration, limit=limit)
                     for c in shown]
    return node


def subtree(tape: Any, call: Any, *, depth: int | None = None,
            min_duration: float | None = None, limit: int | None = None) -> Node:
    """`call` and the calls below it, `depth` levels in all (call's own included)."""
    return level(tape, parent=call, depth=None if depth is None else depth - 1,
                 min_duration=min_duration, limit=limit)


def to_json(node: Node) -> dict[str, Any]:
    """A Node as plain data: the call's fields, its children, more and short."""
    c = node.call
    out: dict[str, Any] = {}
    if c is not None:
        out = {"id": c.id, "module": c.module, "qualname": c.qualname, "preview": c.preview,
               "duration": c.duration, "outcome": c.outcome, "thread": c.thread,
               "session": c.session, "start": c.start.isoformat()}
    out["children"] = [to_json(n) for n in node.children]
    out["more"] = node.more
    out["short"] = node.short
    return out
