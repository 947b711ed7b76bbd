"""flat_profile's call-site rewrite: each direct call of a function, timed in C.

>>> run = call_sites(handle)   # None when handle's source cannot be used
>>> # in run's code, ``load_user(request.user_id)`` is
>>> # ``flat_site_call(<offset>, load_user, request.user_id)``

``calltape.flat_profile`` calls the rewrite instead of the function: each call
written directly in the function's body (its comprehensions too where CPython
inlines them, 3.12 on) passes the callee and its arguments to
``_native.flat_site_call`` with the offset of that call's CALL instruction in
the *original* code, so breakdowns and tape records name the same call sites
as the event-driven profiler does, and no event is set at all. Calls in nested
functions, lambdas, class bodies and generator expressions are not direct and
stay as written (their default values, decorators, bases and first iterable
are direct and are rewritten), and so do calls with ``*`` or ``**`` arguments,
whose errors CPython words with the callee's name. A zero-argument
``super()`` called from ``flat_site_call`` still finds its frame: a C
function runs in its caller's.

The rewrite is compiled the way :mod:`calltape.rewrite` compiles
``wrap_calls`` (the function's own file, lines, columns, free names and
class), and is used only when the source, compiled unchanged the same way,
gives back a code object equal to the running one: a file edited since its
import, or a def this cannot reproduce, leaves the function to the events.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

from . import _native
from .rewrite import (
    _PER_CODE,
    _Compiler,
    _function_on,
    _Plan,
    _replace_consts,
    _visit_children,
    _visit_defaults,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ast

__all__ = ["call_sites"]

_SITE = "\x00calltape.flat_site_call"
_CALLS = frozenset({"CALL", "CALL_KW", "CALL_FUNCTION_EX"})
_INLINED_COMPREHENSIONS = sys.version_info >= (3, 12)  # PEP 709
_CO_SUSPENDS = (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE
                | inspect.CO_ASYNC_GENERATOR)


def call_sites(func: Any) -> types.FunctionType | None:
    """``func`` with each direct call timed by ``_native.flat_site_call``, built
    on func's own globals, defaults and closure cells; None when func is not a
    plain function written with def whose source matches its code."""
    if not isinstance(func, types.FunctionType) or func.__code__.co_flags & _CO_SUSPENDS:
        return None
    code = _PER_CODE.get(func.__code__, "flat_profile", lambda: _rewrite_or_none(func))
    return None if code is None else _function_on(func, code)


def _rewrite_or_none(func: types.FunctionType) -> types.CodeType | None:
    try:
        return _rewrite(func)
    except (TypeError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # the events profile it


def _rewrite(func: types.FunctionType) -> types.CodeType | None:
    import copy

    plan = _Plan(shape="flat", ignore_builtins=False, blacklist=frozenset(),
                 whitelist=frozenset(), name="flat_profile")
    compiler = _Compiler(func, plan)
    _lines, _first, node, cls = compiler.parse()
    original = func.__code__
    # compiled inside a factory, the def is CO_NESTED even where the original is not
    flags = {"co_flags": original.co_flags}
    if compiler.compile_def(copy.deepcopy(node), cls).replace(**flags) != original:
        return None  # the source is not what runs
    sites = _SiteRewriter(_call_offsets(original))
    sites.rewrite_def(node)
    if not sites.count:
        return None
    found = compiler.compile_def(node, cls).replace(**flags)
    return _replace_consts(found, {_SITE: _native.flat_site_call},
                           (found.co_qualname, original.co_qualname))


def _call_offsets(code: types.CodeType) -> tuple[dict[Any, Any], ...]:
    """The CALL instructions of ``code`` (not of its nested code) by their
    full source position and by where they end, and its LOAD_SUPER_ATTRs
    (``super().m`` in one, 3.12 on) by where they start: (offset in bytes,
    the instruction's own position)."""
    import dis

    full: dict[Any, Any] = {}
    ends: dict[Any, Any] = {}
    supers: dict[Any, Any] = {}
    for ins in dis.get_instructions(code):
        p = ins.positions
        if p is None or p.end_lineno is None:
            continue
        found = (ins.offset, p)
        if ins.opname in _CALLS:
            full.setdefault((p.lineno, p.col_offset, p.end_lineno, p.end_col_offset), found)
            ends.setdefault((p.end_lineno, p.end_col_offset), found)
        elif ins.opname == "LOAD_SUPER_ATTR":
            supers.setdefault((p.lineno, p.col_offset), found)
    return full, ends, supers


class _SiteRewriter:
    """Turns each direct call ``f(a, k=b)`` of a def into
    ``<site>(<offset>, f, a, k=b)``; ``count`` says how many it turned."""

    def __init__(self, offsets: tuple[dict[Any, Any], ...]) -> None:
        self.full, self.ends, self.supers = offsets
        self.count = 0

    def rewrite_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        node.body = [self.visit(s) for s in node.body]

    def visit(self, node: Any) -> Any:
        import ast

        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            return self.visit_definition(node)
        if isinstance(node, ast.GeneratorExp) or (
                not _INLINED_COMPREHENSIONS
                and isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp))):
            # a code object of its own: only its first iterable runs here
            node.generators[0].iter = self.visit(node.generators[0].iter)
            return node
        if isinstance(node, ast.Call):
            return self.visit_call(node)
        return _visit_children(node, self.visit)

    def visit_definition(self, node: Any) -> Any:
        """What a nested def, lambda or class runs where it is defined."""
        import ast

        if not isinstance(node, ast.Lambda):
            node.decorator_list = [self.visit(d) for d in node.decorator_list]
        if isinstance(node, ast.ClassDef):
            node.bases = [self.visit(b) for b in node.bases]
            node.keywords = [self.visit(k) for k in node.keywords]
            return node
        _visit_defaults(node.args, self.visit)
        return node

    def visit_call(self, node: ast.Call) -> ast.expr:
        import ast

        found = self.offset(node)
        node.func = self.visit(node.func)
        node.args = [self.visit(a) for a in node.args]
        node.keywords = [self.visit(k) for k in node.keywords]
        if found is None:
            return node  # compiled away (dead code)
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
                k.arg is None for k in node.keywords):
            # f(*a, **k) left as written: CPython's own errors for a bad * or
            # ** argument name the callee they would name otherwise
            return node
        self.count += 1
        offset, where = found
        site = ast.Call(ast.Constant(_SITE), [ast.Constant(offset), node.func, *node.args],
                        node.keywords)
        # the CALL's own position (a method call over several lines starts at
        # its attribute), as tracebacks and f_lineno show it
        for sub in (site, site.func, site.args[0]):
            sub.lineno, sub.col_offset = where.lineno, where.col_offset
            sub.end_lineno, sub.end_col_offset = where.end_lineno, where.end_col_offset
        return site

    def offset(self, node: ast.Call) -> tuple[int, Any] | None:
        found = self.full.get((node.lineno, node.col_offset, node.end_lineno, node.end_col_offset))
        if found is None:  # a method call's CALL starts at the attribute's line
            found = self.ends.get((node.end_lineno, node.end_col_offset))
        if found is None:  # super().m: LOAD_SUPER_ATTR calls super itself
            found = self.supers.get((node.lineno, node.col_offset))
        return found
