"""The Recorder behaves like the function it wraps: metadata, signature,
pickling, methods, classmethod/staticmethod/property, recursion, every kind of
parameter, coroutines, generators, async generators, exceptions and nesting."""

import asyncio
import gc
import inspect
import pickle
import sys
import threading
import traceback

import pytest
from _util import only_call, read_calls, run_python

import calltape

# ------------------------------------------------------- module level ----

def _plain_add(a: int, b: int = 2, *rest, scale: float = 1.0, **extra) -> int:
    """Adds a and b, then scales."""
    return (a + b) * scale


_plain_add.custom_attribute = {"answer": 42}
recorded_add = calltape.record(_plain_add)


@calltape.record
def module_level(a, b=2):
    """Docstring of module_level."""
    return a + b


class CustomError(Exception):
    pass


class Account:
    def __init__(self, balance):
        self.balance = balance

    @calltape.record
    def deposit(self, amount):
        self.balance += amount
        return self.balance

    @classmethod
    @calltape.record
    def cm_outer(cls, x):
        return (cls.__name__, x)

    @calltape.record
    @classmethod
    def cm_inner(cls, x):
        return (cls.__name__, x)

    @staticmethod
    @calltape.record
    def sm_outer(x):
        return x * 2

    @calltape.record
    @staticmethod
    def sm_inner(x):
        return x * 3

    @property
    @calltape.record
    def doubled(self):
        return self.balance * 2


class Savings(Account):
    pass


def _line_of(marker):
    with open(__file__) as f:
        for n, line in enumerate(f, 1):
            if marker in line and "_line_of" not in line:
                return n
    raise AssertionError(marker)


# ------------------------------------------------------------ metadata ----

def test_recorder_type_and_metadata():
    assert isinstance(recorded_add, calltape.Recorder)
    assert recorded_add.__wrapped__ is _plain_add
    assert recorded_add.__name__ == "_plain_add"
    assert recorded_add.__qualname__ == "_plain_add"
    assert recorded_add.__doc__ == "Adds a and b, then scales."
    assert recorded_add.__module__ == __name__
    assert recorded_add.custom_attribute == {"answer": 42}
    assert inspect.signature(recorded_add) == inspect.signature(_plain_add)
    assert callable(recorded_add)


def test_recorder_attributes_are_writable():
    @calltape.record
    def f():
        pass

    f.tag = "set later"
    assert f.tag == "set later"
    assert f.__dict__["tag"] == "set later"


def test_pickle_by_reference():
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(module_level, protocol=proto)) is module_level
    assert pickle.loads(pickle.dumps(Account.deposit)) is Account.deposit


def test_wrapped_function_is_called_with_real_arguments(tape):
    assert recorded_add(1) == 3.0
    assert recorded_add(1, 2, 3, 4, scale=2.0, z=9) == 6.0
    calls = read_calls(tape)
    assert calls[0].args == {"a": 1, "b": 2, "rest": (), "scale": 1.0, "extra": {}}
    assert {"b", "scale"} <= set(calls[0].defaults)
    assert calls[1].args == {"a": 1, "b": 2, "rest": (3, 4), "scale": 2.0, "extra": {"z": 9}}
    assert not ({"a", "b", "scale"} & set(calls[1].defaults))


# ------------------------------------------------------------- methods ----

def test_method_records_self(tape):
    acct = Account(10)
    assert acct.deposit(5) == 15
    assert Account.deposit(acct, 1) == 16
    assert acct.deposit.__self__ is acct
    assert list(inspect.signature(acct.deposit).parameters) == ["amount"]
    calls = read_calls(tape)
    assert len(calls) == 2
    c = calls[0]
    assert c.qualname == "Account.deposit"
    assert set(c.args) == {"self", "amount"}
    assert isinstance(c.args["self"], Account)
    assert c.args["self"].balance == 10      # state at entry
    assert c.args["amount"] == 5
    assert c.result == 15
    assert calls[1].args["self"].balance == 15


@pytest.mark.parametrize("name", ["cm_outer", "cm_inner"])
def test_classmethod_both_orders(tape, name):
    assert getattr(Account, name)(1) == ("Account", 1)
    assert getattr(Account(0), name)(2) == ("Account", 2)
    assert getattr(Savings, name)(3) == ("Savings", 3)
    calls = read_calls(tape)
    assert len(calls) == 3
    assert [c.args["x"] for c in calls] == [1, 2, 3]
    assert [c.args["cls"] for c in calls] == [Account, Account, Savings]
    assert all(c.qualname == f"Account.{name}" for c in calls)
    assert calls[2].result == ("Savings", 3)


@pytest.mark.parametrize("name,factor", [("sm_outer", 2), ("sm_inner", 3)])
def test_staticmethod_both_orders(tape, name, factor):
    assert getattr(Account, name)(3) == 3 * factor
    assert getattr(Account(0), name)(4) == 4 * factor
    calls = read_calls(tape)
    assert [c.args for c in calls] == [{"x": 3}, {"x": 4}]
    assert [c.result for c in calls] == [3 * factor, 4 * factor]
    assert all(c.qualname == f"Account.{name}" for c in calls)


def test_property_getter(tape):
    a = Account(21)
    assert a.doubled == 42
    c = only_call(tape)
    assert c.qualname == "Account.doubled"
    assert isinstance(c.args["self"], Account)
    assert c.result == 42


# ------------------------------------------------------------ recursion ----

def test_recursion_parents_and_depth(tape):
    @calltape.record
    def fact(n):
        return 1 if n == 0 else n * fact(n - 1)

    assert fact(5) == 120
    calls = read_calls(tape)
    assert len(calls) == 6
    assert [c.args["n"] for c in calls] == [5, 4, 3, 2, 1, 0]
    assert [c.result for c in calls] == [120, 24, 6, 2, 1, 1]
    assert calls[0].parent is None
    for i, c in enumerate(calls):
        assert c.depth == i
        if i:
            assert c.parent == calls[i - 1].id
    # an outer call lasts at least as long as the calls inside it
    assert all(calls[i].duration_ns >= calls[i + 1].duration_ns for i in range(5))


def test_deep_recursion(tape):
    @calltape.record
    def down(n):
        return 0 if n == 0 else 1 + down(n - 1)

    assert down(300) == 300
    calls = read_calls(tape)
    assert len(calls) == 301
    assert max(c.depth for c in calls) == 300


def test_runaway_recursion_raises_recursion_error_like_the_function(tmp_path):
    proc = run_python(tmp_path, """
        import calltape
        @calltape.record
        def forever(n):
            return forever(n + 1)
        try:
            forever(0)
        except RecursionError:
            print("recursion error")
        @calltape.record
        def after(x):
            return x
        print(after(7))
    """, tape=tmp_path / "r.db")
    assert proc.stdout.split() == ["recursion", "error", "7"]


# ----------------------------------------------------------- parameters ----

def test_keyword_only(tape):
    @calltape.record
    def f(a, *, b, c=3):
        return a + b + c

    assert f(1, b=2) == 6
    c = only_call(tape)
    assert c.args == {"a": 1, "b": 2, "c": 3}
    assert set(c.defaults) == {"c"}


def test_positional_only(tape):
    @calltape.record
    def f(a, b=5, /, c=7):
        return a + b + c

    assert f(1, c=2) == 8
    c = only_call(tape)
    assert c.args == {"a": 1, "b": 5, "c": 2}
    assert set(c.defaults) == {"b"}


def test_star_args_and_kwargs(tape):
    @calltape.record
    def f(a, *rest, k=1, **extra):
        return len(rest) + len(extra)

    assert f(1, 2, 3, k=4, z=5, y=[6]) == 4
    c = only_call(tape)
    assert c.args == {"a": 1, "rest": (2, 3), "k": 4, "extra": {"z": 5, "y": [6]}}
    assert type(c.args["rest"]) is tuple and type(c.args["extra"]) is dict


def test_binding_errors_are_the_functions_own(tape):
    def f(a, b):
        return a

    r = calltape.record(f)
    for args, kwargs in [((), {}), ((1, 2, 3), {}), ((1,), {"c": 2}), ((1,), {"a": 2})]:
        with pytest.raises(TypeError) as plain:
            f(*args, **kwargs)
        with pytest.raises(TypeError) as recorded:
            r(*args, **kwargs)
        assert str(recorded.value) == str(plain.value)


def test_call_with_unpacked_mappings_and_many_arguments(tape):
    @calltape.record
    def f(*args, **kwargs):
        return len(args), sorted(kwargs)

    args = tuple(range(100))
    kwargs = {f"k{i}": i for i in range(50)}
    assert f(*args, **kwargs) == (100, sorted(kwargs))
    c = only_call(tape)
    assert c.args == {"args": args, "kwargs": kwargs}


# ---------------------------------------------------------- exceptions ----

def test_exception_recorded_and_reraised_unchanged(tape):
    err = ValueError("bad 7")

    @calltape.record
    def boom(x):
        raise err  # RAISE-HERE

    with pytest.raises(ValueError) as ei:
        boom(7)
    assert ei.value is err
    frames = traceback.extract_tb(ei.value.__traceback__)
    assert frames[-1].name == "boom"
    assert frames[-1].lineno == _line_of("RAISE-HERE")
    assert any(f.name == "test_exception_recorded_and_reraised_unchanged" for f in frames)

    c = only_call(tape)
    assert c.outcome == "raised"
    assert c.args == {"x": 7}
    assert c.result is None
    assert c.exception.type == "builtins.ValueError"
    assert c.exception.message == "bad 7"
    assert "boom" in c.exception.traceback
    assert "ValueError" in c.exception.traceback
    assert c.duration > 0


def test_custom_exception_type_and_chaining(tape):
    cause = KeyError("root cause")

    @calltape.record
    def f():
        try:
            raise cause
        except KeyError as e:
            raise CustomError("wrapped") from e

    with pytest.raises(CustomError) as ei:
        f()
    assert ei.value.__cause__ is cause
    c = only_call(tape)
    assert c.exception.type == f"{CustomError.__module__}.CustomError"
    assert c.exception.message == "wrapped"


def test_base_exceptions_propagate(tape):
    @calltape.record
    def interrupt():
        raise KeyboardInterrupt

    @calltape.record
    def leave():
        raise SystemExit(4)

    with pytest.raises(KeyboardInterrupt):
        interrupt()
    with pytest.raises(SystemExit) as ei:
        leave()
    assert ei.value.code == 4
    calls = read_calls(tape)
    assert [c.outcome for c in calls] == ["raised", "raised"]
    assert [c.exception.type for c in calls] == ["builtins.KeyboardInterrupt",
                                                 "builtins.SystemExit"]


def test_exception_whose_str_fails_is_still_reraised(tape):
    class Ugly(Exception):
        def __str__(self):
            raise RuntimeError("str exploded")

    err = Ugly()

    @calltape.record
    def f():
        raise err

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Ugly) as ei:
            f()
    assert ei.value is err
    c = only_call(tape)
    assert c.outcome == "raised"
    assert "Ugly" in c.exception.type


def test_recorded_call_inside_except_keeps_the_handled_exception(tape):
    @calltape.record
    def f(x):
        return x

    try:
        raise KeyError("outer")
    except KeyError:
        assert f(1) == 1
        assert sys.exc_info()[1].args == ("outer",)


# -------------------------------------------------------------- nesting ----

def test_nested_calls_parent_and_depth(tape):
    @calltape.record
    def inner(x):
        return x + 1

    def middle(x):          # not recorded
        return inner(x) + inner(x)

    @calltape.record
    def outer(x):
        return middle(x)

    assert outer(1) == 4
    assert inner(10) == 11
    calls = read_calls(tape)
    assert [c.qualname.split(".")[-1] for c in calls] == ["outer", "inner", "inner", "inner"]
    o = calls[0]
    assert (o.parent, o.depth) == (None, 0)
    for c in calls[1:3]:
        assert (c.parent, c.depth) == (o.id, 1)
    assert (calls[3].parent, calls[3].depth) == (None, 0)


def test_call_stack_stays_balanced_after_exceptions(tape):
    @calltape.record
    def inner():
        raise ValueError("x")

    @calltape.record
    def outer():
        try:
            inner()
        except ValueError:
            pass
        raise RuntimeError("y")

    @calltape.record
    def later():
        return 1

    for _ in range(3):
        with pytest.raises(RuntimeError):
            outer()
    later()
    calls = read_calls(tape)
    assert len(calls) == 7
    assert (calls[-1].parent, calls[-1].depth) == (None, 0)
    for i in range(3):
        o, n = calls[2 * i], calls[2 * i + 1]
        assert (o.depth, o.parent) == (0, None)
        assert (n.depth, n.parent) == (1, o.id)


def test_parent_is_per_thread(tape):
    @calltape.record
    def inner():
        return threading.get_ident()

    @calltape.record
    def outer():
        box = []
        t = threading.Thread(target=lambda: box.append(inner()))
        t.start()
        t.join()
        return box[0]

    tid = outer()
    calls = read_calls(tape)
    by_name = {c.qualname.split(".")[-1]: c for c in calls}
    assert by_name["inner"].thread == tid != by_name["outer"].thread
    assert (by_name["inner"].parent, by_name["inner"].depth) == (None, 0)


# --------------------------------------------------------------- async ----

def test_async_def(tape):
    @calltape.record
    async def fetch(x):
        await asyncio.sleep(0.05)
        return x * 2

    assert asyncio.run(fetch(21)) == 42
    c = only_call(tape)
    assert c.args == {"x": 21}
    assert c.result == 42
    assert c.outcome == "returned"
    assert c.duration >= 0.049
    assert c.thread == threading.get_ident()


def test_async_not_recorded_until_finished(tape):
    @calltape.record
    async def fetch(x):
        await asyncio.sleep(0)
        return x

    coro = fetch(1)
    assert len(read_calls(tape)) == 0
    assert asyncio.run(coro) == 1
    assert len(read_calls(tape)) == 1


@pytest.mark.skipif(sys.version_info < (3, 12), reason="inspect.markcoroutinefunction is 3.12+")
def test_async_recorder_looks_like_a_coroutine_function():
    @calltape.record
    async def f():
        return 1

    assert inspect.iscoroutinefunction(f)


def test_async_exception(tape):
    @calltape.record
    async def fail(x):
        await asyncio.sleep(0)
        raise ValueError(f"bad {x}")

    with pytest.raises(ValueError, match="bad 3"):
        asyncio.run(fail(3))
    c = only_call(tape)
    assert c.outcome == "raised"
    assert c.exception.type == "builtins.ValueError"
    assert c.exception.message == "bad 3"
    assert "fail" in c.exception.traceback


def test_async_nested_and_concurrent(tape):
    @calltape.record
    async def leaf(x):
        await asyncio.sleep(0.02)
        return x

    @calltape.record
    async def branch(x):
        return await leaf(x) + 1

    async def main():            # not recorded
        return await asyncio.gather(branch(1), branch(2))

    assert asyncio.run(main()) == [2, 3]
    calls = read_calls(tape)
    assert len(calls) == 4
    branches = [c for c in calls if c.qualname.endswith("branch")]
    leaves = [c for c in calls if c.qualname.endswith("leaf")]
    assert sorted(c.args["x"] for c in branches) == [1, 2]
    for b in branches:
        assert (b.parent, b.depth) == (None, 0), "concurrent tasks must not nest"
        kids = [lf for lf in leaves if lf.parent == b.id]
        assert len(kids) == 1 and kids[0].args["x"] == b.args["x"]
        assert kids[0].depth == 1
        assert b.duration >= 0.019


def test_async_timeout_cancellation(tape):
    @calltape.record
    async def slow():
        await asyncio.sleep(10)

    async def main():
        await asyncio.wait_for(slow(), 0.02)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(main())
    c = only_call(tape)
    assert c.outcome in ("raised", "closed")
    assert c.duration < 5


# ----------------------------------------------------------- generators ----

def test_generator_recorded_once_when_exhausted(tape):
    @calltape.record
    def count(n):
        yield from range(n)
        return "done"

    g = count(3)
    assert next(g) == 0
    assert len(read_calls(tape)) == 0
    assert list(g) == [1, 2]
    c = only_call(tape)
    assert c.args == {"n": 3}
    assert c.outcome == "returned"
    assert len(read_calls(tape)) == 1


def test_generator_closed_early(tape):
    @calltape.record
    def count(n):
        yield from range(n)

    g = count(10)
    next(g)
    next(g)
    g.close()
    c = only_call(tape)
    assert c.outcome == "closed"
    assert c.args == {"n": 10}


def test_generator_abandoned_is_recorded_as_closed(tape):
    @calltape.record
    def count(n):
        yield from range(n)

    g = count(10)
    next(g)
    del g
    gc.collect()
    c = only_call(tape)
    assert c.outcome == "closed"


def test_generator_raising(tape):
    @calltape.record
    def bad():
        yield 1
        raise ValueError("in generator")

    with pytest.raises(ValueError, match="in generator"):
        list(bad())
    c = only_call(tape)
    assert c.outcome == "raised"
    assert c.exception.type == "builtins.ValueError"


def test_generator_send_throw_and_yield_from(tape):
    @calltape.record
    def acc():
        total = 0
        while True:
            x = yield total
            if x is None:
                return total
            total += x

    g = acc()
    assert next(g) == 0
    assert g.send(5) == 5
    assert g.send(7) == 12
    with pytest.raises(StopIteration) as si:
        g.send(None)
    assert si.value.value == 12

    g2 = acc()
    next(g2)
    with pytest.raises(KeyError):
        g2.throw(KeyError("k"))

    @calltape.record
    def count(n):
        yield from range(n)
        return "done"

    def outer():
        r = yield from count(2)
        yield r

    assert list(outer()) == [0, 1, "done"]
    calls = read_calls(tape)
    assert [c.outcome for c in calls] == ["returned", "raised", "returned"]


def test_generator_body_calls_nest_but_consumer_calls_do_not(tape):
    @calltape.record
    def inner(x):
        return x

    @calltape.record
    def consumer_side(x):
        return x

    @calltape.record
    def gen():
        yield inner(1)
        yield inner(2)

    for v in gen():
        consumer_side(v)
    calls = read_calls(tape)
    g = [c for c in calls if c.qualname.endswith("gen")]
    assert len(g) == 1
    ins = [c for c in calls if c.qualname.endswith("inner")]
    cons = [c for c in calls if c.qualname.endswith("consumer_side")]
    assert [(c.parent, c.depth) for c in ins] == [(g[0].id, 1)] * 2
    assert [(c.parent, c.depth) for c in cons] == [(None, 0)] * 2


def test_async_generator(tape):
    @calltape.record
    async def ticks(n):
        for i in range(n):
            await asyncio.sleep(0.01)
            yield i

    async def consume():
        return [i async for i in ticks(3)]

    assert asyncio.run(consume()) == [0, 1, 2]
    c = only_call(tape)
    assert c.args == {"n": 3}
    assert c.outcome == "returned"
    assert c.duration >= 0.029


def test_async_generator_closed_early(tape):
    @calltape.record
    async def ticks(n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def main():
        ag = ticks(10)
        first = await ag.__anext__()
        await ag.aclose()
        return first

    assert asyncio.run(main()) == 0
    c = only_call(tape)
    assert c.outcome == "closed"


def test_async_generator_raising(tape):
    @calltape.record
    async def bad():
        yield 1
        raise ValueError("agen")

    async def main():
        return [x async for x in bad()]

    with pytest.raises(ValueError, match="agen"):
        asyncio.run(main())
    c = only_call(tape)
    assert c.outcome == "raised"
    assert c.exception.message == "agen"
