"""calltape.compat.recompyle: Recompyle's call wrapping with its names and call
shapes (wrap_calls 0.4.1, rewrite_wrap_calls 0.2.1), its README's examples with
only the import changed, and the original's defects (the seeds' README) fixed."""

import asyncio
import functools
import inspect
import sys

import pytest
from _util import run_python

from calltape.compat import recompyle
from calltape.compat.recompyle import rewrite_wrap_calls, wrap_calls

# Recompyle 0.4.1's README, "Using the wrap_calls decorator", with its output.
README_041 = '''
from collections.abc import Callable
from typing import ParamSpec, TypeVar

{import_line}

P = ParamSpec("P")
T = TypeVar("T")


def basic_wrapper(__call: Callable[P, T], _, *args: P.args, **kwargs: P.kwargs) -> T:
    """Basic wrapper that prints before and after each call."""
    print(f"Before {{__call.__qualname__}}, args: {{args}}, kwargs: {{kwargs}}")
    try:
        return __call(*args, **kwargs)
    finally:
        print(f"After {{__call.__qualname__}}")


def other_function(val: float) -> str:
    """Some other function being called."""
    return str(val)


@wrap_calls(wrapper=basic_wrapper)
def example_function(count: int) -> str:
    """Function we are rewriting to wrap calls."""
    for v in range(count):
        int(v)
    return other_function(val=123.45)


print("Before calling wrapped function")
print("Printing function return:", example_function(2))
print("After calling wrapped function")
'''

README_041_OUTPUT = """\
Before calling wrapped function
Before range, args: (2,), kwargs: {}
After range
Before int, args: (0,), kwargs: {}
After int
Before int, args: (1,), kwargs: {}
After int
Before other_function, args: (), kwargs: {'val': 123.45}
After other_function
Printing function return: 123.45
After calling wrapped function
"""

# Recompyle 0.2.1's README example: its wrapper takes no extras, the shape of
# 0.2's rewrite_wrap_calls (the decorator's 0.2 name and keyword, wrap_call=).
README_021 = '''
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from calltape.compat.recompyle import rewrite_wrap_calls

P = ParamSpec("P")
T = TypeVar("T")

def basic_wrapper(__call: Callable[P, T],  *args: P.args, **kwargs: P.kwargs) -> T:
    """Basic wrapper that prints before and after each call."""
    print(f"Before {__call.__qualname__}, args: {args}, kwargs: {kwargs}")
    try:
        return __call(*args, **kwargs)
    finally:
        print(f"After {__call.__qualname__}")


def other_function(val: float) -> str:
    """Some other function being called."""
    return f"other val: {val}"


@rewrite_wrap_calls(wrap_call=basic_wrapper)
def example_function(count: int) -> str:
    """Function we are rewriting to wrap calls."""
    for _ in (int(v) for v in range(count)):
        pass
    return other_function(val=123.45)


print(example_function(2))
'''

README_021_OUTPUT = """\
Before range, args: (2,), kwargs: {}
After range
Before int, args: (0,), kwargs: {}
After int
Before int, args: (1,), kwargs: {}
After int
Before other_function, args: (), kwargs: {'val': 123.45}
After other_function
other val: 123.45
"""


@pytest.mark.parametrize("import_line", ["from calltape.compat.recompyle import wrap_calls",
                                         "from calltape import wrap_calls"])
def test_the_041_readme_example_prints_what_its_readme_says(tmp_path, import_line):
    proc = run_python(tmp_path, README_041.format(import_line=import_line))
    assert proc.stdout == README_041_OUTPUT
    assert proc.stderr == ""


def test_the_021_readme_example_with_rewrite_wrap_calls(tmp_path):
    proc = run_python(tmp_path, README_021, flags=("-W", "error"))
    assert proc.stdout == README_021_OUTPUT
    assert proc.stderr == ""


def test_only_the_two_names():
    assert recompyle.__all__ == ["rewrite_wrap_calls", "wrap_calls"]
    params = inspect.signature(wrap_calls).parameters
    assert list(params) == ["wrapper", "ignore_builtins", "blacklist", "whitelist",
                            "rewrite_details"]
    assert all(p.kind is p.KEYWORD_ONLY for p in params.values())
    assert list(inspect.signature(rewrite_wrap_calls).parameters) == [
        "wrap_call", "ignore_builtins", "blacklist", "whitelist", "rewrite_details"]
    with pytest.raises(TypeError):
        wrap_calls(print)  # keyword-only, as the original


def seen(log):
    def wrapper(call, extras, *args, **kwargs):
        log.append((call.__name__, extras))
        return call(*args, **kwargs)

    return wrapper


def test_extras_are_a_new_dict_per_call_with_the_unparsed_source():
    log = []

    @wrap_calls(wrapper=seen(log))
    def f(x):
        return str(
            abs(x))

    first = f.__code__.co_firstlineno  # the decorator's line
    assert f(-2) == "2" and f(-3) == "3"
    assert log[0] == ("abs", {"ln_range": (first + 3,), "source": "abs(x)"})
    assert log[1] == ("str", {"ln_range": (first + 2, first + 3), "source": "str(abs(x))"})
    assert type(log[0][1]) is dict and log[0][1] is not log[2][1]
    log[0][1]["mine"] = 1  # the wrapper's to keep or change, as in the original


def test_rewrite_details_hold_the_original_and_the_new_source():
    details = {}

    @wrap_calls(wrapper=seen([]), rewrite_details=details)
    def f(x):
        """Doc."""
        return abs(x)

    line = f.__code__.co_firstlineno + 3
    assert details["original_func"] is f.__wrapped__
    assert details["original_source"].splitlines()[1:] == [
        "    def f(x):", '        """Doc."""', "        return abs(x)"]
    assert details["new_source"] == (
        f"def f(x):\n    \"\"\"Doc.\"\"\"\n    return _recompyle_wrap(abs, {{'ln_range': ({line},),"
        f" 'source': 'abs(x)'}}, x)")


def test_blacklist_and_whitelist_as_the_original_documents_them():
    table = {"b": abs, 0: abs, "c": abs}
    log = []

    @wrap_calls(wrapper=seen(log), blacklist={"t[b]"})
    def black(t):
        return t["b"](-1), t["c"](-2)

    @wrap_calls(wrapper=seen(log), whitelist={"t[*]"})
    def white(t, k):
        return t[0](-1), t[k](-2), abs(-3)

    assert black(table) == (1, 2) and white(table, "c") == (1, 2, 3)
    assert [e["source"] for _, e in log] == ["t['c'](-2)", "t[0](-1)", "t[k](-2)"]
    with pytest.raises(ValueError, match="a blacklist or a whitelist, not both"):
        wrap_calls(wrapper=print, blacklist={"a"}, whitelist={"b"})


# --- the original's defects, fixed -------------------------------------------------


class Base:
    def value(self, x):
        return x + 1


class Sub(Base):
    @wrap_calls(wrapper=seen([]))
    def value(self, x):
        return super().value(abs(x)) * 2


def test_super_closures_and_nonlocal_writes():
    assert Sub().value(-3) == 8

    total = 0

    @rewrite_wrap_calls(wrap_call=lambda call, *a, **k: call(*a, **k))
    def bump(k):
        nonlocal total
        total += abs(k)
        return total

    assert bump(-2) == 2 and bump(3) == 5 and total == 5


def test_async_def():
    log = []

    async def twice(v):
        await asyncio.sleep(0)
        return 2 * v

    @wrap_calls(wrapper=seen(log))
    async def f(v):
        return await twice(abs(v))

    assert asyncio.run(f(-4)) == 8
    assert [name for name, _ in log] == ["abs", "twice"]


def test_nested_decorators_kept_and_nested_functions_redefined():
    def make(n):
        @wrap_calls(wrapper=seen([]))
        def f():
            @functools.lru_cache(maxsize=None)  # noqa: UP033
            def inner():
                return abs(n)

            inner()
            return inner(), inner.cache_info().hits

        return f

    assert [make(-i)() for i in range(3)] == [(0, 1), (1, 1), (2, 1)]


def test_the_callers_blacklist_is_not_changed_and_the_signature_gains_nothing():
    blacklist = {"print"}

    @wrap_calls(wrapper=seen([]), ignore_builtins=True, blacklist=blacklist)
    def f(a, b=2):
        return sorted(vars())

    assert blacklist == {"print"}
    assert f(1) == ["a", "b"]  # no _recompyle_wrap among the locals
    assert str(inspect.signature(f, follow_wrapped=False)) == "(a, b=2)"


def test_an_unavailable_source_names_the_function():
    namespace = {}
    exec("def from_exec():\n    return abs(1)\n", namespace)
    with pytest.raises(TypeError, match="rewrite_wrap_calls cannot rewrite from_exec"):
        rewrite_wrap_calls(wrap_call=print)(namespace["from_exec"])


@pytest.mark.skipif(sys.version_info < (3, 12), reason="one interpreter is enough")
def test_a_method_at_any_indentation_with_text_at_column_zero():
    class Outer:
        class Inner:
            @wrap_calls(wrapper=seen([]))
            def m(self):
                text = """
column zero"""
                return len(text)

    assert Outer.Inner().m() == 12
