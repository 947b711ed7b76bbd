"""The reading views in C: Call, Calls, Function, Session, Bound and the
search filters that are not answered by the segments' zone maps (function
and file matching, args, thread), each alone and combined, their reprs,
bad arguments, and closing a tape while reading."""

import gc
import sys
import threading
import tracemalloc
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from _util import run_python

import calltape


@calltape.record
def pay(amount, currency="EUR", *extra, note=None, **meta):
    return round(amount * 1.2, 2)


@calltape.record
def refund(amount):
    if amount > 100:
        raise ValueError(f"refund too large: {amount}")
    return -amount


@calltape.record
def batch(n):
    return [pay(i) for i in range(n)]


class Currency:
    """A default value of a class of this module: pickled on the tape."""

    def __init__(self, code):
        self.code = code

    def __eq__(self, other):
        return isinstance(other, Currency) and other.code == self.code

    __hash__ = object.__hash__


class Touchy:
    """Equality that raises, as numpy arrays do in a boolean context."""

    def __init__(self, kind):
        self.kind = kind

    def __eq__(self, other):
        raise self.kind("cannot compare")

    __hash__ = object.__hash__


@pytest.fixture
def ledger(tape):
    """12 pay calls (4 in USD, 2 with extras), 3 refunds (1 raises), a batch of
    2 pays on the main thread, and 3 pays on a thread named 'worker'."""
    for i in range(12):
        if i % 3 == 0:
            pay(i, "USD")
        elif i % 5 == 0:
            pay(i, "GBP", 1, 2, note="x", tag=i)
        else:
            pay(i)
    for amount in (5, 50, 500):
        try:
            refund(amount)
        except ValueError:
            pass
    batch(2)
    worker = threading.Thread(target=lambda: [pay(100 + i, "JPY") for i in range(3)],
                              name="worker")
    worker.start()
    worker.join()
    assert calltape.flush()
    return calltape.open(tape)


def test_call_has_every_attribute(ledger):
    c = ledger.search(function="pay", args={"currency": "GBP"}, limit=1)[0]
    assert isinstance(c, calltape.Call)
    assert (c.function, c.qualname, c.module) == ("pay", "pay", __name__)
    assert c.file.endswith("test_views.py") and c.line == pay.__code__.co_firstlineno
    assert isinstance(c.start, datetime) and c.start.tzinfo is UTC
    assert c.start <= c.end and c.duration == c.duration_ns / 1e9
    epoch = datetime(1970, 1, 1, tzinfo=UTC)       # exact to the microsecond
    assert c.start == epoch + timedelta(microseconds=c.start_ns // 1000)
    assert c.end == epoch + timedelta(microseconds=(c.start_ns + c.duration_ns) // 1000)
    assert c.cpu_time is None and c.memory is None and c.energy is None
    assert c.locals is None and c.globals is None
    assert c.thread == threading.get_ident() and c.thread_name == "MainThread"
    assert c.session == ledger.sessions()[0].id
    assert c.parent is None and c.depth == 0 and c.children() == []
    assert c.outcome == "returned" and c.result == 12.0 and c.exception is None
    assert c.args == {"amount": 10, "currency": "GBP", "note": "x", "extra": (1, 2),
                      "meta": {"tag": 10}}
    assert c.defaults == frozenset()
    assert c.bound.args == (10, "GBP", 1, 2) and c.bound.kwargs == {"note": "x", "tag": 10}
    assert pay.__wrapped__(*c.bound.args, **c.bound.kwargs) == c.result
    assert c.preview == "10, 'GBP', 'x', (1, 2), {'tag': 10}"
    assert isinstance(c.func, calltape.Function) and c.func.qualname == "pay"


def test_calls_compare_by_tape_and_id(ledger):
    a = ledger.search(function="refund", order="oldest")[0]
    b = ledger.call(a.id)
    again = calltape.open(ledger.path).call(a.id)
    assert a is not b and a == b == again and hash(a) == hash(again)
    assert len({a, b, again}) == 1
    assert a != ledger.search(function="refund", order="oldest")[1]
    assert a != a.id


def test_values_are_rebuilt_once(ledger):
    c = ledger.search(function="pay", limit=1)[0]
    assert c.args is c.args
    assert c.result is c.result
    assert c.defaults is c.defaults
    r = ledger.search(function="refund", outcome="raised")[0]
    assert r.exception is r.exception and r.result is None
    assert r.exception.message == "refund too large: 500"


def test_children_and_parent(ledger):
    b = ledger.search(function="batch")[0]
    kids = b.children()
    assert [k.args["amount"] for k in kids] == [0, 1]
    assert all(k.parent == b.id and k.depth == 1 for k in kids)
    assert all(ledger.call(k.id).parent == b.id for k in kids)


def test_function_matching(ledger):
    assert len(ledger.search(function="pay")) == 12 + 2 + 3
    assert len(ledger.search(function=f"{__name__}.refund")) == 3
    assert len(ledger.search(function="[rb]*")) == 3 + 1
    assert len(ledger.search(function=f"{__name__}.re*")) == 3
    assert len(ledger.search(function="*.pay")) == 17
    seen = []

    def pick(f):
        seen.append(f)
        return f.qualname == "batch"

    assert len(ledger.search(function=pick)) == 1
    assert all(isinstance(f, calltape.Function) for f in seen) and len(seen) == 3

    def broken(f):
        raise RuntimeError("my predicate failed")

    with pytest.raises(RuntimeError, match="my predicate failed"):
        ledger.search(function=broken)


def test_file_matching(ledger):
    assert len(ledger.search(file="test_views.py")) == 21
    assert len(ledger.search(file="*/tests/read/test_v*.py")) == 21
    assert len(ledger.search(file="tests/read/test_views")) == 21
    assert len(ledger.search(file="*.txt")) == 0
    assert len(ledger.search(function="refund", file="test_views.py")) == 3
    assert len(ledger.search(function="refund", file="other.py")) == 0


def test_args_filter(ledger):
    usd = ledger.search(args={"currency": "USD"})
    assert len(usd) == 4 and {c.args["amount"] for c in usd} == {0, 3, 6, 9}
    assert len(ledger.search(args={"currency": "USD", "amount": 3})) == 1
    assert len(ledger.search(args={"currency": "EUR"})) == 12 - 4 - 2 + 2  # defaults count
    assert len(ledger.search(args={"extra": (1, 2)})) == 2
    assert len(ledger.search(args={"nothing": 1})) == 0
    assert len(ledger.search(args={"amount": 50})) == 1      # the refund
    assert len(ledger.search(args={})) == 21
    # comparisons that raise TypeError or ValueError are no match, not an error
    assert len(ledger.search(args={"amount": Touchy(TypeError)})) == 0
    assert len(ledger.search(args={"amount": np.arange(3)})) == 0
    with pytest.raises(KeyError):
        ledger.search(args={"amount": Touchy(KeyError)})[0]


def test_args_filter_on_an_array_argument(tape):
    keep = calltape.record(lambda a: a.sum())
    keep(np.arange(4))
    keep(np.arange(5))
    calltape.flush()
    t = calltape.open(tape)
    assert len(t.search(args={"a": 3})) == 0   # element-wise ==: no match
    assert len(t.search(args={"a": None})) == 0


def test_thread_filter(ledger):
    worker = ledger.search(function="pay", args={"currency": "JPY"}, limit=1)[0]
    assert worker.thread_name == "worker" and worker.thread != threading.get_ident()
    on_worker = ledger.search(thread=worker.thread)
    assert len(on_worker) == 3 and {c.thread_name for c in on_worker} == {"worker"}
    assert len(ledger.search(thread=threading.get_ident())) == 18
    assert len(ledger.search(thread=worker.thread, session=worker.session + 1)) == 0
    assert len(ledger.search(thread=1)) == 0


def test_filters_combined_with_limit_and_order(ledger):
    first = ledger.search(function="pay", args={"currency": "EUR"}, order="oldest", limit=3)
    assert [c.args["amount"] for c in first] == [1, 2, 4]
    last = ledger.search(function="pay", args={"currency": "EUR"}, thread=threading.get_ident(),
                         outcome="returned", limit=2)
    assert [c.args["amount"] for c in last] == [1, 0]     # batch's pays, newest first
    assert len(ledger.search(function="refund", outcome="raised", args={"amount": 500},
                             file="test_views.py", limit=5)) == 1
    assert len(ledger.search(function="refund", outcome="raised", args={"amount": 5})) == 0


def test_calls_by_id(ledger):
    calls = ledger.calls()
    assert [c.id for c in calls] == sorted(c.id for c in calls) and len(calls) == 21
    assert [c.args["amount"] for c in ledger.calls("refund")] == [5, 50, 500]


def test_reprs(ledger):
    text = repr(ledger)
    assert text.startswith("<calltape.Tape ") and str(ledger.path) in text
    assert "21 calls of 3 functions from 1 session" in text
    c = ledger.search(function="pay", args={"currency": "USD"}, limit=1)[0]
    # as the call is written: keyword-only by name, empty *extra and **meta left out
    assert repr(c).startswith(f"<Call {c.id} pay(9, 'USD', note=None) returned 10.8 in ")
    r = ledger.search(outcome="raised")[0]
    assert "refund(500) raised ValueError('refund too large: 500')" in repr(r)
    streamed = repr(ledger.search())
    assert streamed.startswith("<Calls: more than 10; the first 10:>")
    assert streamed.count("<Call ") == 10
    found = ledger.search(function="refund")
    assert repr(found).startswith("<Calls: 3 calls>\n  <Call ")
    many = ledger.search()
    assert len(many) == 21
    assert repr(many).startswith("<Calls: 21 calls>") and repr(many).endswith("... 11 more")
    assert repr(ledger.search(function="nothing")) == "<Calls: no calls>"
    fn = {f.qualname: f for f in ledger.functions()}["pay"]
    assert repr(fn).startswith(f"<Function {__name__}.pay(amount, currency, note, extra, meta)"
                               f" at {fn.file}:{fn.line}: 17 calls, 0 raised, mean ")
    s = ledger.sessions()[0]
    assert repr(s).startswith(f"<Session {s.id}: pid {s.pid} on {s.host}, started ")
    assert repr(c.bound) == "Bound(args=(9, 'USD'), kwargs={})"  # note took its default
    ledger.close()
    assert repr(ledger).endswith("(closed)>")


def test_durations_read_alike_in_reprs_and_on_the_command_line(ledger):
    from calltape.cli import format_duration
    assert [format_duration(s) for s in (None, 850e-9, 12.5e-6, 150e-6, 3.2e-3, 1.5, 250.0)] == [
        "-", "850 ns", "12.50 us", "150.0 us", "3.20 ms", "1.50 s", "250.0 s"]
    c = ledger.search(function="pay", limit=1)[0]
    assert f" in {format_duration(c.duration)}" in repr(c)
    fn = {f.qualname: f for f in ledger.functions()}["pay"]
    assert f", max {format_duration(fn.max)}>" in repr(fn)


def test_function_and_session_views(ledger):
    fn = {f.qualname: f for f in ledger.functions()}["pay"]
    assert fn.parameters == ["amount", "currency", "note", "extra", "meta"]
    assert fn.kinds == [1, 1, 3, 2, 4]
    assert fn.defaults == {"currency": "EUR", "note": None}
    assert fn.calls == 17 and fn.raised == 0
    assert 0 < fn.min <= fn.mean <= fn.max and fn.total == pytest.approx(fn.mean * 17)
    with pytest.raises(AttributeError):
        fn.calls = 3
    s = ledger.sessions()[0]
    assert s.pid > 0 and isinstance(s.start, datetime) and s.start.tzinfo is UTC
    assert s.end >= s.start          # the time of its last commit
    assert s.mpi_rank is None and s.counters["dropped"] == 0
    with pytest.raises(TypeError):
        calltape.Call()


def test_bad_search_arguments(ledger):
    cases = [
        ({"order": "sideways"}, ValueError, "order must be 'newest' or 'oldest'"),
        ({"outcome": "exploded"}, ValueError, "outcome must be 'returned', 'raised'"),
        ({"limit": -1}, ValueError, "limit must be an int >= 0 or None, not -1"),
        ({"since": "yesterday"}, TypeError, "since must be a datetime or seconds"),
        ({"until": [1]}, TypeError, "until must be a datetime"),
        ({"min_duration": -0.5}, ValueError, "min_duration must be >= 0 seconds"),
        ({"max_duration": "long"}, TypeError, "max_duration must be a number of seconds"),
        ({"function": 42}, TypeError, "function must be a name, a glob or a callable"),
        ({"file": 3}, TypeError, "file must be a str"),
        ({"session": "one"}, TypeError, "session must be a session id"),
        ({"thread": "main"}, TypeError, "thread must be a thread ident"),
        ({"args": [("currency", "EUR")]}, TypeError, "args must be a dict"),
        ({"energy": {"cpu": 1.0}}, ValueError, "unknown energy domain 'cpu'"),
        ({"energy": {"pkg": -1}}, ValueError, "energy bound of 'pkg' must be >= 0"),
        ({"energy": {"dram": "lots"}}, TypeError, "energy bound of 'dram' must be a number"),
        ({"energy": 100.0}, TypeError, "energy must be a dict of upper bounds"),
    ]
    for kwargs, exc, message in cases:
        with pytest.raises(exc, match=message):
            ledger.search(**kwargs)


def test_a_call_outlives_its_search_and_tape(ledger):
    it = iter(ledger.search(function="pay", order="oldest"))
    c = next(it)
    del it
    ledger.close()
    assert c.args["amount"] == 0 and c.result == 0.0 and c.outcome == "returned"
    with pytest.raises(ValueError, match="closed"):
        ledger.search()


def test_close_during_an_iteration(ledger):
    it = iter(ledger.search())
    first = next(it)
    ledger.close()
    assert ledger.closed
    with pytest.raises(ValueError, match="closed during the search"):
        next(it)
    assert first.preview                    # the call read before close stays usable
    with pytest.raises(StopIteration):
        next(it)


def test_threads_read_one_tape_at_once(ledger):
    """Searches release the GIL while they read: threads share one Tape."""
    errors, counts = [], []

    def read():
        try:
            for _ in range(30):
                counts.append(sum(1 for _ in ledger.search(function="pay")))
                counts.append(len(ledger.search(args={"currency": "USD"})))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for th in threads:
        th.start()
    for _ in range(30):
        assert len(ledger.functions()) == 3 and ledger.sessions()
    for th in threads:
        th.join()
    assert errors == []
    assert sorted(set(counts)) == [4, 17] and len(counts) == 240


def test_with_block_closes(tape):
    calltape.record(lambda: 1)()
    calltape.flush()
    with calltape.open(tape) as t:
        assert len(t.search()) == 1
    assert t.closed


EURO = Currency("EUR")


def test_a_refused_default_does_not_break_searching(tape):
    @calltape.record
    def convert(amount, to=EURO):
        return amount

    convert(1)
    convert(2, Currency("USD"))
    calltape.flush()
    t = calltape.open(tape)
    found = t.search(function="*convert")     # the default is only read on demand
    assert len(found) == 2 and found[0].preview.startswith("2, ")
    # the args filter rebuilds only the values it names
    assert [c.id for c in t.search(args={"amount": 1})] == [found[1].id]
    with pytest.raises(calltape.RefusedGlobal):
        found[0].args
    fn = found[0].func
    assert fn.parameters == ["amount", "to"]
    with pytest.raises(calltape.RefusedGlobal, match=f"{__name__}.Currency"):
        fn.defaults
    allowed = calltape.open(tape, allow=[__name__.split(".")[0]])
    fn = allowed.search(function="*convert", limit=1)[0].func
    assert fn.defaults == {"to": Currency("EUR")}
    assert allowed.search(function="*convert", args={"to": Currency("EUR")})[0].args["amount"] == 1


# ------------------------------------------------------------- leaks ----

def _refcounts(objs):
    gc.collect()
    return [sys.getrefcount(o) for o in objs]


def test_reading_leaks_no_references(ledger):
    wanted = "EUR"
    amount = 500
    def pick(f):
        return f.qualname != "batch"

    objs = [wanted, amount, pick, ledger]
    some_id = ledger.search(limit=1)[0].id

    def read(n):
        for _ in range(n):
            for c in ledger.search(function=pick, args={"currency": wanted}):
                c.args, c.bound, c.result, c.start, c.thread, repr(c), c.preview
            for c in ledger.search(args={"amount": amount}, outcome="raised"):
                c.exception, c.defaults, c.children()
            repr(ledger.search(limit=3)), ledger.calls("refund"), ledger.call(some_id)
            [repr(f) for f in ledger.functions()], [repr(s) for s in ledger.sessions()]
            [f.defaults for f in ledger.functions()]

    read(20)
    before = _refcounts(objs)
    read(200)
    assert _refcounts(objs) == before


def test_reading_allocations_do_not_grow(ledger):
    def read(n):
        for _ in range(n):
            calls = ledger.search(function="pay")
            len(calls)
            for c in calls:
                c.args, c.bound, c.end, c.thread_name
            list(ledger.search(thread=threading.get_ident(), args={"currency": "USD"}))

    tracemalloc.start()
    try:
        read(50)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        read(500)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024, f"reading grew Python allocations by {grown} bytes"


@pytest.mark.parametrize("variable, value, rank", [
    ("OMPI_COMM_WORLD_RANK", "3", 3),
    ("PMI_RANK", "0", 0),
    ("SLURM_PROCID", "5", 5),
    ("OMPI_COMM_WORLD_RANK", "rank-3", None),
    ("PMI_RANK", "-1", None),
])
def test_a_session_keeps_the_mpi_rank_its_launcher_gave(tmp_path, variable, value, rank):
    path = tmp_path / "mpi.db"
    proc = run_python(tmp_path, """
        import calltape
        @calltape.record
        def f():
            return 1
        f()
    """, tape=path, env_extra={variable: value})
    (session,) = calltape.open(path).sessions()
    assert session.mpi_rank == rank
    warned = f"{variable}={value} is not an MPI rank (a number from 0)" in proc.stderr
    assert warned == (rank is None), proc.stderr


def test_a_session_takes_the_rank_mpi4py_gives_when_the_program_imported_it(tmp_path):
    """mpi4py.MPI, once the program imported it, names the rank (over the
    launcher's variables); a stand-in mpi4py on the path plays MPI here."""
    pkg = tmp_path / "mpi4py"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "MPI.py").write_text(
        "class _Comm:\n    def Get_rank(self):\n        return 7\nCOMM_WORLD = _Comm()\n")
    path = tmp_path / "mpi.db"
    run_python(tmp_path, """
        sys.path.insert(0, os.getcwd())
        import mpi4py.MPI
        import calltape
        calltape.record(lambda: 1)()
    """, tape=path, env_extra={"PMI_RANK": "2"})
    (session,) = calltape.open(path).sessions()
    assert session.mpi_rank == 7
