"""Capturing a value never runs the program's code: objects are read structurally
(their __dict__ and __slots__), identity between values survives, and encoding
stops at the budget whatever the size of the object graph."""

import collections
import dataclasses
import datetime
import decimal
import enum
import itertools
import signal
import threading
import warnings

import pytest
from _util import is_redacted, only_call, read_calls, run_python

import calltape
from calltape import _native


class Stream:
    """Like requests.Response: pickling it would read (and consume) the body."""

    def __init__(self):
        self.consumed = False
        self.url = "http://example"

    def __getstate__(self):
        self.consumed = True
        return {"url": self.url, "body": "everything"}

    def __reduce_ex__(self, protocol):
        self.consumed = True
        return object.__reduce_ex__(self, protocol)


class Node:
    def __init__(self, parent=None):
        self.parent = parent
        self.children = []
        self.label = "n" * 20
        if parent is not None:
            parent.children.append(self)


class Slotted:
    __slots__ = ("__secret", "a", "b")

    def __init__(self):
        self.a = 1
        self.__secret = 2  # name-mangled slot: _Slotted__secret


class Endless(dict):
    def items(self):
        return itertools.count()

    def __iter__(self):
        return itertools.count()


Pt = collections.namedtuple("Pt", "x y")


class Creds:
    pass


class Zone(datetime.tzinfo):
    """A Python tzinfo, as dateutil's: its C base holds no state of its own."""

    def __init__(self, hours):
        self.hours = hours

    def utcoffset(self, dt):
        return datetime.timedelta(hours=self.hours)


class WithSignature:
    __slots__ = ("sig",)


class Color(enum.Enum):
    RED = 1
    GREEN = 2


@dataclasses.dataclass(frozen=True)
class Frozen:
    x: int
    tags: tuple = ()


class Strict:
    def __setattr__(self, name, value):
        raise AttributeError("read-only")


class MyList(list):
    def __iter__(self):
        raise RuntimeError("must not be called")


@calltape.record
def ident(v):
    return v


@calltape.record
def same(a, b):
    return a is b


def test_getstate_and_reduce_are_never_called(tape):
    s = Stream()
    ident(s)
    assert s.consumed is False
    back = only_call(tape).args["v"]
    assert type(back) is Stream and back.url == "http://example" and back.consumed is False


def test_recording_emits_none_of_the_programs_warnings(tape):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ident(itertools.count(3))  # pickling it warns on 3.12
        ident(zip([1], [2]))
    calls = read_calls(tape)
    assert all(isinstance(c.args["v"], calltape.Unencodable) for c in calls)
    assert "pickle=" in calls[0].args["v"].reason


def test_identity_and_cycles_survive(tape):
    shared = [1, 2]
    same(shared, shared)
    node = Node()
    Node(node)
    ident(node)
    calls = read_calls(tape)
    args = calls[0].args
    assert args["a"] is args["b"] and args["a"] == [1, 2]
    root = calls[1].args["v"]
    assert root.children[0].parent is root


def test_a_huge_graph_costs_only_the_budget(tape):
    root = Node()
    nodes = [root]
    for i in range(200_000):
        nodes.append(Node(nodes[i // 3]))

    @calltape.record(max_value_bytes=4096)
    def visit(n):
        return None

    visit(nodes[-1])  # through its parent pointers it reaches all 200,001 nodes
    value = read_calls(tape)[-1].args["n"]
    assert isinstance(value, calltape.Truncated)
    # encoding stopped at the budget instead of walking the graph
    assert 3000 < value.size < 4096 + 512


def test_slots_frozen_dataclasses_and_setattr_guards(tape):
    ident(Slotted())
    ident(Frozen(3, ("a",)))
    s = Strict()
    object.__setattr__(s, "x", 5)
    ident(s)
    calls = read_calls(tape)
    sl = calls[0].args["v"]
    assert sl.a == 1 and not hasattr(sl, "b") and sl._Slotted__secret == 2
    assert calls[1].args["v"] == Frozen(3, ("a",))
    assert type(calls[2].args["v"]) is Strict and calls[2].args["v"].x == 5


def test_builtin_subclasses_are_read_from_their_storage(tape):
    e = Endless(a=1)
    ident(e)
    ident(MyList([1, 2]))
    calls = read_calls(tape)
    d = calls[0].args["v"]
    assert type(d) is Endless and dict.items(d) == {"a": 1}.items()
    ml = calls[1].args["v"]
    assert type(ml) is MyList and list.__len__(ml) == 2


def test_standard_types_enums_and_functions(tape):
    values = [datetime.datetime(2026, 12, 1, 8, 30, tzinfo=datetime.UTC),
              datetime.timedelta(days=2), decimal.Decimal("1.25"),
              collections.deque([1, 2], maxlen=3), collections.OrderedDict(b=1, a=2),
              collections.Counter("abca"), Color.GREEN, len, sorted, Node, ValueError("x", 1),
              range(2, 9, 3), complex(1, -2), bytearray(b"ab"), frozenset({1}), Pt(1, 2)]
    for v in values:
        ident(v)
    calls = read_calls(tape)
    for v, c in zip(values, calls):
        back = c.args["v"]
        if isinstance(v, BaseException):
            assert type(back) is ValueError and back.args == ("x", 1)
        else:
            assert back == v and type(back) is type(v), (v, back)
    assert calls[6].args["v"] is Color.GREEN
    assert calls[0].preview.startswith("datetime(")
    assert "Color.GREEN" in calls[6].preview


def module_level_helper(x):
    return x


def test_a_function_not_found_under_its_name_is_unencodable(tape, tmp_path):
    """As pickle asks of a function it names: module.qualname must be that
    very function today, else the value is an Unencodable saying so (never a
    name that fails when the call is read); a function found, a method, a
    staticmethod and a classmethod's function are named as before."""
    made = {}
    exec(compile("def func(x):\n    return x\n", __file__, "exec"), {"__name__": __name__}, made)
    renamed = module_level_helper.__code__.replace()  # the same code, another object
    import types
    twin = types.FunctionType(renamed, globals(), "module_level_helper")
    for v in (made["func"], twin, module_level_helper, Node.__init__):
        ident(v)
    calls = read_calls(tape)
    lost, copied, found, method = (c.args["v"] for c in calls)
    assert isinstance(lost, calltape.Unencodable)
    assert lost.reason == f"it is not found as {__name__}.func", lost.reason
    assert isinstance(copied, calltape.Unencodable) and "module_level_helper" in copied.reason
    assert found is module_level_helper and method is Node.__init__


def test_a_name_today_s_code_does_not_have_is_one_clear_import_error(tmp_path):
    """A tape that names a global this machine's code no longer has (recorded
    before, by a program whose module has changed since) fails to read with
    one ImportError sentence naming it, not an AttributeError from inside."""
    (tmp_path / "gone_mod.py").write_text("def helper(x):\n    return x\n")
    run_python(tmp_path, """
        import calltape, gone_mod
        @calltape.record
        def take(f):
            return 1
        take(gone_mod.helper)
    """, tape=tmp_path / "t.db")
    (tmp_path / "gone_mod.py").write_text("def other(x):\n    return x\n")
    proc = run_python(tmp_path, """
        import calltape
        c = calltape.open("t.db", trust=True).calls("take")[0]
        try:
            c.args
        except ImportError as e:
            print("ImportError:", e)
    """, rc=0)
    assert proc.stdout.strip() == ("ImportError: the tape names gone_mod.helper, which today's"
                                   " gone_mod does not have (module 'gone_mod' has no attribute"
                                   " 'helper')"), proc.stdout + proc.stderr


def test_attribute_names_that_are_secrets_are_redacted(tape):
    c = Creds()
    c.user, c.password = "ann", "hunter2-s3cret"
    ident(c)
    back = only_call(tape).args["v"]
    assert back.user == "ann" and is_redacted(back.password)


def test_a_keyboard_interrupt_in_a_codec_reaches_the_program(tape):
    class Slow:
        pass

    def encode(v):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C while the codec runs
        for _ in range(1000):
            pass
        return b""

    calltape.register_codec(Slow, "tests.slow", encode, lambda b: Slow())
    with pytest.raises(KeyboardInterrupt):
        ident(Slow())
        for _ in range(1000):  # the program's next bytecodes
            pass


def test_opted_in_pickling_and_refusals_name_the_way(tape):
    calltape.configure(pickle=[Stream])
    try:
        s = Stream()
        ident(s)
        assert s.consumed is True  # the user asked for pickling: it runs
    finally:
        calltape.configure(pickle=[])
    with pytest.raises(TypeError, match="pickle must be a list of types"):
        calltape.configure(pickle=["Stream"])
    assert read_calls(tape)[0].args["v"].url == "http://example"


def test_encode_and_decode_agree_on_shared_references():
    inner = {"k": [1]}
    value = [inner, inner, (inner,)]
    back = _native.decode(_native.encode(value))
    assert back[0] is back[1] is back[2][0]


def test_python_tzinfo_patterns_and_partials(tape):
    import functools
    import inspect
    import re

    ident(datetime.datetime(2026, 1, 2, 3, 4, tzinfo=Zone(2)))
    ident(re.compile(r"a|b+", re.IGNORECASE))
    ident(functools.partial(max, 1, key=abs))

    def local(x):
        return x

    ident(functools.partial(local, 1))
    w = WithSignature()
    w.sig = inspect.signature(local)
    ident(w)
    calls = read_calls(tape)
    when = calls[0].args["v"]
    assert when.utcoffset() == datetime.timedelta(hours=2) and when.tzinfo.hours == 2
    assert calls[1].args["v"] == re.compile(r"a|b+", re.IGNORECASE)
    assert calls[2].args["v"](-5, 3) == -5  # max(1, -5, 3, key=abs)
    made = calls[3].args["v"]  # a partial of a nested function cannot be made again
    assert isinstance(made, calltape.Unencodable) and "not recorded" in made.reason
    assert type(calls[4].args["v"]) is WithSignature


def test_the_depth_budget_of_a_monitor(tmp_path, monkeypatch):
    import importlib
    import sys

    (tmp_path / "depth_subject.py").write_text("def walk(node):\n    return node is None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("depth_subject", None)
    mod = importlib.import_module("depth_subject")
    chain = None
    for i in range(100):
        chain = [i, chain]
    tape = tmp_path / "d.db"
    with calltape.monitor(include=["depth_subject"], tape=tape, max_value_depth=5):
        mod.walk(chain)
    assert calltape.flush(timeout=30)
    value = calltape.open(tape).calls()[0].args["node"]
    for _ in range(5):  # the outer list is at depth 0
        value = value[1]
    assert isinstance(value, calltape.Unencodable) and value.reason == "nested too deeply"
    with pytest.raises(ValueError, match="max_value_depth"):
        calltape.monitor(max_value_depth=-1)


class Tee:
    """more-itertools' _concurrent_tee: a generator, a lock and the linked
    list of the stream ahead of it."""

    __slots__ = ("iterator", "link", "lock")

    def __init__(self, chain, opaque=True):
        self.iterator = (x for x in range(3)) if opaque else (0, 1, 2)
        self.link = chain
        self.lock = threading.Lock() if opaque else None


class Holder:
    def __init__(self, chain, opaque):
        self.data = chain
        if opaque:
            self.handle = open(__file__)  # closed by the test
        self.name = "h"


def _chain(n):
    chain = None
    for i in reversed(range(n)):
        chain = [i, chain]
    return chain


def _cut_at(value):
    """How many links of a [i, next] chain were written, and the marker after them."""
    links = 0
    while isinstance(value, list):
        links += 1
        value = value[1]
    return links, value


def test_an_object_holding_opaque_state_is_walked_shallow(tmp_path, monkeypatch):
    import importlib
    import sys

    (tmp_path / "tee_subject.py").write_text("def step(tee):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tee_subject", None)
    mod = importlib.import_module("tee_subject")
    tape = tmp_path / "tee.db"
    holder = Holder(_chain(50), opaque=True)
    try:
        with calltape.monitor(include=["tee_subject"], tape=tape, max_value_depth=20):
            mod.step(Tee(_chain(50)))  # a generator and a lock beside the chain
            mod.step(Tee(_chain(50), opaque=False))  # data beside the chain
            mod.step(holder)  # an open file in the __dict__
            mod.step(Holder(_chain(50), opaque=False))
            mod.step([Tee(_chain(50))])  # the cut is below the object, wherever it is
    finally:
        holder.handle.close()
    assert calltape.flush(timeout=30)
    calls = calltape.open(tape, trust=True).calls()
    tee, plain_tee, held, plain_held, nested = (c.args["tee"] for c in calls)
    assert isinstance(tee.iterator, calltape.Unencodable) and "opaque" in tee.iterator.reason
    assert isinstance(tee.lock, calltape.Unencodable)
    # self at depth 0, its link at 1: CT_OPAQUE_DEPTH (2) levels of the chain are kept
    links, marker = _cut_at(tee.link)
    assert links == 2 and tee.link[:1] == [0] and tee.link[1][0] == 1
    assert isinstance(marker, calltape.Unencodable) and marker.reason == "cut beside opaque state"
    # without opaque state the depth budget alone applies, as before
    links, marker = _cut_at(plain_tee.link)
    assert links == 19 and marker.reason == "nested too deeply"
    assert plain_tee.iterator == (0, 1, 2) and plain_tee.lock is None
    links, marker = _cut_at(held.data)
    assert links == 2 and marker.reason == "cut beside opaque state" and held.name == "h"
    assert isinstance(held.handle, calltape.Unencodable)
    links, marker = _cut_at(plain_held.data)
    assert links == 19 and marker.reason == "nested too deeply"
    links, marker = _cut_at(nested[0].link)  # the Tee at depth 1, its link at 2
    assert links == 2 and marker.reason == "cut beside opaque state"
    # such a call was never replayable: it is skipped, naming the generator
    outcome = calls[0].replay()
    assert outcome.status == "skipped" and "generator" in outcome.reason


class Pair:
    __slots__ = ("first", "last")


def test_slots_after_values_of_many_new_classes(monkeypatch):
    # the first slot's values are of 1,000 classes never seen: deciding them grows
    # the type cache (and moves its entries) before the last slot is written
    import sys

    here = sys.modules[__name__]
    fresh = []
    for i in range(1000):
        cls = type(f"Fresh{i}", (), {"__module__": __name__})
        monkeypatch.setattr(here, cls.__name__, cls, raising=False)
        fresh.append(cls())
    pair = Pair()
    pair.first = fresh
    pair.last = "end"
    back = _native.decode(_native.encode(pair), trust=True)
    assert back.last == "end" and [type(x).__name__ for x in back.first][-1] == "Fresh999"


class Shape(enum.Enum):
    SQUARE = ((0, 0), (1, 1))


class Bucket:
    """more-itertools' bucket: an iterator beside a defaultdict of deques."""

    def __init__(self):
        self._it = iter(range(3))
        self._cache = collections.defaultdict(collections.deque)
        self._cache["a"].extend([[1, [2, [3]]]])
        self.shapes = [Shape.SQUARE]  # the member at depth 2, its value at 3


def test_standard_values_beside_opaque_state_and_at_the_depth_budget(tmp_path, monkeypatch):
    import importlib
    import sys

    (tmp_path / "bucket_subject.py").write_text("def look(b):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("bucket_subject", None)
    mod = importlib.import_module("bucket_subject")
    tape = tmp_path / "b.db"
    deep = [collections.defaultdict(list, {"k": [1]})]  # its (key, value) pairs at depth 3
    with calltape.monitor(include=["bucket_subject"], tape=tape, max_value_depth=20):
        mod.look(Bucket())
    with calltape.monitor(include=["bucket_subject"], tape=tape, max_value_depth=3):
        mod.look(deep)
    assert calltape.flush(timeout=30)
    bucket, cut = (c.args["b"] for c in calltape.open(tape, trust=True).calls())
    # a reduce's own parts (the defaultdict's pairs, the deque's items) do not
    # count as levels: the deque and its items are kept, their contents cut
    assert isinstance(bucket._it, calltape.Unencodable)
    items = bucket._cache["a"][0]
    assert type(bucket._cache["a"]) is collections.deque and items[:1] == [1]
    assert items[1].reason == "cut beside opaque state"
    assert bucket.shapes == [Shape.SQUARE]  # an enum's value is part of it, too
    # pairs cut by the depth budget make the value a marker, not a damaged tape
    assert isinstance(cut[0], calltape.Unencodable) and "not recorded" in cut[0].reason
