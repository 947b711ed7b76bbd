"""The call tree of a tape, as ``calltape tree`` prints it and ``--json`` holds it.

Each level is one ``Tape.children()`` search (the tape's children index
names the segments that hold a call's children, so a level costs what it
shows, not the size of the tape) and at most two ``Calls.count()`` for what
it does not show: the calls past the limit or below the depth (``more``)
and those shorter than the minimum duration (``short``).
"""

from __future__ import annotations

import sys

from . import _native

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


# ---- printing, for calltape tree ----

def utf() -> bool:
    """Whether stdout takes the tree's box-drawing characters and the ellipsis."""
    return (sys.stdout.encoding or "").lower().replace("-", "").replace("_", "") == "utf8"


def ellipsis() -> str:
    return "\u2026" if utf() else "..."


def line(c: Any, width: int) -> str:
    """One call of the tree: duration, function, arguments (cut to `width`), outcome."""
    name = f"{c.module}.{c.qualname}" if c.module else c.qualname
    preview = c.preview
    if len(preview) > width:
        preview = preview[:width - 1] + ellipsis()
    mark = {"raised": "  [raised]", "closed": "  [closed]"}.get(c.outcome, "")
    return f"{_native.format_duration(c.duration)}  {name}({preview}){mark}"


def print_children(node: Any, prefix: str, glyphs: tuple[str, str, str, str], color: bool,
                min_duration: float | None) -> None:
    """Prints the children of `node` below `prefix`, then its folded lines;
    with no glyphs (a session's roots), each at the left margin."""
    tee, last, bar, blank = glyphs
    folded = []
    if node.more:
        folded.append(f"{ellipsis()} {node.more:,} more call{'s' if node.more != 1 else ''}")
    if node.short:
        folded.append(f"{node.short:,} call{'s' if node.short != 1 else ''}"
                      f" under {_native.format_duration(min_duration)}")
    dim = (lambda s: f"\033[2m{s}\033[0m") if color else (lambda s: s)
    for i, child in enumerate(node.children):
        end = i == len(node.children) - 1 and not folded
        print(prefix + (last if end else tee) + line(child.call, 80))
        print_children(child, prefix + (blank if end else bar), glyphs, color, min_duration)
    for i, text in enumerate(folded):
        print(prefix + (last if i == len(folded) - 1 else tee) + dim(text))
