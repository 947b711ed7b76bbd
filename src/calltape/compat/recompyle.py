"""Recompyle's call wrapping (``recompyle.wrap_calls``) over calltape's rewriter.

>>> from calltape.compat.recompyle import wrap_calls      # was: from recompyle import wrap_calls
>>> def basic_wrapper(__call, _, *args, **kwargs):
...     print(f"Before {__call.__qualname__}")
...     return __call(*args, **kwargs)
>>> @wrap_calls(wrapper=basic_wrapper)
... def example_function(count: int) -> str:
...     return str(count)

The two names and their call shapes are the original's:

- ``wrap_calls(*, wrapper, ignore_builtins=False, blacklist=None,
  whitelist=None, rewrite_details=None)`` (Recompyle 0.4.1): each call runs
  ``wrapper(call, extras, *args, **kwargs)``, ``extras`` a new dict at every
  call, ``{"ln_range": (first,) or (first, last), "source": ast.unparse(call)}``;
- ``rewrite_wrap_calls(*, wrap_call, ...)`` (the same options; Recompyle 0.2's
  first name): each call runs ``wrap_call(call, *args, **kwargs)``, without
  extras.

``rewrite_details``, when given, receives ``original_func``,
``original_source`` and ``new_source`` (the rewritten def, the wrapper named
``_recompyle_wrap`` as the original shows it).

The work is :func:`calltape.wrap_calls`'s, so unlike the original: closures
(``nonlocal`` too), zero-argument ``super()`` and ``async def`` work;
decorators of nested functions are kept; the caller's blacklist is never
changed (``ignore_builtins`` skips the builtins the function does not rebind);
a nested decorated function may be defined many times; the signature gains no
``_recompyle_wrap`` keyword and ``vars()`` inside the function does not see the
wrapper; an unavailable source is a TypeError naming the function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from calltape.rewrite import _names, _Plan, _rewrite_callable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["rewrite_wrap_calls", "wrap_calls"]


def _decorator(wrapper: Callable[..., Any], plan: _Plan,
               rewrite_details: dict[str, Any] | None) -> Callable[[Any], Any]:
    if not callable(wrapper):
        raise TypeError(f"{plan.name} needs a callable wrapper, not {type(wrapper).__name__}")

    def _call_wrapper(target_func: Any) -> Any:
        return _rewrite_callable(target_func, wrapper, plan, rewrite_details)

    return _call_wrapper


def wrap_calls(*, wrapper: Callable[..., Any], ignore_builtins: bool = False,
               blacklist: Iterable[str] | None = None, whitelist: Iterable[str] | None = None,
               rewrite_details: dict[str, Any] | None = None) -> Callable[[Any], Any]:
    """Every call inside the decorated function runs ``wrapper(call, extras, *args, **kwargs)``."""
    plan = _Plan(shape="fresh", unparse=True, ignore_builtins=bool(ignore_builtins),
                 blacklist=_names(blacklist, "blacklist"), whitelist=_names(whitelist, "whitelist"))
    return _decorator(wrapper, plan, rewrite_details)


def rewrite_wrap_calls(*, wrap_call: Callable[..., Any], ignore_builtins: bool = False,
                       blacklist: Iterable[str] | None = None,
                       whitelist: Iterable[str] | None = None,
                       rewrite_details: dict[str, Any] | None = None) -> Callable[[Any], Any]:
    """Every call inside the decorated function runs ``wrap_call(call, *args, **kwargs)``."""
    name = "rewrite_wrap_calls"
    plan = _Plan(shape="none", unparse=True, ignore_builtins=bool(ignore_builtins), name=name,
                 blacklist=_names(blacklist, "blacklist", name),
                 whitelist=_names(whitelist, "whitelist", name))
    return _decorator(wrap_call, plan, rewrite_details)
