"""Recompyle's names over calltape: call wrapping and the flat profiler.

>>> from calltape.compat.recompyle import flat_profile    # was: from recompyle import flat_profile
>>> @flat_profile(time_limit=0.5)
... def handle(request): ...

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

import inspect
import logging
import os
import types
from collections import defaultdict
from operator import itemgetter
from pprint import pformat
from typing import TYPE_CHECKING, Any

from calltape.flat import FlatResult
from calltape.flat import _decorator as _flat_decorator
from calltape.rewrite import _names, _Plan, _rewrite_callable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["default_above_log", "default_below_log", "flat_profile", "rewrite_wrap_calls",
           "shallow_call_profiler", "wrap_calls"]

# the original's logger: a logging configuration written for it keeps working
log = logging.getLogger("recompyle.applied.flat_profiler")


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


# ---- the flat profiler: calltape.flat_profile under the original's names ----

def _qualname(callee: Any) -> str:
    """The name the original files a call under (its ``__qualname__``)."""
    if isinstance(callee, types.CodeType):  # 3.11 knows a Python callee by its code
        return callee.co_qualname
    return (getattr(callee, "__qualname__", None) or getattr(callee, "__name__", None)
            or type(callee).__name__)


def _times(result: FlatResult) -> dict[str, list[float]]:
    """The original's ``times``: callee name -> times.  calltape keeps a total per
    call site, not each call: each list holds one total per call site of that
    name, so ``sum()`` gives what the original's does."""
    times: defaultdict[str, list[float]] = defaultdict(list)
    for c in result.calls:
        times[_qualname(c.callee)].append(c.total)
    return dict(times)


def _sorted_times(times: dict[str, list[float]]) -> tuple[str, ...]:
    sums = ((name, sum(t)) for name, t in times.items())
    return tuple(f"{name}: {t:.3g}s" for name, t in sorted(sums, key=itemgetter(1), reverse=True))


def default_below_log(total: float, limit: float, times: dict[str, list[float]],
                      func: Callable[..., Any]) -> None:
    """The original's record below the limit (INFO, the total only)."""
    log.info(f"{func.__qualname__} finished in {total:g}s, below limit of {limit:g}s")


def default_above_log(total: float, limit: float, times: dict[str, list[float]],
                      func: Callable[..., Any]) -> None:
    """The original's record at or over the limit (INFO, with the sorted times)."""
    log.info(f"{func.__qualname__} finished in {total:g}s, above limit of {limit:g}s"
             f"\n{pformat(_sorted_times(times))}")


def _adapt(cb: Callable[..., Any] | None) -> Callable[[FlatResult], Any] | None:
    """A callback called as the original calls it: (total, limit, times, func)."""
    if cb is None:
        return None
    if not callable(cb):
        raise TypeError(f"flat_profile callbacks must be callable, not {cb!r}")

    def call(result: FlatResult) -> Any:
        return cb(result.total, result.limit, _times(result), result.function)

    return call


def flat_profile(*, time_limit: float,
                 below_callback: Callable[..., Any] | None = default_below_log,
                 above_callback: Callable[..., Any] | None = default_above_log,
                 ignore_builtins: bool = False, blacklist: Iterable[str] | None = None,
                 whitelist: Iterable[str] | None = None,
                 rewrite_details: dict[str, Any] | None = None) -> Callable[[Any], Any]:
    """Time every call made directly inside the decorated function (Recompyle 0.2).

    ``below_callback`` / ``above_callback`` get ``(total, limit, times, func)``;
    ``blacklist`` / ``whitelist`` name callees (qualified names, or
    ``module.qualname``).  The work is :func:`calltape.flat_profile`'s: the
    function is not rewritten, so closures, ``super()`` and ``async def`` work.
    """
    if below_callback is None and above_callback is None:
        raise ValueError("At least one of below_callback and above_callback must be non-None")
    if not isinstance(time_limit, (int, float)) or isinstance(time_limit, bool) or time_limit < 0:
        raise ValueError(f"flat_profile: time_limit must be 0 or more seconds, not {time_limit!r}")
    keep = _names(whitelist, "whitelist", "flat_profile") if whitelist is not None else None
    drop = _names(blacklist, "blacklist", "flat_profile") if blacklist is not None else None
    inner = _flat_decorator(float(time_limit), _adapt(below_callback), _adapt(above_callback), log,
                            logging.INFO if below_callback is default_below_log else 0,
                       logging.INFO if above_callback is default_above_log else 0,
                       sorted(keep) if keep is not None else None,
                       sorted(drop) if drop is not None else None,
                       bool(ignore_builtins), bool(os.environ.get("CALLTAPE_TAPE")))

    def decorate(func: Any) -> Any:
        if rewrite_details is not None:  # nothing is rewritten: the source stays
            source = inspect.getsource(func)
            rewrite_details.update(original_func=func, original_source=source,
                                   new_source=source)
        return inner(func)

    return decorate


def shallow_call_profiler(*, time_limit: float,
                          below_callback: Callable[..., Any] | None = default_below_log,
                          above_callback: Callable[..., Any] | None = default_above_log,
                          ) -> Callable[[Any], Any]:
    """Recompyle 0.1's name of :func:`flat_profile`."""
    return flat_profile(time_limit=time_limit, below_callback=below_callback,
                        above_callback=above_callback)
