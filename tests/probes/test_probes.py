"""calltape.probes: targets of every kind, every event, the C instruments, errors, lifespans."""

import collections
import functools
import logging
import os
import sys
import threading
import time
import types

import probe_subjects as S
import pytest
from probe_subjects import decorated as imported_alias

import calltape
from calltape import probes

LOCAL_NEEDS_SYSMON = pytest.mark.skipif(
    sys.version_info < (3, 12),
    reason="3.11 patches function objects: a local function is made anew at each call")


def probe_with(target, **instruments):
    p = probes.attach_to(target)
    for k, inst in instruments.items():
        p.instruments[k] = inst
    p.start()
    return p


def count(event="call", value="1"):
    return probes.CountInstrument("n", value, event=event)


@pytest.mark.parametrize("target,call", [
    ("probe_subjects.Cart.total", lambda: S.Cart([1, 2]).total()),
    ("probe_subjects.Cart.empty", lambda: S.Cart.empty()),
    ("probe_subjects.Cart.add", lambda: S.Cart.add(1, 2)),
    ("probe_subjects.Cart.size", lambda: S.Cart([1]).size),
    ("probe_subjects.Cart.Line.cost", lambda: S.Cart.Line().cost(2, 3)),
    pytest.param("probe_subjects.outer.<locals>.inner", lambda: S.outer(1), marks=LOCAL_NEEDS_SYSMON),
    ("probe_subjects.decorated", lambda: imported_alias(1, 2)),
    ("probe_subjects.recorded", lambda: S.recorded(2)),
    (S.fails, lambda: S.fails(1)),
    ((S.Cart, "total"), lambda: S.Cart().total()),
])
def test_every_target_kind_fires_through_every_reference(target, call, tape):
    p = probe_with(target, n=count())
    call()
    call()
    assert p.instruments["n"].count == 2
    p.stop()
    call()
    assert p.instruments["n"].count == 2
    assert not p.running


def test_unknown_target_says_what_is_missing():
    with pytest.raises(LookupError, match="no attribute 'nope'"):
        probes.attach_to("probe_subjects.Cart.nope")
    with pytest.raises(LookupError, match="cannot import"):
        probes.attach_to("no_such_module_xyz.f")


def test_namespace_at_each_event():
    seen = {}

    class Keep(probes.Instrument):
        def fire(self, value, ns):
            seen.setdefault(self.name, []).append(value)

    p = probe_with(S.decorated,
                   c=Keep("call", "(n, args, kwargs, type(start).__name__, frame.f_code.co_name,"
                          " now.tzinfo is not None)", event="call"),
                   r=Keep("return", "(result, elapsed >= 0, end >= start)", event="return"))
    S.decorated(5, 6, 7, key="k", z=1)
    assert seen["call"] == [(5, (5, 6, 7), {"key": "k", "z": 1}, "float", "decorated", True)]
    assert seen["return"] == [(7, True, True)]
    p.stop()


def test_error_and_end_events_leave_the_exception_alone():
    seen = []

    class Keep(probes.Instrument):
        def fire(self, value, ns):
            seen.append((self.name, value))

    p = probe_with(S.fails, e=Keep("error", "type(exception).__name__", event="error"),
                   x=Keep("end", "local", event="end"), r=count("return"))
    with pytest.raises(ValueError, match="negative: -1"):
        S.fails(-1)
    assert S.fails(2) == 20
    assert seen == [("error", "ValueError"), ("end", 20)]
    assert p.instruments["r"].count == 1
    p.stop()


def test_histogram_of_ints_and_floats():
    p = probe_with(S.Cart.add, h=probes.HistogramInstrument("h", "a + b", event="call"))
    for i in range(100):
        S.Cart.add(i, 0.5)
    h = p.instruments["h"]
    assert h.stats() == {"count": 100, "min": 0.5, "max": 99.5, "mean": 50.0, "sum": 5000.0}
    assert h.percentile(50) == pytest.approx(50.0)
    assert h.percentiles([0, 100]) == [0.5, 99.5]
    assert h.status is None
    p.stop()


def test_count_adds_values_ints_then_floats():
    p = probe_with(S.Cart.add, n=count("call", "a"))
    S.Cart.add(2, 0)
    S.Cart.add(3, 0)
    assert p.instruments["n"].count == 5
    S.Cart.add(0.5, 0)
    assert p.instruments["n"].count == 5.5
    p.stop()


def test_log_instrument_bounded(caplog):
    p = probe_with(S.Cart.add, log=probes.LogInstrument("sum", "'x' * a", event="call"))
    with caplog.at_level(logging.INFO, logger="calltape.probes"):
        S.Cart.add(3, 0)
        S.Cart.add(5000, 0)
        calltape.flush_logs()  # handed to logging by the log thread
    assert caplog.messages[0] == "Probe (sum) = xxx"
    assert len(caplog.messages[1]) == len("Probe (sum) = ") + 2000
    assert caplog.messages[1].endswith("...")
    p.stop()


def test_log_instrument_ints_as_str_gives_them(caplog):
    class Short(probes.LogInstrument):
        max_chars = 6

    p = probe_with(S.Cart.add, short=Short("s", "a", event="call"),
                   full=probes.LogInstrument("f", "a", event="call"))
    with caplog.at_level(logging.INFO, logger="calltape.probes"):
        for a in (12, -1234567, 10**30, True, 2**63 - 1, -2**63):
            S.Cart.add(a, 0)
        calltape.flush_logs()
    assert caplog.messages == [
        "Probe (s) = 12", "Probe (f) = 12",
        "Probe (s) = -12...", "Probe (f) = -1234567",
        "Probe (s) = 100...", f"Probe (f) = {10**30}",
        "Probe (s) = True", "Probe (f) = True",
        "Probe (s) = 922...", f"Probe (f) = {2**63 - 1}",
        "Probe (s) = -92...", f"Probe (f) = {-2**63}"]
    p.stop()


def test_errors_never_reach_the_target_and_are_kept_with_their_time():
    class Boom(probes.Instrument):
        def fire(self, value, ns):
            raise RuntimeError("instrument broke")

    p = probe_with(S.Cart.add, bad=count("call", "undefined_name + 1"), boom=Boom("b", "1", event="return"),
                   hist=probes.HistogramInstrument("h", "'text'", event="call"),
                   off=probes.CountInstrument("off", "1 / 0", event="call", disable_on_error=True))
    t0 = time.time()
    assert [S.Cart.add(1, 2) for _ in range(3)] == [3, 3, 3]
    bad, boom, hist, off = (p.instruments[k] for k in ("bad", "boom", "hist", "off"))
    assert bad.status == "NameError: name 'undefined_name' is not defined" and bad.nerrors == 3
    when, event, msg = boom.errors[0]
    assert t0 <= when <= time.time() and event == "return" and msg == "RuntimeError: instrument broke"
    assert hist.status == "TypeError: a histogram takes ints and floats, not str"
    assert off.disabled and off.nerrors == 1
    p.stop()


def test_expression_syntax_error_at_construction():
    with pytest.raises(SyntaxError):
        probes.CountInstrument("n", "1 +", event="call")
    with pytest.raises(ValueError, match="unknown probe event"):
        probes.CountInstrument("n", "1", event="sometimes")


def test_lifespan_expires_and_detaches():
    inst = probes.CountInstrument("n", "1", event="call", expires=time.time() + 0.2)
    p = probe_with(S.Cart.add, n=inst)
    S.Cart.add(1, 1)
    assert inst.count == 1 and p.running
    time.sleep(0.25)
    S.Cart.add(1, 1)
    assert inst.expired and inst.count == 1
    assert "n" not in p.instruments and not p.running  # nothing left: no events
    p.stop()


def test_lifespan_in_minutes():
    inst = probes.CountInstrument("n", "1", lifespan=2)
    assert 119 < inst.expires - time.time() <= 120


def test_threads_count_every_call():
    p = probe_with(S.Cart.add, n=count(), h=probes.HistogramInstrument("h", "elapsed", event="return"))

    def work():
        for i in range(2000):
            S.Cart.add(i, i)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert p.instruments["n"].count == 8000
    assert p.instruments["h"].stats()["count"] == 8000
    p.stop()


def test_recursion_and_instrument_calling_its_target():
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    probes.manager.global_namespace["fib"] = fib  # the expression calls the target
    try:
        p = probe_with(fib, n=count(), r=probes.CountInstrument("r", "fib(2)", event="return"))
        assert fib(10) == 55
        assert p.instruments["n"].count == 177  # fib(2) inside the instrument: not counted
        assert p.instruments["r"].count == 177
        assert p.instruments["r"].status is None
        p.stop()
    finally:
        del probes.manager.global_namespace["fib"]


def test_generator_call_event():
    p = probe_with(S.gen, n=count())
    assert list(S.gen(3)) == [0, 1, 2]
    assert p.instruments["n"].count == 1
    p.stop()


def test_probe_and_monitor_together(tape):
    p = probe_with(S.fails, n=count())
    with calltape.monitor(include=["probe_subjects"]):
        S.fails(3)
    calltape.flush()
    assert p.instruments["n"].count == 1
    assert [c.result for c in calltape.open(tape).calls("fails")] == [30]
    p.stop()


def test_record_instrument_writes_a_call(tape):
    p = probe_with(S.fails, r=probes.RecordInstrument("fails"))
    S.fails(4)
    with pytest.raises(ValueError):
        S.fails(-2)
    p.stop()
    calltape.flush()
    calls = list(calltape.open(tape).calls("fails"))
    assert [c.args for c in calls] == [{"v": 4}, {"v": -2}]
    assert calls[0].result == 40
    assert calls[1].exception is not None
    assert [c.captured for c in calls] == ["probe", "probe"]
    assert len(list(calltape.open(tape).search(captured="probe"))) == 2


def test_active_probes_and_reuse():
    p = probe_with("probe_subjects.Cart.total", n=count())
    assert probes.active_probes["probe_subjects.Cart.total"] is p
    assert probes.attach_to("probe_subjects.Cart.total") is p
    assert probes.attach_to(S.Cart.total) is p  # the same code object
    p.stop()
    assert "probe_subjects.Cart.total" not in probes.active_probes


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring's events: 3.12+")
def test_stopped_probe_has_no_events():
    p = probe_with(S.Cart.add, n=count())
    tool = calltape._native.probe_tool()
    assert sys.monitoring.get_local_events(tool, S.Cart.add.__code__) != 0
    p.stop()
    assert sys.monitoring.get_local_events(tool, S.Cart.add.__code__) == 0
    assert sys.monitoring.get_tool(tool) is None


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ patches nothing")
def test_stopped_probe_puts_every_reference_back():
    # 3.11: start() replaced the staticmethod in the class, the module's
    # function, the alias another module imported and this frame's locals;
    # stop() puts them back
    add, fails, alias = S.Cart.__dict__["add"], S.fails, imported_alias
    originals = id(add), id(fails)
    p = probe_with(S.Cart.add, n=count())
    q = probe_with("probe_subjects.decorated", n=count())
    f = probe_with(S.fails, n=count())
    assert id(S.Cart.__dict__["add"]) != originals[0] and type(S.Cart.__dict__["add"]) is staticmethod
    assert add is S.Cart.__dict__["add"] and fails is S.fails and id(fails) != originals[1]
    assert "calltape probe" in repr(S.Cart.__dict__["add"].__func__)
    assert "calltape probe" in repr(S.fails)
    assert S.fails.__name__ == "fails" and id(S.fails.__wrapped__) == originals[1]
    assert "calltape probe" in repr(S.decorated.__closure__[0].cell_contents)
    for probe in (p, q, f):
        probe.stop()
    assert S.Cart.__dict__["add"] is add and S.fails is fails and (id(add), id(fails)) == originals
    assert globals()["imported_alias"] is alias
    assert "calltape probe" not in repr(S.decorated.__closure__[0].cell_contents)


def test_one_name_values_are_found_as_eval_finds_them():
    seen = []

    class Keep(probes.Instrument):
        def fire(self, value, ns):
            seen.append(value)

    probes.manager.global_namespace["limit"] = 7
    try:
        p = probe_with(S.Cart.add, a=Keep("a", "a", event="call"), g=Keep("g", "limit ", event="call"),
                       b=Keep("b", "len", event="call"), m=count("call", "missing_name"))
        S.Cart.add(1, 2)
        assert seen == [1, 7, len]
        assert p.instruments["m"].status == "NameError: name 'missing_name' is not defined"
        p.stop()
    finally:
        del probes.manager.global_namespace["limit"]


def test_ctrl_c_in_an_instrument_reaches_the_program():
    # an instrument's own errors never reach the target, but a KeyboardInterrupt
    # (the user pressed Ctrl-C while it ran) is not swallowed
    def interrupt():
        raise KeyboardInterrupt

    probes.manager.global_namespace["interrupt"] = interrupt
    try:
        for event in ("call", "return"):
            p = probe_with(S.fails, i=probes.CountInstrument("i", "interrupt()", event=event))
            with pytest.raises(KeyboardInterrupt):
                S.fails(1)
            p.stop()
            assert S.fails(1) == 10  # stopped: nothing fires
    finally:
        del probes.manager.global_namespace["interrupt"]


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer keeps memory of each thread: RSS says nothing")
def test_threads_that_ended_keep_no_probe_stack():
    # each thread that ran a probed call had a stack of its own: it goes with the thread
    def target(x):
        return x + 1

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    p = probe_with(target, h=probes.HistogramInstrument("h", "elapsed", event="return"))

    def threads(n):
        for _ in range(n):
            t = threading.Thread(target=target, args=(1,))
            t.start()
            t.join()

    threads(1000)
    before = rss()
    threads(8000)  # 8000 stacks of 16 entries kept would be 5 MB
    grown = rss() - before
    p.stop()
    assert p.instruments["h"].stats()["count"] == 9000
    assert grown < 2 * 1024 * 1024, grown


def test_a_profiler_running_meanwhile_sees_every_call():
    # 3.11 catches the target's frame with a profile function set for one
    # event: the profiler in place before gets that event and the rest
    seen = []

    def profiler(frame, event, arg):
        if frame.f_code is S.fails.__code__ or frame.f_code.co_name == "fails":
            seen.append((event, arg if event == "return" else None))

    p = probe_with(S.fails, r=count("return", "result"), c=count("call", "v"))
    sys.setprofile(profiler)
    try:
        S.fails(2)
        S.fails(3)
    finally:
        sys.setprofile(None)
    p.stop()
    assert seen == [("call", None), ("return", 20), ("call", None), ("return", 30)]
    assert p.instruments["r"].count == 50 and p.instruments["c"].count == 5


def test_a_recorded_function_is_still_recorded_while_probed(tape):
    p = probe_with("probe_subjects.recorded", r=count("return", "result"))
    assert S.recorded(2) == 6
    p.stop()
    assert S.recorded(3) == 9
    calltape.flush()
    assert [c.args for c in calltape.open(tape).calls("recorded")] == [{"v": 2}, {"v": 3}]
    assert p.instruments["r"].count == 6


def test_a_registry_dict_and_an_instance_attribute_are_probed_too():
    registry = {"handler": S.fails}
    holder = type("Holder", (), {})()
    holder.cb = S.fails
    p = probe_with(S.fails, n=count())
    registry["handler"](1)
    holder.cb(1)
    assert p.instruments["n"].count == 2
    p.stop()
    assert registry["handler"] is holder.cb is S.fails
    assert "calltape probe" not in repr(S.fails)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ probes any code object")
def test_on_311_what_cannot_be_patched_is_refused_in_one_sentence():
    def only_here(x):
        return x

    deep = ((((((only_here,),),),),),)  # six tuples deep: copies go four levels
    p = probes.attach_to(only_here)
    del only_here
    p.instruments["n"] = count()
    with pytest.raises(RuntimeError, match=r"cannot probe .*only_here on Python 3\.11: no"
                                           r" reference to its function could be patched"):
        p.start()
    p.stop()
    assert deep[0][0][0][0][0][0](5) == 5
    p = probes.attach_to("probe_subjects.outer.<locals>.inner")
    p.instruments["n"] = count()
    with pytest.raises(RuntimeError, match=r"outer\.<locals>\.inner on Python 3\.11: no function"
                                           r" runs its code now"):
        p.start()
    p.stop()
    assert not p.running and S.outer(1) == 3


def test_the_monitor_records_a_probed_function(tape):
    # 3.11: the monitor's profile function is put back at the target's first
    # event and handed it; 3.12+: the two sys.monitoring tools run side by side
    p = probe_with(S.fails, r=count("return", "result"), c=count("call", "v"))
    with calltape.monitor(paths=[os.path.dirname(S.__file__)]):
        assert S.fails(1) == 10 and S.fails(2) == 20
    p.stop()
    calltape.flush()
    calls = [c for c in calltape.open(tape).calls() if c.qualname == "fails"]
    assert [(c.args["v"], c.result) for c in calls] == [(1, 10), (2, 20)]
    assert p.instruments["r"].count == 30 and p.instruments["c"].count == 3


def _shadowed(x, start, *rest, **kw):
    x = x * 100  # reassigned after the call event: the call's value is the argument
    return x


def test_a_parameter_at_call_is_its_argument_and_the_namespace_names_still_win():
    p = probes.attach_to(_shadowed)
    n = p.instruments["n"] = probes.CountInstrument("n", "x", event="call")
    s = p.instruments["s"] = probes.HistogramInstrument("s", "start", event="call")
    r = p.instruments["r"] = probes.CountInstrument("r", "len(rest)", event="call")
    p.start()
    t0 = time.time()
    for i in range(1, 4):
        _shadowed(i, -1.0, 7, 8, k=1)
    p.stop()
    assert n.count == 6 and r.count == 6  # 1 + 2 + 3; two extra positionals each time
    assert s.stats()["min"] >= t0  # `start` is the call's start time, not the argument


def test_references_kept_in_containers_fire_and_are_put_back():
    # a handler list, a dispatch dict, partials (the function, or an argument),
    # a closure cell, a default argument, a tuple kept in a dict, and bound
    # methods kept as callbacks: every one fires; after stop() every holder
    # holds the original object again and nothing fires
    price, ring = S.price, S.Till.ring
    handlers = [len, S.price]
    dispatch = {"price": S.price}
    half = functools.partial(S.price, unit=0.5)
    half_kw = half.keywords
    price_all = functools.partial(map, S.price)
    price_all_args = price_all.args

    def via(f):
        def call(qty):
            return f(qty)
        return call

    through_cell = via(S.price)

    def priced(qty, pricer=S.price):
        return pricer(qty)

    defaults = priced.__defaults__
    routes = {"pair": (S.price, "price")}
    pair = routes["pair"]
    till = S.Till(3)
    hooks = types.SimpleNamespace(on_sale=till.ring)
    callbacks = [till.ring]
    bound = hooks.on_sale, callbacks[0]
    ids = id(pair), id(bound[0])  # 3.11 replaces this frame's locals too

    seen = []

    class Keep(probes.Instrument):
        def fire(self, value, ns):
            seen.append((self.name, value))

    p = probe_with(S.price, c=Keep("price", "(qty, unit)", event="call"),
                   r=Keep("price=", "result", event="return"), n=count())
    q = probe_with(S.Till.ring, c=Keep("ring", "(self.rate, qty)", event="call"), n=count())

    def call_each():
        return [handlers[1](1), dispatch["price"](2), half(3), through_cell(4), priced(5),
                routes["pair"][0](6), list(price_all([7])), hooks.on_sale(8), callbacks[0](9)]

    expected = [1.0, 2.0, 1.5, 4.0, 5.0, 6.0, [7.0], 24, 27]
    assert call_each() == expected
    assert p.instruments["n"].count == 7 and q.instruments["n"].count == 2
    assert seen == [
        ("price", (1, 1.0)), ("price=", 1.0), ("price", (2, 1.0)), ("price=", 2.0),
        ("price", (3, 0.5)), ("price=", 1.5), ("price", (4, 1.0)), ("price=", 4.0),
        ("price", (5, 1.0)), ("price=", 5.0), ("price", (6, 1.0)), ("price=", 6.0),
        ("price", (7, 1.0)), ("price=", 7.0), ("ring", (3, 8)), ("ring", (3, 9)),
    ]
    if sys.version_info < (3, 12):  # 3.11: the holders held stand-ins meanwhile
        assert "calltape probe" in repr(handlers[1]) and "calltape probe" in repr(half.func)
        assert id(routes["pair"]) != ids[0] and routes["pair"] is pair
        assert id(hooks.on_sale) != ids[1]
    p.stop()
    q.stop()

    assert handlers == [len, price] and handlers[1] is price and dispatch["price"] is price
    assert half.func is price and half.args == () and half.keywords is half_kw
    assert price_all.func is map and price_all.args is price_all_args
    assert price_all_args[0] is price
    assert through_cell.__closure__[0].cell_contents is price
    assert priced.__defaults__ is defaults and defaults[0] is price
    assert routes["pair"] is pair and pair[0] is price
    assert (hooks.on_sale, callbacks[0]) == bound and hooks.on_sale is bound[0]
    assert (id(pair), id(bound[0])) == ids
    assert callbacks[0] is bound[1] and bound[0].__func__ is ring
    assert S.price is price and S.Till.__dict__["ring"] is ring
    assert call_each() == expected
    assert p.instruments["n"].count == 7 and q.instruments["n"].count == 2 and len(seen) == 16


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ patches nothing")
def test_on_311_sets_keys_subclasses_and_locals_fire_and_are_put_back():
    # 3.11 replaces the function in sets, frozensets, dict keys (in order),
    # list subclasses, named tuples, this frame's locals, another thread's
    # running frame and a suspended generator; calls through each fire, sets
    # and dicts still find the stand-in by the function (same hash and ==),
    # and stop() puts the original back everywhere, a moved list item where
    # it is now; an OrderedDict's keys are left alone (its order is its own)
    class Registry(list):
        pass

    class Tagged(tuple):
        pass

    price = S.price
    Route = collections.namedtuple("Route", "handler name")
    handlers = [price]
    subscribers = {price}
    frozen = {"f": frozenset([price, len])}
    weights = {len: 1, price: 2, abs: 3}
    ordered = collections.OrderedDict([(price, 1)])
    registry = Registry([price])
    route = Route(price, "price")
    tagged = Tagged((price,))
    tagged.note = "kept"
    local = price
    ready, go, fired, again = (threading.Event() for _ in range(4))
    out = []

    def waiter():
        held = S.price
        ready.set()
        go.wait(10)
        out.append(held(5))
        fired.set()
        again.wait(10)
        out.append((held(6), held is S.price))

    def pricing():
        f = S.price
        qty = yield
        yield f(qty)

    suspended = pricing()
    next(suspended)
    thread = threading.Thread(target=waiter)
    thread.start()
    ready.wait(10)
    originals = id(price), id(route), id(tagged)
    p = probe_with(S.price, n=count())
    handlers.insert(0, len)
    took = S.price  # a local that takes the stand-in meanwhile is put back too
    assert "calltape probe" in repr(handlers[1]) and "calltape probe" in repr(local)
    assert price in subscribers and price in frozen["f"] and weights[price] == 2
    assert list(weights) == [len, price, abs] and "calltape probe" in repr(list(weights)[1])
    assert next(iter(ordered)) is S.price.__wrapped__  # left alone
    assert id(route) != originals[1] and route == (price, "price") and type(route) is Route
    assert type(tagged) is Tagged and tagged.note == "kept" and id(tagged) != originals[2]
    assert next(f for f in frozen["f"] if f is not len)(1) == 1.0
    assert next(iter(subscribers))(1) == 1.0 and list(weights)[1](1) == 1.0
    assert registry[0](1) == 1.0 and route.handler(1) == 1.0 and tagged[0](1) == 1.0
    assert local(1) == 1.0 and suspended.send(2) == 2.0 and handlers[1](1) == 1.0
    go.set()
    fired.wait(10)
    assert out == [5.0] and p.instruments["n"].count == 10
    p.stop()
    again.set()
    thread.join(10)
    assert out == [5.0, (6.0, True)] and suspended.gi_frame.f_locals["f"] is price
    assert handlers == [len, price] and handlers[1] is price and local is price is took
    assert id(price) == originals[0] and (id(route), id(tagged)) == originals[1:]
    assert next(iter(subscribers)) is price and price in frozen["f"]
    assert next(f for f in frozen["f"] if f is not len) is price
    assert list(weights) == [len, price, abs] and list(weights)[1] is price
    assert registry[0] is price and route.handler is price and tagged[0] is price
    assert next(iter(subscribers))(1) == 1.0 and local(1) == 1.0
    assert p.instruments["n"].count == 10


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ patches nothing")
def test_on_311_functions_sharing_code_an_iteration_in_progress_and_slots():
    # two closures running one code object, held together in a tuple, dict
    # keys, a set: each holder holds both stand-ins, and stop() puts both
    # back (no walk sees the probe's own notes); dict keys are swapped where
    # they are, so an iteration in progress (past a deleted entry) goes on
    # over the same entries; a frozenset subclass keeping __slots__ values is
    # left alone (a copy from its items would lose them)
    class Tagged(frozenset):
        __slots__ = ("tag",)

    double, triple = S.make_rate(2), S.make_rate(3)
    originals = id(double), id(triple)
    pair = (double, triple)
    by_rate = {double: 2, triple: 3}
    live = {double, triple}
    keyed = {len: 0, double: 1, abs: 2, triple: 3}
    del keyed[len]

    def walk():
        yield from keyed

    walking = walk()
    assert next(walking) is double
    tagged = Tagged([double])
    tagged.tag = "kept"
    kept = id(pair), id(tagged)
    p = probe_with("probe_subjects.make_rate.<locals>.rate", n=count())
    assert id(pair) != kept[0] and all("calltape probe" in repr(f) for f in pair)
    assert [by_rate[f] for f in pair] == [2, 3] and all(f in live for f in pair)
    assert all("calltape probe" in repr(f) for f in by_rate) and len(live) == 2
    assert all("calltape probe" in repr(f) for f in live)
    rest = list(walking)
    assert len(rest) == 2 and rest[0] is abs and "calltape probe" in repr(rest[1])
    assert id(tagged) == kept[1] and tagged.tag == "kept"
    assert id(next(iter(tagged))) == originals[0]
    assert pair[0](1) == 2 and pair[1](1) == 3 and rest[1](1) == 3
    assert p.instruments["n"].count == 3
    p.stop()
    assert (id(double), id(triple)) == originals and id(pair) == kept[0]
    assert pair[0] is double and pair[1] is triple
    assert [id(f) for f in by_rate] == list(originals) and by_rate[double] == 2
    assert {id(f) for f in live} == set(originals) and double in live
    assert [id(f) for f in keyed][::2] == list(originals)
    assert pair[0](1) == 2 and p.instruments["n"].count == 3


def test_holders_nested_in_holders_fire_and_are_put_back():
    # a tuple holding the function both directly and inside another tuple, a
    # bound method inside a tuple inside a list, and many cache keys holding
    # the function (tuples that are dict keys: never changed)
    price = S.price
    till = S.Till(2)
    routes = {"r": ((S.price,), S.price)}
    route = routes["r"]
    jobs = [("ring", till.ring)]
    job = jobs[0]

    @functools.cache
    def compiled(func, n):
        return n

    for i in range(500):
        compiled(S.price, i)
    p = probe_with(S.price, n=count("call", "qty"))
    q = probe_with(S.Till.ring, n=count("call", "qty"))
    assert routes["r"][0][0](1) == 1.0 and routes["r"][1](2) == 2.0 and jobs[0][1](3) == 6
    assert compiled(price, 7) == 7 and compiled.cache_info().hits == 1  # the keys kept
    assert p.instruments["n"].count == 3 and q.instruments["n"].count == 3
    p.stop()
    q.stop()
    assert routes["r"] is route and route[0][0] is price and route[1] is price
    assert jobs[0] is job and job[1].__func__ is S.Till.ring
    assert compiled(price, 8) == 8 and compiled.cache_info().hits == 2
    assert routes["r"][0][0](1) == 1.0 and jobs[0][1](3) == 6
    assert p.instruments["n"].count == 3 and q.instruments["n"].count == 3


def test_parameter_values_at_call_however_the_arguments_come():
    # positional, by keyword, defaulted, with extra positionals, through an instance:
    # each value is the parameter's at the call (3.11 reads positional calls from the
    # arguments, the others from the frame; 3.12 always from the frame)
    got = collections.defaultdict(list)

    class Keep(probes.Instrument):
        def fire(self, value, ns):
            got[self.name].append(value)

    qty = probes.HistogramInstrument("qty", "qty", event="call")
    p = probe_with(S.price, q=qty, u=probes.LogInstrument("u", "unit", event="call"))
    with_log = logging.getLogger("calltape.probes")
    seen = []
    h = logging.Handler()
    h.emit = lambda r: seen.append(r.getMessage())
    with_log.addHandler(h)
    old = with_log.level
    with_log.setLevel(logging.INFO)
    try:
        S.price(2)
        S.price(3, 0.5)
        S.price(unit=4.0, qty=5)
        S.price(7, unit=2.0)
        calltape.flush_logs()
    finally:
        with_log.removeHandler(h)
        with_log.setLevel(old)
        p.stop()
    assert qty.stats()["count"] == 4 and qty.stats()["sum"] == 17
    assert seen == ["Probe (u) = 1.0", "Probe (u) = 0.5", "Probe (u) = 4.0", "Probe (u) = 2.0"]

    p = probe_with(S.decorated, n=Keep("n", "n", event="call"), r=Keep("r", "rest", event="call"))
    S.decorated(1)
    S.decorated(2, 3, 4)
    S.decorated(n=5, key="k")
    p.stop()
    assert got["n"] == [1, 2, 5] and got["r"] == [(), (3, 4), ()]

    till = S.Till(2)
    p = probe_with(S.Till.ring, s=probes.LogInstrument("self", "self", event="call"),
                   q=probes.HistogramInstrument("q", "qty", event="call"))
    with_log.addHandler(h)
    with_log.setLevel(logging.INFO)
    try:
        till.ring(3)
        S.Till.ring(till, 4)
        calltape.flush_logs()
    finally:
        with_log.removeHandler(h)
        with_log.setLevel(old)
        p.stop()
    assert seen[4:] == [f"Probe (self) = {till}"] * 2 and p.instruments["q"].stats()["sum"] == 7
