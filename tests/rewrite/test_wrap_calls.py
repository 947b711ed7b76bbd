"""calltape.wrap_calls: every call inside a function through a wrapper, on
every kind of function, with the function's behaviour, locals, signature and
tracebacks exactly as without it (and the originals' defects fixed)."""

import asyncio
import functools
import importlib
import inspect
import linecache
import pickle
import sys
import textwrap
import threading
import traceback

import pytest

import calltape
from calltape.rewrite import CallExtras

with open(__file__, encoding="utf-8") as _f:
    HERE_LINES = _f.read().splitlines()


def line_of(marker):
    """The line (1-based) of this file that holds the comment `# marker`."""
    hits = [i + 1 for i, text in enumerate(HERE_LINES) if text.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, f"marker {marker!r} found {len(hits)} times"
    return hits[0]


class Log:
    """A pass-through wrapper that remembers each call: (callee name, source, args, kwargs)."""

    def __init__(self):
        self.calls = []
        self.extras = []

    def __call__(self, call, extras, /, *args, **kwargs):
        self.calls.append((getattr(call, "__name__", type(call).__name__), extras["source"], args,
                           kwargs))
        self.extras.append(extras)
        return call(*args, **kwargs)

    def sources(self):
        return [c[1] for c in self.calls]

    def names(self):
        return [c[0] for c in self.calls]


def double(x):
    return 2 * x


def add(a, b=0, *, c=0):
    return a + b + c


# --- the basics --------------------------------------------------------------

LOG = Log()


@calltape.wrap_calls(LOG)
def simple(x):
    y = double(x)  # site-simple-1
    return add(
        y,
        b=double(1),
    )  # site-simple-2


def test_every_call_goes_through_the_wrapper_in_order():
    LOG.calls.clear()
    assert simple(5) == 12
    assert LOG.names() == ["double", "double", "add"]
    assert LOG.sources() == ["double(x)", "double(1)", "add(\n        y,\n        b=double(1),\n    )"]
    assert LOG.calls[2][2:] == ((10,), {"b": 2})


def test_extras_give_the_line_range_in_the_file_and_stay_one_readonly_object():
    LOG.extras.clear()
    simple(1)
    simple(2)
    first, second = line_of("site-simple-1"), line_of("site-simple-2")
    assert LOG.extras[0]["ln_range"] == (first,)
    assert LOG.extras[2]["ln_range"] == (first + 1, second)
    assert LOG.extras[0] is LOG.extras[3]  # the same site, the same object
    extras = LOG.extras[0]
    assert isinstance(extras, CallExtras) and isinstance(extras, dict)
    with pytest.raises(TypeError, match="read-only"):
        extras["source"] = "x"
    with pytest.raises(TypeError, match="read-only"):
        extras.update(a=1)
    assert dict(extras) == {"ln_range": (first,), "source": "double(x)"}
    assert pickle.loads(pickle.dumps(extras)) == extras
    assert hash(extras) == hash(CallExtras(dict(extras)))


def test_the_source_text_is_the_call_as_written_with_non_ascii_text():
    log = Log()

    @calltape.wrap_calls(log)
    def f():
        return "·".join(["café", str( "naïve" )])  # noqa: UP018

    assert f() == "café·naïve"
    assert log.sources() == ["str( \"naïve\" )", '"·".join(["café", str( "naïve" )])']


def change_args_and_result(call, extras, /, *args, **kwargs):
    if call is double:
        args = (args[0] + 100,)
    result = call(*args, **kwargs)
    return result * 10 if call is add else result


@calltape.wrap_calls(change_args_and_result)
def changed(x):
    return add(double(x), c=1)


def test_the_wrapper_may_change_arguments_and_result():
    assert changed.__wrapped__(1) == 3
    assert changed(1) == (2 * 101 + 1) * 10


def test_a_wrapper_declared_positional_only_takes_calls_with_keywords_named_like_its_own():
    def takes(call=None, extras=None):
        return (call, extras)

    @calltape.wrap_calls(Log())
    def f():
        return takes(call=1, extras=2)

    assert f() == (1, 2)


def test_decorator_arguments_are_checked():
    with pytest.raises(TypeError, match="callable wrapper, not int"):
        calltape.wrap_calls(3)
    with pytest.raises(ValueError, match="a blacklist or a whitelist, not both"):
        calltape.wrap_calls(Log(), blacklist={"a"}, whitelist={"b"})
    with pytest.raises(TypeError, match="not a string"):
        calltape.wrap_calls(Log(), blacklist="print")
    with pytest.raises(TypeError, match="not a call name"):
        calltape.wrap_calls(Log(), whitelist={1})


# --- closures ------------------------------------------------------------------


def make_counter(log):
    total = 0
    seen = []

    @calltape.wrap_calls(log)
    def bump(k):
        nonlocal total
        total += double(k)
        seen.append(k)
        return total

    def read():
        return total

    def reset():
        nonlocal total
        total = 1000

    return bump, read, reset, seen


def test_closures_read_and_write_the_enclosing_variables():
    log = Log()
    bump, read, reset, seen = make_counter(log)
    assert bump(1) == 2 and bump(2) == 6
    assert read() == 6  # the nonlocal write reached the enclosing scope
    reset()
    assert bump(1) == 1002  # and the enclosing scope's write reached the function
    assert seen == [1, 2, 1]
    assert log.names() == ["double", "append"] * 3
    assert bump.__closure__ == bump.__wrapped__.__closure__  # the very same cells


def test_nested_functions_defined_many_times_each_keep_their_own_cells():
    log = Log()
    made = [make_counter(log) for _ in range(5)]
    for i, (bump, read, _, _) in enumerate(made):
        bump(i)
    assert [read() for _, read, _, _ in made] == [0, 2, 4, 6, 8]
    # parsed and compiled once: one code object for every definition with this wrapper
    assert len({bump.__code__ for bump, *_ in made}) == 1
    other = make_counter(Log())[0]
    assert other.__code__ is not made[0][0].__code__ and other(3) == 6


def outer_recursive(log):
    @calltape.wrap_calls(log)
    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    return fact


def test_a_recursive_nested_function_calls_its_rewritten_self():
    log = Log()
    assert outer_recursive(log)(4) == 24
    assert log.names() == ["fact", "fact", "fact"]


RECURSIVE_LOG = Log()


@calltape.wrap_calls(RECURSIVE_LOG)
def module_fact(n):
    return 1 if n <= 1 else n * module_fact(n - 1)


class PrivateRecursion:
    def make(self, log):
        @calltape.wrap_calls(log)
        def __down(k):
            return 0 if k == 0 else __down(k - 1) + 1

        return __down


def test_a_recursive_closure_with_a_private_name():
    log = Log()
    assert PrivateRecursion().make(log)(2) == 2
    assert log.names() == ["__down", "__down"]


def test_a_recursive_module_level_function_calls_itself_by_its_global_name():
    # its name is a global of the module, not a cell of the rewrite's factory
    RECURSIVE_LOG.calls.clear()
    assert module_fact(4) == 24
    assert RECURSIVE_LOG.names() == ["module_fact", "module_fact", "module_fact"]


# --- methods, super(), classmethod, staticmethod ------------------------------


class Base:
    def area(self, x):
        return x + 1

    @classmethod
    def make(cls, v):
        return (cls.__name__, v)

    def scaled(self, x):
        return double(x) + self.area(x)


METHOD_LOG = Log()


class Child(Base):
    @calltape.wrap_calls(METHOD_LOG)
    def area(self, x):
        return super().area(double(x))

    @calltape.wrap_calls(METHOD_LOG)
    def lazy(self, x):
        return (lambda y: super(Child, self).area(y))(x), [super().area(v) for v in (x,)][0]  # noqa: PLC3002, RUF015

    @calltape.wrap_calls(METHOD_LOG)
    def klass(self):
        return __class__

    @classmethod
    @calltape.wrap_calls(METHOD_LOG)
    def make(cls, v):
        return super().make(double(v))

    @calltape.wrap_calls(METHOD_LOG)
    @classmethod
    def make_above(cls, v):
        return add(v, 1), cls.__name__

    @staticmethod
    @calltape.wrap_calls(METHOD_LOG)
    def static(v):
        return add(v, 2)

    @calltape.wrap_calls(METHOD_LOG)
    @staticmethod
    def static_above(v):
        return add(v, 3)

    @calltape.wrap_calls(METHOD_LOG)
    def _private_caller(self):
        return self.__private(4)

    def __private(self, v):
        return v * 3


class GrandChild(Child):
    def area(self, x):
        return super().area(x) * 100


def test_zero_argument_super_goes_through_the_wrapper_explicitly():
    METHOD_LOG.calls.clear()
    assert Child().area(3) == 7
    assert METHOD_LOG.calls[0][:2] == ("super", "super()")
    cls_arg, self_arg = METHOD_LOG.calls[0][2]
    assert cls_arg is Child and isinstance(self_arg, Child)
    assert METHOD_LOG.names()[1:] == ["double", "area"]
    assert GrandChild().area(3) == 700  # the MRO from the instance's class, as super() does


def test_super_in_lambdas_comprehensions_and_the_class_cell():
    assert Child().lazy(5) == (6, 6)
    assert Child().klass() is Child


def test_classmethods_and_staticmethods_on_either_side_of_the_decorator():
    METHOD_LOG.calls.clear()
    assert Child.make(2) == ("Child", 4)
    assert Child.make_above(1) == (2, "Child")
    assert Child().make_above(1) == (2, "Child")
    assert Child.static(1) == 3 and Child().static_above(1) == 4
    assert isinstance(Child.__dict__["make_above"], classmethod)
    assert isinstance(Child.__dict__["static_above"], staticmethod)
    assert METHOD_LOG.names() == ["super", "double", "make", "add", "add", "add", "add"]


def test_private_names_are_mangled_as_in_the_class():
    assert Child()._private_caller() == 12


def test_a_bound_method_is_rewritten_and_stays_bound():
    log = Log()
    obj = Base()
    bound = calltape.wrap_calls(log)(obj.scaled)
    assert bound(1) == 4 and bound.__self__ is obj
    assert log.names() == ["double", "area"]


# --- decorators ------------------------------------------------------------------

APPLIED = []


def tag(label):
    def deco(func):
        APPLIED.append((label, func.__name__))
        func.tag = label
        return func

    return deco


DECO_LOG = Log()


@tag("outer")
@calltape.wrap_calls(DECO_LOG)
@tag("inner")
def decorated(x):
    @tag("nested")
    @functools.lru_cache(maxsize=None)  # noqa: UP033
    def cached(v):
        return double(v)

    cached(x)
    cached(x)
    return cached, cached.cache_info().hits


def test_decorators_are_applied_once_and_nested_ones_are_kept():
    assert APPLIED[:2] == [("inner", "decorated"), ("outer", "decorated")]
    APPLIED.clear()
    DECO_LOG.calls.clear()
    cached, hits = decorated(3)
    assert hits == 1 and cached.tag == "nested"
    assert APPLIED == [("nested", "cached")]  # the nested decorators ran, the outer ones did not
    assert decorated.tag == "outer"
    # the decorator expressions' calls are calls inside the function too
    assert DECO_LOG.sources()[:2] == ['tag("nested")', "functools.lru_cache(maxsize=None)"]
    assert DECO_LOG.names().count("double") == 1  # the second call was a cache hit


def test_a_function_under_another_decorators_wrapper_is_refused_with_the_order_to_use():
    def logged(func):
        @functools.wraps(func)
        def inner(*a, **k):
            return func(*a, **k)

        return inner

    def plain(x):
        return x

    with pytest.raises(TypeError, match=r"another decorator's wrapper .* put @wrap_calls\(\.\.\.\)"
                                        r" below that decorator"):
        calltape.wrap_calls(Log())(logged(plain))
    with pytest.raises(TypeError, match="already rewritten by wrap_calls"):
        calltape.wrap_calls(Log())(simple)


# --- generators and async ---------------------------------------------------------

GEN_LOG = Log()


@calltape.wrap_calls(GEN_LOG)
def gen(n):
    for i in range(n):
        got = yield double(i)
        if got is not None:
            yield add(got, 1)
    return len("end")


def test_generators_yield_receive_and_return_as_before():
    GEN_LOG.calls.clear()
    g = gen(2)
    assert next(g) == 0
    assert g.send(10) == 11
    assert next(g) == 2
    with pytest.raises(StopIteration) as stop:
        next(g)
    assert stop.value.value == 3
    assert GEN_LOG.names() == ["range", "double", "add", "double", "len"]
    assert inspect.isgeneratorfunction(gen)


async def fetch(v):
    await asyncio.sleep(0)
    return v * 2


ASYNC_LOG = Log()


@calltape.wrap_calls(ASYNC_LOG)
async def gather_twice(v):
    a = await fetch(v)
    b, c = await asyncio.gather(fetch(a), fetch(1))
    return add(b, c)


@calltape.wrap_calls(ASYNC_LOG)
async def agen(n):
    for i in range(n):
        yield await fetch(i)


def test_async_def_and_async_generators():
    ASYNC_LOG.calls.clear()
    assert asyncio.run(gather_twice(3)) == 14
    assert inspect.iscoroutinefunction(gather_twice)
    assert ASYNC_LOG.names() == ["fetch", "fetch", "fetch", "gather", "add"]

    async def collect():
        return [x async for x in agen(3)]

    assert asyncio.run(collect()) == [0, 2, 4]
    assert inspect.isasyncgenfunction(agen)


# --- blacklist, whitelist, ignore_builtins ----------------------------------------


class Holder:
    def __init__(self):
        self.table = {"key": double, 0: double, "other": double}

    def helper(self, v):
        return v


def test_blacklist_patterns_and_the_callers_set_is_not_changed():
    blacklist = {"h.helper", "h.table[key]"}
    frozen = set(blacklist)
    log = Log()

    @calltape.wrap_calls(log, ignore_builtins=True, blacklist=blacklist)
    def f(h):
        return [h.helper(1), h.table["key"](2), h.table["other"](3), len("ab"), double(4)]

    assert f(Holder()) == [1, 4, 6, 2, 8]
    assert log.sources() == ['h.table["other"](3)', "double(4)"]
    assert blacklist == frozen  # ignore_builtins added nothing to the caller's set


def test_wildcard_subscripts_and_whitelist():
    log = Log()

    @calltape.wrap_calls(log, whitelist=frozenset({"h.table[*]"}))
    def f(h, k):
        return [h.helper(1), h.table["key"](2), h.table[0](3), h.table[k](4), double(5)]

    assert f(Holder(), "other") == [1, 4, 6, 8, 10]
    assert log.sources() == ['h.table["key"](2)', "h.table[0](3)", "h.table[k](4)"]


def test_ignore_builtins_leaves_builtins_alone_but_not_names_the_function_rebinds():
    log = Log()

    @calltape.wrap_calls(log, ignore_builtins=True)
    def f(xs):
        n = len(xs)
        sorted = double  # a local named like a builtin is not one
        return n, sorted(n), str(n), max(xs)

    assert f([1, 5]) == (2, 4, "2", 5)
    assert log.names() == ["double"]


# --- the frame: locals, vars, tracebacks ---------------------------------------------

MODULE_VALUE = 42


def frames(x, *rest, k=1, **more):
    inside = [x, MODULE_VALUE]
    total = sum(inside)
    return dict(locals()), sorted(vars()), sorted(dir()), eval("total + k"), globals() is \
        sys.modules[__name__].__dict__, total


FRAME_LOG = Log()
frames_wrapped = calltape.wrap_calls(FRAME_LOG)(frames)


class WithFrames(Base):
    @calltape.wrap_calls(Log())
    def method(self, v):
        super().area(v)
        return sorted(vars())


def test_locals_vars_dir_eval_and_globals_are_the_functions_own():
    FRAME_LOG.calls.clear()
    assert frames_wrapped(1, 2, k=3, z=4) == frames(1, 2, k=3, z=4)
    assert frames_wrapped(1)[0] == {"x": 1, "rest": (), "k": 1, "more": {}, "inside": [1, 42],
                                    "total": 43}
    # the wrapper saw the calls, not the frame readers (which would read its frame)
    assert FRAME_LOG.names() == ["sum", "dict", "sorted", "sorted"] * 2
    plain = WithFrames.method.__wrapped__(WithFrames(), 1)
    assert WithFrames().method(1) == plain == ["__class__", "self", "v"]


def fails_here(x):
    y = double(x)
    z = {"a": 1}
    return y + z[
        "missing"]  # raise-line


def calls_a_failing_function(x):
    w = add(x)
    return w + add(
        x, "no")  # callee-fails


def tb_positions(func, *args):
    with pytest.raises(Exception) as info:
        func(*args)
    return [(f.name, f.lineno, f.end_lineno, f.colno, f.end_colno, f.line)
            for f in traceback.extract_tb(info.value.__traceback__)[1:]]


def test_tracebacks_show_the_original_lines_and_columns():
    log = Log()
    for plain, where in ((fails_here, "raise-line"), (calls_a_failing_function, "callee-fails")):
        wrapped = calltape.wrap_calls(log)(plain)
        expected = tb_positions(plain, 1)
        got = tb_positions(wrapped, 1)
        assert got[0] == expected[0]
        assert got[0][1] == line_of(where) - 1
        assert got[-1] == expected[-1]  # the callee's own frame
    # between the function and its callee: the wrapper's frame, nothing else
    names = [f[0] for f in tb_positions(calltape.wrap_calls(log)(calls_a_failing_function), 1)]
    assert names == ["calls_a_failing_function", "__call__", "add"]


def test_signature_and_function_attributes_are_the_originals():
    def original(a: int, /, b: str = "x", *args: float, c: list = [], **kw) -> dict:  # noqa: B006
        """Docs."""
        return {"a": a}

    original.extra = "attr"
    new = calltape.wrap_calls(Log())(original)
    assert new.__wrapped__ is original
    assert inspect.signature(new) == inspect.signature(original)
    assert str(inspect.signature(new, follow_wrapped=False)) == str(inspect.signature(original))
    for name in ("__name__", "__qualname__", "__doc__", "__module__", "__annotations__",
                 "__defaults__", "__kwdefaults__"):
        assert getattr(new, name) == getattr(original, name), name
    assert new.__kwdefaults__["c"] is original.__kwdefaults__["c"]  # the same default object
    assert new.extra == "attr"
    assert new.__code__.co_qualname == original.__code__.co_qualname
    assert new.__code__.co_varnames == original.__code__.co_varnames  # no helper local
    assert new.__code__.co_freevars == original.__code__.co_freevars
    assert new.__code__.co_firstlineno == original.__code__.co_firstlineno
    assert hash(new.__code__) == hash(new.__code__)
    assert new(1) == {"a": 1}


def test_module_level_functions_pickle_by_reference():
    assert pickle.loads(pickle.dumps(simple)) is simple


# --- what cannot be rewritten ---------------------------------------------------------


def test_unavailable_sources_are_one_clear_type_error():
    namespace = {}
    # a file name of its own: "<string>" may be in linecache from other tests (3.13 keeps
    # the sources of some code compiled from strings there)
    exec(compile("def made_by_exec(x):\n    return abs(x)\n", "<made by exec>", "exec"), namespace)
    with pytest.raises(TypeError, match=r"^wrap_calls cannot rewrite made_by_exec"
                                        r" \(<made by exec>, line 1\): its source is not available"):
        calltape.wrap_calls(Log())(namespace["made_by_exec"])
    with pytest.raises(TypeError, match=r"cannot rewrite test_unavailable_sources_.*<lambda>.*not lambdas"):
        calltape.wrap_calls(Log())(lambda x: abs(x))
    with pytest.raises(TypeError, match="rewrites functions written with def, and 'len' is a"
                                        " builtin_function_or_method"):
        calltape.wrap_calls(Log())(len)
    with pytest.raises(TypeError, match="'Holder' is a class"):
        calltape.wrap_calls(Log())(Holder)


def test_a_source_edited_since_import_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "edited_mod.py"
    path.write_text("def f(a, b):\n    return a + b\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("edited_mod")
    path.write_text("def g(a):\n    return a\n")
    linecache.checkcache(str(path))
    with pytest.raises(TypeError, match=r"cannot rewrite f .*does not match the running code"):
        calltape.wrap_calls(Log())(mod.f)


# --- sources in other modules: __future__, indentation, type parameters -----------------


def load(tmp_path, monkeypatch, name, text):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name)


def test_future_annotations_and_a_method_with_text_at_column_zero(tmp_path, monkeypatch):
    mod = load(tmp_path, monkeypatch, "future_mod", '''
        from __future__ import annotations
        import calltape

        LOG = []

        def w(call, extras, /, *a, **k):
            LOG.append(extras["source"])
            return call(*a, **k)

        class K:
            @calltape.wrap_calls(w)
            def m(self, x):
                text = """
        column zero"""
                def inner(v: int) -> list[int]:
                    return [v]
                return inner.__annotations__, len(text), str(x)
        ''')
    assert mod.K().m(1) == ({"v": "int", "return": "list[int]"}, 12, "1")
    assert mod.LOG == ["len(text)", "str(x)"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="type parameters are Python 3.12+")
def test_generic_functions(tmp_path, monkeypatch):
    mod = load(tmp_path, monkeypatch, "generic_mod", '''
        import calltape

        LOG = []

        def w(call, extras, /, *a, **k):
            LOG.append(extras["source"])
            return call(*a, **k)

        @calltape.wrap_calls(w)
        def first[T](xs: list[T]) -> T:
            return list(xs)[0], T.__name__
        ''')
    assert mod.first([3]) == (3, "T")
    assert mod.LOG == ["list(xs)"]


# --- calls in every place -----------------------------------------------------------------


def test_calls_in_nested_classes_defaults_lambdas_comprehensions_and_fstrings():
    log = Log()

    @calltape.wrap_calls(log)
    def f(n):
        class Inner:
            size = double(n)

        def g(v=add(n, 1)):  # noqa: B008
            return v

        squares = [double(i) for i in range(2)]
        pick = sorted(squares, key=lambda s: -abs(s))
        return Inner.size, g(), pick, f"{str(n)}!"  # noqa: RUF010

    assert f(3) == (6, 4, [2, 0], "3!")
    assert sorted(set(log.names())) == ["abs", "add", "double", "g", "range", "sorted", "str"]


def test_several_threads_run_one_rewritten_function():
    lock = threading.Lock()
    counts = {}

    def count(call, extras, /, *args, **kwargs):
        name = threading.current_thread().name
        with lock:
            counts[name] = counts.get(name, 0) + 1
        return call(*args, **kwargs)

    @calltape.wrap_calls(count)
    def work(n):
        return sum(double(i) for i in range(n))

    results = []
    threads = [threading.Thread(target=lambda: results.append(work(100))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [9900] * 4
    assert sorted(counts.values()) == [102] * 4  # range, sum and 100 doubles per thread
