"""flat_profile's call-site rewrite (calltape/_sites.py): when it is used, that
it times the same call sites as the events do, and that the function runs as
it did (tracebacks, closures, private names, super(), frame readers).

The rewrite is the default on 3.11 only; these tests ask for it on every
version (``sited``), as tests/record/test_flat_profile.py runs both."""

import functools
import importlib
import sys
import textwrap
import traceback

import pytest

import calltape
import calltape.flat
from calltape import _native

SYSMON = sys.version_info >= (3, 12)
EVENTS = "sys.monitoring" if SYSMON else "profile hook"


def quick(x, k=0):
    return x + k


class Box:
    def get(self, x):
        return x


class Sub(Box):
    __bonus = 1

    def get(self, x):
        return super().get(x) + self.__bonus


def rich(xs, box):
    a = box.get(
        quick(1))
    b = quick(*xs[:1], k=2)
    c = [quick(x) for x in xs]
    d = sum(quick(x) for x in range(2))

    @functools.lru_cache(maxsize=quick(3))
    def inner(y=quick(4)):  # noqa: B008 (a default is a direct call)
        return quick(y)

    e = inner()
    f = (lambda z: quick(z))(5)  # noqa: PLC3002 (a lambda called is a direct call)
    s = Sub().get(1)
    return a, b, c, d, e, f, s


def sited(func=None, *, sites=True, **options):
    """calltape.flat_profile(func, record=False, **options), made with the
    call-site rewrite (or with ``sites=False`` from events) whatever this
    version's default."""
    options.setdefault("record", False)
    if func is None:
        return lambda f: sited(f, sites=sites, **options)
    old = calltape.flat._CALL_SITES
    calltape.flat._CALL_SITES = sites
    try:
        return calltape.flat_profile(func, **options)
    finally:
        calltape.flat._CALL_SITES = old


def breakdown(func, *args, sites=True):
    got = []
    prof = sited(func, sites=sites, below=got.append)
    result = prof(*args)
    (r,) = got
    return prof, result, r


def test_a_plain_function_in_a_file_runs_as_its_call_site_rewrite():
    prof, result, r = breakdown(rich, [1, 2], Box())
    assert prof.mechanism == "call sites" and result == rich([1, 2], Box())
    first = rich.__code__.co_firstlineno
    sites = {(c.name, c.line - first, c.count) for c in r.calls}
    mod = __name__
    expected = {
        (f"{mod}.quick", 2, 1), (f"{mod}.Box.get", 1, 1),   # a call over two lines
        ("range", 5, 1), ("sum", 5, 1),                      # a genexp's first iterable
        ("functools.lru_cache", 7, 1), (f"{mod}.quick", 7, 1),   # a nested def's decorator
        (f"{mod}.quick", 8, 1),                              # and its default
        (f"{mod}.rich.<locals>.inner", 11, 1),
        (f"{mod}.rich.<locals>.<lambda>", 12, 1),
        (f"{mod}.Sub", 13, 1), (f"{mod}.Sub.get", 13, 1),
    }
    # quick(*xs[:1], k=2) (line 3) is left as written: a * argument
    if SYSMON:  # a list comprehension is inlined in the function (PEP 709)
        expected.add((f"{mod}.quick", 4, 2))
    assert sites == expected
    assert sum(c.total for c in r.calls) <= r.total


@pytest.mark.skipif(not SYSMON, reason="the events name Python callees by code on 3.11")
def test_the_rewrite_names_the_call_sites_the_events_name():
    _, _, sites = breakdown(rich, [1, 2], Box())
    prof, _, events = breakdown(rich, [1, 2], Box(), sites=False)
    assert prof.mechanism == EVENTS
    a = {(c.name, c.line, c.count) for c in sites.calls}
    b = {(c.name, c.line, c.count) for c in events.calls}
    # the events also see what no source line calls (the generator
    # expression's function, the decorator's application) and the call with
    # a * argument, which the rewrite leaves as written (3.12.1's events lose it)
    first = rich.__code__.co_firstlineno
    implicit = {(n, line) for n, line, _ in b - a}
    assert implicit <= {(f"{__name__}.rich.<locals>.<genexpr>", first + 5),
                        ("functools.lru_cache.<locals>.decorating_function", first + 7),
                        (f"{__name__}.quick", first + 3)}, b - a
    assert a <= b


class Child(Sub):
    @sited(below=lambda r: None)
    def get(self, x):
        return super().get(x) * 10 + self.__own()

    def __own(self):
        return 5


def test_zero_argument_super_and_private_names_in_a_method():
    assert Child.get.mechanism == "call sites"
    assert Child().get(2) == 35  # (2 + 1) * 10 + 5


def test_closures_share_their_cells_with_the_enclosing_function():
    def counter():
        n = 0

        @sited(below=lambda r: None)
        def bump(by):
            nonlocal n
            n += quick(by)
            return n

        def read():
            return n

        return bump, read

    bump, read = counter()
    assert bump.mechanism == "call sites"
    assert (bump(1), bump(2), read()) == (1, 3, 3)


def raiser(x):
    raise ValueError(f"bad {x}")


def fails_inside(x):
    y = quick(x)
    return raiser(
        y)


def fails_calling(x):
    return quick(x, 1, 2)


def fails_on_none(x):
    f = None
    return f(x)


class Chain:
    def chain(self):
        return self

    def boom(self):
        raise KeyError("boom")


def fails_in_a_chain(x):
    return (Chain()
            .chain()
            .boom())


def fails_with_a_bad_star(x):
    return quick(*x)


def fails_with_bad_keywords(x):
    given = {"k": 1}
    return quick(x, **given, k=2)


@pytest.mark.parametrize("func", [fails_inside, fails_calling, fails_on_none, fails_in_a_chain,
                                  fails_with_a_bad_star, fails_with_bad_keywords])
def test_tracebacks_are_the_functions_own(func):
    def frames(call):
        with pytest.raises(Exception) as info:
            call(1)
        text = traceback.format_exception(info.value)
        entries = [(f.name, f.lineno, f.line) for f in traceback.extract_tb(info.tb)][1:]
        return type(info.value), str(info.value), entries, text[2:]

    prof = sited(func, below=lambda r: None)
    starred = func in (fails_with_a_bad_star, fails_with_bad_keywords)  # left as written
    assert prof.mechanism == ("call sites" if not starred else EVENTS)
    # the same frames, lines (a method call over three lines: its attribute's),
    # carets and message as the function's own call (a bad * or ** names quick)
    assert frames(prof) == frames(func)


def test_frame_readers_read_the_functions_frame():
    @sited(below=lambda r: None)
    def reads(a, b=2):
        c = a + b
        return sorted(locals()), sorted(vars()), sys._getframe().f_code.co_name, eval("c")

    assert reads.mechanism == "call sites"
    assert reads(1) == (["a", "b", "c"], ["a", "b", "c"], "reads", 3)


def test_a_function_whose_source_cannot_be_used_is_timed_from_events(tmp_path, monkeypatch):
    ns = {}
    exec("def made(x):\n    return abs(x)\n", ns)
    prof = sited(ns["made"], below=lambda r: None)
    assert prof.mechanism == EVENTS and prof(-2) == 2

    def gen():
        yield quick(1)

    assert sited(gen, below=lambda r: None).mechanism == EVENTS

    # a file edited after its import: its text is not the code that runs
    mod = tmp_path / "flat_edited_mod.py"
    mod.write_text(textwrap.dedent("""
        def work(x):
            return abs(x) + 1
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    edited = importlib.import_module("flat_edited_mod")
    monkeypatch.delitem(sys.modules, "flat_edited_mod")
    mod.write_text(textwrap.dedent("""
        def work(x):
            return abs(x) + 2
    """))
    got = []
    prof = sited(edited.work, below=got.append)
    assert prof.mechanism == EVENTS
    assert prof(-3) == 4 and got[0].calls[0].count == 1


def test_dead_code_and_a_function_without_calls():
    @sited(below=lambda r: None)
    def nothing(x):
        return x + 1

    @sited(below=lambda r: None)
    def dead(x):
        if False:
            quick(x)
        return quick(x)

    # nothing to time: the function runs as it is
    assert nothing.mechanism == EVENTS and nothing(1) == 2
    assert dead.mechanism == "call sites" and dead(1) == 1


def test_flat_site_call_never_writes_into_its_arguments():
    # a bound method is not lent its args[-1]: the tuple's item stays the
    # bound method while the call runs (it would be the instance if lent)
    seen = []

    class Holder:
        def me(self):
            seen.append(held[1])

    box = Holder()
    held = (0, box.me)
    _native.flat_site_call(*held)
    again = functools.partial(_native.flat_site_call, 0, box.me)
    held = again.args
    again()
    assert [type(x).__name__ for x in seen] == ["method", "method"]


def test_flat_site_call_outside_a_profile_is_the_call():
    assert _native.flat_site_call(0, quick, 1, k=2) == 3
    assert _native.flat_site_call(0, Box().get, 4) == 4
    with pytest.raises(ValueError, match="bad 1"):
        _native.flat_site_call(0, raiser, 1)
    with pytest.raises(TypeError, match="2 or more arguments"):
        _native.flat_site_call(0)
    with pytest.raises(TypeError):
        _native.flat_site_call("0", quick, 1)


ACTIVATIONS = []


@sited(below=ACTIVATIONS.append)
def countdown(n):
    return 0 if n == 0 else countdown(n - 1) + quick(1)


def test_a_module_level_function_calling_itself_by_its_global_name():
    ACTIVATIONS.clear()
    assert countdown.mechanism == "call sites"
    assert countdown(3) == 3
    assert len(ACTIVATIONS) == 4  # one breakdown per activation, the innermost first
    names = [sorted(c.name.rsplit(".", 1)[-1] for c in r.calls) for r in ACTIVATIONS]
    assert names == [[]] + [["countdown", "quick"]] * 3


def test_the_wrapper_takes_a_rewrite_only_for_a_plain_function():
    def gen():
        yield 1

    with pytest.raises(TypeError, match="run= is the call-site rewrite of a plain function"):
        _native.FlatProfile(gen, calltape.FlatResult, run=quick)
    with pytest.raises(TypeError, match="run= is the call-site rewrite of a plain function"):
        _native.FlatProfile(quick, calltape.FlatResult, run=3)
