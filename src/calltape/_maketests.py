"""``calltape make-tests``: recorded calls written out as a readable pytest module.

Values are written as Python literals by C (``_native.literal``, the engine's
``wire_literal``); values without one go into a data file next to the module
(``<stem>.calltape``, tape-encoded) that the tests read back through calltape's
restricted rebuild.

>>> write_tests(calltape.open("t.db", trust=True), "price", "tests/test_recorded_price.py")
"""

from __future__ import annotations

import keyword
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import RefusedGlobal, TapeError, __version__, _native
from ._native import Call, Tape
from ._replay import recorded_imports


@dataclass
class Written:
    """What make-tests wrote: the module, the data file (or None), and the calls
    that became tests, were skipped (id and reason) or were left out as
    duplicates of a test (the same function and arguments)."""

    module: str
    data: str | None
    tests: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)  # same function and arguments as a test


class _Values:
    """Literals where possible, ``VALUES[i]`` references to the data file
    otherwise, each with a note saying what it is (its type and a short repr)."""

    def __init__(self) -> None:
        self.stored: list[Any] = []
        self.notes: dict[int, str] = {}

    def source(self, value: Any) -> str:
        lit = _native.literal(value)
        if lit is not None:
            return lit
        self.stored.append(value)
        self.notes[len(self.stored) - 1] = _note(value)
        return f"VALUES[{len(self.stored) - 1}]"

    def comment(self, source: str) -> str:
        """``  # Item: Item(name='tea')`` for the stored values `source` names, or ""."""
        notes = [self.notes[int(i)] for i in re.findall(r"VALUES\[(\d+)\]", source)
                 if int(i) in self.notes]
        return f"  # {'; '.join(notes)}" if notes else ""


_NOTE_WIDTH = 70


def _note(value: Any) -> str:
    """What a value without a literal is, for a comment: its class and its
    repr cut to one short line, every character that is not printable
    escaped (a comment cannot end early, so text of the tape stays in it)."""
    cls = type(value)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - the value's own repr failed: its class says enough
        text = ""
    note = f"{name}: {text}" if text and not text.startswith(name) else text or name
    note = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in note)
    return note if len(note) <= _NOTE_WIDTH else note[:_NOTE_WIDTH - 1] + "…"


def _skip_reason(replayer: _native.Replayer, call: Call) -> str | None:
    """Why `call` cannot become a test: what a test module cannot import, then
    the Replayer's rules (the same reasons replay gives).  Values that do not
    rebuild raise (strict)."""
    if "<" in call.qualname:
        return f"{call.qualname} is nested or a lambda and cannot be imported"
    if call.module == "__main__":
        return "recorded in a script run as __main__, which a test cannot import"
    return replayer.skip_reason(call, strict=True)


def _import_folders(tape: Tape, sessions: set[int], out: str) -> list[str]:
    """The folders the tests import from, as the recorded program did (for a
    tape that does not say, the current folder): each relative to the test
    module's folder when the module lies inside it (a project's tests/
    folder: ".."), else absolute."""
    here = os.path.dirname(os.path.abspath(out))
    rows = [s for s in reversed(tape.sessions()) if s.id in sessions]
    recorded = _native.recorded_folders(rows, current=False) or _native.recorded_folders(())
    folders: list[str] = []
    for folder in recorded:
        inside = os.path.commonpath([here, folder]) == folder
        text = os.path.relpath(folder, here) if inside else folder
        if text not in folders:
            folders.append(text)
    return folders


def _arguments(call: Call, values: _Values) -> list[str]:
    bound = call.bound
    out = [values.source(v) for v in bound.args]
    odd = {}
    for name, value in bound.kwargs.items():
        if name.isidentifier() and not keyword.iskeyword(name):
            out.append(f"{name}={values.source(value)}")
        else:
            odd[name] = value
    if odd:
        out.append(f"**{values.source(odd)}")
    return out


def _text(s: str) -> str:
    """A str literal for ``s``, made by the same C routine as the values: text from
    a tape never reaches generated code any other way."""
    lit = _native.literal(str(s))
    assert lit is not None  # every str has one
    return lit


def _identifier(qualname: str, taken: set[str]) -> str:
    """A Python identifier for the function ``qualname``, distinct from ``taken``."""
    base = re.sub(r"\W", "_", qualname.replace(".", "_"), flags=re.ASCII)
    if not base.isidentifier() or keyword.iskeyword(base):
        base = f"f_{base}"
    return base if base not in taken else f"{base}_{len(taken)}"


def _call_source(fn: str, args: list[str], values: _Values) -> str:
    one_line = f"call({', '.join([fn, *args])})"
    if len(one_line) <= 80 and not any(values.comment(a) for a in args):
        return one_line
    inner = "".join(f"\n        {a},{values.comment(a)}" for a in [fn, *args])
    return f"call({inner}\n    )"


def _test_source(c: Call, fn: str, values: _Values) -> str:
    """One test function: the call with the recorded arguments and its check."""
    invocation = _call_source(fn, _arguments(c, values), values)
    head = (f"def test_{fn}_call_{c.id}():\n"
            f"    # call {c.id}, {c.start:%Y-%m-%d %H:%M:%S} UTC, session {c.session}\n")
    if c.outcome == "raised":
        exc = c.exception
        return head + (f"    assert_raised(lambda: {invocation},\n"
                       f"                  {_text(exc.type)}, {_text(exc.message)})\n")
    expected = values.source(c.result)
    return head + (f"    result = {invocation}\n"
                   f"    assert_same(result, {expected}){values.comment(expected)}\n")


def _arguments_key(c: Call) -> tuple[str, str, bytes | int]:
    """What makes two calls the same test: the function and the arguments
    (encoded as the tape encodes them; a call whose arguments do not encode
    again is its own)."""
    bound = c.bound
    try:
        key: bytes | int = _native.encode((bound.args, sorted(bound.kwargs.items())))
    except Exception:  # noqa: BLE001 - not encodable here: never merged with another
        key = c.id
    return c.module, c.qualname, key


def _tests(tape: Tape, calls: list[Call], out: str, every: bool = False
           ) -> tuple[Written, dict[tuple[str, str], str], _Values, list[str]]:
    """The tests for `calls`, the names of their functions and the values
    they need: one per distinct function and arguments unless `every`; a
    call whose values cannot be rebuilt here is skipped with the reason (a
    value the reader may not rebuild, or a damaged tape, refuses the whole
    run)."""
    replayer = _native.Replayer(tape)  # its rules only: nothing is replayed here
    values = _Values()
    names: dict[tuple[str, str], str] = {}
    tests: list[str] = []
    written = Written(out, None)
    seen: set[tuple[str, str, bytes | int]] = set()
    for c in calls:
        key = (c.module, c.qualname)
        fn = names.get(key) or _identifier(c.qualname, set(names.values()))
        stored = len(values.stored)
        try:
            reason = _skip_reason(replayer, c)
            same = None if reason or every else _arguments_key(c)
            if same is not None and same in seen:
                written.duplicates.append(c.id)
                continue
            if same is not None:
                seen.add(same)
            source = None if reason else _test_source(c, fn, values)
        except (RefusedGlobal, TapeError):  # a refusal, or a damaged tape: no test run
            raise
        except Exception as exc:  # noqa: BLE001 - the tape's value failed to rebuild here
            reason = f"its values cannot be rebuilt here: {type(exc).__name__}: {exc}"
            source = None
        if reason or source is None:
            del values.stored[stored:]
            written.skipped.append((c.id, reason or "no test"))
            continue
        names.setdefault(key, fn)
        tests.append(source)
        written.tests.append(c.id)
    return written, names, values, tests


def write_tests(tape: Tape, function: str, out: str, *, limit: int | None = None,
                command: str = "", every: bool = False,
                session: int | list[int] | None = None) -> Written:
    """Write a pytest module at ``out`` with one test per distinct function and
    arguments among the recorded calls of ``function`` (oldest first, at most
    ``limit`` calls; the oldest call of each), or per call when ``every``; of
    the ``session`` id or ids given, else of every session.  Raises ValueError
    naming the problem when there is nothing to write or ``out`` cannot be
    written."""
    if not out.endswith(".py"):
        raise ValueError(f"the test module must be a .py file, not {out!r}")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ValueError(f"cannot write {out}: the folder {folder} does not exist")
    stem = os.path.splitext(os.path.basename(out))[0]
    data_path = os.path.join(folder, stem + ".calltape")
    calls = list(tape.search(function=function, order="oldest", limit=limit, session=session))
    if not calls:
        raise ValueError(f"no recorded calls of {function!r} in {tape.path}")
    sessions = {c.session for c in calls}
    folders = _import_folders(tape, sessions, out)
    with recorded_imports(tape, sessions):
        written, names, values, tests = _tests(tape, calls, out, every)
    if not tests:
        why = "; ".join(f"call {i}: {r}" for i, r in written.skipped[:3])
        raise ValueError(f"none of the {len(calls)} recorded calls of {function!r} can become"
                         f" a test ({why})")
    modules = sorted({m for m, _ in names} | set(tape.allow))
    helpers = ["add_import_path", "assert_raised", "assert_same", "call", "resolve"]
    if values.stored:
        helpers.append("load_values")
    lines = [
        f'"""Regression tests made by calltape make-tests from {len(tests)} recorded calls.',
        "",
        "Each test calls today's function (the original, not a @calltape.record",
        "wrapper) with the arguments of one recorded call and checks the recorded",
        "result or exception with calltape.compare's rules (floats exactly, numpy",
        "arrays element-wise, objects without __eq__ by their encoded form).",
        "The project's modules are imported from where the recorded program found",
        "them (its sys.path[0] and working folder), so plain `pytest` runs these",
        "tests as `python -m pytest` does. MADE_FROM below says which tape, functions",
        "and command made them and which calls were left out and why."
        + (" Values with no Python literal are read from the .calltape file of the"
           " same name next to this one by calltape's restricted rebuild."
           if values.stored else ""),
        "",
        "Regenerate rather than edit.",
        '"""',
        "",
        f"from calltape.testing import {', '.join(sorted(helpers))}",
        "",
        f"add_import_path(__file__, {', '.join(_text(f) for f in folders)})",
        "",
        "MADE_FROM = {",
        f"    'tape': {_text(tape.path)},",
        f"    'functions': [{', '.join(_text(f'{m}.{q}') for m, q in names)}],",
        f"    'made': {_text(f'{datetime.now(UTC):%Y-%m-%d %H:%M} UTC by calltape {__version__}')},",
        f"    'command': {_text(command)},",
        "    'skipped': {" + "".join(f"\n        {i}: {_text(r)}," for i, r in written.skipped)
        + ("\n    }," if written.skipped else "},"),
        "}",
        "",
    ]
    lines += [f"{var} = resolve({_text(m)}, {_text(q)})" for (m, q), var in names.items()]
    if values.stored:
        lits = [_text(m) for m in modules]
        opts = ("trust=True" if tape.trust
                else f"allow=({', '.join(lits)}{',' if len(lits) == 1 else ''})")
        lines.append(f"VALUES = load_values(__file__, {opts})")
    text = "\n".join(lines) + "\n\n\n" + "\n\n".join(tests)
    try:
        if values.stored:
            with open(data_path, "wb") as f:
                f.write(_native.encode(values.stored))
            written.data = data_path
        elif os.path.exists(data_path):
            os.remove(data_path)  # left from an earlier run
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise ValueError(f"cannot write {exc.filename or out}: {exc.strerror}") from None
    return written
