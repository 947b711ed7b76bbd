"""Call rewriting: route every call inside one function through a wrapper.

>>> import calltape
>>> def wrapper(call, extras, /, *args, **kwargs):
...     print("calling", extras["source"], "at line", extras["ln_range"][0])
...     return call(*args, **kwargs)
>>> @calltape.wrap_calls(wrapper)
... def total(xs):
...     return sum(abs(x) for x in xs)

Each call written in the function's source, ``f(a, k=b)``, becomes
``wrapper(f, extras, a, k=b)``: the callee and its arguments are evaluated in
the same order as before, and the wrapper calls ``call(*args, **kwargs)`` (or
does something else) and returns what the call should return. ``extras`` is a
read-only dict (:class:`CallExtras`) with the call's line range in the file
(``ln_range``: ``(line,)`` or ``(first, last)``) and its source text as
written (``source``); it is the same object every time that call site runs.

This is a source transformation, done with :mod:`ast` at decoration time:

- the function's source is read (``inspect``), parsed at its real line and
  column (so every position, and every traceback's line and caret, is the
  original one), its calls rewritten, and compiled with the function's real
  file name and ``__future__`` flags;
- the ``def`` is compiled inside a factory function whose locals are the
  original's free variables (inside a class of the same name as the enclosing
  one, so private names are mangled alike and ``__class__`` is a cell), and only
  the code object is taken out: nothing is executed, the decorators are not
  run again, and the new function is built on the *original's closure cells*,
  so closures read and ``nonlocal`` writes are shared with the enclosing scope;
- the wrapper reaches the code as a constant of the code object (and each
  call's extras as another), so no helper name is added to the function's
  locals, globals, closure or signature: ``vars()``, ``locals()``,
  ``inspect.signature`` and the function's attributes are the original's;
- calls that read their caller's frame are left as they are: ``locals()``,
  ``globals()``, ``vars()`` and ``dir()`` without arguments, ``eval``/``exec``
  without an explicit namespace, ``breakpoint()``. A zero-argument
  ``super()`` is passed to the wrapper as ``super`` with the two arguments
  the compiler supplies (``__class__`` and the first argument).

The rewritten code object is cached per original code object, so a nested
decorated function defined many times is parsed and compiled once.
"""

from __future__ import annotations

import functools
import os
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ast
    from collections.abc import Callable, Iterable
    from typing import Any, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["CallExtras", "wrap_calls"]

# Placeholders compiled as string constants, then replaced by the objects in
# the code objects' co_consts. NUL and a per-process token: no source holds them.
_TOKEN = "\x00calltape.wrap_calls." + os.urandom(6).hex()
_WRAPPER = _TOKEN + ".wrapper"
_FACTORY = "__calltape_rewrite__"
# builtins whose result depends on the frame that calls them
_FRAME_READERS = frozenset({"locals", "globals", "breakpoint"})
_FRAME_READERS_NO_ARGS = frozenset({"vars", "dir"})


class CallExtras(dict):  # type: ignore[type-arg]
    """What the wrapper learns about one call site: ``ln_range`` and ``source``.

    >>> extras["ln_range"]     # (12,) or, for a call over several lines, (12, 14)
    >>> extras["source"]       # 'load_user(request.user_id)', as written in the file

    The same object each time the call site runs: it is read-only (a mutation
    raises TypeError) and hashable.
    """

    __slots__ = ()

    def _readonly(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a wrap_calls CallExtras is read-only: copy it with dict(extras)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (CallExtras, (dict(self),))

    def __repr__(self) -> str:
        return f"CallExtras({dict.__repr__(self)})"


def wrap_calls(wrapper: Callable[..., Any], ignore_builtins: bool = False,
               blacklist: Iterable[str] | None = None,
               whitelist: Iterable[str] | None = None) -> Callable[[F], F]:
    """Route every call inside the decorated function through ``wrapper``.

    ``wrapper(call, extras, /, *args, **kwargs)`` is called in place of each
    call ``call(*args, **kwargs)`` written in the function (nested functions,
    lambdas and comprehensions included) and returns the value the call should
    have; ``extras`` is a :class:`CallExtras`. Declare ``call`` and ``extras``
    positional-only (``/``) so that a call's own keyword arguments never clash
    with them.

    >>> def timed(call, extras, /, *args, **kwargs):
    ...     t0 = time.perf_counter()
    ...     try:
    ...         return call(*args, **kwargs)
    ...     finally:
    ...         print(extras["source"], time.perf_counter() - t0)
    >>> @calltape.wrap_calls(timed, ignore_builtins=True, blacklist={"log.debug", "cache[*]"})
    ... def handle(request):
    ...     ...

    - ``ignore_builtins``: leave calls of builtins (``len(x)``, ``print()``)
      alone, where the name is not rebound in the function or its module;
    - ``blacklist``: call names to leave alone, as written (``"self.load"``,
      ``"db.query"``); a string subscript without quotes (``"a[b]"`` matches
      ``a["b"]()``) and ``[*]`` for any subscript (``"a[*]"``);
    - ``whitelist``: the only call names to wrap (same patterns); give one
      list or the other. The collections are copied, never changed.

    Works on functions, methods (zero-argument ``super()`` too), classmethods
    and staticmethods (on either side of the decorator), closures, nested
    functions defined many times, generators, ``async def``. The function's
    source must be in a file (or in ``linecache``, as IPython's cells are);
    lambdas and functions made by ``exec`` are refused with a TypeError.
    """
    if not callable(wrapper):
        raise TypeError(f"wrap_calls needs a callable wrapper, not {type(wrapper).__name__}")
    plan = _Plan(shape="shared", ignore_builtins=bool(ignore_builtins),
                 blacklist=_names(blacklist, "blacklist"), whitelist=_names(whitelist, "whitelist"))

    def decorate(func: F) -> F:
        return _rewrite_callable(func, wrapper, plan)  # type: ignore[no-any-return]

    return decorate


class _Plan:
    """The options of one wrap_calls: what to wrap and how the wrapper is called.

    ``shape``: "shared" (``wrapper(call, extras, ...)`` with one CallExtras per
    site), "fresh" (a new plain dict at every call, as Recompyle 0.4 builds it),
    "none" (``wrapper(call, ...)``, Recompyle 0.2). ``unparse``: the extras'
    source as ``ast.unparse`` prints it (Recompyle) rather than as written.
    """

    __slots__ = ("blacklist", "ignore_builtins", "name", "shape", "unparse", "whitelist")

    def __init__(self, *, shape: str, ignore_builtins: bool, blacklist: frozenset[str],
                 whitelist: frozenset[str], unparse: bool = False, name: str = "wrap_calls") -> None:
        if blacklist and whitelist:
            raise ValueError(f"{name} takes a blacklist or a whitelist, not both")
        self.shape, self.ignore_builtins, self.unparse, self.name = shape, ignore_builtins, unparse, name
        self.blacklist, self.whitelist = blacklist, whitelist

    def key(self) -> tuple[Any, ...]:
        return (self.shape, self.ignore_builtins, self.unparse, self.blacklist, self.whitelist)


def _names(given: Iterable[str] | None, what: str, decorator: str = "wrap_calls") -> frozenset[str]:
    """A frozen copy of a blacklist or whitelist (the caller's object is never changed)."""
    if given is None:
        return frozenset()
    if isinstance(given, (str, bytes)):
        raise TypeError(f"{decorator}: {what} must be a collection of call names, not a string"
                        f" ({given!r}); write {{{given!r}}}")
    names = frozenset(given)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{decorator}: {what} holds {name!r}, not a call name (a str)")
    return names


def _rewrite_callable(obj: Any, wrapper: Callable[..., Any], plan: _Plan,
                      details: dict[str, Any] | None = None) -> Any:
    """``obj`` rewritten: a function, or a classmethod, staticmethod or bound
    method around one (rebuilt around the rewritten function)."""
    decorator = plan.name
    if isinstance(obj, (classmethod, staticmethod)):
        return type(obj)(_rewrite_callable(obj.__func__, wrapper, plan, details))
    if isinstance(obj, types.MethodType):
        return types.MethodType(_rewrite_callable(obj.__func__, wrapper, plan, details),
                                obj.__self__)
    if not isinstance(obj, types.FunctionType):
        what = "a class" if isinstance(obj, type) else f"a {type(obj).__name__}"
        raise TypeError(f"{decorator} rewrites functions written with def, and "
                        f"{getattr(obj, '__qualname__', obj)!r} is {what}")
    if obj in _MADE:
        raise TypeError(f"{decorator}: {obj.__qualname__} is already rewritten by wrap_calls;"
                        " apply it once, with one wrapper that does both")
    if hasattr(obj, "__wrapped__"):
        raise TypeError(f"{decorator}: {obj.__qualname__} is another decorator's wrapper (it has"
                        f" __wrapped__); put @{decorator}(...) below that decorator, next to the def")
    return _rewrite_function(obj, wrapper, plan, details)


class _Template:
    """The rewritten code of one original code object under one plan, with the
    wrapper still a placeholder; and the last code made from it."""

    __slots__ = ("code", "last", "new_source", "source")

    def __init__(self, code: types.CodeType, source: str, new_source: Callable[[], str]) -> None:
        self.code, self.source, self.new_source = code, source, new_source
        self.last: tuple[Any, types.CodeType] | None = None

    def with_wrapper(self, wrapper: Any) -> types.CodeType:
        last = self.last
        if last is not None and last[0] is wrapper:
            return last[1]
        code = _replace_consts(self.code, {_WRAPPER: wrapper})
        self.last = (wrapper, code)
        return code


class _Made:
    """The functions wrap_calls made (weakly held): a second wrap_calls on one is refused."""

    def __init__(self) -> None:
        self.ids: dict[int, Any] = {}

    def add(self, func: types.FunctionType) -> None:
        import weakref

        ident = id(func)
        self.ids[ident] = weakref.ref(func, lambda _: self.ids.pop(ident, None))

    def __contains__(self, func: object) -> bool:
        ref = self.ids.get(id(func))
        return ref is not None and ref() is func


_MADE = _Made()

class _PerCode:
    """What is made from one code object (a rewrite), made once per key and
    dropped with the code object: entries by id, checked by a weak reference."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[Any, dict[Any, Any]]] = {}

    def get(self, code: types.CodeType, key: Any, make: Callable[[], Any]) -> Any:
        import weakref

        entry = self.entries.get(id(code))
        if entry is None or entry[0]() is not code:
            ident = id(code)

            def forget(_: Any, ident: int = ident) -> None:
                self.entries.pop(ident, None)

            entry = (weakref.ref(code, forget), {})
            self.entries[ident] = entry
        made = entry[1]
        if key not in made:
            made[key] = make()  # what raises is not kept: asked again, it raises again
        return made[key]


# the rewrites of wrap_calls (by plan and globals) and of flat_profile
_PER_CODE = _PerCode()


def _template(func: types.FunctionType, plan: _Plan) -> _Template:
    key = (*plan.key(), id(func.__globals__))
    made: _Template = _PER_CODE.get(func.__code__, key, lambda: _Compiler(func, plan).template())
    return made


def _function_on(func: types.FunctionType, code: types.CodeType) -> types.FunctionType:
    """A function running ``code`` with ``func``'s globals, name, defaults
    (keyword ones copied) and closure cells, matched by name."""
    cells = dict(zip(func.__code__.co_freevars, func.__closure__ or (), strict=True))
    closure = tuple(cells[name] for name in code.co_freevars) or None
    new = types.FunctionType(code, func.__globals__, func.__name__, func.__defaults__, closure)
    if func.__kwdefaults__ is not None:
        new.__kwdefaults__ = dict(func.__kwdefaults__)
    return new


def _rewrite_function(func: types.FunctionType, wrapper: Callable[..., Any], plan: _Plan,
                      details: dict[str, Any] | None) -> types.FunctionType:
    template = _template(func, plan)
    try:
        hash(wrapper)
    except TypeError:  # the code object stays hashable (tools key dicts by code)
        wrapper = functools.partial(wrapper)
    new = _function_on(func, template.with_wrapper(wrapper))
    functools.update_wrapper(new, func)
    _MADE.add(new)
    if details is not None:
        details["original_func"] = func
        details["original_source"] = template.source
        details["new_source"] = template.new_source()
    return new


def _replace_consts(code: types.CodeType, table: dict[str, Any],
                    qualname: tuple[str, str] | None = None) -> types.CodeType:
    """``code`` and its nested code objects with the placeholder constants of
    ``table`` replaced, and with ``qualname`` (old prefix, new prefix) applied."""

    def const(value: Any) -> Any:
        if type(value) is str:
            return table.get(value, value)
        if isinstance(value, types.CodeType):
            return _replace_consts(value, table, qualname)
        if type(value) is tuple:
            return tuple(const(v) for v in value)
        return value

    changes: dict[str, Any] = {"co_consts": tuple(const(v) for v in code.co_consts)}
    if qualname is not None:
        old, new = qualname
        name = code.co_qualname
        if name == old or name.startswith(old + "."):
            changes["co_qualname"] = new + name[len(old):]
    return code.replace(**changes)


def _future_flags(code: types.CodeType) -> int:
    import __future__

    mask = 0
    for name in __future__.all_feature_names:
        mask |= getattr(__future__, name).compiler_flag
    return code.co_flags & mask


def _enclosing_class(qualname: str) -> str | None:
    """The innermost class around a function, from its code's qualname
    (``C.m.<locals>.g`` -> ``C``): private names are mangled with it."""
    parts = qualname.split(".")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] != "<locals>" and parts[i + 1] != "<locals>":
            return parts[i] if parts[i].isidentifier() else None
    return None


# file name -> (its text's hash, the names its module scope imports)
_IMPORTS: dict[str, tuple[int, frozenset[str]]] = {}


def _module_imports(filename: str) -> frozenset[str]:
    """The names bound by ``import`` at module level in ``filename`` (as
    linecache has it), or none when it does not parse."""
    import ast
    import linecache
    import warnings

    text = "".join(linecache.getlines(filename))
    known = _IMPORTS.get(filename)
    if known is not None and known[0] == hash(text):
        return known[1]
    names: set[str] = set()
    try:
        with warnings.catch_warnings():  # shown at its import already
            warnings.simplefilter("ignore")
            todo: list[ast.AST] = [ast.parse(text, filename=filename)]
    except (SyntaxError, ValueError):
        todo = []
    while todo:
        node = todo.pop()
        for sub in ast.iter_child_nodes(node):
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).partition(".")[0] for a in sub.names)
            elif not isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                      ast.Lambda, ast.expr)):
                todo.append(sub)  # if, try, with, for... at module level
    found = frozenset(names)
    _IMPORTS[filename] = (hash(text), found)
    return found


def _indent(text: str) -> str:
    return "".join("    " + line + "\n" for line in text.splitlines())


def _mangle(name: str, cls: str | None) -> str:
    if cls is None or not name.startswith("__") or name.endswith("__") or "." in name:
        return name
    stripped = cls.lstrip("_")
    return f"_{stripped}{name}" if stripped else name


class _Compiler:
    """Reads, parses, rewrites and compiles one function's source."""

    def __init__(self, func: types.FunctionType, plan: _Plan) -> None:
        self.func, self.plan, self.code = func, plan, func.__code__
        self.where = f"{func.__qualname__} ({self.code.co_filename}, line {self.code.co_firstlineno})"

    def fail(self, why: str) -> TypeError:
        return TypeError(f"{self.plan.name} cannot rewrite {self.where}: {why}")

    def read(self) -> tuple[list[str], str, int]:
        """(the def's lines as in the file, their text padded to its real line, first line)."""
        import inspect

        if self.code.co_name == "<lambda>":
            raise self.fail("it rewrites functions written with def, not lambdas")
        try:
            lines, first = inspect.getsourcelines(self.code)
        except (OSError, TypeError):
            raise self.fail("its source is not available (a function defined in the REPL, by exec"
                            " or in a file that is gone); define it in a file") from None
        text = "".join(lines)
        if not lines or lines[0][:1] not in (" ", "\t"):
            return lines, "\n" * (first - 1) + text, first
        if first < 2:
            raise self.fail("its source starts indented on the file's first line")
        # an indented def parses under "if 1:" at its own columns; the blank
        # lines put every node at its line in the file
        return lines, "\n" * (first - 2) + "if 1:\n" + text, first

    def parse(self) -> tuple[list[str], int, ast.FunctionDef | ast.AsyncFunctionDef, str | None]:
        """(the def's lines, its first line, its parsed node, the enclosing class)."""
        import ast

        lines, padded, first = self.read()
        try:
            tree = ast.parse(padded, filename=self.code.co_filename)
        except SyntaxError as exc:
            raise self.fail(f"its source does not parse ({exc.msg}, line {exc.lineno})") from None
        node = tree.body[0]
        if isinstance(node, ast.If):
            node = node.body[0]
        cls = _enclosing_class(self.code.co_qualname)
        self.check(node, cls)
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        return lines, first, node, cls

    def compile_def(self, node: ast.stmt, cls: str | None) -> types.CodeType:
        """The code object of ``node`` compiled as the function's (its free
        names, class, file and ``__future__`` flags), with nothing run."""
        import warnings

        module = self.factory(node, cls)
        with warnings.catch_warnings():
            # the placeholder constants are called: "'str' object is not
            # callable"; the source's own warnings were shown at its import
            warnings.simplefilter("ignore")
            compiled = compile(module, self.code.co_filename, "exec",
                               flags=_future_flags(self.code), dont_inherit=True)
        found = self.find(compiled)
        if found is None or set(found.co_freevars) != set(self.code.co_freevars):
            raise self.stale()
        return found

    def template(self) -> _Template:
        lines, first, node, cls = self.parse()
        rewriter = _CallRewriter(self.plan, lines, first, self.shadowed(node),
                                 self.func.__builtins__, "__class__" in self.code.co_freevars)
        rewriter.rewrite_def(node)
        found = self.compile_def(node, cls)
        code = _replace_consts(found, rewriter.constants,
                               (found.co_qualname, self.code.co_qualname))
        return _Template(code, "".join(lines), functools.partial(rewriter.display, node))

    def check(self, node: ast.stmt, cls: str | None) -> None:
        """The parsed def is the running function's (its name, kind and arguments)."""
        import ast

        kind = ast.AsyncFunctionDef if self.is_async() else ast.FunctionDef
        if not isinstance(node, kind) or node.name != self.code.co_name:
            raise self.stale()
        a, code = node.args, self.code
        names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
        names += [x for x in (a.vararg, a.kwarg) if x is not None]
        count = (code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 0x04)
                 + bool(code.co_flags & 0x08))  # CO_VARARGS, CO_VARKEYWORDS
        if [_mangle(x.arg, cls) for x in names] != list(code.co_varnames[:count]):
            raise self.stale()

    def stale(self) -> TypeError:
        return self.fail("its source does not match the running code (was the file edited"
                         " since it was imported?)")

    def is_async(self) -> bool:
        import inspect

        return bool(self.code.co_flags & (inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR))

    def shadowed(self, node: ast.AST) -> frozenset[str]:
        """Names that may not be the builtins of the same name inside the def:
        bound anywhere in it, free in it, or globals of its module."""
        import ast

        names = set(self.code.co_freevars) | set(self.func.__globals__)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and not isinstance(sub.ctx, ast.Load):
                names.add(sub.id)
            elif isinstance(sub, ast.arg):
                names.add(sub.arg)
            elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(sub.name)
            elif isinstance(sub, ast.alias):
                names.add((sub.asname or sub.name).partition(".")[0])
            elif isinstance(sub, (ast.Global, ast.Nonlocal)):
                names.update(sub.names)
            elif isinstance(sub, (ast.MatchAs, ast.MatchStar)) and sub.name:
                names.add(sub.name)
            elif isinstance(sub, ast.MatchMapping) and sub.rest:
                names.add(sub.rest)
            elif isinstance(sub, ast.ExceptHandler) and sub.name:
                names.add(sub.name)
        return frozenset(names)

    def factory(self, node: ast.stmt, cls: str | None) -> ast.Module:
        """``[class <cls>:] def __calltape_rewrite__(): <free names> = None; <the def>``.

        The class (at module level, so its name stays a global) mangles private
        names as the enclosing class does and holds ``__class__``; the
        factory's locals make the original's free names free in the def, and
        its ``global <the def's name>`` keeps a def that is not a closure of
        itself calling itself as a global.
        """
        import ast

        free = [n for n in self.code.co_freevars if not (cls and n == "__class__")]
        text = f"def {_FACTORY}():\n" + "".join(f"    {name} = None\n" for name in free)
        if _mangle(self.code.co_name, cls) not in free:  # a def calling itself as a global
            text += f"    global {self.code.co_name}\n"
        text += "    pass\n"
        if cls:
            text = f"class {cls}:\n" + _indent(text)
        # the module's imported names, never run: from 3.12 CPython calls
        # `mod.f()` without the method form when `mod` was imported
        imports = sorted(_module_imports(self.code.co_filename) & self.names(node))
        text = "".join(f"import sys as {name}\n" for name in imports) + text
        module = ast.parse(text)
        outer = module.body[len(imports)]
        if isinstance(outer, ast.ClassDef):
            outer = outer.body[0]
        assert isinstance(outer, ast.FunctionDef)
        outer.body[-1] = node
        return module

    @staticmethod
    def names(node: ast.AST) -> set[str]:
        import ast

        return {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name)}

    def find(self, code: types.CodeType) -> types.CodeType | None:
        """The compiled def's code object (by name and first line), outermost first."""
        todo = [code]
        while todo:
            c = todo.pop(0)
            for k in c.co_consts:
                if isinstance(k, types.CodeType):
                    if k.co_name == self.code.co_name and k.co_firstlineno == self.code.co_firstlineno:
                        return k
                    todo.append(k)
        return None


def _visit_children(node: Any, visit: Callable[[Any], Any]) -> Any:
    """``node`` with each child node replaced by ``visit(child)``."""
    import ast

    if isinstance(node, ast.AST):
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                setattr(node, field, [visit(v) for v in value])
            elif isinstance(value, ast.AST):
                setattr(node, field, visit(value))
    return node


def _visit_defaults(args: ast.arguments, visit: Callable[[Any], Any]) -> None:
    """A def's or lambda's default values, each replaced by ``visit(value)``."""
    args.defaults = [visit(d) for d in args.defaults]
    args.kw_defaults = [None if d is None else visit(d) for d in args.kw_defaults]


class _Scope:
    __slots__ = ("class_cell", "first_arg")

    def __init__(self, first_arg: str | None, class_cell: bool) -> None:
        self.first_arg, self.class_cell = first_arg, class_cell


def _first_arg(args: ast.arguments) -> str | None:
    positional = [*args.posonlyargs, *args.args]
    return positional[0].arg if positional else None


def _name_variants(node: ast.expr) -> set[str] | None:
    """The names a blacklist or whitelist entry may give for a call's callee:
    ``a.b["k"][i]`` gives ``a.b[k][i]``, ``a.b[*][i]``, ``a.b[k][*]``, ``a.b[*][*]``."""
    import ast

    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Constant):
        return {str(node.value)}
    if isinstance(node, ast.Attribute):
        base = _name_variants(node.value)
        return None if base is None else {f"{b}.{node.attr}" for b in base}
    if isinstance(node, ast.Call):
        return _name_variants(node.func)
    if isinstance(node, ast.Subscript):
        base = _name_variants(node.value)
        if base is None:
            return None
        inner = _name_variants(node.slice) or {ast.unparse(node.slice)}
        return {f"{b}[{i}]" for b in base for i in (*inner, "*")}
    return None


class _CallRewriter:
    """Turns ``f(a, k=b)`` into ``<wrapper>(f, <extras>, a, k=b)`` throughout a def.

    The body of the def is rewritten, with its nested functions, lambdas,
    classes and comprehensions (their decorators and default values too); the
    outer def's decorators, defaults and every annotation are left alone (the
    decorators and defaults are not run again: the original's are kept).
    """

    def __init__(self, plan: _Plan, lines: list[str], first: int, shadowed: frozenset[str],
                 builtins: dict[str, Any], class_cell: bool) -> None:
        self.plan, self.lines, self.first, self.shadowed = plan, lines, first, shadowed
        self.builtins = builtins
        self.scopes = [_Scope(None, class_cell)]
        self.constants: dict[str, Any] = {}
        self.display_names: dict[str, Any] = {}

    # -- traversal ---------------------------------------------------------
    def rewrite_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scopes.append(_Scope(_first_arg(node.args), self.scopes[-1].class_cell))
        node.body = [self.visit(s) for s in node.body]
        self.scopes.pop()

    def visit(self, node: Any) -> Any:
        import ast

        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.decorator_list = [self.visit(d) for d in node.decorator_list]
            self.visit_defaults(node.args)
            self.rewrite_def(node)
            return node
        if isinstance(node, ast.Lambda):
            self.visit_defaults(node.args)
            self.scopes.append(_Scope(_first_arg(node.args), self.scopes[-1].class_cell))
            node.body = self.visit(node.body)
            self.scopes.pop()
            return node
        if isinstance(node, ast.ClassDef):
            node.decorator_list = [self.visit(d) for d in node.decorator_list]
            node.bases = [self.visit(b) for b in node.bases]
            node.keywords = [self.visit(k) for k in node.keywords]
            self.scopes.append(_Scope(None, True))
            node.body = [self.visit(s) for s in node.body]
            self.scopes.pop()
            return node
        if isinstance(node, ast.AnnAssign):  # the annotation stays as written
            node.target = self.visit(node.target)
            node.value = self.visit(node.value) if node.value is not None else None
            return node
        if isinstance(node, ast.Call):
            return self.visit_call(node)
        return _visit_children(node, self.visit)

    def visit_defaults(self, args: ast.arguments) -> None:
        _visit_defaults(args, self.visit)

    # -- one call ----------------------------------------------------------
    def visit_call(self, node: ast.Call) -> ast.expr:
        import ast

        how = self.decide(node)
        extras = self.extras(node) if how != "keep" else None  # from the call as written
        node.func = self.visit(node.func)
        node.args = [self.visit(a) for a in node.args]
        node.keywords = [self.visit(k) for k in node.keywords]
        if how == "keep":
            return node
        wrapper = ast.Constant(_WRAPPER)
        made: list[ast.expr] = [wrapper]
        args: list[ast.expr] = [node.func]
        if extras is not None:
            args.append(extras)
            made += ast.walk(extras)  # type: ignore[arg-type]
        if how == "super":  # what the compiler passes to a zero-argument super()
            explicit = [ast.Name("__class__", ast.Load()),
                        ast.Name(self.scopes[-1].first_arg, ast.Load())]
            args += explicit
            made += explicit
        else:
            args += node.args
        for sub in made:  # the call's own position, as every traceback shows it
            ast.copy_location(sub, node)
        return ast.copy_location(ast.Call(wrapper, args, node.keywords), node)

    def decide(self, node: ast.Call) -> str:
        """How to rewrite one call: wrap, super (made explicit, then wrapped) or keep."""
        import ast

        func, plan = node.func, self.plan
        if isinstance(func, ast.Name) and func.id not in self.shadowed and func.id in self.builtins:
            name, bare = func.id, not node.args and not node.keywords
            if name == "super" and bare:
                scope = self.scopes[-1]
                return "super" if scope.first_arg and scope.class_cell else "keep"
            if name in _FRAME_READERS or (bare and name in _FRAME_READERS_NO_ARGS):
                return "keep"
            if name in ("eval", "exec") and self.own_namespace(node) is False:
                return "keep"
            if plan.ignore_builtins:
                return "keep"
        if plan.blacklist or plan.whitelist:
            variants = _name_variants(func) or set()
            if plan.blacklist:
                return "keep" if variants & plan.blacklist else "wrap"
            return "wrap" if variants & plan.whitelist else "keep"
        return "wrap"

    @staticmethod
    def own_namespace(node: ast.Call) -> bool:
        """An eval/exec given its globals (else it reads the caller's frame)."""
        import ast

        positional = [a for a in node.args if not isinstance(a, ast.Starred)]
        if len(positional) != len(node.args) or any(k.arg is None for k in node.keywords):
            return False
        return len(positional) >= 2 or any(k.arg == "globals" for k in node.keywords)

    def extras(self, node: ast.Call) -> ast.expr | None:
        import ast

        if self.plan.shape == "none":
            return None
        start, end = node.lineno, node.end_lineno
        ln_range = (start,) if end is None or end == start else (start, end)
        source = ast.unparse(node) if self.plan.unparse else self.segment(node)
        if self.plan.shape == "fresh":
            return ast.Dict([ast.Constant("ln_range"), ast.Constant("source")],
                            [ast.Constant(ln_range), ast.Constant(source)])
        placeholder = f"{_TOKEN}.extras.{len(self.constants)}"
        self.constants[placeholder] = CallExtras(ln_range=ln_range, source=source)
        return ast.Constant(placeholder)

    def segment(self, node: ast.expr) -> str:
        """The node's text as written (its columns are UTF-8 byte offsets)."""
        import ast

        assert node.end_lineno is not None and node.end_col_offset is not None
        rows = [line.encode() for line in
                self.lines[node.lineno - self.first:node.end_lineno - self.first + 1]]
        if not rows:
            return ast.unparse(node)
        rows[-1] = rows[-1][:node.end_col_offset]
        rows[0] = rows[0][node.col_offset:]
        return b"".join(rows).decode(errors="replace")

    # -- Recompyle's rewrite_details["new_source"] -------------------------
    def display(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
        """The rewritten def as source, the wrapper named ``_recompyle_wrap``
        and each call's extras written out (as Recompyle shows it)."""
        import ast
        import copy

        constants = self.constants

        class Show(ast.NodeTransformer):
            def visit_Constant(self, c: ast.Constant) -> ast.expr:
                if c.value == _WRAPPER:
                    return ast.Name("_recompyle_wrap", ast.Load())
                if isinstance(c.value, str) and c.value in constants:
                    return ast.parse(repr(dict(constants[c.value])), mode="eval").body
                return c

        shown = Show().visit(copy.deepcopy(node))
        shown.decorator_list = []
        return ast.unparse(shown)
