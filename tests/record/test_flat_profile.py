"""calltape.flat_profile: every call made directly inside a function, timed
per activation, with the above/below callbacks and the default log records.

Every test runs twice: with the call-site rewrite (the default for a plain
function in a file) and with every profile timed from events
(``calltape.flat._CALL_SITES = False``: sys.monitoring, 3.11's profile hook);
tests/record/test_flat_sites.py has what is the rewrite's own."""

import asyncio
import gc
import inspect
import logging
import sys
import threading
import time
import traceback
import tracemalloc
import warnings
from typing import ClassVar

import pytest
from _util import open_tape, run_python

import calltape
import calltape.flat

SYSMON = sys.version_info >= (3, 12)
needs_sysmon = pytest.mark.skipif(not SYSMON, reason="sys.monitoring's events (3.12+)")
FLAT_TOOL = 5


@pytest.fixture(autouse=True, params=["call sites", "events"])
def sites(request, monkeypatch):
    """True while the profiles the test makes use the call-site rewrite."""
    monkeypatch.setattr(calltape.flat, "_CALL_SITES", request.param == "call sites")
    return request.param == "call sites"


def nap(seconds):
    time.sleep(seconds)
    return seconds


def quick(x):
    return x + 1


def deeper(x):
    return quick(quick(x))


def collect():
    """A list, and a callback that appends each result to it."""
    got = []
    return got, got.append


def by_name(result):
    return {c.name.rsplit(".", 1)[-1]: c for c in result.calls}


def test_inner_calls_are_attributed_their_time(sites):
    got, keep = collect()

    @calltape.flat_profile(below=keep, record=False)
    def handle():
        nap(0.02)
        nap(0.05)
        quick(1)
        return deeper(2)

    assert handle.mechanism == ("call sites" if sites else
                                "sys.monitoring" if SYSMON else "profile hook")
    assert handle() == 4
    (r,) = got
    calls = by_name(r)
    # one site per call site: nap has two, listed slowest first
    naps = [c for c in r.calls if c.name.endswith("nap")]
    assert [c.line for c in naps] == sorted([c.line for c in naps], reverse=True)
    assert naps[0].total >= 0.05 and naps[1].total >= 0.02  # each its own nap, not both
    assert naps[0].count == naps[1].count == 1
    # deeper's own inner calls are not timed apart: only the direct call
    assert set(calls) == {"nap", "quick", "deeper"}
    assert calls["deeper"].count == 1 and calls["quick"].count == 1
    assert sum(c.total for c in r.calls) <= r.total
    assert r.function is handle.__wrapped__ and r.limit is None
    assert r.calls[0].line == inspect.getsourcelines(handle.__wrapped__)[1] + 3


def test_counts_and_maximum_of_a_call_in_a_loop():
    got, keep = collect()

    @calltape.flat_profile(below=keep)
    def loop(n):
        for i in range(n):
            nap(0.002 if i != 3 else 0.03)

    loop(5)
    c = by_name(got[0])["nap"]
    assert c.count == 5
    assert c.max >= 0.03 and c.total >= 0.038 and c.max < c.total  # the longest of five


def test_limit_chooses_the_callback():
    seen: ClassVar[list] = []

    @calltape.flat_profile(limit=0.03, above=lambda r: seen.append(("above", r.total)),
                           below=lambda r: seen.append(("below", r.total)), record=False)
    def work(t):
        nap(t)

    work(0)
    work(0.04)
    assert [k for k, _ in seen] == ["below", "above"]
    assert seen[1][1] >= 0.04 and work.limit == 0.03


def test_default_records_go_to_the_calltape_flat_logger(caplog):
    @calltape.flat_profile(limit=0.02)
    def work(t):
        return nap(t)

    with caplog.at_level(logging.DEBUG, logger="calltape.flat"):
        work(0)
        work(0.03)
    recs = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "calltape.flat"]
    assert [lvl for lvl, _ in recs] == [logging.DEBUG, logging.WARNING]
    warning = recs[1][1]
    assert warning.startswith("test_default_records_go_to_the_calltape_flat_logger.<locals>.work"
                              " took 0.0") and "(limit 0.02s)" in warning
    assert "x  max" in warning and "nap" in warning and "return nap(t)" in warning


def test_a_quiet_logger_builds_no_result(caplog):
    # below the limit with DEBUG off, the default record's result is never built
    made = []

    def spy(*a):
        made.append(a)
        return calltape.FlatResult(*a)

    log = logging.getLogger("calltape.flat")
    prof = calltape._native.FlatProfile(quick, spy, limit=10, below=lambda r: None, logger=log,
                                        below_level=logging.DEBUG)
    with caplog.at_level(logging.WARNING, logger="calltape.flat"):
        assert prof(1) == 2
    assert made == []
    with caplog.at_level(logging.DEBUG, logger="calltape.flat"):
        assert prof(1) == 2
        assert len(made) == 1 and made[0][0] is quick
        log.disabled = True  # as logging.config's disable_existing_loggers does
        try:
            assert prof(1) == 2
        finally:
            log.disabled = False
        assert len(made) == 1
        assert prof(1) == 2
    assert len(made) == 2
    assert prof(1) == 2  # the level is back to what it was: no result again
    assert len(made) == 2


def test_a_raising_callback_is_reported_once_and_never_reaches_the_caller():
    def bad(result):
        raise ValueError("boom")

    @calltape.flat_profile(below=bad)
    def work(x):
        return x * 2

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert work(2) == 4
        assert work(3) == 6
    mine = [x for x in w if issubclass(x.category, calltape.RecordingWarning)]
    assert len(mine) == 1 and "ValueError: boom" in str(mine[0].message)


def test_an_exception_of_the_function_passes_unchanged(sites):
    got, keep = collect()

    @calltape.flat_profile(below=keep)
    def fails():
        quick(1)
        raise KeyError("k")

    with pytest.raises(KeyError) as info:
        fails()
    assert info.value.args == ("k",)
    assert len(got) == 1
    # building the exception is a call made inside it too (3.11's hook sees no class called)
    expected = {"quick", "KeyError"} if SYSMON or sites else {"quick"}
    assert {c.name.rsplit(".", 1)[-1] for c in got[0].calls} == expected
    # the traceback points at the function's own line, not at calltape
    last = traceback.extract_tb(info.tb)[-1]
    assert last.name == "fails" and last.line == 'raise KeyError("k")'


class Base:
    def greet(self, x):
        return f"base {x}"


def make_child():
    """A class whose methods are profiled (made in the test: its mechanism)."""

    class Child(Base):
        @calltape.flat_profile(below=lambda r: Child.seen.append(r))
        def greet(self, x):
            return "child " + super().greet(x)

        @calltape.flat_profile(below=lambda r: Child.seen.append(r))
        @classmethod
        def make(cls, n):
            return [cls.__name__] * n

        @calltape.flat_profile(below=lambda r: Child.seen.append(r))
        @staticmethod
        def twice(n):
            return abs(n) * 2

        seen: ClassVar[list] = []

    return Child


def test_methods_super_classmethods_and_staticmethods(sites):
    Child = make_child()
    assert Child().greet(1) == "child base 1"
    assert Child.make(2) == ["Child", "Child"] and Child().make(1) == ["Child"]
    assert Child.twice(-2) == 4 and Child().twice(3) == 6
    assert len(Child.seen) == 5
    names = {c.name for c in Child.seen[0].calls}
    assert any(n.endswith("Base.greet") for n in names), names
    assert "super" in names or not (SYSMON or sites)
    assert {c.name for c in Child.seen[3].calls} == {"abs"}


def test_closures_defined_many_times_each_profile_their_own():
    results = []

    def make(k):
        @calltape.flat_profile(below=results.append)
        def inner(x):
            return quick(x) * k
        return inner

    fns = [make(k) for k in range(20)]
    assert [f(1) for f in fns] == [2 * k for k in range(20)]
    assert len(results) == 20
    assert all([c.name.rsplit(".", 1)[-1] for c in r.calls] == ["quick"] for r in results)


def test_recursion_gives_one_breakdown_per_activation():
    got, keep = collect()

    @calltape.flat_profile(below=keep)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(6) == 8
    assert len(got) == 25  # the activations of fib(6)
    for r in got:
        # its own two calls of fib (none on 3.11, where the wrapper's call is no
        # event); a finalizer the collector runs meanwhile would be a call of its own
        fibs = [c for c in r.calls if c.name.rsplit(".", 1)[-1] == "fib"]
        assert sum(c.count for c in fibs) in (0, 2), r.calls
        assert sum(c.total for c in r.calls) <= r.total


def test_threads_each_get_their_own_breakdown():
    got, keep = collect()
    lock = threading.Lock()

    def keep_locked(r):
        with lock:
            keep(r)

    @calltape.flat_profile(below=keep_locked)
    def work(t, k):
        nap(t)
        for _ in range(k):
            quick(1)

    asked = {1: 0.01, 3: 0.06, 2: 0.03}  # quick's count -> the nap of that thread
    threads = [threading.Thread(target=work, args=(t, k)) for k, t in asked.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # one breakdown per thread, none merged: each holds its own count of
    # quick() and at least its own nap (a shared one would hold 6 and 0.10 s)
    counts = sorted(by_name(r)["quick"].count for r in got)
    assert len(got) == 3 and counts == [1, 2, 3]
    for r in got:
        inner = by_name(r)
        assert inner["nap"].count == 1 and inner["nap"].total >= asked[inner["quick"].count]


def test_vars_locals_and_signature_are_as_without_profiling():
    def plain(a, b=2, *rest, key=None, **kw):
        c = a + b
        return sorted(vars()), sorted(locals())

    profiled = calltape.flat_profile(plain)
    assert profiled(1) == plain(1)
    assert inspect.signature(profiled) == inspect.signature(plain)
    assert profiled.__name__ == "plain" and profiled.__wrapped__ is plain
    assert profiled.__doc__ == plain.__doc__


def test_only_ignore_and_ignore_builtins():
    got, keep = collect()

    def body():
        quick(1)
        deeper(1)
        len("abc")
        return sorted([2, 1])

    calltape.flat_profile(body, below=keep, ignore_builtins=True)()
    calltape.flat_profile(body, below=keep, only=[quick, "deeper"])()
    calltape.flat_profile(body, below=keep, ignore=[f"{__name__}.quick", len])()
    names = [sorted(c.name.rsplit(".", 1)[-1] for c in r.calls) for r in got]
    assert names == [["deeper", "quick"], ["deeper", "quick"], ["deeper", "sorted"]]


def test_wrong_options_say_what_is_wrong():
    with pytest.raises(TypeError, match="limit must be a number of seconds"):
        calltape.flat_profile(limit="1s")
    with pytest.raises(ValueError, match="limit must be 0 or more seconds"):
        calltape.flat_profile(quick, limit=-1)
    with pytest.raises(TypeError, match="above= must be callable"):
        calltape.flat_profile(above=3)
    with pytest.raises(TypeError, match="only= takes a list"):
        calltape.flat_profile(only="quick")

    async def agen():
        yield 1

    with pytest.raises(TypeError, match="agen is an async generator function"):
        calltape.flat_profile(agen)


@needs_sysmon
def test_code_outside_profiled_functions_has_no_event(sites):
    mon = sys.monitoring

    def target():
        return quick(1)

    if sites:  # no event at all, not even on the profiled code
        profiled = calltape.flat_profile(target, below=lambda r: None, record=False)
        assert profiled() == 2 and profiled.mechanism == "call sites"
        assert mon.get_local_events(FLAT_TOOL, target.__code__) == 0
        assert mon.get_events(FLAT_TOOL) == 0
        return
    profiled = calltape.flat_profile(target, below=lambda r: None)
    again = calltape.flat_profile(target, below=lambda r: None)  # the same code twice
    assert mon.get_tool(FLAT_TOOL) == "calltape flat_profile"
    assert mon.get_local_events(FLAT_TOOL, target.__code__) == mon.events.CALL
    assert mon.get_local_events(FLAT_TOOL, quick.__code__) == 0
    assert mon.get_events(FLAT_TOOL) == 0  # nothing global
    profiled()
    del profiled
    gc.collect()
    assert mon.get_local_events(FLAT_TOOL, target.__code__) == mon.events.CALL
    del again
    gc.collect()
    assert mon.get_local_events(FLAT_TOOL, target.__code__) == 0


def test_many_calls_keep_no_references_and_no_memory():
    class Callee:
        def __call__(self, x):
            return x

    callee = Callee()

    @calltape.flat_profile(below=lambda r: None)
    def work(x):
        return callee(quick(x))

    @calltape.flat_profile(below=lambda r: None)
    def gen(x):
        yield callee(quick(x))

    for _ in range(200):
        work(1)
        list(gen(1))
    gc.collect()
    refs = sys.getrefcount(callee)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(20000):
        work(1)
        list(gen(1))
        next(gen(2))  # dropped unfinished
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert sys.getrefcount(callee) == refs
    assert grown < 64 * 1024, grown


def test_record_puts_the_call_and_its_inner_calls_on_the_tape(tape, sites):
    @calltape.flat_profile(record=True, below=lambda r: None)
    def handle(i, k=2):
        for _ in range(3):
            nap(0.005)
        return quick(i) * k

    assert handle(5) == 12
    assert handle.limit is None and handle.mechanism == (
        "call sites" if sites else "sys.monitoring" if SYSMON else "profile hook")
    t = open_tape(tape)
    (call,) = t.calls("handle")
    assert call.args == {"i": 5, "k": 2} and call.result == 12 and call.captured == "flat"
    # range is a class: 3.11's profile hook sees no call of it
    kids = {c.function: c for c in call.children() if c.function != "range"}
    assert set(kids) == {"nap", "quick"}
    assert kids["nap"].result["count"] == 3 and kids["nap"].captured == "flat"
    assert kids["nap"].duration >= 0.015 and kids["nap"].result["max"] >= 0.005
    assert kids["nap"].result["line"] == inspect.getsourcelines(handle.__wrapped__)[1] + 3
    assert sum(c.duration for c in kids.values()) <= call.duration
    assert all(c.depth == call.depth + 1 for c in kids.values())
    flat = {c.id for c in t.search(captured="flat")}
    assert flat == {call.id, *(c.id for c in call.children())} and len(flat) >= 3


def test_record_is_the_default_when_a_tape_is_configured(tmp_path):
    prog = """
        import calltape

        def inner():
            return 1

        @calltape.flat_profile(below=lambda r: None)
        def outer():
            return inner() + 1

        print(outer())
    """
    (tmp_path / "a").mkdir()
    assert run_python(tmp_path, prog, cwd=tmp_path / "a").stdout == "2\n"
    assert list((tmp_path / "a").iterdir()) == []  # no tape chosen: nothing written
    run_python(tmp_path, prog, tape=tmp_path / "t.db")
    (call,) = open_tape(tmp_path / "t.db").calls("outer")
    assert call.captured == "flat"
    assert [c.function for c in call.children()] == ["inner"]


def test_a_generator_is_timed_while_it_runs_not_while_it_waits():
    got, keep = collect()

    @calltape.flat_profile(below=keep, record=False)
    def gen(n):
        for i in range(n):
            nap(0.01)
            yield quick(i)

    out = []
    for v in gen(3):
        time.sleep(0.03)  # the consumer's time, between resumes
        out.append(v)
    assert out == [1, 2, 3] and len(got) == 1
    r = got[0]
    calls = by_name(r)
    assert calls["nap"].count == 3 and calls["quick"].count == 3
    # the consumer's 0.09 s between resumes is not the generator's: it would
    # make the total at least 0.12 s
    assert calls["nap"].total >= 0.03 and 0.03 <= r.total < 0.09
    g = gen(5)
    next(g)
    g.close()  # closed early: its activation ends there
    assert len(got) == 2 and by_name(got[1])["nap"].count == 1


def test_a_coroutine_counts_what_it_awaits_for_the_inner_call():
    got, keep = collect()

    @calltape.flat_profile(below=keep, record=False)
    async def handler():
        await asyncio.sleep(0.03)
        nap(0.01)
        return quick(1)

    assert asyncio.run(handler()) == 2
    (r,) = got
    calls = by_name(r)
    assert calls["sleep"].count == 1 and calls["sleep"].total >= 0.03
    assert 0.01 <= calls["nap"].total < 0.04  # the awaited 0.03 s is sleep's, not nap's
    assert r.total >= 0.04 and sum(c.total for c in r.calls) <= r.total


def test_generators_and_coroutines_on_the_tape(tape):
    @calltape.flat_profile(below=lambda r: None, record=True)
    def gen(n):
        for i in range(n):
            yield quick(i)

    @calltape.flat_profile(below=lambda r: None, record=True)
    async def coro():
        await asyncio.sleep(0)
        return quick(1)

    assert list(gen(3)) == [1, 2, 3] and asyncio.run(coro()) == 2
    t = open_tape(tape)
    (g,) = t.calls("gen")
    (c,) = t.calls("coro")
    assert g.captured == c.captured == "flat" and c.result == 2
    counts = {k.function: k.result["count"] for k in g.children() if k.function != "range"}
    assert counts == {"quick": 3}
    assert {k.function: k.result["count"] for k in c.children()} == {"sleep": 1, "quick": 1}
